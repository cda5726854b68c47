"""The rule table: every elementary operation of adcore, declared once.

Pure data (standard library only), read by the code generator at build time
(``tools/codegen.py`` renders the Cython kernels from it) and at run time by the
nested-dual fallback and by the tests.

A row is ``Rule(name, arity, value, partials, domain, ...)``:

* ``value``: C code for the result, in terms of the inputs ``x``, ``y``, ``z``
  (as many as ``arity``).  libm functions and the ternary operator may be used.
* ``partials``: one expression per input, the local partial derivative
  d result / d input.  Written in the *partial language*: Python expression
  syntax with the names ``x``, ``y``, ``z`` (inputs) and ``r`` (the result),
  float literals, ``+ - * /``, unary minus, and calls to other rules by name.
  The generator translates it to C for the kernels; the nested-dual fallback
  evaluates it in Python with adcore's own functions, so second derivatives come
  from the same text.  A partial that is the literal ``"0.0"`` means the
  operation is piecewise constant.
* ``domain``: ``(low, high)`` per input, where the tests sample points.
* ``compare``: the result is a truth value (0.0 or 1.0); taped comparisons
  record their outcome so that a replay taking another branch is detected.
* ``public``: exported as ``adcore.<name>`` (operators are reached through
  Python's operator protocol instead).
* ``kinks``: points where the operation is not differentiable and the
  convention (documented in the README) picks a one-sided or averaged value;
  the tests check forward = reverse = the stated value there.

Conventions at non-differentiable points (PyTorch's): abs'(0) = sign(0) = 0,
relu'(0) = 0, maximum/minimum split a tie 1/2 : 1/2, sqrt'(0) = cbrt'(0) = inf,
d/dy x**y = 0 at x = 0 (the exponent does not move 0**y),
floor/ceil/round/sign have derivative 0 everywhere.  Everywhere in the
kernels a zero tangent or cotangent contributes exactly zero, even through an
infinite or NaN partial, so an untaken ``where`` branch cannot poison a
gradient.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Tuple

LN2 = "0.6931471805599453"
LN10 = "2.302585092994046"
TWO_OVER_SQRT_PI = "1.1283791670955126"


@dataclass(frozen=True)
class Rule:
    name: str
    arity: int
    value: str
    partials: Tuple[str, ...]
    domain: Tuple[Tuple[float, float], ...]
    compare: bool = False
    public: bool = True
    operator: Optional[str] = None  # Python operator symbol, for the docs/tests
    kinks: Tuple[Tuple[Tuple[float, ...], Tuple[float, ...]], ...] = field(default=())

    @property
    def opcode(self) -> int:
        return OPCODES[self.name]


U = ((-3.0, 3.0),)
POS = ((0.1, 4.0),)
UNIT = ((-0.9, 0.9),)
B = ((-3.0, 3.0), (-3.0, 3.0))

RULES: Tuple[Rule, ...] = (
    # arithmetic
    Rule("add", 2, "x + y", ("1.0", "1.0"), B, operator="+"),
    Rule("sub", 2, "x - y", ("1.0", "-1.0"), B, operator="-"),
    Rule("mul", 2, "x * y", ("y", "x"), B, operator="*"),
    Rule("div", 2, "x / y", ("1.0 / y", "-r / y"), ((-3.0, 3.0), (0.5, 3.0)), operator="/"),
    Rule("neg", 1, "-x", ("-1.0",), U, operator="unary -"),
    # squares and first powers skip libm's pow (same result, several times faster)
    Rule("pow", 2, "(x * x if y == 2.0 else (x if y == 1.0 else pow(x, y)))",
         ("mulz(y, pow(x, y - 1.0))", "r * logz(x)"),
         ((0.2, 3.0), (-2.0, 2.5)), operator="**",
         kinks=(((0.0, 2.0), (0.0, 0.0)), ((0.0, 0.0), (0.0, 0.0)))),
    # helpers that other rules' partials use
    Rule("mulz", 2, "(0.0 if x == 0.0 else x * y)", ("y", "x"), B, public=False),
    Rule("xlogy", 2, "(0.0 if x == 0.0 else x * log(y))", ("log(y)", "x / y"),
         ((-3.0, 3.0), (0.2, 3.0))),
    Rule("heaviside", 1, "(1.0 if x > 0.0 else (0.5 if x == 0.0 else 0.0))", ("0.0",), U,
         public=False),
    # absolute value, roots, powers
    Rule("abs", 1, "fabs(x)", ("sign(x)",), U, kinks=(((0.0,), (0.0,)),)),
    Rule("sqrt", 1, "sqrt(x)", ("0.5 / r",), POS),
    Rule("cbrt", 1, "cbrt(x)", ("1.0 / (3.0 * r * r)",), U),
    # exponentials and logarithms
    Rule("exp", 1, "exp(x)", ("r",), U),
    Rule("exp2", 1, "exp2(x)", (f"r * {LN2}",), U),
    Rule("expm1", 1, "expm1(x)", ("r + 1.0",), U),
    Rule("log", 1, "log(x)", ("1.0 / x",), POS),
    Rule("log2", 1, "log2(x)", (f"1.0 / (x * {LN2})",), POS),
    Rule("log10", 1, "log10(x)", (f"1.0 / (x * {LN10})",), POS),
    Rule("log1p", 1, "log1p(x)", ("1.0 / (1.0 + x)",), ((-0.9, 3.0),)),
    # trigonometry
    Rule("sin", 1, "sin(x)", ("cos(x)",), U),
    Rule("cos", 1, "cos(x)", ("-sin(x)",), U),
    Rule("tan", 1, "tan(x)", ("1.0 + r * r",), ((-1.3, 1.3),)),
    Rule("asin", 1, "asin(x)", ("1.0 / sqrt(1.0 - x * x)",), UNIT),
    Rule("acos", 1, "acos(x)", ("-1.0 / sqrt(1.0 - x * x)",), UNIT),
    Rule("atan", 1, "atan(x)", ("1.0 / (1.0 + x * x)",), U),
    Rule("atan2", 2, "atan2(x, y)", ("y / (x * x + y * y)", "-x / (x * x + y * y)"),
         ((-3.0, 3.0), (0.3, 3.0))),
    Rule("hypot", 2, "hypot(x, y)", ("x / r", "y / r"), ((0.2, 3.0), (-3.0, -0.2))),
    # hyperbolic
    Rule("sinh", 1, "sinh(x)", ("cosh(x)",), U),
    Rule("cosh", 1, "cosh(x)", ("sinh(x)",), U),
    Rule("tanh", 1, "tanh(x)", ("1.0 - r * r",), U),
    Rule("asinh", 1, "asinh(x)", ("1.0 / sqrt(x * x + 1.0)",), U),
    Rule("acosh", 1, "acosh(x)", ("1.0 / sqrt(x * x - 1.0)",), ((1.1, 4.0),)),
    Rule("atanh", 1, "atanh(x)", ("1.0 / (1.0 - x * x)",), UNIT),
    # special functions
    Rule("erf", 1, "erf(x)", (f"{TWO_OVER_SQRT_PI} * exp(-(x * x))",), U),
    Rule("erfc", 1, "erfc(x)", (f"-{TWO_OVER_SQRT_PI} * exp(-(x * x))",), U),
    # activations (stable forms: no overflow for large |x|)
    Rule("sigmoid", 1, "(1.0 / (1.0 + exp(-x)) if x >= 0.0 else exp(x) / (1.0 + exp(x)))",
         ("r * (1.0 - r)",), ((-30.0, 30.0),)),
    Rule("softplus", 1, "(x + log1p(exp(-x)) if x > 0.0 else log1p(exp(x)))",
         ("sigmoid(x)",), ((-30.0, 30.0),)),
    Rule("relu", 1, "(x if x > 0.0 else (0.0 if x <= 0.0 else x))", ("greater(x, 0.0)",), U,
         kinks=(((0.0,), (0.0,)),)),
    Rule("gelu", 1, "0.5 * x * (1.0 + erf(x * 0.7071067811865476))",
         ("0.5 * (1.0 + erf(x * 0.7071067811865476))"
          " + x * exp(-0.5 * (x * x)) * 0.3989422804014327",), U),
    # piecewise; a NaN operand gives NaN (as numpy.maximum / torch.relu)
    Rule("minimum", 2, "(x if x < y else (y if y < x else (x if x == y else x + y)))",
         ("heaviside(y - x)", "heaviside(x - y)"), B, kinks=(((1.0, 1.0), (0.5, 0.5)),)),
    Rule("maximum", 2, "(x if x > y else (y if y > x else (x if x == y else x + y)))",
         ("heaviside(x - y)", "heaviside(y - x)"), B, kinks=(((1.0, 1.0), (0.5, 0.5)),)),
    Rule("where", 3, "(y if x != 0.0 else z)",
         ("0.0", "not_equal(x, 0.0)", "equal(x, 0.0)"),
         ((-1.0, 1.0), (-3.0, 3.0), (-3.0, 3.0))),
    # piecewise constant: derivative 0 everywhere
    Rule("floor", 1, "floor(x)", ("0.0",), U),
    Rule("ceil", 1, "ceil(x)", ("0.0",), U),
    Rule("round", 1, "nearbyint(x)", ("0.0",), U),  # half to even, as Python and numpy
    Rule("sign", 1, "(1.0 if x > 0.0 else (-1.0 if x < 0.0 else x))", ("0.0",), U),
    # comparisons: truth values 0.0 / 1.0
    Rule("less", 2, "(1.0 if x < y else 0.0)", ("0.0", "0.0"), B, compare=True, operator="<"),
    Rule("less_equal", 2, "(1.0 if x <= y else 0.0)", ("0.0", "0.0"), B, compare=True,
         operator="<="),
    Rule("greater", 2, "(1.0 if x > y else 0.0)", ("0.0", "0.0"), B, compare=True,
         operator=">"),
    Rule("greater_equal", 2, "(1.0 if x >= y else 0.0)", ("0.0", "0.0"), B, compare=True,
         operator=">="),
    Rule("equal", 2, "(1.0 if x == y else 0.0)", ("0.0", "0.0"), B, compare=True,
         operator="=="),
    Rule("not_equal", 2, "(1.0 if x != y else 0.0)", ("0.0", "0.0"), B, compare=True,
         operator="!="),
    # log with log(0) := 0: pow's exponent partial is 0 at base 0 (JAX's and PyTorch's choice)
    Rule("logz", 1, "(0.0 if x == 0.0 else log(x))", ("1.0 / x",), POS, public=False),
)

# numpy ufuncs that are one rule of the table (numpy's protocols and Vector use it)
NUMPY_UFUNCS = {
    "add": "add", "subtract": "sub", "multiply": "mul", "divide": "div",
    "true_divide": "div", "negative": "neg", "power": "pow", "float_power": "pow",
    "absolute": "abs", "fabs": "abs", "sqrt": "sqrt", "cbrt": "cbrt", "exp": "exp",
    "exp2": "exp2", "expm1": "expm1", "log": "log", "log2": "log2", "log10": "log10",
    "log1p": "log1p", "sin": "sin", "cos": "cos", "tan": "tan", "arcsin": "asin",
    "arccos": "acos", "arctan": "atan", "arctan2": "atan2", "hypot": "hypot",
    "sinh": "sinh", "cosh": "cosh", "tanh": "tanh", "arcsinh": "asinh",
    "arccosh": "acosh", "arctanh": "atanh", "minimum": "minimum", "maximum": "maximum",
    "floor": "floor", "ceil": "ceil", "rint": "round", "sign": "sign",
    "less": "less", "less_equal": "less_equal", "greater": "greater",
    "greater_equal": "greater_equal", "equal": "equal", "not_equal": "not_equal",
}

OPCODES = {rule.name: i for i, rule in enumerate(RULES)}
BY_NAME = {rule.name: rule for rule in RULES}
