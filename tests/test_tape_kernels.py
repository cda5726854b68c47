"""Every operand layout of the element-wise reverse kernels (array with array,
array with a constant, array with a scalar handle; float64 and float32) against
the scalar reverse sweep at each element."""

import numpy as np
import pytest

import adcore
from adcore._rules import RULES
from adcore.dispatch import apply

BINARY = [r for r in RULES if r.arity == 2]


def _scalar_grad(rule, *xs):
    """The rule's gradient at scalar points, by the scalar sweep."""
    return adcore.grad(lambda *a: apply(rule.opcode, a), argnums=tuple(range(len(xs))))(*xs)


def _close(got, want, dtype, what):
    tol = 1e-12 if dtype == np.float64 else 3e-5
    if np.isnan(want):
        assert np.isnan(got), what
    else:
        assert float(got) == pytest.approx(want, rel=tol, abs=tol), what


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("rule", BINARY, ids=lambda r: r.name)
def test_array_with_a_constant_or_scalar_handle(rule, dtype):
    rng = np.random.default_rng(rule.opcode)
    (lx, hx), (ly, hy) = rule.domain
    xs = rng.uniform(lx, hx, 9).astype(dtype)
    ys = rng.uniform(ly, hy, 9).astype(dtype)
    c = float(ys[0]) if rule.name != "pow" else 2.0     # pow's x**2 fast path too
    d = float(xs[0])
    w = rng.uniform(0.5, 1.5, 9)
    # array op constant, constant op array
    gx = adcore.grad(lambda a: (apply(rule.opcode, (a, c)) * w).sum())(xs)
    gy = adcore.grad(lambda b: (apply(rule.opcode, (d, b)) * w).sum())(ys)
    # array op scalar handle: the handle receives the sum
    ga, gs = adcore.grad(lambda a, s: (apply(rule.opcode, (a, s)) * w).sum(),
                         argnums=(0, 1))(xs, c)
    assert gx.dtype == dtype and gy.dtype == dtype and ga.dtype == dtype
    total = 0.0
    for k in range(9):
        px = _scalar_grad(rule, float(xs[k]), c)
        py = _scalar_grad(rule, d, float(ys[k]))
        _close(gx[k], px[0] * w[k], dtype, (rule.name, "x op c", k))
        _close(ga[k], px[0] * w[k], dtype, (rule.name, "x op s", k))
        _close(gy[k], py[1] * w[k], dtype, (rule.name, "c op y", k))
        total += px[1] * w[k]
    _close(gs, total, dtype, (rule.name, "scalar handle"))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_square_at_zero_inf_and_nan(dtype):
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1.5], dtype)
    g = adcore.grad(lambda a: (a ** 2.0).sum())(x)
    np.testing.assert_array_equal(g, np.array([0.0, 0.0, np.inf, -np.inf, np.nan, 3.0], dtype))
    # a zero cotangent contributes exactly 0 even where the partial is infinite
    g = adcore.grad(lambda a: (a ** 2.0 * 0.0).sum())(x[:4])
    np.testing.assert_array_equal(g, np.zeros(4, dtype))


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.name)
def test_array_kernels_give_the_scalar_sweeps_bits(rule):
    # The array kernels are compiled per CPU (AVX-512, AVX2, baseline clones); the
    # scalar sweep once.  Every float64 partial must be the same bits either way: a
    # clone built with FMA contraction (gcc's avx512f target implies FMA) would round
    # 1 - r*r (tanh), 1 + x*x (atan), ... once instead of twice.
    rng = np.random.default_rng(100 + rule.opcode)
    cols = [rng.uniform(lo, hi, 1000) for lo, hi in rule.domain]
    if rule.name == "pow":
        cols[1] = cols[1] + 0.25      # not the exponent 2.0, which arrays take as x * x
    argnums = tuple(range(rule.arity))
    got = adcore.grad(lambda *a: adcore.sum(apply(rule.opcode, a)), argnums=argnums)(*cols)
    for k in range(0, 1000, 7):
        want = _scalar_grad(rule, *[float(c[k]) for c in cols])
        for j in range(rule.arity):
            assert np.array_equal(got[j][k], want[j], equal_nan=True), (rule.name, j, k)
