"""adcore.DualArray: forward mode over numpy arrays with element-wise C kernels."""

import math

import numpy as np
import pytest

import adcore
from adcore import Dual, DualArray
from adcore._rules import RULES

from test_rules_forward import call, points  # noqa: E402  (tests/ is on sys.path)

IDS = [r.name for r in RULES]


@pytest.mark.parametrize("rule", RULES, ids=IDS)
def test_array_derivatives_equal_scalar_duals(rule):
    n = rule.arity
    pts = points(rule, 7, seed=11)
    # two directions per input: e_i and a second one, (k, 7) each
    tans = [np.stack([np.full(7, 1.0 if d == i else 0.0) for d in range(n)]
                     + [np.linspace(-1, 1, 7) * (i + 1)]) for i in range(n)]
    cols = [np.array([p[i] for p in pts]) for i in range(n)]
    out = call(rule, *[DualArray(c, t) for c, t in zip(cols, tans)])
    assert isinstance(out, DualArray) and out.k == n + 1 and out.dtype == np.float64
    for e in range(7):
        scalar = call(rule, *[Dual(cols[i][e], tans[i][:, e]) for i in range(n)])
        assert out.value[e] == scalar.value
        assert out.tangents[:, e].tolist() == scalar.tangents.tolist(), (rule.name, e)


@pytest.mark.parametrize("rule", RULES, ids=IDS)
def test_float32_stays_float32(rule):
    n = rule.arity
    pts = points(rule, 5, seed=3)
    cols = [np.array([p[i] for p in pts], dtype=np.float32) for i in range(n)]
    args = [DualArray(c, np.ones((1, 5), np.float32)) for c in cols]
    out = call(rule, *args)
    assert out.dtype == np.float32 and out.tangents.dtype == np.float32
    ref = call(rule, *[DualArray(c.astype(np.float64), np.ones((1, 5))) for c in cols])
    assert np.allclose(out.value, ref.value, rtol=2e-6, atol=2e-6)
    assert np.allclose(out.tangents, ref.tangents, rtol=1e-4, atol=1e-4, equal_nan=True)
    # python floats and Duals are weak: they keep float32
    assert (args[0] * 2.0).dtype == np.float32
    assert (args[0] + Dual(1.0, [1.0])).dtype == np.float32
    assert (args[0] + np.ones(5)).dtype == np.float64


def test_int_and_bool_arrays_compute_in_float64():
    x = DualArray(np.arange(3), np.ones((1, 3)))
    assert x.dtype == np.float64
    assert adcore.sin(np.arange(3)).dtype == np.float64
    assert (x + np.array([True, False, True])).value.tolist() == [1.0, 1.0, 3.0]


def test_broadcasting():
    a = DualArray(np.arange(3.0).reshape(3, 1), np.ones((2, 3, 1)))
    b = DualArray(np.arange(4.0).reshape(1, 4), np.zeros((2, 1, 4)))
    out = a * b
    assert out.shape == (3, 4) and out.tangents.shape == (2, 3, 4)
    assert np.array_equal(out.value, np.arange(3.0)[:, None] * np.arange(4.0))
    assert np.array_equal(out.tangents[0], np.broadcast_to(np.arange(4.0), (3, 4)))
    s = Dual(2.0, [1.0, -1.0]) * np.arange(3.0)
    assert isinstance(s, DualArray)
    assert s.tangents.tolist() == [[0.0, 1.0, 2.0], [0.0, -1.0, -2.0]]
    c = a + Dual(1.0, [0.0, 5.0])
    assert c.tangents[1].tolist() == [[6.0]] * 3
    with pytest.raises(ValueError, match="broadcast"):
        a.reshape(3) + np.ones(4)


def test_large_arrays_match_small_ones():
    # above the sizes where the loop releases the GIL, crosses several blocks and takes
    # the values of some rules from numpy's vectorized ufuncs (equal to a few ulp)
    x = np.linspace(-3, 3, 10007)
    d = DualArray(x, np.stack([np.ones_like(x), x]))
    out = adcore.sin(d) * d + adcore.exp(-d) / (d * d + 1.0)
    for e in (0, 511, 512, 513, 5000, 10006):
        s = Dual(x[e], [1.0, x[e]])
        ref = adcore.sin(s) * s + adcore.exp(-s) / (s * s + 1.0)
        assert out.value[e] == pytest.approx(ref.value, rel=1e-15, abs=1e-300)
        assert out.tangents[:, e] == pytest.approx(ref.tangents, rel=1e-14, abs=1e-300)


@pytest.mark.parametrize("rule", RULES, ids=IDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_every_rule_on_large_arrays(rule, dtype):
    n = 5000  # large enough for the numpy-valued path where a rule has one
    rng = np.random.default_rng(rule.opcode)
    cols = [rng.uniform(lo, hi, n).astype(dtype) for lo, hi in rule.domain]
    out = call(rule, *[DualArray(c, np.ones((1, n), dtype)) for c in cols])
    assert out.dtype == dtype and out.tangents.dtype == dtype
    small = [call(rule, *[DualArray(c[e:e + 1], np.ones((1, 1), dtype)) for c in cols])
             for e in (0, 1234, n - 1)]
    tol = 1e-14 if dtype == np.float64 else 1e-6
    for e, ref in zip((0, 1234, n - 1), small):
        assert out.value[e] == pytest.approx(ref.value[0], rel=tol, abs=tol)
        assert out.tangents[0, e] == pytest.approx(ref.tangents[0, 0], rel=10 * tol, abs=tol)
    plain = call(rule, *cols)
    assert plain.dtype == dtype and np.array_equal(plain, out.value)


def test_empty_and_zero_dimensional():
    e = DualArray(np.zeros(0), np.zeros((2, 0)))
    assert (adcore.sin(e) * 2.0).shape == (0,)
    z = DualArray(np.array(2.0), np.array([1.0]))
    out = z * z
    assert isinstance(out, Dual) and out.value == 4.0 and out.tangents.tolist() == [4.0]


def test_operators_and_comparisons():
    x = DualArray(np.array([1.0, -2.0, 3.0]), np.ones((1, 3)))
    assert (2.0 - x).tangents.tolist() == [[-1.0] * 3]
    assert (1.0 / x).tangents.tolist() == [[-1.0, -0.25, -1.0 / 9.0]]
    assert (x ** 2).tangents.tolist() == [[2.0, -4.0, 6.0]]
    assert (2.0 ** x).tangents[0].tolist() == pytest.approx(
        [2.0 ** v * math.log(2.0) for v in (1.0, -2.0, 3.0)])
    assert abs(x).tangents.tolist() == [[1.0, -1.0, 1.0]]
    assert (-x).value.tolist() == [-1.0, 2.0, -3.0]
    assert (x > 0).tolist() == [True, False, True]
    assert (x == np.array([1.0, 0.0, 3.0])).tolist() == [True, False, True]
    assert (np.array([0.0, 0.0, 0.0]) < x).tolist() == [True, False, True]
    assert (x <= Dual(1.0, [0.0])).tolist() == [True, True, False]
    assert isinstance(np.exp(x), DualArray)
    assert isinstance(np.ones(3) + x, DualArray)


def test_array_operations_through_the_primitives():
    v = np.arange(6.0).reshape(2, 3)
    x = DualArray(v, np.stack([np.ones((2, 3)), v]))
    assert (x.shape, x.ndim, x.dtype, len(x), x.size) == ((2, 3), 2, np.float64, 2, 6)
    row = x[1]
    assert isinstance(row, DualArray) and row.value.tolist() == [3.0, 4.0, 5.0]
    assert row.tangents.tolist() == [[1.0] * 3, [3.0, 4.0, 5.0]]
    el = x[0, 2]
    assert isinstance(el, Dual) and el.tangents.tolist() == [1.0, 2.0]
    s = x.sum()
    assert isinstance(s, Dual) and s.value == 15.0 and s.tangents.tolist() == [6.0, 15.0]
    assert x.sum(axis=0).tangents[1].tolist() == [3.0, 5.0, 7.0]
    assert x.mean().tangents.tolist() == [1.0, 2.5]
    assert x.reshape(3, 2).tangents[1].tolist() == v.reshape(3, 2).tolist()
    assert x.reshape((6,)).shape == (6,)
    assert x.T.shape == (3, 2) and x.T.tangents[1].tolist() == v.T.tolist()
    m = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    p = x @ m
    assert p.value.tolist() == (v @ m).tolist()
    assert p.tangents[1].tolist() == (v @ m).tolist()
    q = m.T @ x.T  # ndarray @ DualArray
    assert q.tangents[0].tolist() == (m.T @ np.ones((3, 2))).tolist()
    a, b = x  # iteration
    assert a.value.tolist() == [0.0, 1.0, 2.0] and b.tangents[0].tolist() == [1.0] * 3


def test_errors():
    with pytest.raises(ValueError, match=r"\(k,\) \+ \(3,\)"):
        DualArray(np.ones(3), np.ones(3))
    with pytest.raises(ValueError, match="k >= 1"):
        DualArray(np.ones(3), np.ones((0, 3)))
    with pytest.raises(TypeError, match="complex"):
        DualArray(np.ones(3, complex), np.ones((1, 3)))
    x = DualArray(np.ones(3), np.ones((2, 3)))
    with pytest.raises(ValueError, match="k=2 and k=1"):
        x + DualArray(np.ones(3), np.ones((1, 3)))
    with pytest.raises(ValueError, match="k=2 and k=3"):
        x * Dual(1.0, [1.0, 2.0, 3.0])
    with pytest.raises(TypeError):
        x + "a"
    with pytest.raises(TypeError, match="dtype <U1"):
        adcore.sin(np.array(["a"]))
    # opcodes from outside are checked before any table lookup
    for bad in (-1, 10**6):
        with pytest.raises(ValueError, match="opcode"):
            DualArray._ad_apply(bad, (x,))
        with pytest.raises(ValueError, match="opcode"):
            Dual._ad_apply(bad, (Dual(1.0, [1.0]),))


def test_a_primitive_with_wrong_tangent_shapes_is_reported():
    from adcore._dual import wrap_forward
    with pytest.raises(ValueError, match=r"expected \(k,\) \+ \(3,\)"):
        wrap_forward(np.ones(3), np.ones((1, 4)), 1)
    with pytest.raises(ValueError, match="expected"):
        wrap_forward(np.ones(3), np.ones(3), 1)


def test_zero_tangents_and_partials_in_every_block_kind():
    # blocks whose partials are all finite and non-zero take a loop without selects;
    # the others keep "a zero tangent or partial contributes exactly 0"
    n = 1500  # three blocks of up to 512 elements; k = 5 directions (the plain loop
    v = np.linspace(0.5, 2.0, n)  # is taken from 4 directions on)
    t = np.zeros((5, n))
    t[0, ::7] = np.inf
    t[1, ::5] = np.nan
    t[0, 1::7] = -3.0
    t[3] = np.linspace(-1.0, 1.0, n)
    x = DualArray(v, t)
    y = x * -2.0  # plain blocks: -2 * t, and +0.0 (never -0.0) for zero tangents
    np.testing.assert_array_equal(y.tangents, -2.0 * t)
    assert not np.signbit(y.tangents[y.tangents == 0.0]).any()
    c = np.ones(n)
    c[700] = 0.0  # a zero partial in the second block only: there inf * 0 must give 0
    z = x * c
    with np.errstate(invalid="ignore"):  # inf * 0 in the reference, overwritten below
        want = t * c
    want[:, 700] = 0.0
    np.testing.assert_array_equal(z.tangents, want)
    assert not np.signbit(z.tangents[z.tangents == 0.0]).any()
    # an infinite partial (sqrt at 0) meets zero tangents in one block, finite elsewhere
    for k in (1, 5):
        w = DualArray(np.where(np.arange(n) == 900, 0.0, v),
                      np.ones((k, n)) * (np.arange(n) != 900))
        s = adcore.sqrt(w)
        assert (s.tangents[:, 900] == 0.0).all() and np.isfinite(s.tangents).all()
    # and the small-k path gives the same numbers as the plain one
    np.testing.assert_array_equal((DualArray(v, t[:2]) * -2.0).tangents,
                                  y.tangents[:2])
