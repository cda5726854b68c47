"""Render adcore's Cython kernels from the rule table.

Every ``adcore/*.tp`` (e.g. ``_rules.pxi.tp``) is a Tempita template; it is
rendered to the same name without ``.tp`` with the rule table in scope.
setup.py runs this before cythonize; developers run ``python tools/codegen.py``.

Names in scope of a template:
  rules        the RULES tuple of adcore/_rules.py
  c_partial    c_partial(rule, i) -> C (Cython) expression of d result / d input i
  args_of      args_of(rule) -> ("x", "y", ...) the input names
  numpy_ufunc  numpy_ufunc(rule) -> numpy's ufunc name if the dual kernel takes the
               rule's values from numpy for large arrays, else None
  partial_reads partial_reads(rule, i) -> bits of x, y, z, r (1, 2, 4, 8) that
               the partial of input i reads
"""

from __future__ import annotations

import ast
import pathlib
import runpy
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "adcore"
INPUTS = ("x", "y", "z")

# Cython directives for every kernel (setup.py and tools/dev_build.py use these).
COMPILER_DIRECTIVES = {
    "language_level": 3,
    "cdivision": True,  # IEEE division (1/0 = inf), as the rule table assumes
    "embedsignature": True,
    # obj.method(...) as a plain attribute call: Cython's inline unpacking of bound
    # methods at every call site is ~115 KB of the kernels' code (52 KiB of the
    # wheel) and saves tens of ns only on calls the hot loops do not make
    "optimize.unpack_method_calls": False,
}


def load_rules():
    return runpy.run_path(str(PACKAGE / "_rules.py"))["RULES"]


class _PartialToCython(ast.NodeTransformer):
    """Rewrite calls to rules ``f(..)`` into the generated inline ``v_f(..)``."""

    def __init__(self, names):
        self.names = names

    def visit_Call(self, node):
        self.generic_visit(node)
        if not isinstance(node.func, ast.Name) or node.func.id not in self.names:
            raise ValueError(f"partial calls {ast.unparse(node.func)!r}, which is not a rule")
        node.func = ast.Name(id="v_" + node.func.id, ctx=ast.Load())
        return node

    def visit_Name(self, node):
        if node.id not in INPUTS + ("r",) and node.id not in self.names:
            raise ValueError(f"partial uses unknown name {node.id!r}")
        return node

    def visit_Constant(self, node):
        if not isinstance(node.value, float):
            # C would divide integers: 1/2 == 0.  Demand float literals.
            raise ValueError(f"partial uses the non-float literal {node.value!r}; write {node.value}.0")
        return node


def c_partial(rule, i, rules=None):
    names = {r.name for r in (rules or load_rules())}
    tree = ast.parse(rule.partials[i], mode="eval")
    tree = _PartialToCython(names).visit(tree)
    return ast.unparse(tree)


def args_of(rule):
    return INPUTS[: rule.arity]


def partial_reads(rule, i):
    """Bits of the values the partial of input i reads: 1 x, 2 y, 4 z, 8 r."""
    names = {n.id for n in ast.walk(ast.parse(rule.partials[i], mode="eval"))
             if isinstance(n, ast.Name)}
    return sum(bit for name, bit in (("x", 1), ("y", 2), ("z", 4), ("r", 8)) if name in names)


# numpy ufuncs with the rule's exact meaning, for transcendental rules whose partials
# need only the inputs, the result, arithmetic and sqrt (no second transcendental per
# element): numpy's vectorized exp/log/tanh/... are many times faster than libm's.
# The dual kernel takes such a rule's values from numpy for large arrays, and only
# such rules get a loop that reads values numpy computed.  Arithmetic, sqrt and
# rounding vectorize in the C loop itself; sin/cos/sinh/cosh keep the C loop, where
# value and partial share one sincos-like pass.
NUMPY_UFUNCS = {"cbrt": "cbrt", "exp": "exp", "exp2": "exp2", "expm1": "expm1",
                "log": "log", "log2": "log2", "log10": "log10", "log1p": "log1p",
                "tan": "tan", "asin": "arcsin", "acos": "arccos", "atan": "arctan",
                "atan2": "arctan2", "hypot": "hypot", "tanh": "tanh", "asinh": "arcsinh",
                "acosh": "arccosh", "atanh": "arctanh"}


def numpy_ufunc(rule):
    """numpy's name for the rule's values if the dual kernel takes them from numpy."""
    name = NUMPY_UFUNCS.get(rule.name)
    if name is None:
        return None
    for text in rule.partials:
        for node in ast.walk(ast.parse(text, mode="eval")):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) != "sqrt":
                return None
    return name


def render_all(verbose=False):
    from Cython.Tempita import sub

    rules = load_rules()
    for rule in rules:
        if len(rule.partials) != rule.arity or len(rule.domain) != rule.arity:
            raise ValueError(f"rule {rule.name}: arity {rule.arity} but "
                             f"{len(rule.partials)} partials / {len(rule.domain)} domains")
    namespace = dict(rules=rules, args_of=args_of, partial_reads=partial_reads,
                     numpy_ufunc=numpy_ufunc,
                     c_partial=lambda rule, i: c_partial(rule, i, rules))
    written = []
    for template in sorted(PACKAGE.rglob("*.tp")):
        target = template.with_suffix("")
        text = sub(template.read_text(), **namespace)
        header = (f"# Generated from {template.name} and _rules.py by tools/codegen.py."
                  " Do not edit.\n")
        text = header + text
        if not target.exists() or target.read_text() != text:
            target.write_text(text)
            if verbose:
                print(f"codegen: wrote {target.relative_to(ROOT)}")
        written.append(target)
    return written


# The float64 element-wise kernels of the tape, compiled three times by gcc on x86-64
# Linux: for AVX-512 (8 doubles per instruction, with setup.py's
# -mprefer-vector-width=512), for AVX2 (4) and for the x86-64 baseline, picked once
# at load by the CPU (an ifunc).  No FMA (_tape.pyx is built with -ffp-contract=off;
# gcc's avx512f target would contract a * b + c), so every clone gives the same bits.
# Cython cannot put a C attribute on a function, so it is added to the generated C.
# rosen's replayed gradient at n = 10^5: 814 -> 581 us with AVX2; AVX-512 on an AMD
# EPYC (Zen 5): ~5% on top.  The float32 kernels stay single: their AVX2 copies
# would cost ~200 KB and relu measured no faster.
KERNEL_CLONES = ("ew_value", "ew_reverse")
_CLONES_MACRO = """
/* adcore: see tools/codegen.py, KERNEL_CLONES */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define ADCORE_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define ADCORE_CLONES
#endif
"""


def add_kernel_clones(c_file):
    """Mark the KERNEL_CLONES functions of the generated _tape.c for cloning (once:
    a file cythonize left as it was is already marked)."""
    import re

    path = pathlib.Path(c_file)
    text = path.read_text()
    if "ADCORE_CLONES" in text:
        return
    pattern = re.compile(r"^static void __pyx_f_6adcore_5_tape_(%s)\(" % "|".join(KERNEL_CLONES),
                         re.M)
    marked, count = pattern.subn(lambda m: "ADCORE_CLONES " + m.group(0), text)
    if count != 2 * len(KERNEL_CLONES):     # each one's prototype and definition
        raise RuntimeError(f"add_kernel_clones: found {count} declarations of "
                           f"{KERNEL_CLONES} in {path.name}, expected {2 * len(KERNEL_CLONES)}")
    first = marked.index("ADCORE_CLONES static void")
    path.write_text(marked[:first] + _CLONES_MACRO.lstrip("\n") + marked[first:])


if __name__ == "__main__":
    render_all(verbose=True)
    sys.exit(0)
