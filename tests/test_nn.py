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
