"""Batched reverse Jacobians (Tape.jacobian_rows: every row in one sweep carrying a
stack of cotangents) against one reverse sweep per row (Tape.backward), and the
one-non-zero-per-row matmul shortcut (array_ops.rows_matmul) against the product."""

import numpy as np
import pytest

import adcore
import adcore.nn.functional as F
from adcore import array_ops


def rows_one_by_one(tape):
    """The (M, N) Jacobian the unbatched way: one backward per output element."""
    cols = []
    for slot, shape, dt in tape.in_leaves:
        cols.append((slot, shape))
    n = sum(1 if shape is None else int(np.prod(shape)) for _, shape in cols)
    rows = []
    for kind, ref in tape.out_leaves:
        if kind == "c":
            rows.append(np.zeros(n))
            continue
        oshape = tape.shape_of(ref)
        size = int(np.prod(oshape))
        for e in range(size):
            if oshape:
                seed = np.zeros(size)
                seed[e] = 1.0
                seed = seed.reshape(oshape)
            else:
                seed = 1.0
            adj = tape.backward({ref: seed})
            parts = []
            for slot, shape in cols:
                if shape is None:
                    parts.append([adj[slot]])
                else:
                    parts.append(np.asarray(adj.array(slot, shape), np.float64).reshape(-1))
            rows.append(np.concatenate(parts))
    return np.array(rows).reshape(-1, n)


def batched(tape, **kw):
    return tape.jacobian_rows(tape.out_leaves, tape.in_leaves, **kw)


def same(a, b, rtol=1e-13):
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    assert a.shape == b.shape
    assert np.array_equal(np.isnan(a), np.isnan(b)), "NaN in other places"
    assert np.array_equal(np.isinf(a), np.isinf(b)), "inf in other places"
    fin = np.isfinite(a)
    np.testing.assert_allclose(a[fin], b[fin], rtol=rtol, atol=1e-300)


def check(f, *args, block=None):
    tape = adcore.record(f, *args)
    ref = rows_one_by_one(tape)
    same(batched(tape), ref)
    if block is not None:
        same(batched(tape, block=block), ref)
    return ref


RNG = np.random.default_rng(7)
W = RNG.standard_normal((6, 5))


def tanh_layer(x):
    u = adcore.matmul(W, adcore.sin(x))
    return adcore.tanh(u) + 0.1 * u


def test_array_tape_and_blocks():
    x = RNG.uniform(-2, 2, 5)
    ref = check(tanh_layer, x, block=1)
    t = np.tanh(W @ np.sin(x))
    np.testing.assert_allclose(ref, ((1.1 - t * t)[:, None] * W) * np.cos(x), rtol=1e-13)
    tape = adcore.record(tanh_layer, x)
    for block in (40, 80, 200):   # a few rows per block
        same(batched(tape, block=block), ref)


def test_scalar_tape():
    def f(xs):
        a, b, c = xs
        return [a * b, adcore.sin(c) + a, b ** 2.0 / c, 3.0]
    check(f, [0.5, -1.5, 2.0])


def test_broadcasting_two_inputs():
    def f(x, y):
        return adcore.exp(x) * y + x / (1.0 + y * y)
    check(f, RNG.standard_normal((3, 1)), RNG.standard_normal((1, 4)))


def test_reductions_and_scalar_operands():
    def f(x):
        s = adcore.sum(x * x)                 # a scalar slot from an array primitive
        m = adcore.mean(x, axis=0)
        top = adcore.max(x, axis=1)          # no stacked rule: one vjp per row
        return [x * s, m, top, adcore.sum(x, axis=1, keepdims=True) * 2.0]
    check(f, RNG.standard_normal((4, 3)), block=30)


def test_indexing_reshape_transpose():
    def f(x):
        a = x[::2]
        b = x[np.array([0, 0, 3])]           # repeated indices accumulate
        c = adcore.reshape(x, (2, 3)).T
        return [a * 2.0, adcore.sin(b), c, adcore.broadcast_to(x[1:3], (2, 2))]
    check(f, RNG.standard_normal(6))


def test_float32():
    w32 = W.astype(np.float32)

    def f(x):
        u = adcore.matmul(w32, adcore.sin(x))
        return adcore.tanh(u) * x[0] + u

    x = RNG.uniform(-2, 2, 5).astype(np.float32)
    tape = adcore.record(f, x)
    same(batched(tape), rows_one_by_one(tape), rtol=1e-6)


def test_matmul_variants():
    A = RNG.standard_normal((4, 3))
    check(lambda x: adcore.matmul(x, A), RNG.standard_normal(4))            # x @ W
    check(lambda a, b: adcore.matmul(a, b), A, RNG.standard_normal((3, 2)))  # both active
    check(lambda a, b: adcore.matmul(a, b), RNG.standard_normal((2, 4, 3)),
          RNG.standard_normal((3, 2)))                                        # batched
    check(lambda a, x: adcore.matmul(a, x), A, RNG.standard_normal(3))       # W active


def test_nn_ops():
    def f(x):
        return [F.softmax(x, axis=-1), F.logsumexp(x, axis=0), F.linear(x, W[:3, :4])]
    check(f, RNG.standard_normal((2, 3)))


def test_outputs_constant_and_repeated():
    def f(x):
        y = adcore.sin(x)
        return (y, 2.5, y, np.ones(2))
    check(f, RNG.standard_normal(3))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_zero_cotangent_rows_keep_inf_out():
    # row 0 never reaches the matmul in its own sweep; the stacked sweep must not
    # send its zero cotangent through W's inf (0 * inf = NaN)
    w = np.array([[1.0, np.inf], [2.0, 3.0]])

    def f(x):
        return [adcore.sum(x), adcore.matmul(w, x)]

    ref = check(f, np.array([0.5, -1.0]))
    assert np.array_equal(ref[0], [1.0, 1.0])
    assert np.isnan(ref[1:]).any()


def test_where_untaken_branch():
    def f(x):
        return adcore.where(x > 0, adcore.sqrt(x), -x) * 2.0
    check(f, np.array([-1.0, 0.0, 4.0, -0.0]))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_nan_and_inf_values():
    def f(x):
        return adcore.log(x) * x
    check(f, np.array([0.0, -1.0, np.inf, 2.0]))


def test_on_a_replay():
    x0, x1 = RNG.uniform(-2, 2, 5), RNG.uniform(-2, 2, 5)
    tape = adcore.record(tanh_layer, x0)
    rp = tape.replay([x1])
    J = tape.jacobian_rows(tape.out_leaves, tape.in_leaves, _work=rp)
    same(J, np.asarray(adcore.record(tanh_layer, x1).jacobian(x1)))
    same(J, np.asarray(tape.jacobian(x1)))


def test_bad_slots_are_errors():
    tape = adcore.record(tanh_layer, RNG.standard_normal(5))
    with pytest.raises(IndexError, match="output slot"):
        tape.jacobian_rows([("a", 10 ** 6)], tape.in_leaves)
    with pytest.raises(IndexError, match="input slot"):
        tape.jacobian_rows(tape.out_leaves, [(-3, None, "<f8")])
    with pytest.raises(adcore.TapeError, match="not an array input"):
        tape.jacobian_rows(tape.out_leaves, [(tape.in_leaves[0][0], (7,), "<f8")])


# ---------------------------------------------------------------- the drivers

@pytest.mark.parametrize("n, m", [(3, 7), (7, 3), (40, 40), (60, 5)])
def test_driver_modes_agree(n, m):
    w = RNG.standard_normal((m, n))
    x = RNG.uniform(-2, 2, n)

    def f(x):
        u = adcore.matmul(w, adcore.sin(x))
        return adcore.tanh(u) + 0.1 * u

    fwd = np.asarray(adcore.jacobian(f, mode="forward")(x))
    rev = np.asarray(adcore.jacobian(f, mode="reverse")(x))
    old = np.asarray(adcore.reverse.jacrev(f)(x))       # one sweep per row
    t = np.tanh(w @ np.sin(x))
    exact = ((1.1 - t * t)[:, None] * w) * np.cos(x)
    for J in (fwd, rev, old):
        np.testing.assert_allclose(J, exact, rtol=1e-12, atol=1e-14)
    same(rev, old)


def test_driver_dict_input():
    def f(p):
        return [p["a"] * p["b"], adcore.sin(p["a"]), p["b"] ** 3.0]

    p = {"a": 0.7, "b": -1.3}
    J = adcore.jacobian(f, mode="reverse")(p)
    K = adcore.jacobian(f, mode="forward")(p)
    assert J == K
    assert J[1, "a"] == pytest.approx(np.cos(0.7))
    per_row = adcore.reverse.jacrev(f)(p)          # one sweep per output
    for i, row in enumerate(per_row):
        for key in ("a", "b"):
            assert J[i, key] == row[key]
    # arrays under keys: the coordinates are (key, index)
    q = {"u": np.array([0.3, -0.8]), "v": np.array([[1.5]])}
    g = lambda q: adcore.sin(q["u"]) * q["v"][0, 0]    # noqa: E731
    Jq = adcore.jacobian(g, mode="reverse")(q)
    assert Jq == adcore.jacobian(g, mode="forward")(q)
    rows = adcore.reverse.jacrev(g)(q)
    same(np.asarray(Jq), np.concatenate([rows["u"], rows["v"].reshape(2, 1)], axis=1))


def test_driver_vector_named():
    C0 = adcore.Named("x", "y")
    C1 = adcore.Named("z0", "z1", "z2")
    f = lambda v: adcore.Vector(C1, [v["x"] ** 2, v["x"] * v["y"], v["y"] ** 2])  # noqa: E731
    x = adcore.Vector(C0, {"x": 3.0, "y": 5.0})
    J = adcore.jacobian(f, mode="reverse")(x)
    assert J["z1", "x"] == 5.0 and J["z2", "y"] == 10.0 and J["z0", "y"] == 0.0


# ---------------------------------------------------------------- rows_matmul

def _signed_diag(n, rng):
    d = rng.standard_normal(n)
    d[::4] = 0.0
    d[1::4] *= -1.0
    return np.diag(d)


@pytest.mark.parametrize("transposed", [False, True])
def test_rows_matmul_bitwise_the_product(transposed):
    rng = np.random.default_rng(1)
    m = rng.standard_normal((64, 48))
    m[3, :] = 0.0
    m[5, 7] = -0.0
    if transposed:
        m = np.asarray(rng.standard_normal((48, 64))).T
    g = _signed_diag(64, rng)
    out = array_ops.rows_matmul(g, m)
    prod = np.matmul(g, m)
    assert out.tobytes() == prod.tobytes()          # bitwise, sign of zero included
    # one non-zero per row in other places (a permutation, chunks of the identity)
    perm = g[rng.permutation(64)]
    assert array_ops.rows_matmul(perm, m).tobytes() == np.matmul(perm, m).tobytes()
    chunk = np.eye(64)[10:42] * 3.0
    assert array_ops.rows_matmul(chunk, m).tobytes() == np.matmul(chunk, m).tobytes()


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_rows_matmul_inf_nan_and_dense_take_the_product():
    rng = np.random.default_rng(2)
    g = _signed_diag(40, rng)
    for bad in (np.inf, -np.inf, np.nan):
        m = rng.standard_normal((40, 40))
        m[7, 3] = bad
        same(array_ops.rows_matmul(g, m), np.matmul(g, m))
        assert np.isnan(array_ops.rows_matmul(g, m)).sum() > 1     # 0 * inf in other rows
    g2 = g.copy()
    g2[5, 9] = 1e-300
    m = rng.standard_normal((40, 40))
    assert np.array_equal(array_ops.rows_matmul(g2, m), np.matmul(g2, m))
    g3 = g.copy()
    g3[5, 5] = np.nan
    same(array_ops.rows_matmul(g3, m), np.matmul(g3, m))


def test_rows_matmul_float32():
    rng = np.random.default_rng(3)
    g = _signed_diag(40, rng).astype(np.float32)
    m = rng.standard_normal((40, 50)).astype(np.float32)
    assert array_ops.rows_matmul(g, m).tobytes() == np.matmul(g, m).tobytes()


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_forward_shortcut_equals_dense_product(monkeypatch):
    rng = np.random.default_rng(4)
    w = rng.standard_normal((50, 40))
    x = rng.uniform(-2, 2, 40)
    x[3] = np.pi / 2          # cos ~ 0: tiny tangents

    def f(x):
        u = adcore.matmul(w, adcore.sin(x))
        return adcore.tanh(u) + adcore.matmul(adcore.cos(x), w.T)

    fast = np.asarray(adcore.jacobian(f, mode="forward")(x))
    fast_rev = np.asarray(adcore.jacobian(f, mode="reverse")(x))
    monkeypatch.setattr(array_ops, "_worth_a_look", lambda *a: False)
    dense = np.asarray(adcore.jacobian(f, mode="forward")(x))
    dense_rev = np.asarray(adcore.jacobian(f, mode="reverse")(x))
    assert fast.tobytes() == dense.tobytes()
    assert fast_rev.tobytes() == dense_rev.tobytes()
    w[2, 5] = np.inf           # now the product's 0 * inf must show, as before
    dense = np.asarray(adcore.jacobian(f, mode="forward")(x))
    dense_rev = np.asarray(adcore.jacobian(f, mode="reverse")(x))
    monkeypatch.undo()
    fast = np.asarray(adcore.jacobian(f, mode="forward")(x))
    fast_rev = np.asarray(adcore.jacobian(f, mode="reverse")(x))
    assert np.isnan(fast).any() and np.isnan(fast_rev).any()
    assert fast.tobytes() == dense.tobytes()
    assert fast_rev.tobytes() == dense_rev.tobytes()


class _Plus(adcore.primitives.Primitive):
    """a + b as a primitive whose stacked rule hands both inputs one array."""
    name = "test_jacobian_batched_plus"

    def value(self, a, b):
        return np.add(a, b)

    def vjp(self, g, xs, out, needs):
        g = np.array(g, dtype=np.float64)
        return g, g.copy()

    def vjp_rows(self, G, xs, out, needs):
        G = np.array(G, dtype=np.float64)
        return G, G                            # one array for both: must not alias


_plus = _Plus().register()


def test_stacked_rule_returning_one_array_twice():
    def f(x, y):
        a = adcore.sin(x)
        b = a * 2.0               # reaches a's adjoint after the primitive has
        return _plus(a, y) + b    # (aliased with y's, y's Jacobian would change)
    check(f, RNG.standard_normal(4), RNG.standard_normal(4))
    # and a primitive without a stacked rule goes row by row
    _Plus.vjp_rows = None
    try:
        check(f, RNG.standard_normal(4), RNG.standard_normal(4))
    finally:
        del _Plus.vjp_rows


def test_forward_identity_result_is_writable_and_fresh():
    x = RNG.standard_normal(6)
    J1 = np.asarray(adcore.jacobian(lambda x: x, mode="forward")(x))
    J1[0, 0] = 5.0                       # the cached seed is not handed out
    J2 = np.asarray(adcore.jacobian(lambda x: x, mode="forward")(x))
    assert np.array_equal(J2, np.eye(6))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("m", [3, 60])          # row by row, and partials once
def test_partial_reach_through_element_wise(m):
    w = RNG.standard_normal((m, 50))
    w[1, 2] = np.inf

    def f(x):
        return [adcore.sum(x * 3.0), adcore.sin(adcore.matmul(w, x)) * x[0]]

    ref = check(f, RNG.standard_normal(50))
    assert np.all(ref[0] == 3.0)


def test_forward_shortcut_active_left_factor(monkeypatch):
    rng = np.random.default_rng(5)
    A = rng.standard_normal((20, 16))
    Bm = rng.standard_normal((16, 12))

    def f(a):
        return adcore.tanh(adcore.matmul(adcore.sin(a), Bm))

    fast = np.asarray(adcore.jacobian(f, mode="forward")(A))
    monkeypatch.setattr(array_ops, "_worth_a_look", lambda *a: False)
    dense = np.asarray(adcore.jacobian(f, mode="forward")(A))
    assert fast.shape == (20, 12, 20, 16)
    assert fast.tobytes() == dense.tobytes()
    same(fast, np.asarray(adcore.jacobian(f, mode="reverse")(A)), rtol=1e-12)
