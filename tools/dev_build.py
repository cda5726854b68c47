"""Developer build: render the templates and build the named kernels in place.

    python tools/dev_build.py _dual          # only adcore/_dual.pyx
    python tools/dev_build.py                # every adcore/*.pyx

Builds one module without touching the others (so a half-edited kernel elsewhere
does not stop you).  Uses the same directives as setup.py.  Tests of the
installed package are what CI runs; this is for the edit-compile loop with
PYTHONPATH pointing at the checkout.
"""

import os
import pathlib
import platform
import runpy
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
codegen = runpy.run_path(str(ROOT / "tools" / "codegen.py"))


def main(names):
    from Cython.Build import cythonize
    from setuptools import Extension
    from setuptools.dist import Distribution

    codegen["render_all"](verbose=True)
    if not names:
        names = [p.stem for p in sorted((ROOT / "adcore").glob("*.pyx"))]
    os.chdir(ROOT)
    # setup.py's VECTOR_CFLAGS (x86-64 only), so that in-place kernels run as the wheel's
    extra = ["-mprefer-vector-width=512"] if platform.machine() == "x86_64" else []
    exts = [Extension(f"adcore.{n}", [f"adcore/{n}.pyx"], extra_compile_args=extra)
            for n in names]
    exts = cythonize(exts, compiler_directives=codegen["COMPILER_DIRECTIVES"])
    if "_tape" in names:
        codegen["add_kernel_clones"](ROOT / "adcore" / "_tape.c")
    dist = Distribution({"ext_modules": exts, "packages": ["adcore"]})
    cmd = dist.get_command_obj("build_ext")
    cmd.inplace = True
    cmd.build_temp = tempfile.mkdtemp(prefix="adcore-build-")
    cmd.ensure_finalized()
    cmd.run()


if __name__ == "__main__":
    main(sys.argv[1:])
