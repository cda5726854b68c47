"""Forward mode checked against the rule table: every rule's value against
math/numpy, its dual derivative against central finite differences, the kink
conventions and the zero-tangent convention."""

import math

import numpy as np
import pytest

import adcore
from adcore import Dual
from adcore._dual import plain_apply
from adcore._rules import RULES

SQRT2 = math.sqrt(2.0)

# the meaning of each rule, written independently of the table
REFERENCE = {
    "add": lambda x, y: x + y,
    "sub": lambda x, y: x - y,
    "mul": lambda x, y: x * y,
    "div": lambda x, y: x / y,
    "neg": lambda x: -x,
    "pow": math.pow,
    "mulz": lambda x, y: 0.0 if x == 0.0 else x * y,
    "xlogy": lambda x, y: 0.0 if x == 0.0 else x * math.log(y),
    "logz": lambda x: 0.0 if x == 0.0 else math.log(x),
    "heaviside": lambda x: float(np.heaviside(x, 0.5)),
    "abs": math.fabs,
    "sqrt": math.sqrt,
    "cbrt": lambda x: float(np.cbrt(x)),
    "exp": math.exp,
    "exp2": lambda x: 2.0 ** x,
    "expm1": math.expm1,
    "log": math.log,
    "log2": math.log2,
    "log10": math.log10,
    "log1p": math.log1p,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "asin": math.asin,
    "acos": math.acos,
    "atan": math.atan,
    "atan2": math.atan2,
    "hypot": math.hypot,
    "sinh": math.sinh,
    "cosh": math.cosh,
    "tanh": math.tanh,
    "asinh": math.asinh,
    "acosh": math.acosh,
    "atanh": math.atanh,
    "erf": math.erf,
    "erfc": math.erfc,
    "sigmoid": lambda x: 1.0 / (1.0 + math.exp(-x)),
    "softplus": lambda x: float(np.logaddexp(0.0, x)),
    "relu": lambda x: max(x, 0.0),
    "gelu": lambda x: 0.5 * x * (1.0 + math.erf(x / SQRT2)),
    "minimum": min,
    "maximum": max,
    "where": lambda c, a, b: a if c != 0.0 else b,
    "floor": math.floor,
    "ceil": math.ceil,
    "round": lambda x: float(np.rint(x)),
    "sign": lambda x: float(np.sign(x)),
    "less": lambda x, y: float(x < y),
    "less_equal": lambda x, y: float(x <= y),
    "greater": lambda x, y: float(x > y),
    "greater_equal": lambda x, y: float(x >= y),
    "equal": lambda x, y: float(x == y),
    "not_equal": lambda x, y: float(x != y),
}

IDS = [r.name for r in RULES]


def points(rule, n=6, seed=0):
    rng = np.random.default_rng(seed + rule.opcode)
    cols = [rng.uniform(lo, hi, n) for lo, hi in rule.domain]
    return [tuple(float(c[i]) for c in cols) for i in range(n)]


def call(rule, *args):
    """The rule through the public function, or through the dispatcher for helpers."""
    if rule.public:
        return getattr(adcore, rule.name)(*args)
    return adcore.dispatch.apply(rule.opcode, args)


def test_every_rule_has_a_reference():
    missing = sorted({r.name for r in RULES} - set(REFERENCE))
    assert not missing, f"rules without a reference in this test: {missing}"


def test_every_public_rule_is_exported():
    for rule in RULES:
        if rule.public:
            assert rule.name in adcore.__all__
            assert getattr(adcore, rule.name).__name__ == rule.name
        else:
            assert rule.name not in adcore.__all__


@pytest.mark.parametrize("rule", RULES, ids=IDS)
def test_value_matches_reference(rule):
    for pt in points(rule):
        want = REFERENCE[rule.name](*pt)
        got = call(rule, *pt)
        assert type(got) is float
        assert got == pytest.approx(want, rel=1e-13, abs=1e-14), (rule.name, pt)
        assert plain_apply(rule.opcode, pt) == got


@pytest.mark.parametrize("rule", RULES, ids=IDS)
def test_dual_derivative_matches_finite_differences(rule):
    n = rule.arity
    for pt in points(rule):
        duals = [Dual(v, np.eye(n)[i]) for i, v in enumerate(pt)]
        out = call(rule, *duals)
        assert type(out) is Dual and out.k == n
        assert out.value == call(rule, *pt)
        for i in range(n):
            if rule.partials[i] == "0.0":  # piecewise constant: exactly 0
                assert out.tangents[i] == 0.0
                continue
            h = 1e-6 * max(1.0, abs(pt[i]))
            up = list(pt)
            down = list(pt)
            up[i] += h
            down[i] -= h
            fd = (REFERENCE[rule.name](*up) - REFERENCE[rule.name](*down)) / (2 * h)
            assert out.tangents[i] == pytest.approx(fd, rel=1e-5, abs=1e-6), (rule.name, pt, i)


@pytest.mark.parametrize("rule", RULES, ids=IDS)
def test_one_direction_per_input_or_mixed_with_constants(rule):
    # each input active alone (the others plain floats) gives the same partial
    n = rule.arity
    pt = points(rule, 1)[0]
    full = call(rule, *[Dual(v, np.eye(n)[i]) for i, v in enumerate(pt)]).tangents
    for i in range(n):
        args = list(pt)
        args[i] = Dual(pt[i], [1.0])
        out = call(rule, *args)
        assert out.tangents[0] == full[i]


KINKS = [(rule, point, partials) for rule in RULES for point, partials in rule.kinks]
KINK_IDS = [f"{r.name}{p}" for r, p, _ in KINKS]


def _kink_param(rule, point, partials):
    return pytest.param(rule, point, partials)


@pytest.mark.parametrize("rule,point,partials",
                         [_kink_param(*k) for k in KINKS], ids=KINK_IDS)
def test_kink_conventions(rule, point, partials):
    n = rule.arity
    out = call(rule, *[Dual(v, np.eye(n)[i]) for i, v in enumerate(point)])
    assert list(out.tangents) == list(partials)
    arr = call(rule, *[adcore.DualArray(np.array([v]), np.eye(n)[i][:, None])
                       for i, v in enumerate(point)])
    assert list(arr.tangents[:, 0]) == list(partials)


def test_documented_conventions():
    d = lambda f, x: adcore.derivative(f)(x)  # noqa: E731
    assert d(adcore.abs, 0.0) == 0.0
    assert d(adcore.relu, 0.0) == 0.0
    assert d(lambda x: adcore.maximum(x, 1.0), 1.0) == 0.5
    assert d(lambda x: adcore.minimum(1.0, x), 1.0) == 0.5
    assert d(adcore.sqrt, 0.0) == math.inf
    assert d(adcore.cbrt, 0.0) == math.inf
    for f in (adcore.floor, adcore.ceil, adcore.round, adcore.sign):
        assert d(f, 0.0) == 0.0 and d(f, 1.5) == 0.0
    assert d(lambda x: x ** 2.0, 0.0) == 0.0
    assert d(lambda x: 0.0 ** x, 2.0) == 0.0


def test_zero_tangent_contributes_exactly_zero():
    # sqrt'(0) is inf, but a direction the input does not move in stays 0
    out = adcore.sqrt(Dual(0.0, [0.0, 1.0]))
    assert out.tangents[0] == 0.0 and out.tangents[1] == math.inf
    out = Dual(0.0, [1.0, 0.0]) * math.inf
    assert np.isnan(out.tangents[0]) or out.tangents[0] == math.inf
    assert out.tangents[1] == 0.0
    # the untaken branch of a where does not poison the derivative
    f = lambda x: adcore.where(x > 0.0, adcore.sqrt(x), 0.0)  # noqa: E731
    assert adcore.derivative(f)(0.0) == 0.0
    arr = adcore.sqrt(adcore.DualArray(np.zeros(3), np.array([[0.0, 1.0, 0.0]])))
    assert list(arr.tangents[0]) == [0.0, math.inf, 0.0]


def test_nan_and_inf_follow_ieee_without_crashing():
    assert math.isnan(adcore.log(-1.0))
    assert adcore.log(0.0) == -math.inf
    assert adcore.div(1.0, 0.0) == math.inf
    out = adcore.log(Dual(-1.0, [1.0]))
    assert math.isnan(out.value)
    with np.errstate(all="ignore"):
        arr = adcore.log(np.array([-1.0, 0.0, 1.0]))
    assert math.isnan(arr[0]) and arr[1] == -math.inf and arr[2] == 0.0


@pytest.mark.parametrize("rule", RULES, ids=IDS)
def test_arrays_match_scalars(rule):
    # plain arrays: the same C value as the scalar path, float64 and float32
    pts = points(rule, 5)
    cols = [np.array([p[i] for p in pts]) for i in range(rule.arity)]
    got = call(rule, *cols)
    assert got.dtype == np.float64
    assert list(got) == [call(rule, *p) for p in pts]
    got32 = call(rule, *[c.astype(np.float32) for c in cols])
    assert got32.dtype == np.float32
    want32 = [np.float32(call(rule, *[float(np.float32(v)) for v in p])) for p in pts]
    assert list(got32) == want32
