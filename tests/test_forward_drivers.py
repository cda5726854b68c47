"""jvp, derivative and jacfwd: structures, shapes, chunks and errors."""

import math

import numpy as np
import pytest

import adcore
from adcore import NestingError
from adcore.forward import derivative, jacfwd, jvp  # the engine (adcore.jacfwd wraps it)


def f_vec(x):
    return adcore.sin(x) * x + adcore.exp(-x) / x


def df_vec(x):
    return np.cos(x) * x + np.sin(x) - np.exp(-x) / x - np.exp(-x) / x ** 2


def test_jvp_of_an_elementwise_function_of_arrays():
    x = np.linspace(0.5, 2.0, 7)
    v = np.linspace(-1.0, 1.0, 7)
    y, t = jvp(f_vec, (x,), (v,))
    assert np.allclose(y, np.sin(x) * x + np.exp(-x) / x, rtol=1e-15)
    assert np.allclose(t, df_vec(x) * v, rtol=1e-13)
    assert isinstance(y, np.ndarray) and isinstance(t, np.ndarray)


def test_jvp_with_trees():
    def f(p, xs):
        return {"a": p["w"] * xs[0] + xs[1], "b": (p["w"] ** 2.0, 3.0)}
    primals = ({"w": 2.0}, [np.array([1.0, 2.0]), 5.0])
    tangents = ({"w": 1.0}, [np.zeros(2), 1.0])
    y, t = jvp(f, primals, tangents)
    assert y["a"].tolist() == [7.0, 9.0] and y["b"] == (4.0, 3.0)
    assert t["a"].tolist() == [2.0, 3.0]
    assert t["b"] == (4.0, 0.0)  # a constant output has tangent 0


def test_jvp_float32_stays_float32():
    x = np.linspace(0.5, 2.0, 5, dtype=np.float32)
    y, t = jvp(f_vec, (x,), (np.ones(5, np.float32),))
    assert y.dtype == np.float32 and t.dtype == np.float32
    assert np.allclose(t, df_vec(x.astype(float)), rtol=1e-5)


def test_jvp_errors():
    with pytest.raises(TypeError, match="tuple"):
        jvp(f_vec, 1.0, 1.0)
    with pytest.raises(ValueError, match="structures"):
        jvp(lambda a, b: a * b, (1.0, 2.0), (1.0,))
    with pytest.raises(ValueError, match="shape"):
        jvp(f_vec, (np.ones(3),), (np.ones(2),))
    with pytest.raises(TypeError, match="str"):
        jvp(f_vec, ("x",), (1.0,))


def test_derivative():
    assert derivative(adcore.sin)(0.3) == math.cos(0.3)
    assert derivative(lambda x: 3.0)(1.0) == 0.0
    assert derivative(lambda x: x * np.array([1.0, 2.0]))(5.0).tolist() == [1.0, 2.0]
    assert derivative(lambda x: (x * x, {"c": x}))(3.0) == (6.0, {"c": 1.0})
    assert derivative(adcore.exp)(1) == math.e  # ints are fine
    assert derivative(f_vec).__name__ == "f_vec"
    with pytest.raises(TypeError, match="jacfwd"):
        derivative(adcore.sin)(np.ones(3))


def test_jacfwd_shapes_follow_jax():
    x = np.linspace(0.5, 2.0, 4)
    jac = jacfwd(f_vec)(x)
    assert jac.shape == (4, 4)
    assert np.allclose(jac, np.diag(df_vec(x)), rtol=1e-13)
    m = np.arange(6.0).reshape(2, 3)
    j2 = jacfwd(lambda a: a @ m)(np.ones((4, 2)))  # (4,3) out, (4,2) in
    assert j2.shape == (4, 3, 4, 2)
    want = np.einsum("ik,jl->ijkl", np.eye(4), m.T)
    assert np.array_equal(j2, want)
    assert jacfwd(lambda a: a.sum())(np.ones((2, 3))).shape == (2, 3)
    assert jacfwd(lambda s: s * np.ones(3))(2.0).tolist() == [1.0, 1.0, 1.0]
    assert type(jacfwd(lambda s: s * s)(3.0)) is float


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 100])
def test_jacfwd_chunks_give_the_same_jacobian(chunk):
    x = np.linspace(0.5, 2.0, 5)
    f = lambda v: adcore.stack([v[0] * v[1], adcore.sin(v[2]) * v[4], v[3] ** 2.0])  # noqa
    assert np.array_equal(jacfwd(f, chunk_size=chunk)(x), jacfwd(f)(x))


def test_jacfwd_with_argnums_and_trees():
    def f(a, b, c):
        return {"p": a["x"] * b, "q": b * c}
    a = {"x": np.array([1.0, 2.0])}
    jac = jacfwd(f, argnums=(0, 1))(a, 3.0, 4.0)
    assert jac["p"][0]["x"].tolist() == [[3.0, 0.0], [0.0, 3.0]]
    assert jac["p"][1].tolist() == [1.0, 2.0]
    assert jac["q"][0]["x"].tolist() == [0.0, 0.0]
    assert jac["q"][1] == 4.0
    assert jacfwd(f, argnums=-1)(a, 3.0, 4.0)["q"] == 3.0


def test_jacfwd_float32():
    x = np.linspace(0.5, 2.0, 3, dtype=np.float32)
    jac = jacfwd(f_vec)(x)
    assert jac.dtype == np.float32
    assert np.allclose(np.diag(jac), df_vec(x.astype(float)), rtol=1e-5)


def test_jacfwd_errors():
    with pytest.raises(ValueError, match="argnums"):
        jacfwd(f_vec, argnums=2)(1.0)
    with pytest.raises(ValueError, match="chunk_size"):
        jacfwd(f_vec, chunk_size=0)
    with pytest.raises(TypeError, match="str"):
        jacfwd(lambda a: a)("x")
    assert jacfwd(lambda a: 2.0)(None) is None  # an empty tree: an empty Jacobian


def test_results_of_other_differentiations_are_constants():
    outer_leak = []

    def g(y):
        outer_leak.append(y)
        return y * 2.0
    assert derivative(g)(1.0) == 2.0
    with pytest.raises(NestingError, match="escaped"):
        jvp(lambda x: x + outer_leak[0], (1.0,), (1.0,))
    # a user-built Dual (tag 0) is an outer constant to every driver
    user = adcore.Dual(2.0, [1.0])
    out = derivative(lambda x: x * user)(3.0)
    assert isinstance(out, adcore.Dual) and out.value == 2.0 and out.tangents.tolist() == [1.0]
