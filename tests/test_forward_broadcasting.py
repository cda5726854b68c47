"""Forward mode under numpy broadcasting with k directions.

Tangents carry a leading axis of k directions, ``(k,) + shape``; an operand of
lower rank must get its missing axes *after* the k axis.  Numpy's own rule
(align from the right) would put the directions on the array's first axis,
which is silently wrong whenever k > 1.  Every check here compares with scalar
Duals, element by element, after broadcasting each direction separately.
"""

import itertools

import numpy as np
import pytest

import adcore
from adcore import Dual, DualArray

# mutually broadcastable shapes of ranks 0..3 (size-1 axes and whole-size-1 arrays too)
SHAPES = [(), (1,), (3,), (1, 3), (2, 1), (2, 3), (4, 1, 3), (4, 2, 3)]
KS = [1, 2, 5]


def _operand(kind, shape, k, rng):
    """(argument, value array, tangent array (k,) + shape or None)."""
    v = rng.uniform(0.5, 2.0, shape)
    if kind == "const":
        if shape == ():
            return float(v), np.asarray(v), None
        return v, v, None
    t = rng.standard_normal((k,) + shape)
    if kind == "dual":
        return Dual(float(v), t), np.asarray(v), t
    return DualArray(v, t), v, t


def _reference(fn, operands, shape, k):
    """fn element by element on scalar Duals: each direction broadcast on its own."""
    vals = [np.broadcast_to(v, shape) for _, v, _ in operands]
    tans = [None if t is None else np.stack([np.broadcast_to(t[j], shape) for j in range(k)])
            for _, _, t in operands]
    value = np.empty(shape)
    tangents = np.empty((k,) + shape)
    for e in np.ndindex(*shape):
        args = [float(v[e]) if t is None else Dual(float(v[e]), t[(slice(None),) + e])
                for v, t in zip(vals, tans)]
        r = fn(*args)
        value[e] = float(r)
        tangents[(slice(None),) + e] = r.tangents if isinstance(r, Dual) else 0.0
    return value, tangents


def _check(fn, operands, k):
    shape = np.broadcast_shapes(*[np.shape(v) for _, v, _ in operands])
    out = fn(*[a for a, _, _ in operands])
    value, tangents = _reference(fn, operands, shape, k)
    if shape == ():
        assert isinstance(out, Dual)
        got_v, got_t = np.asarray(out.value), out.tangents
    else:
        assert isinstance(out, DualArray) and out.shape == shape and out.k == k
        got_v, got_t = out.value, out.tangents
    np.testing.assert_array_equal(got_v, value)
    np.testing.assert_array_equal(got_t, tangents)


def _kinds(shape):
    return ["array", "const", "dual"] if shape == () else ["array", "const"]


BINARY = [
    ("mul", lambda a, b: a * b),
    ("sub", lambda a, b: a - b),
    ("atan2", lambda a, b: adcore.atan2(a, b)),
    ("hypot", lambda a, b: adcore.hypot(a, b)),
]


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("name,fn", BINARY, ids=[b[0] for b in BINARY])
def test_binary_rules_over_every_rank_combination(name, fn, k):
    rng = np.random.default_rng(k)
    checked = 0
    for sa, sb in itertools.product(SHAPES, SHAPES):
        for ka, kb in itertools.product(_kinds(sa), _kinds(sb)):
            if ka == "const" and kb == "const":
                continue
            a = _operand(ka, sa, k, rng)
            b = _operand(kb, sb, k, rng)
            _check(fn, [a, b], k)
            checked += 1
    assert checked > 200


@pytest.mark.parametrize("k", KS)
def test_where_over_rank_combinations(k):
    rng = np.random.default_rng(10 + k)
    for sc, sx, sy in itertools.product([(), (3,), (2, 1)], [(), (1, 3), (4, 2, 3)],
                                        [(3,), (2, 3)]):
        cond = rng.uniform(size=sc) < 0.5
        cond = (float(cond), np.asarray(cond, float), None) if sc == () else \
            (cond.astype(float), cond.astype(float), None)
        x = _operand("dual" if sx == () else "array", sx, k, rng)
        y = _operand("array", sy, k, rng)
        _check(lambda c, a, b: adcore.where(c, a, b), [cond, x, y], k)


@pytest.mark.parametrize("k", KS)
def test_unary_rule_of_a_broadcast_operand_keeps_directions_apart(k):
    # a (3,) DualArray broadcast against a constant (2, 3), then a unary rule
    rng = np.random.default_rng(k)
    x = _operand("array", (3,), k, rng)
    c = _operand("const", (2, 3), k, rng)
    _check(lambda a, b: adcore.sin(a * b), [x, c], k)


@pytest.mark.parametrize("k", KS)
def test_float32_operands_broadcast_the_same_way(k):
    rng = np.random.default_rng(k)
    v = rng.uniform(0.5, 2.0, 3).astype(np.float32)
    t = rng.standard_normal((k, 3)).astype(np.float32)
    out = DualArray(v, t) * np.ones((2, 3), np.float32)
    assert out.dtype == np.float32 and out.tangents.shape == (k, 2, 3)
    np.testing.assert_array_equal(out.tangents, np.broadcast_to(t[:, None, :], (k, 2, 3)))


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_jacfwd_of_a_broadcast(n):
    x = np.arange(1.0, n + 1.0)
    want = np.broadcast_to(np.eye(n), (4, n, n))  # J[i, j, l] = [j == l]
    np.testing.assert_array_equal(np.asarray(adcore.jacfwd(lambda a: a * np.ones((4, n)))(x)),
                                  want)
    # x as the (n, 1) column: J[i, j, l, 0] = [i == l]
    col = x.reshape(n, 1)
    J = np.asarray(adcore.jacfwd(lambda a: a + np.zeros((n, 3)))(col))
    np.testing.assert_array_equal(J, np.broadcast_to(np.eye(n)[:, None, :, None], (n, 3, n, 1)))


# ---------------------------------------------------------------- array primitives

def _jac_by_columns(f, x):
    """The Jacobian one direction at a time (k = 1 never meets the bug)."""
    cols = []
    for i in range(x.size):
        e = np.zeros(x.size)
        e[i] = 1.0
        cols.append(np.asarray(adcore.jvp(f, (x,), (e.reshape(x.shape),))[1]))
    out = np.stack(cols, axis=-1)
    return out.reshape(out.shape[:-1] + x.shape)


PRIMITIVE_CASES = [
    ("matmul batched left", lambda a: adcore.matmul(np.ones((4, 2, 3)), a), (3, 2)),
    ("matmul batched right", lambda a: adcore.matmul(a, np.ones((4, 3, 2))), (2, 3)),
    ("matmul vector left", lambda a: adcore.matmul(a, np.arange(6.0).reshape(2, 3, 1)), (3,)),
    ("matmul vector right", lambda a: adcore.matmul(np.arange(12.0).reshape(2, 2, 3), a), (3,)),
    ("matmul both", lambda a: adcore.matmul(a, a.T), (2, 3)),
    ("matmul matrix @ active vector", lambda a: adcore.matmul(np.arange(12.0).reshape(4, 3), a),
     (3,)),
    ("matmul active matrix @ vector", lambda a: adcore.matmul(a, np.arange(3.0)), (2, 3)),
    ("matmul active matrix @ matrix", lambda a: adcore.matmul(a, np.ones((3, 2))), (2, 3)),
    ("matmul vector @ active vector", lambda a: adcore.matmul(np.arange(3.0), a * a), (3,)),
    ("matmul active vector @ matrix", lambda a: adcore.matmul(a, np.ones((3, 2))), (3,)),
    ("broadcast_to", lambda a: adcore.broadcast_to(a, (4, 2, 3)), (3,)),
    ("broadcast_to column", lambda a: adcore.broadcast_to(a, (2, 3, 3)), (3, 1)),
    ("concatenate", lambda a: adcore.concatenate([a * np.ones((2, 3)), np.ones((1, 3))]), (3,)),
    ("stack", lambda a: adcore.stack([a, np.ones(3), 2.0 * a]), (3,)),
    ("sum of broadcast", lambda a: adcore.sum(a * np.ones((2, 3)), axis=0), (3,)),
    ("mean keepdims", lambda a: adcore.mean(a + np.ones((4, 1, 3)), axis=1, keepdims=True),
     (2, 1)),
    ("amax", lambda a: adcore.max(a * np.array([[1.0], [2.0]]), axis=1), (3,)),
    ("getitem", lambda a: (a * np.ones((2, 3)))[[1, 0], ::2], (3,)),
    ("mse", lambda a: adcore.nn.mse(a, np.ones((2, 3))), (3,)),
    ("mse column", lambda a: adcore.nn.mse(np.arange(6.0).reshape(2, 3), a), (2, 1)),
    ("softmax of broadcast", lambda a: adcore.nn.softmax(a * np.ones((2, 3))), (3,)),
    ("logsumexp", lambda a: adcore.nn.logsumexp(a + np.ones((2, 3)), axis=1), (3,)),
    ("linear", lambda a: adcore.nn.linear(np.ones((2, 3)), np.ones((3, 2)), a), (2,)),
]


@pytest.mark.parametrize("f,shape", [c[1:] for c in PRIMITIVE_CASES],
                         ids=[c[0] for c in PRIMITIVE_CASES])
def test_primitives_with_several_directions(f, shape):
    x = np.random.default_rng(len(shape)).uniform(0.5, 2.0, shape)
    want = _jac_by_columns(f, x)
    got = np.asarray(adcore.jacfwd(f)(x))
    np.testing.assert_allclose(got, want, rtol=1e-14, atol=1e-14)
    got2 = np.asarray(adcore.jacfwd(f, chunk_size=2)(x))
    np.testing.assert_allclose(got2, want, rtol=1e-14, atol=1e-14)
