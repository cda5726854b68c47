"""Nested differentiation: tags keep perturbations apart; NestedDual evaluates the
rule table's partial expressions on values of outer differentiations."""

import math

import numpy as np
import pytest

import adcore
from adcore import Dual, DualArray, NestedDual, NestingError, derivative
from adcore._rules import RULES

from test_rules_forward import REFERENCE, call, points  # noqa: E402


def test_perturbation_confusion_is_avoided():
    # Siskind & Pearlmutter: d/dx [x * d/dy (x + y)] at 1 is 1, never 2
    assert derivative(lambda x: x * derivative(lambda y: x + y)(1.0))(1.0) == 1.0
    assert derivative(lambda x: derivative(lambda y: x * y)(2.0))(3.0) == 1.0


@pytest.mark.parametrize("x", [-1.3, 0.0, 0.4, 2.0])
def test_second_and_third_derivatives_of_sin(x):
    assert derivative(derivative(adcore.sin))(x) == -math.sin(x)
    assert derivative(derivative(derivative(adcore.sin)))(x) == -math.cos(x)
    assert derivative(derivative(derivative(derivative(adcore.sin))))(x) == math.sin(x)


def test_higher_derivatives_of_polynomials_and_compositions():
    f = lambda x: x ** 5.0 - 3.0 * x ** 2.0  # noqa: E731
    d = derivative
    assert d(f)(2.0) == pytest.approx(5 * 16 - 12)
    assert d(d(f))(2.0) == pytest.approx(20 * 8 - 6)
    assert d(d(d(f)))(2.0) == pytest.approx(60 * 4)
    g = lambda x: adcore.exp(adcore.sin(x) * x)  # noqa: E731
    x = 0.7
    gp = lambda x: math.exp(math.sin(x) * x) * (math.cos(x) * x + math.sin(x))  # noqa: E731
    h = 1e-5
    assert d(g)(x) == pytest.approx(gp(x), rel=1e-12)
    assert d(d(g))(x) == pytest.approx((gp(x + h) - gp(x - h)) / (2 * h), rel=1e-7)


# rules whose second derivative is smooth on the test domain
SMOOTH = [r for r in RULES if r.arity == 1 and r.public and r.partials[0] != "0.0"
          and r.name not in ("abs", "relu")]


@pytest.mark.parametrize("rule", SMOOTH, ids=[r.name for r in SMOOTH])
def test_second_derivative_of_every_smooth_unary_rule(rule):
    f = getattr(adcore, rule.name)
    ref = REFERENCE[rule.name]
    for (x,) in points(rule, 3, seed=5):
        h = 1e-4 * max(1.0, abs(x))
        fd2 = (ref(x + h) - 2 * ref(x) + ref(x - h)) / h ** 2
        assert derivative(derivative(f))(x) == pytest.approx(fd2, rel=2e-4, abs=2e-4)


def test_mixed_partials_of_binary_rules_by_nesting():
    # d/dx d/dy of x*y is 1; of atan2(x, y) it matches finite differences
    mixed = lambda f, x, y: derivative(lambda a: derivative(lambda b: f(a, b))(y))(x)  # noqa
    assert mixed(lambda a, b: a * b, 2.0, 3.0) == 1.0
    x, y, h = 0.7, 1.3, 1e-4
    dy = lambda a, b: -a / (a * a + b * b)  # noqa: E731
    fd = (dy(x + h, y) - dy(x - h, y)) / (2 * h)
    assert mixed(adcore.atan2, x, y) == pytest.approx(fd, rel=1e-7)


def test_nested_dual_components_and_collapse():
    outer = Dual(2.0, [1.0], tag=1)
    inner = Dual(3.0, [1.0], tag=2)
    z = outer * inner
    assert isinstance(z, NestedDual) and z.tag == 2 and z.k == 1
    assert isinstance(z.value, Dual) and z.value.value == 6.0
    assert z.value.tangents.tolist() == [3.0]
    t = z.tangents[0]  # d/dinner = outer, a Dual of tag 1
    assert isinstance(t, Dual) and t.value == 2.0 and t.tangents.tolist() == [1.0]
    # with only plain parts the result collapses to an ordinary Dual
    w = NestedDual(2.0, [1.0], tag=5) * 3.0
    assert type(w) is Dual and w.tag == 5 and w.tangents.tolist() == [3.0]
    assert float(z) == 6.0 and (z > 5.0) is True


def test_nesting_with_arrays_in_elementwise_code():
    x0 = np.array([0.3, 1.1, -0.4])
    # d/ds of (d/dt sum(sin(s * t * x0)) at t=1) at s=1: sum(x0 cos(x0) - x0^2 sin(x0))
    def inner(s):
        return derivative(lambda t: adcore.sin(s * t * x0))(1.0)
    got = derivative(inner)(1.0)
    want = x0 * np.cos(x0) - x0 ** 2 * np.sin(x0)
    assert np.allclose(got, want, rtol=1e-14, atol=1e-14)


def test_jvp_inside_derivative():
    def f(a):
        _, t = adcore.jvp(lambda x: x * x * a, (3.0,), (1.0,))
        return t  # 6 a
    assert derivative(f)(2.0) == 6.0


def test_jacfwd_of_jacfwd_is_the_hessian_for_scalars():
    f = lambda x, y: x * x * y + adcore.sin(y)  # noqa: E731
    hxx = adcore.jacfwd(adcore.jacfwd(f, argnums=0), argnums=0)(1.5, 0.5)
    hxy = adcore.jacfwd(adcore.jacfwd(f, argnums=0), argnums=1)(1.5, 0.5)
    assert hxx == pytest.approx(2 * 0.5) and hxy == pytest.approx(2 * 1.5)


def test_unsupported_nestings_raise_nesting_error():
    # a perturbation escaping its differentiation is reported, never silently used
    leak = []
    derivative(lambda y: leak.append(y) or y)(1.0)
    with pytest.raises(NestingError, match="escaped"):
        derivative(lambda x: x * leak[0])(2.0)
    with pytest.raises(NestingError):
        NestedDual(Dual(1.0, [1.0], tag=4), [1.0], tag=3)


def test_linear_array_primitives_carry_nested_differentiations():
    x0 = np.array([1.0, 2.0, 4.0])
    # d/ds d/dt sum(s t x0) = sum(x0)
    got = derivative(lambda s: derivative(lambda t: adcore.sum(s * t * x0))(1.0))(1.0)
    assert got == 7.0
    m = np.array([[1.0, 2.0], [3.0, 4.0]])
    # d/ds d/dt of (s t m @ (s x) )[0] = d/ds of (s m @ (s x))[0] = 2 s (m @ x)[0]
    x = np.array([0.5, -1.0])
    got = derivative(lambda s: derivative(
        lambda t: ((s * t * m) @ (s * x))[0])(1.0))(3.0)
    assert got == pytest.approx(2 * 3.0 * (m @ x)[0])
    parts = derivative(lambda s: derivative(
        lambda t: adcore.stack([s * t, t * 2.0]).reshape(2, 1).T.mean())(1.0))(1.0)
    assert parts == 0.5


def test_nonlinear_array_primitives_carry_nested_differentiations():
    # d/ds d/dt max(s t x0) = max(x0) (the maximum stays at the same place)
    x0 = np.array([1.0, 2.0])
    assert derivative(lambda s: derivative(lambda t: adcore.max(s * t * x0))(1.0))(1.0) == 2.0
    # d2/ds2 logsumexp(s x0) = var of x0 under softmax(s x0)
    p = np.exp(x0 * 0.5) / np.exp(x0 * 0.5).sum()
    var = (p * x0 ** 2).sum() - (p * x0).sum() ** 2
    got = derivative(derivative(lambda s: adcore.nn.logsumexp(s * x0)))(0.5)
    assert got == pytest.approx(var, rel=1e-14)


def test_jacfwd_of_jacfwd_of_an_array_function_is_the_hessian():
    f = lambda v: (adcore.sin(v) * v[0]).sum()  # noqa: E731
    v = np.array([0.3, 0.7])
    h = adcore.forward.jacfwd(adcore.forward.jacfwd(f))(v)
    want = [[2 * np.cos(0.3) - 0.3 * np.sin(0.3), np.cos(0.7)],
            [np.cos(0.7), -0.3 * np.sin(0.7)]]
    assert np.allclose(h, want, rtol=1e-14)


def test_forward_inside_reverse():
    assert adcore.grad(lambda x: derivative(adcore.sin)(x))(0.3) == pytest.approx(
        -math.sin(0.3), rel=1e-15)
    assert adcore.grad(lambda x: adcore.jvp(lambda y: y * y * x, (2.0,), (1.0,))[1])(3.0) == 4.0


def test_comparisons_inside_forward_mode_are_recorded_by_an_outer_tape():
    # a derivative taken inside a recording: the branch it takes is checked on replay
    g = lambda x: x ** 3 if x > 0 else adcore.sin(x)  # noqa: E731
    tape = adcore.record(lambda x: adcore.derivative(g)(x), 1.0)
    assert tape(2.0) == 12.0
    with pytest.raises(adcore.BranchChangedError):
        tape(-1.0)
