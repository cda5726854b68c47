"""Package-level checks on the installed adcore: version, metadata, typing
files, what the wheel ships and what it must not ship."""

import ast
import importlib
import importlib.machinery
import importlib.metadata
import pathlib
import re

import pytest

import adcore

PKG = pathlib.Path(adcore.__file__).resolve().parent
EXT_SUFFIXES = tuple(importlib.machinery.EXTENSION_SUFFIXES)
# With PYTHONPATH at a checkout there is no installed metadata and the tree
# holds sources; tools/test.sh (and CI) always runs these on the installed copy.
installed_only = pytest.mark.skipif(
    (PKG.parent / "setup.py").is_file(),
    reason="checks the installed package; run bash tools/test.sh")


def _files(pattern):
    return sorted(p.relative_to(PKG).as_posix() for p in PKG.rglob(pattern))


@installed_only
def test_version_matches_metadata():
    assert adcore.__version__ == importlib.metadata.version("adcore")
    # PEP 440 public version (no local "+..." part: PyPI refuses those)
    assert re.fullmatch(r"\d+(\.\d+)*((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?", adcore.__version__)


@installed_only
def test_runtime_dependency_is_numpy_only():
    requires = importlib.metadata.requires("adcore") or []
    runtime = [r for r in requires if "extra ==" not in r]
    names = [re.match(r"[A-Za-z0-9_.-]+", r).group(0).lower() for r in runtime]
    assert names == ["numpy"]


@installed_only
def test_license_metadata():
    meta = importlib.metadata.metadata("adcore")
    assert meta.get("License-Expression") == "MIT"


def test_py_typed_ships():
    assert (PKG / "py.typed").is_file()


def test_every_compiled_module_has_a_stub():
    compiled = [p for p in PKG.rglob("*") if p.name.endswith(EXT_SUFFIXES)]
    missing = []
    for so in compiled:
        stem = so.name.split(".")[0]
        if not (so.parent / (stem + ".pyi")).is_file():
            missing.append(so.relative_to(PKG).as_posix())
    assert not missing, f"compiled modules without a .pyi stub beside them: {missing}"


def test_stubs_are_valid_python():
    for stub in PKG.rglob("*.pyi"):
        ast.parse(stub.read_text(encoding="utf-8"), filename=str(stub))


def test_compiled_modules_import():
    for so in PKG.rglob("*"):
        if so.name.endswith(EXT_SUFFIXES):
            rel = so.relative_to(PKG.parent).with_name(so.name.split(".")[0])
            importlib.import_module(".".join(rel.parts))


@installed_only
def test_no_sources_or_generated_c_in_the_installed_package():
    # The wheel ships compiled modules and stubs; Cython sources, templates and
    # generated C belong in the sdist only.
    shipped = _files("*.pyx") + _files("*.pxd") + _files("*.c") + _files("*.tp") + _files("*.pxi")
    assert shipped == []


def test_public_names_belong_to_adcore():
    # Everything public at the top level is adcore's own (no stray imports
    # such as numpy leaking into the namespace) and documented.
    leaked, undocumented = [], []
    for name in dir(adcore):
        if name.startswith("_"):
            continue
        obj = getattr(adcore, name)
        if isinstance(obj, type(adcore)):
            if not obj.__name__.startswith("adcore"):
                leaked.append(name)
            continue
        module = getattr(obj, "__module__", None)
        if callable(obj) and module is not None:
            if not module.startswith("adcore"):
                leaked.append(name)
            elif not (obj.__doc__ or "").strip():
                undocumented.append(name)
    assert not leaked, f"non-adcore names exported from adcore: {leaked}"
    assert not undocumented, f"public adcore names without a docstring: {undocumented}"


def _public_names():
    return {n for n in dir(adcore)
            if not n.startswith("_") and not isinstance(getattr(adcore, n), type(adcore))}


def _static_all():
    """The names in adcore/__init__.py's literal ``__all__ = [...]`` and
    ``__all__ += [...]`` statements: all that mypy sees."""
    tree = ast.parse((PKG / "__init__.py").read_text(encoding="utf-8"))
    names = []
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            value = node.value
        elif isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name) \
                and node.target.id == "__all__":
            value = node.value
        else:
            continue
        assert isinstance(value, (ast.List, ast.Tuple)), \
            f"line {node.lineno}: __all__ built from an expression mypy cannot read"
        names += [elt.value for elt in value.elts]
    return names


def test_all_is_the_public_api():
    # mypy --strict re-exports from a py.typed package only what __all__ lists
    # literally, so every public name must be there (and nothing else).
    names = _static_all()
    assert names == list(adcore.__all__)
    assert len(set(names)) == len(names), "adcore.__all__ lists a name twice"
    missing = sorted(n for n in names if not hasattr(adcore, n))
    assert not missing, f"adcore.__all__ names missing from the package: {missing}"
    unlisted = sorted(_public_names() - set(names))
    assert not unlisted, f"public names not in adcore.__all__ (add them there): {unlisted}"
