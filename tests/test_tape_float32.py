"""float32 values get float32 cotangents end to end (reverse and replay)."""

import numpy as np
import pytest

import adcore
from adcore.primitives import Primitive


class _Probe(Primitive):
    """The identity, remembering the dtype of every cotangent its vjp receives."""

    name = "test_float32_probe"

    def __init__(self):
        self.seen = []

    def value(self, x):
        return np.array(x, copy=True)

    def jvp(self, xs, dxs, out):
        return dxs[0]

    def vjp(self, g, xs, out, needs):
        self.seen.append(np.asarray(g).dtype)
        return (np.array(g, copy=True),)


PROBE = _Probe().register()


def _program(x, s):
    # every layout of the element-wise kernels: array-array, array-scalar handle,
    # array-constant, a ternary rule (where), a unary rule, a scalar primitive
    y = PROBE(x)
    z = adcore.sin(y) * y + s * y - 0.5 / (1.0 + y * y)
    w = adcore.where(y > 0.1, z, adcore.tanh(y) * s)
    return (w ** 2.0).sum() + s * s


@pytest.mark.parametrize("n", [1, 7, 600])
def test_float32_cotangents_reach_primitives_as_float32(n):
    rng = np.random.default_rng(n)
    x = rng.standard_normal(n).astype(np.float32)
    PROBE.seen.clear()
    v, (gx, gs) = adcore.value_and_grad(_program, argnums=(0, 1))(x, 0.75)
    assert PROBE.seen == [np.dtype(np.float32)]
    assert gx.dtype == np.float32
    # the same program in float64 agrees to float32 rounding
    v64, (gx64, gs64) = adcore.value_and_grad(_program, argnums=(0, 1))(
        x.astype(np.float64), 0.75)
    np.testing.assert_allclose(gx, gx64, rtol=2e-5, atol=2e-6)
    assert gs == pytest.approx(gs64, rel=2e-5)
    assert v == pytest.approx(v64, rel=2e-5)


def test_float32_replay_keeps_float32_and_matches_recording():
    rng = np.random.default_rng(3)
    x0 = rng.standard_normal(50).astype(np.float32)
    x1 = rng.standard_normal(50).astype(np.float32)
    tape = adcore.record(lambda x: _program(x, 0.75), x0)
    PROBE.seen.clear()
    g = tape.gradient(x1)
    assert PROBE.seen == [np.dtype(np.float32)]
    assert g.dtype == np.float32
    try:
        want = adcore.grad(lambda x: _program(x, 0.75))(x1)
    except adcore.BranchChangedError:
        pytest.skip("the comparison came out differently at x1")
    np.testing.assert_array_equal(g, want)


def test_mixed_float32_and_float64_operands():
    a = np.array([1.0, -2.0, 3.0], np.float32)
    b = np.array([0.5, 0.25, -1.5], np.float64)
    ga, gb = adcore.grad(lambda a, b: (a * b + adcore.exp(a)).sum(), argnums=(0, 1))(a, b)
    assert ga.dtype == np.float32 and gb.dtype == np.float64
    np.testing.assert_allclose(ga, b + np.exp(a.astype(np.float64)), rtol=1e-6)
    np.testing.assert_allclose(gb, a.astype(np.float64), rtol=1e-12)


def test_float32_scalar_constant_is_not_rounded_before_use():
    # the constant enters the float kernel as a double: 1/3 rounded once at the end
    x = np.array([3.0], np.float32)
    g = adcore.grad(lambda x: (x * (1.0 / 3.0)).sum())(x)
    assert g.dtype == np.float32
    assert g[0] == np.float32(1.0 / 3.0)
