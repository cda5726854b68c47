"""Build the Cython kernels.

The kernels are rendered from the rule table first (tools/codegen.py turns
adcore/*.tp into .pyx/.pxi), then cythonized.  Extra compiler flags come from
the usual CFLAGS / CPPFLAGS environment variables (the AddressSanitizer and
-Werror builds in .ci/run use them).
"""

import os
import pathlib
import runpy
import tempfile

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


# Size flags for gcc and clang (never MSVC), each kept only if the compiler takes it.
# The unwind tables (.eh_frame, ~80 KB of the two kernels) serve C++ exceptions and
# debuggers' backtraces only: the kernels are C, nothing unwinds through them.  The
# optimisation level stays the interpreter's (-O3): the element-wise loops need its
# vectorizer (-O2 made jvp at 10^6 1.9x -> 2.6x).  Only -O3's early inliner is held
# to -O2's limit: -66 KiB of the wheel (976 KiB stripped manylinux), while -O3's
# other inlining limits keep the rule kernels inlined into the sweeps and loops
# (all of -O2's limits: -110 KiB, but the scalar rows ~3% slower).  The --param is
# gcc's: a compiler that warns about it or refuses it builds without it.
SIZE_CFLAGS = ["-fno-asynchronous-unwind-tables", "-fno-unwind-tables",
               "--param=early-inlining-insns=6"]
# The AVX-512 clones of the tape's kernels (tools/codegen.py) use 512-bit vectors
# (gcc's generic tuning keeps to 256); other code has no AVX-512 to widen.
VECTOR_CFLAGS = ["-mprefer-vector-width=512"]


def _accepted(compiler, flag):
    """Whether the compiler takes `flag` without an error or a warning."""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write("int adcore_probe(void) { return 0; }\n")
        try:
            compiler.compile([src], output_dir=tmp, extra_postargs=[flag, "-Werror"])
        except Exception:  # CompileError, or a compiler that is not there
            return False
    return True


class build_ext(_build_ext):
    """Compile the kernels in parallel with the size flags the compiler takes, and
    link without the interpreter's own -rpath (pyenv's --enable-shared Pythons put
    one in LDSHARED): the kernels need no libpython, and a wheel must not carry a
    RUNPATH into the builder's home."""

    def finalize_options(self):
        super().finalize_options()
        if self.parallel is None:
            self.parallel = True  # one compiler per core

    def build_extensions(self):
        linker = getattr(self.compiler, "linker_so", None)
        if linker:
            self.compiler.linker_so = [a for a in linker if not a.startswith("-Wl,-rpath")]
        if self.compiler.compiler_type == "unix":  # gcc or clang; MSVC is "msvc"
            flags = [f for f in SIZE_CFLAGS + VECTOR_CFLAGS
                     if _accepted(self.compiler, f)]
            for ext in self.extensions:
                ext.extra_compile_args = list(ext.extra_compile_args or []) + flags
        super().build_extensions()


ext_modules = cythonize(extensions, compiler_directives=codegen["COMPILER_DIRECTIVES"])
codegen["add_kernel_clones"](ROOT / "adcore" / "_tape.c")   # AVX2 + baseline kernels

setup(
    cmdclass={"build_ext": build_ext},
    ext_modules=ext_modules,
)
