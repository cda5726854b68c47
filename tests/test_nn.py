"""adcore.nn: every deep-learning operation against central finite differences
(float64), jvp against vjp (the transpose identity), float32 end to end, the
layers, optimizers, data, and a two-layer network against hand-derived gradients."""

import numpy as np
import pytest

import adcore.nn as nn
from adcore.nn import functional as F
from adcore.primitives import REGISTRY

RNG = np.random.default_rng(5)


def r(*shape):
    return RNG.standard_normal(shape)


def _fd_jacobian(f, xs, i, eps=1e-6):
    x = np.array(xs[i], dtype=np.float64)
    cols = []
    for j in range(x.size):
        e = np.zeros(x.size)
        e[j] = eps
        plus, minus = list(xs), list(xs)
        plus[i] = x + e.reshape(x.shape)
        minus[i] = x - e.reshape(x.shape)
        cols.append((np.ravel(f(*plus)) - np.ravel(f(*minus))) / (2 * eps))
    return np.stack(cols, axis=1)


def check_primitive(prim, xs, params, diff, k=2, rtol=1e-6, atol=1e-7):
    """jvp and vjp of the inputs ``diff`` against finite differences, and
    <vjp(u), v> == <u, jvp(v)>."""
    f = lambda *a: prim.value(*a, **params)  # noqa: E731
    out = np.asarray(f(*xs))
    for i in diff:
        J = _fd_jacobian(f, xs, i)
        dx = RNG.standard_normal((k,) + np.shape(xs[i]))
        dxs = [dx if j == i else None for j in range(len(xs))]
        t = np.asarray(prim.jvp(xs, dxs, out, **params))
        assert t.shape == (k,) + out.shape
        np.testing.assert_allclose(t.reshape(k, -1), dx.reshape(k, -1) @ J.T,
                                   rtol=rtol, atol=atol)
        u = RNG.standard_normal(out.shape)
        cts = prim.vjp(u, xs, out, [j == i for j in range(len(xs))], **params)
        assert len(cts) == len(xs)
        ct = np.asarray(cts[i])
        assert ct.shape == np.shape(xs[i])
        np.testing.assert_allclose(ct.ravel(), u.ravel() @ J, rtol=rtol, atol=atol)
        lhs = np.sum(dx.reshape(k, -1) * ct.ravel(), axis=1)
        rhs = np.sum(t.reshape(k, -1) * u.ravel(), axis=1)
        np.testing.assert_allclose(lhs, rhs, rtol=1e-10, atol=1e-10)
    if len(diff) > 1:  # every input moving at once: the tangents add up
        dxs = [RNG.standard_normal((k,) + np.shape(x)) if j in diff else None
               for j, x in enumerate(xs)]
        total = prim.jvp(xs, dxs, out, **params)
        parts = sum(np.asarray(prim.jvp(xs, [d if j == i else None for j, d in enumerate(dxs)],
                                        out, **params)) for i in diff)
        np.testing.assert_allclose(total, parts, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- softmax family

@pytest.mark.parametrize("shape,axis", [((5,), -1), ((3, 4), -1), ((3, 4), 0), ((2, 3, 4), 1)])
def test_softmax_and_log_softmax(shape, axis):
    x = r(*shape) * 3
    s = F.softmax(x, axis)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    np.testing.assert_allclose(s, e / e.sum(axis=axis, keepdims=True), rtol=1e-12)
    np.testing.assert_allclose(F.log_softmax(x, axis), np.log(s), rtol=1e-10, atol=1e-12)
    check_primitive(REGISTRY["softmax"], [x], {"axis": axis}, [0])
    check_primitive(REGISTRY["log_softmax"], [x], {"axis": axis}, [0])


@pytest.mark.parametrize("shape,axis,keepdims", [((5,), None, False), ((3, 4), 1, False),
                                                 ((3, 4), 0, True), ((2, 3, 4), (0, 2), False)])
def test_logsumexp(shape, axis, keepdims):
    x = r(*shape)
    expect = np.log(np.sum(np.exp(x), axis=axis, keepdims=keepdims))
    np.testing.assert_allclose(F.logsumexp(x, axis, keepdims), expect, rtol=1e-12)
    check_primitive(REGISTRY["logsumexp"], [x], {"axis": axis, "keepdims": keepdims}, [0])


def test_softmax_family_is_stable():
    x = np.array([[1000.0, 0.0, -1000.0], [-800.0, -800.0, -800.0]])
    assert np.all(np.isfinite(F.softmax(x)))
    np.testing.assert_allclose(F.softmax(x)[1], [1 / 3] * 3)
    np.testing.assert_allclose(F.logsumexp(x, axis=1), [1000.0, -800.0 + np.log(3.0)])
    assert np.all(np.isfinite(F.log_softmax(x)[0, :2]))
    assert F.log_softmax(x)[0, 2] == -2000.0
    assert F.logsumexp(np.array([-np.inf, -np.inf])) == -np.inf


# ---------------------------------------------------------------- losses

def test_cross_entropy():
    z = r(6, 4)
    y = np.array([0, 3, 1, 1, 2, 0])
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(F.cross_entropy(z, y), -np.mean(np.log(p[np.arange(6), y])))
    check_primitive(REGISTRY["cross_entropy"], [z, y], {}, [0])
    # gradient by hand: (softmax - one_hot) / batch
    g = REGISTRY["cross_entropy"].vjp(np.float64(1.0), [z, y], None, [True, False])
    np.testing.assert_allclose(g[0], (p - np.eye(4)[y]) / 6, rtol=1e-12)
    assert g[1] is None


def test_cross_entropy_bad_labels():
    z = r(3, 4)
    with pytest.raises(ValueError, match="0..3"):
        F.cross_entropy(z, np.array([0, 4, 1]))
    with pytest.raises(ValueError, match="shape"):
        F.cross_entropy(z, np.array([0, 1]))
    with pytest.raises(ValueError, match="integers"):
        F.cross_entropy(z, np.array([0.5, 1.0, 2.0]))
    with pytest.raises(ValueError, match="batch, classes"):
        F.cross_entropy(r(4), np.array([0]))
    # integer-valued floats (a tape may store labels as floats) are accepted
    assert F.cross_entropy(z, np.array([0.0, 3.0, 1.0])) == F.cross_entropy(z, np.array([0, 3, 1]))


@pytest.mark.parametrize("sp,st", [((3, 4), (3, 4)), ((3, 4), (4,)), ((4,), (3, 4))])
def test_mse(sp, st):
    p, t = r(*sp), r(*st)
    np.testing.assert_allclose(F.mse(p, t), np.mean((p - t) ** 2))
    check_primitive(REGISTRY["mse"], [p, t], {}, [0, 1])


def test_one_hot():
    np.testing.assert_array_equal(F.one_hot(np.array([2, 0]), 3), [[0, 0, 1], [1, 0, 0]])
    with pytest.raises(ValueError, match="0..2"):
        F.one_hot(np.array([3]), 3)


# ---------------------------------------------------------------- linear, conv, pooling

@pytest.mark.parametrize("sx", [(5, 3), (3,), (2, 4, 3)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear(sx, bias):
    x, w, b = r(*sx), r(3, 2), r(2)
    xs = [x, w, b] if bias else [x, w]
    np.testing.assert_allclose(F.linear(*xs), x @ w + (b if bias else 0))
    check_primitive(REGISTRY["linear"], xs, {}, list(range(len(xs))))


def _conv_reference(x, w, b, stride, padding):
    """Direct loops: out[n, o, i, j] = sum_{c,a,b} w[o,c,a,b] xpad[n, c, s*i+a, s*j+b] + b[o]."""
    (sh, sw), (ph, pw) = stride, padding
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    n, c, h, wd = xp.shape
    o, _, kh, kw = w.shape
    ho, wo = (h - kh) // sh + 1, (wd - kw) // sw + 1
    out = np.zeros((n, o, ho, wo))
    for i in range(ho):
        for j in range(wo):
            patch = xp[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw]
            out[:, :, i, j] = np.tensordot(patch, w, axes=([1, 2, 3], [1, 2, 3]))
    return out + (0 if b is None else b.reshape(1, -1, 1, 1))


@pytest.mark.parametrize("stride,padding,bias", [((1, 1), (0, 0), True), ((2, 2), (1, 1), True),
                                                 ((1, 2), (1, 0), False), ((2, 1), (0, 2), True)])
def test_conv2d(stride, padding, bias):
    x, w, b = r(2, 2, 5, 6), r(3, 2, 3, 2), r(3)
    bb = b if bias else None
    np.testing.assert_allclose(F.conv2d(x, w, bb, stride, padding),
                               _conv_reference(x, w, bb, stride, padding), rtol=1e-10, atol=1e-12)
    xs = [x, w, b] if bias else [x, w]
    check_primitive(REGISTRY["conv2d"], xs, {"stride": stride, "padding": padding},
                    list(range(len(xs))), rtol=1e-5, atol=1e-6)


def test_conv2d_bad_shapes():
    with pytest.raises(ValueError, match="channels"):
        F.conv2d(r(1, 2, 4, 4), r(3, 1, 2, 2))
    with pytest.raises(ValueError, match="height"):
        F.conv2d(r(2, 4, 4), r(3, 2, 2, 2))
    with pytest.raises(ValueError, match="larger than the padded input"):
        F.conv2d(r(1, 1, 2, 2), r(1, 1, 3, 3))
    with pytest.raises(ValueError, match="stride must be positive"):
        F.conv2d(r(1, 1, 4, 4), r(1, 1, 2, 2), stride=0)


@pytest.mark.parametrize("kernel,stride,padding", [(2, None, 0), (3, 1, 1), ((2, 3), (1, 2), 0),
                                                   (3, 2, 1)])
def test_pooling(kernel, stride, padding):
    x = r(2, 3, 6, 7)
    pk = F._pool_params(kernel, stride, padding, "test")
    (kh, kw), (sh, sw), (ph, pw) = pk["kernel"], pk["stride"], pk["padding"]
    xp_max = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=-np.inf)
    xp_avg = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    ho, wo = (6 + 2 * ph - kh) // sh + 1, (7 + 2 * pw - kw) // sw + 1
    ref_max = np.empty((2, 3, ho, wo))
    ref_avg = np.empty((2, 3, ho, wo))
    for i in range(ho):
        for j in range(wo):
            sl = (slice(None), slice(None), slice(i * sh, i * sh + kh), slice(j * sw, j * sw + kw))
            ref_max[:, :, i, j] = xp_max[sl].max(axis=(2, 3))
            ref_avg[:, :, i, j] = xp_avg[sl].mean(axis=(2, 3))
    np.testing.assert_allclose(F.max_pool2d(x, kernel, stride, padding), ref_max)
    np.testing.assert_allclose(F.avg_pool2d(x, kernel, stride, padding), ref_avg)
    check_primitive(REGISTRY["max_pool2d"], [x], pk, [0])
    check_primitive(REGISTRY["avg_pool2d"], [x], pk, [0])


def test_max_pool_ties_split_evenly():
    x = np.array([[[[1.0, 1.0], [0.0, 1.0]]]])
    prim = REGISTRY["max_pool2d"]
    params = F._pool_params(2, None, 0, "t")
    out = prim.value(x, **params)
    g = prim.vjp(np.ones((1, 1, 1, 1)), [x], out, [True], **params)[0]
    np.testing.assert_allclose(g, [[[[1 / 3, 1 / 3], [0.0, 1 / 3]]]])
    t = prim.jvp([x], [np.ones((1,) + x.shape)], out, **params)
    np.testing.assert_allclose(t, np.ones((1, 1, 1, 1, 1)))


def test_pool_bad_padding():
    with pytest.raises(ValueError, match="half the window"):
        F.max_pool2d(r(1, 1, 4, 4), 2, padding=2)


# ---------------------------------------------------------------- dropout, flatten

def test_dropout():
    x = np.ones((200, 50))
    y = F.dropout(x, 0.25, np.random.default_rng(0))
    kept = y != 0
    assert 0.7 < kept.mean() < 0.8
    np.testing.assert_allclose(y[kept], 1 / 0.75)
    y2 = F.dropout(x, 0.25, np.random.default_rng(0))
    np.testing.assert_array_equal(y, y2)                        # the rng decides, nothing else
    assert F.dropout(x, 0.25, None, training=False) is x
    mask = (r(3, 4) > 0) * 2.0
    check_primitive(REGISTRY["dropout"], [r(3, 4), mask], {}, [0])
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        F.dropout(x, 1.0, np.random.default_rng(0))
    with pytest.raises(TypeError, match="Generator"):
        F.dropout(x, 0.5, 0)
    assert F.dropout(x.astype(np.float32), 0.5, np.random.default_rng(1)).dtype == np.float32


def test_flatten():
    x = r(2, 3, 4, 5)
    assert F.flatten(x).shape == (2, 60)
    assert F.flatten(x, 2).shape == (2, 3, 20)


# ---------------------------------------------------------------- float32 end to end

def test_float32_stays_float32():
    f32 = np.float32
    x = r(2, 3, 6, 6).astype(f32)
    w = r(4, 3, 3, 3).astype(f32)
    b = r(4).astype(f32)
    z = r(5, 4).astype(f32)
    y = np.array([0, 1, 2, 3, 0])
    cases = [
        ("softmax", [z], {"axis": -1}),
        ("log_softmax", [z], {"axis": -1}),
        ("logsumexp", [z], {"axis": 1, "keepdims": False}),
        ("cross_entropy", [z, y], {}),
        ("mse", [z, z[::-1].copy()], {}),
        ("linear", [z, r(4, 3).astype(f32), r(3).astype(f32)], {}),
        ("conv2d", [x, w, b], {"stride": (1, 1), "padding": (1, 1)}),
        ("max_pool2d", [x], F._pool_params(2, None, 0, "t")),
        ("avg_pool2d", [x], F._pool_params(2, None, 0, "t")),
    ]
    for name, xs, params in cases:
        prim = REGISTRY[name]
        out = prim.value(*xs, **params)
        assert np.asarray(out).dtype == f32, name
        dxs = [np.ones((2,) + a.shape, f32) if a.dtype == f32 else None for a in xs]
        assert np.asarray(prim.jvp(xs, dxs, out, **params)).dtype == f32, name
        g = np.ones(np.shape(out), f32)
        for ct in prim.vjp(g, xs, out, [a.dtype == f32 for a in xs], **params):
            assert ct is None or np.asarray(ct).dtype == f32, name


# ---------------------------------------------------------------- a two-layer network by hand

def _two_layer(dtype=np.float64, seed=3):
    rng = np.random.default_rng(seed)
    model = nn.MLP([5, 4, 3])
    params = model.init(rng, dtype)
    for p in params:                      # non-zero biases so that they are tested too
        if p:
            p["b"][...] = rng.standard_normal(p["b"].shape)
    x = rng.standard_normal((6, 5)).astype(dtype)
    y = np.array([0, 2, 1, 1, 0, 2])
    return model, params, x, y


def test_reference_gradients_against_finite_differences():
    from adcore.nn.reference import mlp_loss_and_grads

    _, params, x, y = _two_layer()
    loss, grads = mlp_loss_and_grads(params, x, y)
    eps = 1e-6
    for li, p in enumerate(params):
        for k in p:
            fd = np.zeros_like(p[k])
            for idx in np.ndindex(p[k].shape):
                old = p[k][idx]
                p[k][idx] = old + eps
                up = mlp_loss_and_grads(params, x, y)[0]
                p[k][idx] = old - eps
                down = mlp_loss_and_grads(params, x, y)[0]
                p[k][idx] = old
                fd[idx] = (up - down) / (2 * eps)
            np.testing.assert_allclose(grads[li][k], fd, rtol=1e-6, atol=1e-8)


def test_primitive_rules_compose_to_the_hand_derived_gradients():
    """The chain rule through the primitives' own vjps (no tape) gives the hand-written
    backpropagation, and the model's forward pass gives the same loss."""
    from adcore.nn.reference import mlp_loss_and_grads

    model, params, x, y = _two_layer()
    lin, ce = REGISTRY["linear"], REGISTRY["cross_entropy"]
    w1, b1, w2, b2 = params[0]["w"], params[0]["b"], params[2]["w"], params[2]["b"]
    z1 = lin.value(x, w1, b1)
    h = np.maximum(z1, 0.0)
    z2 = lin.value(h, w2, b2)
    loss = ce.value(z2, y)
    gz2, _ = ce.vjp(np.float64(1.0), [z2, y], loss, [True, False])
    gh, gw2, gb2 = lin.vjp(gz2, [h, w2, b2], z2, [True, True, True])
    gz1 = gh * (z1 > 0)                                  # relu' (rule table: greater(x, 0))
    _, gw1, gb1 = lin.vjp(gz1, [x, w1, b1], z1, [False, True, True])
    ref_loss, ref = mlp_loss_and_grads(params, x, y)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-12)
    np.testing.assert_allclose(F.cross_entropy(model(params, x), y), ref_loss, rtol=1e-12)
    for got, want in [(gw1, ref[0]["w"]), (gb1, ref[0]["b"]), (gw2, ref[2]["w"]),
                      (gb2, ref[2]["b"])]:
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-14)


# ---------------------------------------------------------------- layers and initializers

def test_initializers():
    rng = np.random.default_rng(0)
    w = nn.he_normal(rng, (400, 300))
    assert w.dtype == np.float32 and w.shape == (400, 300)
    assert abs(w.std() - np.sqrt(2 / 400)) < 0.05 * np.sqrt(2 / 400)
    w = nn.glorot_uniform(rng, (400, 300), np.float64)
    a = np.sqrt(6 / 700)
    assert w.dtype == np.float64 and w.max() <= a and w.min() >= -a and w.max() > 0.95 * a
    c = nn.he_uniform(rng, (8, 3, 3, 3))                  # fan_in = 3 * 3 * 3
    assert c.max() <= np.sqrt(6 / 27) and c.max() > 0.9 * np.sqrt(6 / 27)
    assert abs(nn.glorot_normal(rng, (300, 500)).std() - np.sqrt(2 / 800)) < 0.003
    with pytest.raises(TypeError, match="Generator"):
        nn.he_normal(0, (3, 3))
    with pytest.raises(ValueError, match="unknown initializer"):
        nn.Linear(3, 2, init="nope")
    # the same seed gives the same parameters
    a1 = nn.MLP([4, 8, 2]).init(np.random.default_rng(7))
    a2 = nn.MLP([4, 8, 2]).init(np.random.default_rng(7))
    np.testing.assert_array_equal(a1[0]["w"], a2[0]["w"])


def test_layers_apply():
    rng = np.random.default_rng(1)
    lin = nn.Linear(3, 2)
    p = lin.init(rng, np.float64)
    assert p["w"].shape == (3, 2) and p["b"].shape == (2,) and not p["b"].any()
    x = rng.standard_normal((4, 3))
    np.testing.assert_allclose(lin(p, x), x @ p["w"])
    assert "b" not in nn.Linear(3, 2, bias=False).init(rng)
    conv = nn.Conv2d(2, 5, 3, padding=1)
    pc = conv.init(rng)
    assert pc["w"].shape == (5, 2, 3, 3) and pc["w"].dtype == np.float32
    out = conv(pc, rng.standard_normal((3, 2, 8, 8)).astype(np.float32))
    assert out.shape == (3, 5, 8, 8) and out.dtype == np.float32
    act = nn.Activation("relu")
    np.testing.assert_array_equal(act({}, np.array([-1.0, 2.0])), [0.0, 2.0])
    with pytest.raises(ValueError, match="unknown activation"):
        nn.Activation("swish")


def test_sequential_and_mlp():
    rng = np.random.default_rng(2)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Activation("relu"),
                          nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(0.5), nn.Linear(64, 10))
    params = model.init(rng)
    assert [sorted(p) for p in params] == [["b", "w"], [], [], [], [], ["b", "w"]]
    assert nn.count_parameters(params) == 4 * 9 + 4 + 640 + 10
    x = rng.standard_normal((5, 1, 8, 8)).astype(np.float32)
    out = model(params, x)
    assert out.shape == (5, 10) and out.dtype == np.float32
    # dropout is off unless training, and training needs an rng
    np.testing.assert_array_equal(out, model(params, x))
    with pytest.raises(ValueError, match="rng"):
        model(params, x, training=True)
    assert model(params, x, training=True, rng=np.random.default_rng(0)).shape == (5, 10)
    with pytest.raises(ValueError, match="parameters for"):
        model(params[:-1], x)
    mlp = nn.MLP([64, 32, 16, 10], activation="tanh")
    assert len(mlp.layers) == 5 and mlp.layers[1].name == "tanh"
    assert mlp(mlp.init(rng), x.reshape(5, 64)).shape == (5, 10)
    with pytest.raises(TypeError, match="not an adcore.nn layer"):
        nn.Sequential(lambda p, x: x)


# ---------------------------------------------------------------- optimizers

def test_sgd():
    p = {"a": np.array([1.0, -2.0]), "b": [np.array(3.0)]}
    g = {"a": np.array([0.5, 0.5]), "b": [np.array(-1.0)]}
    opt = nn.SGD(lr=0.1)
    out = opt.step(p, g)
    assert out is p
    np.testing.assert_allclose(p["a"], [0.95, -2.05])
    np.testing.assert_allclose(p["b"][0], 3.1)
    # momentum: v1 = g, v2 = 0.9 g + g; weight decay adds wd * p to the gradient
    p = {"w": np.array([1.0])}
    opt = nn.SGD(lr=0.1, momentum=0.9, weight_decay=0.5)
    opt.step(p, {"w": np.array([0.0])})                  # g' = 0.5, v = 0.5, w = 0.95
    np.testing.assert_allclose(p["w"], [0.95])
    opt.step(p, {"w": np.array([1.0])})                  # g' = 1.475, v = 0.45 + 1.475
    np.testing.assert_allclose(p["w"], [0.95 - 0.1 * 1.925])
    with pytest.raises(ValueError, match="structure"):
        opt.step({"w": p["w"], "x": np.zeros(1)}, {"w": np.zeros(1), "x": np.zeros(1)})
    with pytest.raises(ValueError, match="shape"):
        nn.SGD(0.1).step({"w": np.zeros(2)}, {"w": np.zeros(3)})
    with pytest.raises(TypeError, match="writable numpy array"):
        nn.SGD(0.1).step({"w": 1.0}, {"w": 1.0})
    with pytest.raises(ValueError, match="momentum"):
        nn.SGD(0.1, momentum=1.5)
    with pytest.raises(ValueError, match="structure"):
        nn.SGD(0.1).step({"w": np.zeros(2)}, {"v": np.zeros(2)})


def test_optimizers_on_other_trees():
    import collections

    Pair = collections.namedtuple("Pair", "w b")
    p = Pair(np.ones(2), np.ones(1))
    nn.SGD(0.5).step(p, Pair(np.ones(2), np.zeros(1)))
    np.testing.assert_allclose(p.w, [0.5, 0.5])
    np.testing.assert_allclose(p.b, [1.0])
    opt = nn.Adam(0.1)
    q = (np.ones(3), [np.ones((2, 2))])
    opt.step(q, (np.ones(3), [np.ones((2, 2))]))
    with pytest.raises(ValueError, match="first step"):
        opt.step((np.ones(3), [np.ones((2, 3))]), (np.ones(3), [np.ones((2, 3))]))


def test_adam():
    # the first step moves each coordinate by lr in the direction of -sign(g)
    p = {"w": np.array([1.0, 1.0, 1.0], dtype=np.float32)}
    opt = nn.Adam(lr=0.01)
    opt.step(p, {"w": np.array([3.0, -0.001, 100.0], dtype=np.float32)})
    np.testing.assert_allclose(p["w"], [0.99, 1.01, 0.99], rtol=1e-5)
    assert p["w"].dtype == np.float32 and opt.m[0].dtype == np.float32
    # a quadratic bowl: Adam reaches the minimum
    target = np.array([3.0, -1.0, 0.5])
    q = {"w": np.zeros(3)}
    opt = nn.Adam(lr=0.05)
    for _ in range(2000):
        opt.step(q, {"w": 2 * (q["w"] - target)})
    np.testing.assert_allclose(q["w"], target, atol=1e-3)
    # decoupled weight decay (AdamW) shrinks a parameter with zero gradient
    z = {"w": np.array([1.0])}
    nn.Adam(lr=0.1, weight_decay=0.1, decoupled=True).step(z, {"w": np.array([0.0])})
    np.testing.assert_allclose(z["w"], [0.99])


# ---------------------------------------------------------------- data

def test_digits_data():
    images, labels = nn.load_digits(raw=True)
    assert images.shape == (1797, 8, 8) and images.dtype == np.uint8
    assert images.max() == 16 and images.min() == 0
    np.testing.assert_array_equal(np.bincount(labels),
                                  [178, 182, 177, 183, 181, 182, 181, 179, 174, 180])
    x, y = nn.load_digits()
    assert x.shape == (1797, 64) and x.dtype == np.float32 and x.max() == 1.0
    xi, _ = nn.load_digits(np.float64, shape="image")
    assert xi.shape == (1797, 1, 8, 8)
    text = nn.data.digits_citation()
    assert "CC BY 4.0" in text and "Alpaydin" in text and "10.24432/C50P49" in text
    with pytest.raises(ValueError, match="flat"):
        nn.load_digits(shape="square")


def test_split_and_batches():
    x, y = nn.load_digits()
    xtr, ytr, xte, yte = nn.train_test_split(x, y, 0.2, seed=0)
    assert len(xtr) + len(xte) == 1797 and abs(len(xte) - 359) <= 5
    # stratified: every class has about 20% in the test part
    frac = np.bincount(yte, minlength=10) / np.bincount(y)
    assert np.all(np.abs(frac - 0.2) < 0.01)
    # disjoint and complete: the rows together are the data set, each once
    rows = {r.tobytes() for r in np.concatenate([xtr, xte])}
    assert len(rows) == len({r.tobytes() for r in x})
    got = list(nn.batches(xtr, ytr, 100, np.random.default_rng(0)))
    assert sum(len(b[0]) for b in got) == len(xtr) and len(got[-1][0]) == len(xtr) % 100
    assert all(len(b[0]) == 100 for b in nn.batches(xtr, ytr, 100, drop_last=True))
    with pytest.raises(ValueError, match="test_fraction"):
        nn.train_test_split(x, y, 1.5)


# ---------------------------------------------------------------- through the engines

import adcore  # noqa: E402
from adcore import array_ops as ops  # noqa: E402

_Y = np.array([1, 0, 3])
_MASK = (np.arange(12).reshape(3, 4) % 3 != 0) * 1.5

# (name, function of one array, input shape)
ENGINE_CASES = [
    ("getitem", lambda x: ops.getitem(x, (np.array([0, 2, 2]), slice(1, None))), (3, 4)),
    ("sum", lambda x: ops.sum(x, axis=0), (3, 4)),
    ("mean", lambda x: ops.mean(x, axis=(0, 1), keepdims=True), (3, 4)),
    ("max", lambda x: ops.amax(x, axis=1), (3, 4)),
    ("reshape", lambda x: ops.reshape(x, (2, 6)), (3, 4)),
    ("transpose", lambda x: ops.transpose(x), (3, 4)),
    ("broadcast_to", lambda x: ops.broadcast_to(x, (2, 3, 4)), (3, 4)),
    ("matmul", lambda x: ops.matmul(x, np.linspace(-1, 1, 8).reshape(4, 2)), (3, 4)),
    ("matmul batched", lambda x: ops.matmul(x.reshape(3, 1, 4), x.reshape(3, 4, 1)), (3, 4)),
    ("concatenate", lambda x: ops.concatenate([x, 2 * x[:1]], axis=0), (3, 4)),
    ("stack", lambda x: ops.stack([x, x[::-1]], axis=1), (3, 4)),
    ("softmax", lambda x: F.softmax(x), (3, 4)),
    ("log_softmax", lambda x: F.log_softmax(x, axis=0), (3, 4)),
    ("logsumexp", lambda x: F.logsumexp(x, axis=1), (3, 4)),
    ("cross_entropy", lambda x: F.cross_entropy(x, _Y), (3, 4)),
    ("mse", lambda x: F.mse(x, np.ones(4)), (3, 4)),
    ("linear", lambda x: F.linear(x, x.T, x[0, :3]), (3, 4)),
    ("dropout", lambda x: F.dropout_apply(x, _MASK), (3, 4)),
    ("conv2d", lambda x: F.conv2d(x, x[:1, :, :2, :2] * 1.0, None, 1, 1), (2, 2, 3, 3)),
    ("max_pool2d", lambda x: F.max_pool2d(x, 2, 1), (1, 2, 3, 3)),
    ("avg_pool2d", lambda x: F.avg_pool2d(x, 2, 1, 1), (1, 2, 3, 3)),
    ("mlp", lambda x: nn.MLP([4, 5, 2], "tanh")(
        nn.MLP([4, 5, 2]).init(np.random.default_rng(0), np.float64), x), (3, 4)),
]


@pytest.mark.parametrize("name,f,shape", ENGINE_CASES, ids=[c[0] for c in ENGINE_CASES])
def test_grad_and_jvp_through_the_engines(name, f, shape):
    """adcore.grad (the tape) and adcore.jvp (dual numbers) against finite differences."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal(shape)
    u = rng.standard_normal(np.shape(f(x)))
    v = rng.standard_normal(shape)

    def scalar(x):
        return ops.sum(f(x) * u)

    J = _fd_jacobian(lambda x: np.asarray(f(x)), [x], 0)
    g = adcore.grad(scalar)(x)
    np.testing.assert_allclose(np.ravel(g), u.ravel() @ J, rtol=1e-6, atol=1e-7)
    out, t = adcore.jvp(f, (x,), (v,))
    np.testing.assert_allclose(out, f(x), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(np.ravel(t), J @ v.ravel(), rtol=1e-6, atol=1e-7)


def test_dropout_inside_a_recorded_step_gets_new_masks_as_arguments():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((4, 3)).astype(np.float32)

    def f(x, mask):
        return ops.sum(F.dropout_apply(x, mask) ** 2)

    m1 = F.dropout_mask(x.shape, 0.5, rng)
    m2 = F.dropout_mask(x.shape, 0.5, rng)
    assert m1.dtype == np.float32 and not np.array_equal(m1, m2)
    tape = adcore.record(f, x, m1)
    for m in (m1, m2):
        gx = tape.gradient(x, m)[0]
        np.testing.assert_allclose(gx, 2 * x * m * m, rtol=1e-6)
    # dropout on an active value draws its mask with the value's shape and dtype
    g = adcore.grad(lambda x: ops.sum(F.dropout(x, 0.5, np.random.default_rng(0))))(x)
    expect = F.dropout_mask(x.shape, 0.5, np.random.default_rng(0))
    np.testing.assert_array_equal(g, expect)


# ---------------------------------------------------------------- jvp rules differentiate again

R2 = np.random.default_rng(21)
SECOND_ORDER_CASES = [
    ("getitem", [R2.standard_normal((3, 4))],
     {"index": ops.normalize_index((np.array([0, 2, 2]), slice(1, None)))}, 0),
    ("getitem", [R2.standard_normal((3, 4))], {"index": ops.normalize_index((1, slice(None, None, -1)))}, 0),
    ("sum", [R2.standard_normal((3, 4))], {"axis": 1, "keepdims": False}, 0),
    ("mean", [R2.standard_normal((3, 4))], {"axis": None, "keepdims": True}, 0),
    ("amax", [R2.standard_normal((3, 4))], {"axis": 0, "keepdims": False}, 0),
    ("reshape", [R2.standard_normal((3, 4))], {"shape": (6, 2)}, 0),
    ("transpose", [R2.standard_normal((2, 3, 4))], {"axes": (2, 0, 1)}, 0),
    ("broadcast_to", [R2.standard_normal((3, 1))], {"shape": (2, 3, 4)}, 0),
    ("matmul", [R2.standard_normal((3, 4)), R2.standard_normal((4, 2))], {}, 0),
    ("matmul", [R2.standard_normal((4,)), R2.standard_normal((2, 4, 3))], {}, 1),
    ("concatenate", [R2.standard_normal((2, 3)), R2.standard_normal((1, 3))], {"axis": 0}, 1),
    ("stack", [R2.standard_normal((2, 3)), R2.standard_normal((2, 3))], {"axis": 1}, 0),
    ("softmax", [R2.standard_normal((3, 4))], {"axis": -1}, 0),
    ("log_softmax", [R2.standard_normal((3, 4))], {"axis": 0}, 0),
    ("logsumexp", [R2.standard_normal((3, 4))], {"axis": 1, "keepdims": False}, 0),
    ("cross_entropy", [R2.standard_normal((3, 4)), np.array([1, 0, 3])], {}, 0),
    ("mse", [R2.standard_normal((3, 4)), R2.standard_normal((4,))], {}, 0),
    ("linear", [R2.standard_normal((3, 4)), R2.standard_normal((4, 2)), R2.standard_normal(2)],
     {}, 1),
    ("conv2d", [R2.standard_normal((2, 2, 4, 4)), R2.standard_normal((3, 2, 2, 2))],
     {"stride": (1, 1), "padding": (1, 1)}, 0),
    ("conv2d", [R2.standard_normal((2, 2, 4, 4)), R2.standard_normal((3, 2, 2, 2))],
     {"stride": (2, 1), "padding": (0, 1)}, 1),
    ("max_pool2d", [R2.standard_normal((1, 2, 4, 4))], F._pool_params(2, 1, 1, "t"), 0),
    ("avg_pool2d", [R2.standard_normal((1, 2, 4, 4))], F._pool_params(2, None, 1, "t"), 0),
    ("dropout", [R2.standard_normal((3, 4)), (R2.random((3, 4)) > 0.5) * 2.0], {}, 0),
]


@pytest.mark.parametrize("name,xs,params,i", SECOND_ORDER_CASES,
                         ids=[f"{c[0]}-{c[3]}" for c in SECOND_ORDER_CASES])
def test_jvp_rules_differentiate_again(name, xs, params, i):
    """Each jvp rule is written with adcore's own operations, so it runs on active
    values too: its derivative in the primal point (forward over forward, with
    DualArrays, and reverse over forward, on the tape) matches finite differences.
    This is what nesting (hessian, hvp) needs from a primitive."""
    prim = REGISTRY[name]
    rng = np.random.default_rng(3)
    dx = rng.standard_normal((2,) + xs[i].shape)           # k = 2 first-order directions
    u = rng.standard_normal(xs[i].shape)                     # the outer direction

    def jvp_at(xi):
        args = list(xs)
        args[i] = xi
        dxs = [dx if j == i else None for j in range(len(args))]
        return prim.jvp(args, dxs, prim(*args, **params), **params)

    eps = 1e-6
    fd = (np.asarray(jvp_at(xs[i] + eps * u)) - np.asarray(jvp_at(xs[i] - eps * u))) / (2 * eps)
    # forward over forward: the primal point carries the outer direction u
    outer = adcore.DualArray(xs[i], u[None], adcore.dispatch.new_tag())
    t = jvp_at(outer)
    # a rule that does not depend on the primal point (a linear map) gives a constant
    value, tangent = (t.value, t.tangents[0]) if adcore.dispatch.is_active(t) else (t, 0 * fd)
    np.testing.assert_allclose(np.asarray(value), np.asarray(jvp_at(xs[i])), rtol=1e-12,
                               atol=1e-12)
    np.testing.assert_allclose(np.asarray(tangent), fd, rtol=1e-5, atol=1e-6)
    # reverse over forward: the jvp rule recorded on a tape, swept back
    w = rng.standard_normal(fd.shape)
    g = adcore.grad(lambda xi: ops.sum(jvp_at(xi) * w))(xs[i])
    np.testing.assert_allclose(np.sum(g * u), np.sum(fd * w), rtol=1e-5, atol=1e-6)


def test_activations_are_the_rule_tables():
    for name in ("relu", "tanh", "sigmoid", "softplus", "gelu"):
        assert getattr(nn, name) is getattr(adcore, name)
    assert not set(nn.__all__) - set(dir(nn))
