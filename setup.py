"""Build the Cython kernels.

The kernels are rendered from the rule table first (tools/codegen.py turns
adcore/*.tp into .pyx/.pxi), then cythonized.  Extra compiler flags come from
the usual CFLAGS / CPPFLAGS environment variables (the AddressSanitizer and
-Werror builds in .ci/run use them).
"""

import pathlib
import runpy

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext as _build_ext

ROOT = pathlib.Path(__file__).resolve().parent
codegen = runpy.run_path(str(ROOT / "tools" / "codegen.py"))
codegen["render_all"]()

extensions = [
    Extension(f"adcore.{pyx.stem}", [str(pyx.relative_to(ROOT))])
    for pyx in sorted((ROOT / "adcore").glob("*.pyx"))
]



class build_ext(_build_ext):
    """Compile the kernels in parallel, and link without the interpreter's own
    -rpath (pyenv's --enable-shared Pythons put one in LDSHARED): the kernels
    need no libpython, and a wheel must not carry a RUNPATH into the builder's
    home."""

    def finalize_options(self):
        super().finalize_options()
        if self.parallel is None:
            self.parallel = True  # one compiler per core

    def build_extensions(self):
        linker = getattr(self.compiler, "linker_so", None)
        if linker:
            self.compiler.linker_so = [a for a in linker if not a.startswith("-Wl,-rpath")]
        super().build_extensions()


setup(
    cmdclass={"build_ext": build_ext},
    ext_modules=cythonize(
        extensions,
        compiler_directives=codegen["COMPILER_DIRECTIVES"],
    ),
)
