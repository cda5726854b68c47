"""The SGD step's fast paths: a replayed training step (the quick matching of
parameter trees and lists of floats, the gradients handed back), the
cross-entropy label checks and the linear layer's reverse rule for every batch
layout, each against an independent computation (hand-written backprop, the
recorded-per-call driver, finite differences)."""

import collections

import numpy as np
import pytest

import adcore
from adcore.nn import functional as F
from adcore.nn.reference import mlp_loss_and_grads
from adcore.primitives import REGISTRY

RNG = np.random.default_rng(11)


def _mlp(sizes, batch, dtype):
    model = adcore.nn.MLP(sizes)
    params = model.init(np.random.default_rng(3), dtype)
    for p in params:
        if p:
            p["b"] = (RNG.standard_normal(p["b"].shape) * 0.1).astype(dtype)
    x = RNG.standard_normal((batch, sizes[0])).astype(dtype)
    y = RNG.integers(0, sizes[-1], batch)
    return model, params, x, y


def _assert_tree_close(got, want, rtol, atol):
    assert type(got) is type(want)
    if isinstance(want, dict):
        assert list(got) == list(want)
        for k in want:
            _assert_tree_close(got[k], want[k], rtol, atol)
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want)
        for a, b in zip(got, want):
            _assert_tree_close(a, b, rtol, atol)
    else:
        assert np.asarray(got).dtype == np.asarray(want).dtype
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-12), (np.float32, 2e-5)])
def test_replayed_step_matches_hand_written_backprop(dtype, rtol):
    model, params, x, y = _mlp((5, 7, 6, 3), 9, dtype)
    loss = lambda p, x, y: F.cross_entropy(model(p, x), y)          # noqa: E731
    tape = adcore.record(loss, params, x, y)
    vg = adcore.value_and_grad(loss)
    for step in range(3):
        xb = RNG.standard_normal(x.shape).astype(dtype)
        yb = RNG.integers(0, 3, len(y))
        g_tape = tape.gradient(params, xb, yb)
        value, g_vg = vg(params, xb, yb)
        ref_loss, ref = mlp_loss_and_grads(params, xb, yb)
        np.testing.assert_allclose(value, ref_loss, rtol=rtol)
        _assert_tree_close(g_tape[0], ref, rtol, 1e-6 if dtype == np.float32 else 1e-13)
        _assert_tree_close(g_vg, ref, rtol, 1e-6 if dtype == np.float32 else 1e-13)
        assert g_tape[2].shape == yb.shape          # the labels' (zero) gradient
        np.testing.assert_array_equal(g_tape[2], 0.0)
        adcore.nn.SGD(lr=0.1).step(params, g_tape[0])


def test_replayed_gradients_are_the_callers_own_arrays():
    """The pooled workspace is reused: gradients of one replay are not views of
    buffers the next replay overwrites."""
    model, params, x, y = _mlp((4, 5, 3), 6, np.float64)
    loss = lambda p, x, y: F.cross_entropy(model(p, x), y)          # noqa: E731
    tape = adcore.record(loss, params, x, y)
    g1 = tape.gradient(params, x, y)
    kept = [{k: v.copy() for k, v in p.items()} for p in g1[0]]
    x2 = RNG.standard_normal(x.shape)
    g2 = tape.gradient(params, x2, y)
    for a, b in zip(g1[0], kept):
        for k in b:
            np.testing.assert_array_equal(a[k], b[k])
    assert not np.allclose(g2[0][0]["w"], kept[0]["w"])
    g2[0][0]["w"][...] = 7.0                        # writable, and nobody else's
    np.testing.assert_array_equal(tape.gradient(params, x, y)[0][0]["w"], kept[0]["w"])


def test_replay_matches_structures_and_names_differences():
    f = lambda p, x: (p["a"] * x).sum() + p["b"][0] * p["b"][1]["c"]     # noqa: E731
    p = {"a": np.arange(3.0), "b": [2.0, {"c": 3.0}]}
    tape = adcore.record(f, p, np.ones(3))
    g = tape.gradient({"a": np.arange(3.0) + 1, "b": [2.0, {"c": 4.0}]}, np.ones(3) * 2)
    np.testing.assert_array_equal(g[0]["a"], [2.0, 2.0, 2.0])
    assert g[0]["b"] == [4.0, {"c": 2.0}]
    np.testing.assert_array_equal(g[1], [1.0, 2.0, 3.0])
    # integers and numpy scalars inside the tree are converted, as recorded
    g = tape.gradient({"a": np.arange(3), "b": [2, {"c": np.float32(3.0)}]}, np.ones(3))
    np.testing.assert_array_equal(g[0]["a"], [1.0, 1.0, 1.0])
    assert g[0]["b"] == [3.0, {"c": 2.0}]
    for bad in ({"b": [2.0, {"c": 3.0}], "a": np.arange(3.0)},     # keys in another order
                {"a": np.arange(3.0), "b": (2.0, {"c": 3.0})},     # a tuple for a list
                {"a": np.arange(3.0), "b": [2.0, None]},
                {"a": np.arange(3.0), "b": [2.0, {"c": 3.0}], "d": 1.0}):
        with pytest.raises(TypeError, match="recorded with arguments of structure"):
            tape.gradient(bad, np.ones(3))
    with pytest.raises(ValueError, match=r"argument 0\['a'\].*shape \(3,\), got \(4,\)"):
        tape.gradient({"a": np.arange(4.0), "b": [2.0, {"c": 3.0}]}, np.ones(3))


def test_replay_of_other_tree_nodes():
    NT = collections.namedtuple("NT", "u v")
    tape = adcore.record(lambda q: q.u * q.v[0], NT(2.0, [3.0]))
    assert tape.gradient(NT(5.0, [7.0])) == NT(7.0, [5.0])
    with pytest.raises(TypeError, match="structure"):
        tape.gradient((5.0, [7.0]))
    tape = adcore.record(lambda a, b: a * b[1], 2.0, (None, 3.0))
    assert tape.gradient(5.0, (None, 7.0)) == (7.0, (None, 5.0))


def test_replay_of_a_list_of_floats():
    tape = adcore.record(lambda xs: xs[0] * xs[1] + xs[2], [1.0, 2.0, 3.0])
    assert tape.gradient([3.0, 4.0, 5.0]) == [4.0, 3.0, 1.0]
    # ints, bools and numpy scalars take the checked path, with the same result
    assert tape.gradient([3, np.float64(4.0), True]) == [4.0, 3.0, 1.0]
    assert tape([3, 4, 5]) == 17.0
    with pytest.raises(TypeError, match=r"argument 0\[1\].*str"):
        tape.gradient([3.0, "a", 1.0])
    with pytest.raises(TypeError, match="structure"):
        tape.gradient((3.0, 4.0, 5.0))
    with pytest.raises(TypeError, match="structure"):
        tape.gradient([3.0, 4.0])
    const = adcore.record(lambda xs: 2.0, [1.0, 2.0])
    assert const.gradient([5.0, 6.0]) == [0.0, 0.0]
    one = adcore.record(lambda xs: xs[0] * 3.0, (1.0,))
    assert one.gradient((2.0,)) == (3.0,)


def test_cross_entropy_labels():
    z = RNG.standard_normal((4, 3))
    want = F.cross_entropy(z, np.array([0, 2, 1, 2]))
    for y in (np.array([0.0, 2.0, 1.0, 2.0]), np.array([0, 2, 1, 2], np.uint8),
              np.array([0, 2, 1, 2], np.int32), [0, 2, 1, 2]):
        assert F.cross_entropy(z, y) == want
    ce = REGISTRY["cross_entropy"]
    g_int = ce.vjp(np.float64(1.0), [z, np.array([0, 2, 1, 2])], want, [True, False])[0]
    g_float = ce.vjp(np.float64(1.0), [z, np.array([0.0, 2.0, 1.0, 2.0])], want,
                     [True, False])[0]
    np.testing.assert_array_equal(g_int, g_float)
    for bad, what in ((np.array([0.0, 2.0, np.nan, 2.0]), "integers"),
                      (np.array([0.0, 2.0, np.inf, 2.0]), "integers"),
                      (np.array([0.0, 2.5, 1.0, 2.0]), "integers"),
                      (np.array([0, 2, -1, 2]), r"0\.\.2"),
                      (np.array([0, 3, 1, 2]), r"0\.\.2"),
                      (np.array([0.0, -1.0, 1.0, 2.0]), r"0\.\.2"),
                      (np.array(["a", "b", "c", "d"]), "integers")):
        with pytest.raises(ValueError, match=what):
            F.cross_entropy(z, bad)
        with pytest.raises(ValueError, match=what):
            ce.vjp(np.float64(1.0), [z, bad], want, [True, False])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_value_and_cotangent(dtype):
    z = (RNG.standard_normal((7, 5)) * 3).astype(dtype)
    y = RNG.integers(0, 5, 7)
    z64 = z.astype(np.float64)
    p = np.exp(z64 - z64.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    loss = F.cross_entropy(z, y)
    assert np.asarray(loss).dtype == dtype
    tol = 1e-5 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(loss, -np.mean(np.log(p[np.arange(7), y])), rtol=tol)
    g = REGISTRY["cross_entropy"].vjp(dtype(0.5), [z, y], loss, [True, False])[0]
    assert g.dtype == dtype
    np.testing.assert_allclose(g, 0.5 * (p - np.eye(5)[y]) / 7, rtol=tol, atol=tol * 1e-2)
    # inf logits: the careful logsumexp decides
    zi = z.copy()
    zi[0, 1] = np.inf
    with np.errstate(invalid="ignore"):
        assert not np.isfinite(F.cross_entropy(zi, y))


@pytest.mark.parametrize("sx", [(6,), (4, 6), (2, 3, 6)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_linear_cotangents_for_every_batch_layout(sx, dtype):
    x = RNG.standard_normal(sx).astype(dtype)
    w = RNG.standard_normal((6, 4)).astype(dtype)
    b = RNG.standard_normal(4).astype(dtype)
    lin = REGISTRY["linear"]
    out = lin.value(x, w, b)
    assert out.dtype == dtype
    g = RNG.standard_normal(out.shape).astype(dtype)
    gx, gw, gb = lin.vjp(g, [x, w, b], out, [True, True, True])
    x64, g64 = x.astype(np.float64), g.astype(np.float64)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(gx, g64 @ w.astype(np.float64).T, rtol=tol, atol=tol)
    rows = zip(x64.reshape(-1, 6), g64.reshape(-1, 4))
    np.testing.assert_allclose(gw, sum(np.outer(a, c) for a, c in rows), rtol=tol, atol=tol)
    np.testing.assert_allclose(gb, g64.reshape(-1, 4).sum(axis=0), rtol=tol, atol=tol)
    assert gx.dtype == gw.dtype == gb.dtype == dtype
    assert gx.shape == x.shape and gw.shape == w.shape and gb.shape == b.shape
    # only what is asked for is computed
    parts = lin.vjp(g, [x, w, b], out, [False, True, False])
    assert parts[0] is None and parts[2] is None
    np.testing.assert_array_equal(parts[1], gw)
    # a float64 cotangent of a float32 output is cast first (BLAS in one dtype)
    if dtype == np.float32:
        assert lin.vjp(g64, [x, w, b], out, [True, True, True])[1].dtype == np.float32


@pytest.mark.parametrize("shape", [(9, 4), (3, 70), (1, 1), (200, 10)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_layouts_agree(shape, dtype, monkeypatch):
    """Few classes are reduced on the (classes, batch) transpose, many in place: both
    layouts give the loss and the cotangent to rounding, and equal finite differences."""
    n, c = shape
    z = (RNG.standard_normal(shape) * 2).astype(dtype)
    z[0, 0] = z[0, -1]                           # a tie for the maximum
    y = RNG.integers(0, c, n)
    ce = REGISTRY["cross_entropy"]
    results = []
    for few in (0, 10 ** 6):                     # always in place / always transposed
        monkeypatch.setattr(F, "_FEW_CLASSES", few)
        loss = ce.value(z, y)
        g = ce.vjp(dtype(1.0), [z, y], loss, [True, False])[0]
        assert np.asarray(loss).dtype == dtype and g.dtype == dtype and g.shape == shape
        results.append((loss, g))
    tol = 2e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=tol)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=tol, atol=tol / n)
    if dtype == np.float64 and n * c <= 300:
        for few in (0, 10 ** 6):
            monkeypatch.setattr(F, "_FEW_CLASSES", few)
            eps = 1e-6
            fd = np.zeros(shape)
            for idx in np.ndindex(shape):
                zp, zm = z.copy(), z.copy()
                zp[idx] += eps
                zm[idx] -= eps
                fd[idx] = (ce.value(zp, y) - ce.value(zm, y)) / (2 * eps)
            g = ce.vjp(1.0, [z, y], ce.value(z, y), [True, False])[0]
            np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-9)


def test_value_and_grad_follows_the_structure_of_each_call():
    """value_and_grad reuses the previous call's structure only when the arguments
    still have it: every call returns gradients in the structure it was given."""
    def f(p):
        leaves = adcore.trees.flatten(p)[0]
        return sum((v * v).sum() if hasattr(v, "shape") else v * v for v in leaves)

    vg = adcore.value_and_grad(f)
    calls = [{"w": np.arange(3.0), "b": 2.0},
             {"w": np.arange(3.0), "b": 2.0},
             {"w": np.arange(3.0), "b": {"c": 1.0}},       # a leaf became a node
             {"w": np.arange(3.0), "b": 2.0},
             {"b": 2.0, "w": np.arange(3.0)},              # the same keys, another order
             {"b": 2.0, "w": [np.arange(3.0)]},
             [np.ones(2), 3.0],
             np.ones(2),
             {"w": np.arange(3.0), "b": np.float32(2.0)},  # a numpy scalar leaf
             {"w": np.arange(3), "b": 2},                  # integers: promoted
             # model parameters: a list of dicts of leaves (walked without recursion)
             [{"w": np.arange(3.0), "b": 2.0}, {}, {"w": np.ones(2)}],
             [{"w": np.arange(3.0), "b": 2.0}, {}, {"w": np.ones(2)}],
             [{"b": 2.0, "w": np.arange(3.0)}, {}, {"w": np.ones(2)}],   # keys reordered
             [{"w": np.arange(3.0), "b": 2.0}, {}, {"w": np.ones(2)}, 1.0],
             ({"w": np.arange(3.0), "b": 2.0}, {}, {"w": np.ones(2)}),   # a tuple
             [{"w": np.arange(3.0), "b": 2.0}, {}, {"w": [np.ones(2)]}],  # three levels
             [{"w": np.arange(3.0), "b": 2.0}, {}, {"w": np.ones(2)}],
             [{"w": np.arange(3.0), "b": 2}, {}, {"w": np.ones(2)}]]     # an int leaf
    for p in calls:
        value, g = vg(p)
        want = adcore.trees.tree_map(lambda v: 2.0 * np.asarray(v, dtype=np.float64), p)
        assert adcore.trees.flatten(g)[1] == adcore.trees.flatten(p)[1]
        for a, b in zip(adcore.trees.flatten(g)[0], adcore.trees.flatten(want)[0]):
            np.testing.assert_allclose(a, b)
    vg({"w": np.arange(3.0), "b": 1.0})
    with pytest.raises(TypeError, match=r"argument 0\['b'\]: cannot differentiate with "
                                        r"respect to a str"):
        vg({"w": np.arange(3.0), "b": "x"})


def _replay_case(dtype=np.float32):
    model, params, x, y = _mlp((6, 8, 4), 10, dtype)
    loss = lambda p, x, y: F.cross_entropy(model(p, x), y)          # noqa: E731
    return adcore.record(loss, params, x, y), params, x, y


@pytest.mark.parametrize("labels", ["int", "float"])
def test_replayed_labels_are_checked_on_every_replay(labels):
    """The tape hands integer labels to cross_entropy as float64 (its quick check)
    and the reverse rule reuses the positions the value checked: bad labels on a
    replay still raise, and a good replay after them gives the right gradient."""
    tape, params, x, y = _replay_case()
    kind = np.float64 if labels == "float" else np.int64
    want = tape.gradient(params, x, y.astype(kind))
    cases = [(np.where(np.arange(10) == 3, 4, y), r"0\.\.3"),
             (np.where(np.arange(10) == 3, -1, y), r"0\.\.3")]
    if labels == "float":
        for v in (np.nan, np.inf, -np.inf, 0.5, -0.5, 1e300):
            cases.append((np.where(np.arange(10) == 3, v, y), "integers"))
    for bad, what in cases:
        bad = bad.astype(kind) if labels == "int" else bad.astype(np.float64)
        with pytest.raises(ValueError, match=what):
            tape.gradient(params, x, bad)
        with pytest.raises(ValueError, match=what):
            tape(params, x, bad)
    got = tape.gradient(params, x, y.astype(kind))
    for a, b in zip(got[0], want[0]):
        for k in b:
            np.testing.assert_array_equal(a[k], b[k])
    ref = mlp_loss_and_grads(params, x, y)[1]
    _assert_tree_close(got[0], ref, 2e-5, 1e-6)


def test_cross_entropy_reverse_rule_with_other_labels_than_the_value():
    """The reverse rule reuses the checked positions only for the labels object of
    the last value call; other labels (or the same labels at another shape) are
    checked and used."""
    ce = REGISTRY["cross_entropy"]
    z = RNG.standard_normal((5, 4))
    y1, y2 = np.array([0, 1, 2, 3, 0]), np.array([3.0, 2.0, 1.0, 0.0, 3.0])
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    loss1 = ce.value(z, y1)
    g2 = ce.vjp(1.0, [z, y2], loss1, [True, False])[0]
    np.testing.assert_allclose(g2, (p - np.eye(4)[y2.astype(int)]) / 5, rtol=1e-13, atol=1e-15)
    g1 = ce.vjp(1.0, [z, y1], loss1, [True, False])[0]
    np.testing.assert_allclose(g1, (p - np.eye(4)[y1]) / 5, rtol=1e-13, atol=1e-15)
    with pytest.raises(ValueError, match=r"0\.\.3"):
        ce.vjp(1.0, [z, np.array([0, 1, 2, 4, 0])], loss1, [True, False])
    # the same labels object with logits of another shape: checked again
    ce.value(z, y1)
    with pytest.raises(ValueError, match=r"0\.\.2"):
        ce.vjp(1.0, [z[:, :3], y1], loss1, [True, False])


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("c", [4, 70])
def test_cross_entropy_cotangent_for_any_logits_layout(order, c):
    """The labelled entries are found by C-order positions whatever the memory
    layout of the logits (and of the cotangent built from them)."""
    ce = REGISTRY["cross_entropy"]
    z = np.asarray(RNG.standard_normal((6, c)), order=order)
    y = RNG.integers(0, c, 6)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    loss = ce.value(z, y)
    np.testing.assert_allclose(loss, -np.mean(np.log(p[np.arange(6), y])), rtol=1e-13)
    g = ce.vjp(1.0, [z, y], loss, [True, False])[0]
    np.testing.assert_allclose(g, (p - np.eye(c)[y]) / 6, rtol=1e-12, atol=1e-15)


def _layers(dtype=np.float32):
    rng = np.random.default_rng(4)
    return [{"w": rng.standard_normal((3, 4)).astype(dtype), "b": rng.standard_normal(4).astype(dtype)},
            {},
            {"w": rng.standard_normal((4, 2)).astype(dtype), "b": rng.standard_normal(2).astype(dtype)}]


def _grads_like(params, rng, dtype=None):
    return [{k: rng.standard_normal(v.shape).astype(dtype or v.dtype) for k, v in p.items()}
            for p in params]


def _sgd_by_hand(p, g, v, lr, momentum, wd, nesterov):
    """SGD written out per leaf (PyTorch's form), in the parameter's dtype."""
    t = p.dtype.type
    g = g.astype(p.dtype)
    if wd:
        g = g + p * t(wd)
    if momentum:
        v *= t(momentum)
        v += g
        g = g + v * t(momentum) if nesterov else v
    p -= t(lr) * g


@pytest.mark.parametrize("kw", [{}, {"momentum": 0.9}, {"momentum": 0.5, "nesterov": True},
                                {"momentum": 0.9, "weight_decay": 0.01}, {"weight_decay": 0.1}])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sgd_steps_bitwise_by_hand_through_every_path(kw, dtype):
    """Later steps take the quick path (same plain tree, shapes and dtypes); other
    gradients (float64 for float32 parameters, a namedtuple tree, a changed
    learning rate) take the checked path or new constants: every step equals
    the update written out by hand, bit for bit, in place."""
    rng = np.random.default_rng(8)
    params = _layers(dtype)
    mine = [{k: v.copy() for k, v in p.items()} for p in params]
    vel = [{k: np.zeros_like(v) for k, v in p.items()} for p in params]
    ids = [id(v) for p in params for v in p.values()]
    opt = adcore.nn.SGD(lr=0.1, **kw)
    for step in range(6):
        g = _grads_like(params, rng, np.float64 if step == 3 else None)
        if step == 4:
            opt.lr = 0.05                          # a schedule changes the rate
        assert opt.step(params, g) is params
        for p, q, gg, v in zip(params, mine, g, vel):
            for k in q:
                _sgd_by_hand(q[k], gg[k], v[k], opt.lr, opt.momentum, opt.weight_decay,
                             opt.nesterov)
                assert p[k].dtype == dtype
                np.testing.assert_array_equal(p[k], q[k])
    assert [id(v) for p in params for v in p.values()] == ids     # updated in place
    assert opt.steps == 6


def test_adam_steps_bitwise_by_hand():
    rng = np.random.default_rng(9)
    params = {"w": rng.standard_normal((3, 2)).astype(np.float32),
              "b": rng.standard_normal(2).astype(np.float32)}
    mine = {k: v.copy() for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v2 = {k: np.zeros_like(v) for k, v in params.items()}
    opt = adcore.nn.Adam(lr=0.01, weight_decay=0.1, decoupled=True)
    t = np.float32
    for step in range(1, 5):
        g = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in params.items()}
        opt.step(params, g)
        c1, c2 = 1.0 - 0.9 ** step, 1.0 - 0.999 ** step
        for k in mine:
            m[k] *= t(0.9)
            m[k] += t(1.0 - 0.9) * g[k]
            v2[k] *= t(0.999)
            v2[k] += t(1.0 - 0.999) * (g[k] * g[k])
            mine[k] -= t(0.01 * 0.1) * mine[k]
            mine[k] -= t(0.01 * np.sqrt(c2) / c1) * m[k] / (np.sqrt(v2[k]) + t(1e-8 * np.sqrt(c2)))
            np.testing.assert_array_equal(params[k], mine[k])


def test_optimizer_quick_path_falls_back_and_names_problems():
    """After a first step the quick path handles the same tree; any difference
    (structure, shapes, dtypes, a read-only or non-array leaf) goes to the checked
    path with its errors, and nothing is updated when a step is refused."""
    rng = np.random.default_rng(10)
    params = _layers()
    opt = adcore.nn.SGD(lr=0.1, momentum=0.9)
    opt.step(params, _grads_like(params, rng))
    before = [{k: v.copy() for k, v in p.items()} for p in params]

    def unchanged():
        for p, q in zip(params, before):
            for k in q:
                np.testing.assert_array_equal(p[k], q[k])

    g = _grads_like(params, rng)
    del g[2]["b"]
    with pytest.raises(ValueError, match="structure"):
        opt.step(params, g)
    g = _grads_like(params, rng)
    g[0]["w"] = g[0]["w"][:2]
    with pytest.raises(ValueError, match=r"gradient leaf 0 has shape \(2, 4\)"):
        opt.step(params, g)
    bigger = [dict(p) for p in params]
    bigger[2]["w"] = np.zeros((5, 2), np.float32)
    with pytest.raises(ValueError, match="first step"):
        opt.step(bigger, _grads_like(bigger, rng))
    more = params + [{"w": np.zeros(2, np.float32)}]
    with pytest.raises(ValueError, match="changed structure"):
        opt.step(more, _grads_like(more, rng))
    frozen = [dict(p) for p in params]
    frozen[0]["b"] = params[0]["b"].copy()
    frozen[0]["b"].flags.writeable = False
    with pytest.raises(TypeError, match="writable numpy array"):
        opt.step(frozen, _grads_like(params, rng))
    listed = [dict(p) for p in params]
    listed[2]["b"] = 1.0
    with pytest.raises(TypeError, match="writable numpy array"):
        opt.step(listed, _grads_like(params, rng))
    unchanged()
    assert opt.steps == 1
    # a float64 parameter array in place of a float32 one: the checked path, the
    # update in that array's dtype
    f64 = [dict(p) for p in params]
    f64[0]["b"] = params[0]["b"].astype(np.float64)
    g = _grads_like(params, rng)
    opt.step(f64, g)
    assert f64[0]["b"].dtype == np.float64 and opt.steps == 2


def test_threads_replaying_a_step_with_their_own_labels():
    """cross_entropy's reverse rule reuses the positions of the last value call only
    for the same labels object: threads replaying one tape on other labels (and the
    optimizers' and the driver's kept layouts) give the serial results, bitwise."""
    import sys
    import threading

    tape, params, x, _ = _replay_case()
    rng = np.random.default_rng(12)
    batches = [(rng.standard_normal(x.shape).astype(np.float32), rng.integers(0, 4, 10))
               for _ in range(6)]
    serial = [tape.gradient(params, xb, yb, argnums=0) for xb, yb in batches]
    results = [None] * len(batches)
    errors = []
    barrier = threading.Barrier(len(batches))

    def body(k):
        try:
            barrier.wait()
            xb, yb = batches[k]
            results[k] = [tape.gradient(params, xb, yb, argnums=0) for _ in range(20)]
        except BaseException as exc:         # reported below
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(k,)) for k in range(len(batches))]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)                  # switch threads often, inside the sweeps
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert not errors, errors
    for want, got in zip(serial, results):
        for g in got:
            for a, b in zip(g, want):
                for k in b:
                    assert a[k].tobytes() == b[k].tobytes()


@pytest.mark.parametrize("c", [5, 70])
def test_cross_entropy_reverse_rule_reuses_the_softmax_only_for_the_same_logits(c, monkeypatch):
    """The value keeps exp(z - max) and its sums for the reverse rule, which uses them
    only for the same array with the same shape, dtype and bytes: logits changed in
    place (or reshaped) between the two calls are worked out again."""
    ce = REGISTRY["cross_entropy"]
    half = np.float32(0.5)

    def fresh(zz, yy):                       # nothing kept
        monkeypatch.setattr(F, "_KEEP", 0)
        ce._soft = None
        v = ce.value(zz, yy)
        g = ce.vjp(half, [zz, yy], v, [True, False])[0]
        monkeypatch.setattr(F, "_KEEP", 1 << 16)
        return v, g

    z = RNG.standard_normal((6, c)).astype(np.float32)
    y = RNG.integers(0, c, 6)
    want_v, want_g = fresh(z.copy(), y)
    v = ce.value(z, y)
    assert ce._soft is not None and ce._soft[0] is z
    assert v.tobytes() == want_v.tobytes()
    for _ in range(2):                       # a kept softmax is not changed by its use
        assert ce.vjp(half, [z, y], v, [True, False])[0].tobytes() == want_g.tobytes()
    # changed in place after the value: a permuted row keeps its loss, not its gradient
    ce.value(z, y)
    z[3] = z[3, ::-1].copy()
    z[2, 1] += 1.0
    got = ce.vjp(half, [z, y], v, [True, False])[0]
    assert got.tobytes() == fresh(z.copy(), y)[1].tobytes()
    assert not np.array_equal(got, want_g)
    # the same array and bytes under another shape: worked out for that shape
    w = RNG.standard_normal((c, 6)).astype(np.float32)
    ce.value(w, RNG.integers(0, 6, c))
    w.shape = (6, c)
    got = ce.vjp(half, [w, y], v, [True, False])[0]
    assert got.tobytes() == fresh(w.copy(), y)[1].tobytes()


def test_labels_intp_checks_every_element():
    """The one-pass C check of float labels: exact integers in [0, classes) become
    intp; anything else gives None, and cross_entropy's own checks name it."""
    from adcore._tape import labels_intp
    got = labels_intp(np.array([0.0, -0.0, 2.0, 1.0]), 3)
    assert got.dtype == np.intp
    np.testing.assert_array_equal(got, [0, 0, 2, 1])
    assert labels_intp(np.zeros(0), 3).shape == (0,)
    # with row: the labelled entries' C-order positions in (n, row) logits
    np.testing.assert_array_equal(labels_intp(np.array([0.0, 2.0, 1.0]), 3, 3), [0, 5, 7])
    assert labels_intp(np.array([0.0, 3.0]), 3, 3) is None
    for bad in ([0.0, 3.0], [0.0, -1.0], [0.5], [np.nan], [np.inf], [-np.inf],
                [2.0 ** 63], [1e300]):
        assert labels_intp(np.array(bad), 3) is None, bad
    # not a 1-d C-contiguous float64 array: left to the general checks
    assert labels_intp(np.array([0.0, 1.0], np.float32), 3) is None
    assert labels_intp(np.array([0, 1]), 3) is None
    assert labels_intp(np.array([0.0, 1.0, 2.0, 1.0])[::2], 3) is None
    assert labels_intp(np.array([[0.0, 1.0]]), 3) is None
    assert labels_intp([0.0, 1.0], 3) is None


@pytest.mark.parametrize("n", [1, 7, 8, 255, 256, 1000])
def test_float32_relu_replay_is_bitwise_the_float64_rule(n):
    """relu's float32 kernels work in float (vectorized): the same bits as the rule
    through double, signed zeros, NaN and zero cotangents included."""
    x = RNG.standard_normal(n).astype(np.float32)
    x[: min(n, 6)] = np.array([0.0, -0.0, np.nan, np.inf, -np.inf, 1e-45], np.float32)[: min(n, 6)]
    w = RNG.standard_normal(n).astype(np.float32)
    w[n // 2] = 0.0
    if n > 2:
        w[n // 3] = -0.0

    def f(x, w):
        return adcore.sum(adcore.relu(x) * w)

    tape = adcore.record(f, x, w)
    y = tape(x, w)
    gx, gw = tape.gradient(x, w)
    rx = np.where(x > 0, x, np.where(x <= 0, np.float32(0.0), x))
    np.testing.assert_array_equal(gw.view(np.uint32), rx.view(np.uint32))
    want_gx = np.where((x > 0) & (w != 0), w, np.float32(0.0)).astype(np.float32)
    np.testing.assert_array_equal(gx.view(np.uint32), want_gx.view(np.uint32))
    with np.errstate(invalid="ignore"):          # inf * 0 in the check
        assert np.isnan(y) == np.isnan(np.sum(rx * w))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [0, 1, 7, 300, 5000])
def test_sub_scaled_is_numpys_update_bitwise(dtype, n):
    # the optimizers' one-pass p -= k * g (no temporary): numpy's bits, -0.0, inf and
    # NaN included; anything else is refused (False) and p left as it was
    from adcore._tape import sub_scaled
    rng = np.random.default_rng(n)
    p = rng.standard_normal(n).astype(dtype)
    g = rng.standard_normal(n).astype(dtype)
    if n >= 7:
        p[:4] = [0.0, -0.0, np.inf, np.nan]
        g[2:6] = [0.0, -0.0, np.inf, -1e-300]
    k = dtype(0.1)
    want = p.copy()
    want -= k * g
    got = p.copy()
    assert sub_scaled(got, k, g)
    np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))
    before = p.copy()
    other = np.float64 if dtype == np.float32 else np.float32
    refused = [(p, 0.1, g), (p, other(0.1), g), (p, k, g.astype(other)),
               (p, k, g.reshape(1, n))]
    if n >= 2:      # strided, the same memory, overlapping
        refused += [(p, k, g[::-1].copy()[::-1]), (p, k, p), (p[1:], k, p[:-1])]
    for args in refused:
        assert sub_scaled(*args) is False
    p.setflags(write=False)
    assert sub_scaled(p, k, g) is False
    np.testing.assert_array_equal(p.view(np.uint8), before.view(np.uint8))
