"""adcore: a compiled automatic-differentiation core for Python.

Forward mode (dual numbers with k tangents) and reverse mode (a recorded tape)
run in C; this package's Python layer adds coordinate-set vectors, Jacobians,
the chain rule and deep-learning operations.  See ARCHITECTURE.md.
"""

from .errors import (AdcoreError, BranchChangedError, CoordinateError, NestingError,
                     TapeError, TapeFormatError)
from .trees import flatten as tree_flatten, unflatten as tree_unflatten, tree_map
from .primitives import Primitive
from .array_ops import (amax as max, broadcast_to, concatenate, getitem, matmul, mean,
                        reshape, stack, sum, transpose)
from .coords import SCALAR, Named, Product, Range
from .vectors import Vector, basis, distance
from .linear import Matrix, identity, matrix_of
from ._dual import Dual, DualArray, PUBLIC_FUNCTIONS as _ELEMENTWISE
from .nested import NestedDual
from .forward import derivative, jacfwd, jvp
from ._tape import Tape
from .reverse import grad, jacrev, load_tape, record, value_and_grad, vjp
from ._dual import (  # the element-wise functions, one per public rule of _rules.py
    add, sub, mul, div, neg, pow, xlogy, abs, sqrt, cbrt, exp, exp2, expm1, log, log2,
    log10, log1p, sin, cos, tan, asin, acos, atan, atan2, hypot, sinh, cosh, tanh,
    asinh, acosh, atanh, erf, erfc, sigmoid, softplus, relu, gelu, minimum, maximum,
    where, floor, ceil, round, sign, less, less_equal, greater, greater_equal, equal,
    not_equal)
# keep after the engines' imports: Vector-aware jacfwd/jacrev replace theirs
from .drivers import (chain, compose, hessian, hvp, jacfwd, jacobian, jacrev,
                      value_and_jacobian)
from . import nn  # adcore.nn: deep-learning operations, layers, optimizers, data
from . import numpy_api  # numpy's protocols (NEP 13/18) on adcore values
from . import optimize  # adcore.optimize.scipy_functions: fun/jac/hess/hessp for scipy
from . import batched  # adcore.batched: a tape at many stacked points (Tape.map, ...)

__version__ = "0.1.0"

# The public API, for `from adcore import *` and for type checkers (mypy
# --strict re-exports from a py.typed package only what is listed here).
# Add every new export; tests/test_package.py checks the list.
__all__ = [
    "AdcoreError", "BranchChangedError", "CoordinateError", "NestingError", "TapeError",
    "TapeFormatError", "tree_flatten", "tree_unflatten", "tree_map", "Primitive",
    "max", "broadcast_to", "concatenate", "getitem", "matmul", "mean", "reshape", "stack",
    "sum", "transpose",
    "SCALAR", "Named", "Product", "Range", "Vector", "basis", "distance", "Matrix",
    "identity", "matrix_of", "jacobian", "hessian", "hvp", "chain", "compose",
    "value_and_jacobian",
    "Dual", "DualArray", "NestedDual", "jvp", "derivative", "jacfwd",
    "Tape", "record", "load_tape", "grad", "value_and_grad", "vjp", "jacrev",
]
# The element-wise functions (_ELEMENTWISE), spelled out: type checkers read
# only literal lists here.  tests/test_package.py checks both lists together.
__all__ += [
    "abs", "acos", "acosh", "add", "asin", "asinh", "atan", "atan2", "atanh", "cbrt",
    "ceil", "cos", "cosh", "div", "equal", "erf", "erfc", "exp", "exp2", "expm1",
    "floor", "gelu", "greater", "greater_equal", "hypot", "less", "less_equal", "log",
    "log10", "log1p", "log2", "maximum", "minimum", "mul", "neg", "not_equal", "pow",
    "relu", "round", "sigmoid", "sign", "sin", "sinh", "softplus", "sqrt", "sub", "tan",
    "tanh", "where", "xlogy",
]
