"""Array primitives checked directly (no tape): value against numpy, jvp and vjp
against central finite differences, and the transpose identity
<vjp(u), v> == <u, jvp(v)>."""

import numpy as np
import pytest

from adcore import array_ops as ops
from adcore.primitives import REGISTRY

RNG = np.random.default_rng(20260526)


def _fd_jacobian(f, xs, i, eps=1e-6):
    """d f / d xs[i] by central differences, as an (out.size, xs[i].size) matrix."""
    x = np.array(xs[i], dtype=np.float64)
    cols = []
    for j in range(x.size):
        e = np.zeros(x.size)
        e[j] = eps
        plus = list(xs)
        minus = list(xs)
        plus[i] = x + e.reshape(x.shape)
        minus[i] = x - e.reshape(x.shape)
        cols.append((np.ravel(f(*plus)) - np.ravel(f(*minus))) / (2 * eps))
    return np.stack(cols, axis=1)


def check_primitive(prim, xs, params, k=3, diff=None):
    """jvp, vjp against finite differences; jvp and vjp transposes of each other."""
    xs = [np.asarray(x, dtype=np.float64) for x in xs]
    diff = range(len(xs)) if diff is None else diff
    f = lambda *a: prim.value(*a, **params)  # noqa: E731
    out = np.asarray(f(*xs))
    for i in diff:
        J = _fd_jacobian(f, xs, i)
        # forward: k directions for input i only, the others constant
        dx = RNG.standard_normal((k,) + xs[i].shape)
        dxs = [None] * len(xs)
        dxs[i] = dx
        t = np.asarray(prim.jvp(xs, dxs, out, **params))
        assert t.shape == (k,) + out.shape
        np.testing.assert_allclose(t.reshape(k, -1), dx.reshape(k, -1) @ J.T,
                                   rtol=1e-6, atol=1e-7)
        # reverse
        u = RNG.standard_normal(out.shape)
        needs = [j == i for j in range(len(xs))]
        cts = prim.vjp(u, xs, out, needs, **params)
        assert len(cts) == len(xs)
        ct = np.asarray(cts[i])
        assert ct.shape == xs[i].shape
        np.testing.assert_allclose(ct.ravel(), u.ravel() @ J, rtol=1e-6, atol=1e-7)
        # transpose identity, exact up to rounding
        lhs = np.tensordot(dx, ct, axes=ct.ndim) if ct.ndim else dx * ct
        rhs = np.tensordot(t, u, axes=u.ndim) if u.ndim else t * u
        np.testing.assert_allclose(np.ravel(lhs), np.ravel(rhs), rtol=1e-10, atol=1e-10)
    # all inputs active at once: tangents add up
    if len(list(diff)) > 1:
        dxs = [RNG.standard_normal((k,) + x.shape) for x in xs]
        total = np.asarray(prim.jvp(xs, dxs, out, **params))
        parts = 0
        for i in range(len(xs)):
            only = [d if j == i else None for j, d in enumerate(dxs)]
            parts = parts + np.asarray(prim.jvp(xs, only, out, **params))
        np.testing.assert_allclose(total, parts, rtol=1e-12, atol=1e-12)


def r(*shape):
    return RNG.standard_normal(shape)


# ---------------------------------------------------------------- getitem

INDICES = [
    ((4, 5), 2),
    ((4, 5), -1),
    ((4, 5), (slice(1, 3), slice(None, None, -2))),
    ((4, 5), (Ellipsis, 3)),
    ((2, 3, 4), (None, 1, Ellipsis, None)),
    ((2, 3, 4), (slice(None), None, 2)),
    ((5,), np.array([0, 2, 2, 4, 0])),             # repeated indices accumulate
    ((4, 5), (np.array([1, 1, 3]), np.array([0, 4, 0]))),
    ((3, 4, 5), (np.array([0, 2]), slice(1, 3), np.array([1, 4]))),  # advanced split by a slice
    ((3, 4, 5), (slice(None), np.array([[0, 3], [3, 3]]))),
    ((3, 4), (Ellipsis, np.array([0, 0]))),
    ((3, 4), np.array([[True, False, True, False]] * 3)),
    ((3, 4), [2, 0]),
    ((), ()),
]


@pytest.mark.parametrize("shape,index", INDICES)
def test_getitem(shape, index):
    x = r(*shape)
    norm = ops.normalize_index(index)
    np.testing.assert_array_equal(ops.getitem(x, index), x[index])
    check_primitive(REGISTRY["getitem"], [x], {"index": norm})


def test_getitem_repeated_index_accumulates():
    g = REGISTRY["getitem"].vjp(np.ones(3), [np.zeros(4)], None, [True],
                                index=ops.normalize_index(np.array([1, 1, 3])))[0]
    np.testing.assert_array_equal(g, [0.0, 2.0, 0.0, 1.0])


def test_getitem_rejects_float_index():
    with pytest.raises(IndexError, match="valid indices"):
        ops.getitem(np.zeros(3), 1.5)


# ---------------------------------------------------------------- reductions

@pytest.mark.parametrize("name", ["sum", "mean", "amax"])
@pytest.mark.parametrize("shape,axis,keepdims", [
    ((5,), None, False),
    ((3, 4), 0, False),
    ((3, 4), -1, True),
    ((2, 3, 4), (0, 2), False),
    ((2, 3, 4), None, True),
    ((), None, False),
])
def test_reductions(name, shape, axis, keepdims):
    x = r(*shape)
    fn = {"sum": np.sum, "mean": np.mean, "amax": np.max}[name]
    np.testing.assert_allclose(getattr(ops, name)(x, axis=axis, keepdims=keepdims),
                               fn(x, axis=axis, keepdims=keepdims))
    check_primitive(REGISTRY[name], [x], {"axis": axis, "keepdims": keepdims})


def test_amax_ties_split_evenly():
    x = np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]])
    prim = REGISTRY["amax"]
    out = prim.value(x, axis=1)
    g = prim.vjp(np.array([1.0, 3.0]), [x], out, [True], axis=1)[0]
    np.testing.assert_allclose(g, [[0.0, 0.5, 0.5], [1.0, 1.0, 1.0]])
    t = prim.jvp([x], [np.ones((1, 2, 3))], out, axis=1)
    np.testing.assert_allclose(t, [[1.0, 1.0]])
    # forward and reverse agree at the tie: <vjp(u), v> == <u, jvp(v)>
    v = r(1, 2, 3)
    np.testing.assert_allclose(np.sum(g * v[0]),
                               np.sum(np.array([1.0, 3.0]) * prim.jvp([x], [v], out, axis=1)[0]))


def test_amax_nan_gets_the_gradient():
    x = np.array([1.0, np.nan, 3.0])
    g = REGISTRY["amax"].vjp(np.float64(1.0), [x], np.nan, [True])[0]
    np.testing.assert_array_equal(g, [0.0, 1.0, 0.0])


def test_reduction_bad_axis():
    with pytest.raises(ValueError, match="out of bounds"):
        ops.sum(np.zeros((2, 3)), axis=2)
    with pytest.raises(ValueError, match="repeated"):
        ops.mean(np.zeros((2, 3)), axis=(1, -1))
    with pytest.raises(ValueError, match="empty"):
        ops.amax(np.zeros((0,)))


def test_float32_stays_float32():
    x = r(3, 4).astype(np.float32)
    for name in ("sum", "mean", "amax"):
        prim = REGISTRY[name]
        out = prim.value(x, axis=0)
        assert out.dtype == np.float32
        assert prim.jvp([x], [np.ones((2, 3, 4), np.float32)], out, axis=0).dtype == np.float32
        assert prim.vjp(np.ones(4, np.float32), [x], out, [True], axis=0)[0].dtype == np.float32
    a, b = r(3, 4).astype(np.float32), r(4, 2).astype(np.float32)
    ga, gb = REGISTRY["matmul"].vjp(np.ones((3, 2), np.float32), [a, b], a @ b, [True, True])
    assert ga.dtype == gb.dtype == np.float32


# ---------------------------------------------------------------- shapes

@pytest.mark.parametrize("shape,new", [((2, 6), (3, 4)), ((2, 3, 2), (-1,)), ((4,), (2, 1, 2)),
                                       ((), (1, 1))])
def test_reshape(shape, new):
    x = r(*shape)
    np.testing.assert_array_equal(ops.reshape(x, new), x.reshape(new))
    check_primitive(REGISTRY["reshape"], [x], {"shape": new})


@pytest.mark.parametrize("shape,axes", [((2, 3), None), ((2, 3, 4), (1, 2, 0)),
                                        ((2, 3, 4), (-1, 0, 1)), ((5,), None)])
def test_transpose(shape, axes):
    x = r(*shape)
    np.testing.assert_array_equal(ops.transpose(x, axes), np.transpose(x, axes))
    check_primitive(REGISTRY["transpose"], [x], {"axes": axes})


def test_transpose_bad_axes():
    with pytest.raises(ValueError, match="permutation"):
        ops.transpose(np.zeros((2, 3)), (0, 0))


@pytest.mark.parametrize("shape,target", [((3,), (2, 3)), ((2, 1), (2, 4)), ((), (3, 2)),
                                          ((1, 3, 1), (2, 1, 3, 4)), ((2, 3), (2, 3))])
def test_broadcast_to(shape, target):
    x = r(*shape)
    np.testing.assert_array_equal(ops.broadcast_to(x, target), np.broadcast_to(x, target))
    check_primitive(REGISTRY["broadcast_to"], [x], {"shape": target})


def test_sum_to_shape():
    g = np.ones((4, 2, 3))
    np.testing.assert_array_equal(ops.sum_to_shape(g, (1, 3)), np.full((1, 3), 8.0))
    with pytest.raises(ValueError, match="not a broadcast"):
        ops.sum_to_shape(g, (2, 2))


# ---------------------------------------------------------------- matmul

@pytest.mark.parametrize("sa,sb", [
    ((3, 4), (4, 2)),
    ((4,), (4, 2)),
    ((3, 4), (4,)),
    ((4,), (4,)),
    ((2, 3, 4), (4, 5)),
    ((4,), (2, 4, 3)),
    ((2, 1, 3, 4), (5, 4, 2)),
    ((3, 4), (2, 4, 1)),
])
def test_matmul(sa, sb):
    a, b = r(*sa), r(*sb)
    np.testing.assert_allclose(ops.matmul(a, b), a @ b)
    check_primitive(REGISTRY["matmul"], [a, b], {})


def test_matmul_scalar_operand():
    with pytest.raises(ValueError, match="at least one dimension"):
        REGISTRY["matmul"].vjp(np.ones(()), [np.float64(2.0), np.ones(3)], None, [True, True])


# ---------------------------------------------------------------- joining

@pytest.mark.parametrize("shapes,axis", [
    (((2, 3), (4, 3)), 0),
    (((2, 3), (2, 1), (2, 2)), 1),
    (((2, 3), (2, 2)), -1),
    (((3,), (1,)), 0),
])
def test_concatenate(shapes, axis):
    xs = [r(*s) for s in shapes]
    np.testing.assert_array_equal(ops.concatenate(xs, axis), np.concatenate(xs, axis))
    check_primitive(REGISTRY["concatenate"], xs, {"axis": axis})


@pytest.mark.parametrize("shape,n,axis", [((2, 3), 3, 0), ((2, 3), 2, 2), ((4,), 2, -1),
                                          ((), 3, 0)])
def test_stack(shape, n, axis):
    xs = [r(*shape) for _ in range(n)]
    np.testing.assert_array_equal(ops.stack(xs, axis), np.stack(xs, axis))
    check_primitive(REGISTRY["stack"], xs, {"axis": axis})


def test_joining_needs_arrays():
    with pytest.raises(ValueError, match="at least one"):
        ops.concatenate([])
    with pytest.raises(ValueError, match="at least one"):
        ops.stack([])


def test_vjp_returns_only_what_is_needed():
    xs = [r(2, 3), r(1, 3)]
    out = np.concatenate(xs)
    cts = REGISTRY["concatenate"].vjp(np.ones((3, 3)), xs, out, [False, True], axis=0)
    assert cts[0] is None and cts[1].shape == (1, 3)
    ga, gb = REGISTRY["matmul"].vjp(np.ones(2), [r(3), r(3, 2)], None, [True, False])
    assert gb is None and ga.shape == (3,)


def test_registered_names():
    for name in ("getitem", "sum", "mean", "amax", "reshape", "transpose", "broadcast_to",
                 "matmul", "concatenate", "stack"):
        assert REGISTRY[name].name == name


def test_cotangents_are_writable():
    x = r(3)
    g = REGISTRY["broadcast_to"].vjp(np.ones((2, 3)), [x], None, [True], shape=(2, 3))[0]
    g += 1.0
    g = REGISTRY["sum"].vjp(np.float64(1.0), [x], None, [True])[0]
    g += 1.0
