"""Exact second derivatives: hessian and hvp against analytic Hessians."""

import numpy as np
import pytest

import adcore
from adcore import CoordinateError, Matrix, Named, Range, Vector

C0 = Named("x", "y")


def test_hessian_of_a_named_function():
    f = lambda v: v["x"] ** 2 * v["y"] + adcore.sin(v["x"] * v["y"])
    x, y = 0.7, -1.3
    H = adcore.hessian(f)(Vector(C0, {"x": x, "y": y}))
    assert isinstance(H, Matrix) and H.out_coords == C0 and H.in_coords == C0
    s = np.sin(x * y)
    c = np.cos(x * y)
    expected = {("x", "x"): 2 * y - y * y * s,
                ("x", "y"): 2 * x + c - x * y * s,
                ("y", "y"): -x * x * s}
    for (i, j), d in expected.items():
        assert H[i, j] == pytest.approx(d, rel=1e-13, abs=1e-14)
        assert H[j, i] == H[i, j]


def _rosen(v):
    xs = list(v)
    return sum(100.0 * (xs[i + 1] - xs[i] ** 2) ** 2 + (1.0 - xs[i]) ** 2
               for i in range(len(xs) - 1))


def _rosen_hess(x):
    n = len(x)
    H = np.zeros((n, n))
    for i in range(n - 1):
        H[i, i] += 1200.0 * x[i] ** 2 - 400.0 * x[i + 1] + 2.0
        H[i, i + 1] += -400.0 * x[i]
        H[i + 1, i] += -400.0 * x[i]
        H[i + 1, i + 1] += 200.0
    return H


@pytest.mark.parametrize("n", [2, 5, 12])
def test_rosenbrock_hessian_and_hvp_on_vectors(n):
    rng = np.random.default_rng(n)
    x = rng.uniform(-1.5, 1.5, n)
    C = Range(n)
    H = adcore.hessian(_rosen)(Vector(C, x))
    np.testing.assert_allclose(np.asarray(H), _rosen_hess(x), rtol=1e-12, atol=1e-10)
    assert np.array_equal(np.asarray(H), np.asarray(H).T)
    for _ in range(3):
        v = rng.standard_normal(n)
        hv = adcore.hvp(_rosen, Vector(C, x), Vector(C, v))
        assert isinstance(hv, Vector) and hv.coords == C
        np.testing.assert_allclose(hv.values, _rosen_hess(x) @ v, rtol=1e-12, atol=1e-10)


def test_seed_polynomial_hessian_over_its_five_variables():
    z = lambda p: p["a"] * p["x"] ** 2 + p["b"] * p["x"] * p["y"] + p["c"] * p["y"] ** 2
    p = {"a": 3.0, "b": 1.0, "c": -2.0, "x": 4.0, "y": -1.0}
    H = adcore.hessian(z)(p)
    names = ["a", "b", "c", "x", "y"]
    a, b, c, x, y = (p[k] for k in names)
    expected = np.array([
        [0, 0, 0, 2 * x, 0],
        [0, 0, 0, y, x],
        [0, 0, 0, 0, 2 * y],
        [2 * x, y, 0, 2 * a, b],
        [0, x, 2 * y, b, 2 * c],
    ], dtype=float)
    assert H.in_coords == Named(*names)
    np.testing.assert_array_equal(np.asarray(H), expected)
    hv = adcore.hvp(z, p, {"a": 1.0, "b": 0.0, "c": 0.0, "x": 0.0, "y": 0.0})
    assert hv == {"a": 0.0, "b": 0.0, "c": 0.0, "x": 2 * x, "y": 0.0}


def test_scalar_input():
    H = adcore.hessian(lambda t: adcore.exp(2.0 * t) * t)(0.5)
    assert np.asarray(H).shape == ()
    assert float(np.asarray(H)) == pytest.approx((4.0 + 4.0 * 0.5) * np.exp(1.0), rel=1e-14)
    assert adcore.hvp(lambda t: t ** 3, 2.0, 1.5) == pytest.approx(6 * 2.0 * 1.5)


def test_hessian_of_an_array_function():
    x = np.array([0.3, -0.4, 1.1])
    H = adcore.hessian(lambda a: adcore.sum(a ** 3))(x)
    np.testing.assert_allclose(np.asarray(H), np.diag(6 * x), rtol=1e-14)
    hv = adcore.hvp(lambda a: adcore.sum(a ** 3), x, np.ones(3))
    assert isinstance(hv, np.ndarray)
    np.testing.assert_allclose(hv, 6 * x, rtol=1e-14)


def test_errors():
    x = Vector(C0, [1.0, 2.0])
    with pytest.raises(ValueError, match="must return a scalar"):
        adcore.hessian(lambda v: v * 2.0)(x)
    with pytest.raises(CoordinateError, match=r"Named\('x', 'y'\)"):
        adcore.hvp(lambda v: v.dot(v), x, Vector(Range(2), [1.0, 0.0]))


def test_hessian_of_linear_and_quadratic_forms():
    C = Named("a", "b", "c")
    A = np.array([[2.0, 1.0, 0.0], [1.0, -3.0, 0.5], [0.0, 0.5, 4.0]])
    quad = lambda v: 0.5 * v.dot(adcore.Matrix(C, C, A) @ v) + v.sum()  # noqa: E731
    x = Vector(C, [0.3, -0.2, 1.5])
    assert np.array_equal(np.asarray(adcore.hessian(quad)(x)), A)
    linear = lambda v: 3.0 * v["a"] - v["c"]  # noqa: E731
    assert np.array_equal(np.asarray(adcore.hessian(linear)(x)), np.zeros((3, 3)))
    assert adcore.hvp(linear, x, x) == Vector(C, [0.0, 0.0, 0.0])


def _rosen_vec(x):
    a = x[:-1]
    return adcore.sum(100.0 * (x[1:] - a * a) ** 2 + (1.0 - a) ** 2)


@pytest.mark.parametrize("n", [2, 7, 30])
def test_vectorized_rosenbrock_on_arrays(n):
    rng = np.random.default_rng(n + 100)
    x = rng.uniform(-1.2, 1.2, n)
    H = adcore.hessian(_rosen_vec)(x)
    assert H.in_coords == Range(n) and np.asarray(H).shape == (n, n)
    np.testing.assert_allclose(np.asarray(H), _rosen_hess(x), rtol=1e-12, atol=1e-10)
    v = rng.standard_normal(n)
    hv = adcore.hvp(_rosen_vec, x, v)
    assert isinstance(hv, np.ndarray) and hv.shape == (n,)
    np.testing.assert_allclose(hv, _rosen_hess(x) @ v, rtol=1e-12, atol=1e-10)


def test_hessian_through_matmul_and_tanh():
    rng = np.random.default_rng(3)
    W = rng.standard_normal((4, 6)) * 0.5
    x = rng.standard_normal(6)
    f = lambda a: adcore.sum(adcore.tanh(adcore.matmul(W, a)) ** 2)  # noqa: E731
    t = np.tanh(W @ x)
    expected = W.T @ np.diag(2 * (1 - t ** 2) * (1 - 3 * t ** 2)) @ W
    np.testing.assert_allclose(np.asarray(adcore.hessian(f)(x)), expected, rtol=1e-12, atol=1e-14)
    v = rng.standard_normal(6)
    np.testing.assert_allclose(adcore.hvp(f, x, v), expected @ v, rtol=1e-12, atol=1e-14)
