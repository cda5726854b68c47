"""Array primitives inside nested differentiations (NestedDual._ad_primitive).

The value and the primitive's jvp rule run on values of the outer
differentiations through the dispatcher, with the k inner directions stacked
on a leading axis.  Every second (and third) derivative here is checked
against the analytic one: reverse over forward (hessian, hvp), forward over
forward (jacfwd of jacfwd) and reverse over forward by hand (jacrev of jacfwd).
"""

import numpy as np
import pytest

import adcore
from adcore import nn
from adcore.primitives import Primitive

RNG = np.random.default_rng(2024)


def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _lse_hessian(x):
    p = _softmax(x)
    return np.diag(p) - np.outer(p, p)


A = RNG.standard_normal((4, 4))
W = RNG.standard_normal((3, 4)) * 0.5
X4 = RNG.standard_normal(4)
Z = RNG.standard_normal((3, 4))
LABELS = np.array([0, 3, 1])


def _ce_hessian(z):
    n, c = z.shape
    H = np.zeros((n, c, n, c))
    for i in range(n):
        H[i, :, i, :] = _lse_hessian(z[i]) / n
    return H


# name, f, x, analytic Hessian (shape x.shape + x.shape)
CASES = [
    ("sum of cubes", lambda a: adcore.sum(a ** 3), X4, np.diag(6 * X4)),
    ("quadratic form by matmul", lambda a: adcore.sum(a * adcore.matmul(A, a)), X4, A + A.T),
    ("matmul of a matrix input", lambda m: adcore.sum(adcore.matmul(m, m.T) ** 2) * 0.5,
     None, None),
    ("logsumexp", lambda a: nn.logsumexp(a), X4, _lse_hessian(X4)),
    ("logsumexp of W x", lambda a: nn.logsumexp(adcore.matmul(W, a)),
     X4, W.T @ _lse_hessian(W @ X4) @ W),
    ("softmax cross-entropy", lambda z: nn.cross_entropy(z, LABELS), Z, _ce_hessian(Z)),
    ("log_softmax", lambda z: -adcore.sum(nn.log_softmax(z)[np.arange(3), LABELS]) / 3.0,
     Z, _ce_hessian(Z)),
    ("softmax", lambda a: adcore.log(nn.softmax(a)[2]), X4, -_lse_hessian(X4)),
    ("mse", lambda a: nn.mse(a, np.ones(4)), X4, np.eye(4) * 2 / 4),
    ("max", lambda a: adcore.max(a * np.array([1.0, 3.0, 2.0, 0.5])) ** 2, np.ones(4),
     np.diag([0.0, 18.0, 0.0, 0.0])),
    ("concatenate, getitem, stack", lambda a: adcore.sum(
        adcore.stack([adcore.concatenate([a, a[::-1]]), 2.0 * adcore.concatenate([a, a])])
        ** 3), X4, np.diag(2 * 6 * X4 + 2 * 8 * 6 * X4)),
    ("reshape, transpose, broadcast_to, mean", lambda a: adcore.mean(
        adcore.broadcast_to(adcore.transpose(adcore.reshape(a, (2, 2))), (5, 2, 2)) ** 4),
     X4, np.diag(12 * X4 ** 2 / 4)),
    ("linear", lambda a: adcore.sum(nn.linear(np.ones((2, 4)), adcore.reshape(a, (4, 1)),
                                              np.array([0.5])) ** 2),
     X4, 2 * 2 * np.ones((4, 4))),
]


def _matmul_case():
    m = RNG.standard_normal((2, 3))
    # f = 1/2 sum((m m^T)^2): the Hessian by hand over the 6 entries
    H = np.zeros((2, 3, 2, 3))
    G = m @ m.T
    for i in range(2):
        for a in range(3):
            for j in range(2):
                for b in range(3):
                    # d/dm[j,b] of grad[i,a] = 2 * sum_l G[i,l] m[l,a]
                    v = 2 * (G[i, j] * (a == b)) + 2 * (m[j, a] * m[i, b])
                    if i == j:
                        v += 2 * (m[:, a] @ m[:, b])
                    H[i, a, j, b] = v
    return m, H


def _case(i):
    name, f, x, H = CASES[i]
    if x is None:
        x, H = _matmul_case()
    return name, f, x, H


IDS = [c[0] for c in CASES]


@pytest.mark.parametrize("i", range(len(CASES)), ids=IDS)
def test_hessian_and_hvp_of_array_functions(i):
    name, f, x, want = _case(i)
    H = np.asarray(adcore.hessian(f)(x))
    np.testing.assert_allclose(H.reshape(want.shape), want, rtol=1e-12, atol=1e-12)
    v = RNG.standard_normal(x.shape)
    hv = adcore.hvp(f, x, v)
    assert isinstance(hv, np.ndarray) and hv.shape == x.shape
    flat = want.reshape(x.size, x.size)
    np.testing.assert_allclose(hv.reshape(-1), flat @ v.reshape(-1), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("i", range(len(CASES)), ids=IDS)
def test_forward_over_forward_and_reverse_over_forward(i):
    name, f, x, want = _case(i)
    ff = np.asarray(adcore.jacfwd(adcore.jacfwd(f))(x))
    np.testing.assert_allclose(ff, want, rtol=1e-12, atol=1e-12)
    rf = np.asarray(adcore.jacrev(adcore.jacfwd(f))(x))
    np.testing.assert_allclose(rf, want, rtol=1e-12, atol=1e-12)


def test_third_derivatives_through_array_primitives():
    # d3/dx3 of sum(x**4) is 24 x on the diagonal, through three nested NestedDual layers
    x = np.array([0.5, -1.5, 2.0])
    T = np.asarray(adcore.jacfwd(adcore.jacfwd(adcore.jacfwd(
        lambda a: adcore.sum(a ** 4))))(x))
    want = np.zeros((3, 3, 3))
    for i in range(3):
        want[i, i, i] = 24 * x[i]
    np.testing.assert_allclose(T, want, rtol=1e-14)
    # and by scalar derivatives: d3/ds3 logsumexp(s c) at s = 0 is the third cumulant of c
    c = np.array([1.0, 2.0, 4.0])
    d = adcore.derivative
    got = d(d(d(lambda s: nn.logsumexp(s * c))))(0.0)
    assert got == pytest.approx(np.mean((c - c.mean()) ** 3), rel=1e-12)


def test_nested_directions_stay_apart():
    # the inner k = 3 directions ride on a stacked axis: the mixed partials of
    # f(s, x) = s * logsumexp(x) are d/ds grad_x = softmax(x), never mixed up
    x = np.array([0.1, -0.3, 0.8])
    got = adcore.derivative(lambda s: adcore.jacfwd(lambda a: s * s * nn.logsumexp(a))(x))(1.5)
    np.testing.assert_allclose(got, 2 * 1.5 * _softmax(x), rtol=1e-14)


class _WrongShape(Primitive):
    name = "test_wrong_shape"

    def value(self, x):
        return np.asarray(x) * 2.0

    def jvp(self, xs, dxs, out):
        return adcore.sum(dxs[0], axis=1)  # drops an axis: a bug in the rule


def test_a_jvp_rule_with_the_wrong_shape_is_reported():
    prim = _WrongShape()
    x = np.array([1.0, 2.0])
    with pytest.raises(ValueError, match="test_wrong_shape"):
        adcore.hessian(lambda a: adcore.sum(prim(a) * a))(x)


def test_hessians_through_convolution_and_pooling():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 2, 4, 4))
    w = rng.standard_normal((3, 2, 2, 2))
    # conv2d is linear in x: the Hessian of sum(conv(x)^2) is 2 C^T C
    C = np.stack([nn.conv2d(e.reshape(x.shape), w, padding=1).ravel()
                  for e in np.eye(x.size)], axis=1)
    H = np.asarray(adcore.hessian(lambda a: adcore.sum(nn.conv2d(a, w, padding=1) ** 2))(x))
    np.testing.assert_allclose(H.reshape(x.size, x.size), 2 * C.T @ C, rtol=1e-12, atol=1e-12)
    # max pooling picks one entry per window: 2 on the diagonal there, 0 elsewhere
    want = np.zeros(x.shape)
    for c in range(2):
        for i in range(2):
            for j in range(2):
                win = x[0, c, 2 * i:2 * i + 2, 2 * j:2 * j + 2]
                a, b = np.unravel_index(np.argmax(win), (2, 2))
                want[0, c, 2 * i + a, 2 * j + b] = 2.0
    g = lambda a: adcore.sum(nn.max_pool2d(a, 2) ** 2)  # noqa: E731
    for H in (adcore.hessian(g)(x), adcore.jacfwd(adcore.jacfwd(g))(x)):
        np.testing.assert_array_equal(np.asarray(H).reshape(x.size, x.size),
                                      np.diag(want.ravel()))
    # avg pooling with padding is linear: 2 P^T P
    P = np.stack([nn.avg_pool2d(e.reshape(x.shape), 2, padding=1).ravel()
                  for e in np.eye(x.size)], axis=1)
    H = adcore.hessian(lambda a: adcore.sum(nn.avg_pool2d(a, 2, padding=1) ** 2))(x)
    np.testing.assert_allclose(np.asarray(H).reshape(x.size, x.size), 2 * P.T @ P,
                               rtol=1e-12, atol=1e-14)
