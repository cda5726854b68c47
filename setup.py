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

ROOT = pathlib.Path(__file__).resolve().parent
codegen = runpy.run_path(str(ROOT / "tools" / "codegen.py"))
codegen["render_all"]()

extensions = [
    Extension(f"adcore.{pyx.stem}", [str(pyx.relative_to(ROOT))])
    for pyx in sorted((ROOT / "adcore").glob("*.pyx"))
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives=codegen["COMPILER_DIRECTIVES"],
    ),
)
