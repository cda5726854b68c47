"""numpy's protocols on adcore values (NEP 13 ufuncs, NEP 18 array functions):
plain numpy code differentiates in every mode, and what is not supported is a
TypeError naming it."""

import numpy as np
import pytest

import adcore
from adcore import numpy_api


def _fd_grad(f, x, h=1e-6):
    g = np.zeros_like(x)
    for i in range(x.size):
        e = np.zeros_like(x)
        e.flat[i] = h
        g.flat[i] = (f(x + e) - f(x - e)) / (2 * h)
    return g


X = np.array([0.3, -1.2, 0.8, 2.1, -0.4, 1.5])

# numpy programs (as a user writes them) and the same programs in adcore's own functions
PROGRAMS = {
    "ufuncs": (lambda x: np.sum(np.sin(x) * np.exp(x) + np.tanh(x) - np.arctan(x) / 3.0
                                + np.log1p(x * x) + np.sqrt(np.abs(x) + 1.0)),
               lambda x: adcore.sum(adcore.sin(x) * adcore.exp(x) + adcore.tanh(x)
                                    - adcore.atan(x) / 3.0 + adcore.log1p(x * x)
                                    + adcore.sqrt(adcore.abs(x) + 1.0))),
    "power_negative": (lambda x: np.sum(np.power(np.negative(x), 2.0) + np.square(x)
                                        + np.reciprocal(x + 5.0)),
                       lambda x: adcore.sum((-x) ** 2.0 + x * x + 1.0 / (x + 5.0))),
    "maximum_minimum": (lambda x: np.sum(np.maximum(x, 0.5) * np.minimum(x, 1.0)),
                        lambda x: adcore.sum(adcore.maximum(x, 0.5) * adcore.minimum(x, 1.0))),
    "where_comparison": (lambda x: np.sum(np.where(x > 0.0, x ** 3.0, -x)),
                         lambda x: adcore.sum(adcore.where(x > 0.0, x ** 3.0, -x))),
    "mean_max": (lambda x: np.mean(x * x) + np.max(np.cos(x)) + np.amax(x),
                 lambda x: adcore.mean(x * x) + adcore.max(adcore.cos(x)) + adcore.max(x)),
    "min": (lambda x: np.min(x ** 2.0 + x),
            lambda x: -adcore.max(-(x ** 2.0 + x))),
    "norm": (lambda x: np.linalg.norm(x) + np.linalg.norm(x, 1) + np.linalg.norm(x, np.inf)
             + np.linalg.norm(x, 3),
             lambda x: adcore.sqrt(adcore.sum(x * x)) + adcore.sum(adcore.abs(x))
             + adcore.max(adcore.abs(x)) + adcore.sum(adcore.abs(x) ** 3.0) ** (1.0 / 3.0)),
    "dot_matmul": (lambda x: np.dot(x, x) + np.sum(np.matmul(np.reshape(x, (2, 3)),
                                                             np.reshape(x, (3, 2))))
                   + np.sum(np.reshape(x, (2, 3)) @ np.ones(3)),
                   lambda x: adcore.matmul(x, x) + adcore.sum(adcore.matmul(
                       adcore.reshape(x, (2, 3)), adcore.reshape(x, (3, 2))))
                   + adcore.sum(adcore.matmul(adcore.reshape(x, (2, 3)), np.ones(3)))),
    "sum_axis": (lambda x: np.sum(np.sum(np.reshape(x, (2, 3)), axis=0) ** 2.0)
                 + np.sum(np.mean(np.reshape(x, (2, 3)), axis=1, keepdims=True) ** 3.0),
                 lambda x: adcore.sum(adcore.sum(adcore.reshape(x, (2, 3)), axis=0) ** 2.0)
                 + adcore.sum(adcore.mean(adcore.reshape(x, (2, 3)), axis=1,
                                          keepdims=True) ** 3.0)),
    "join_transpose": (lambda x: np.sum(np.concatenate([x, x[:2] * 2.0]) ** 2.0)
                       + np.sum(np.stack([x[:3], x[3:]], axis=1) * np.arange(6.0).reshape(3, 2))
                       + np.sum(np.transpose(np.reshape(x, (2, 3))) * np.arange(6.0).reshape(3, 2)),
                       lambda x: adcore.sum(adcore.concatenate([x, x[:2] * 2.0]) ** 2.0)
                       + adcore.sum(adcore.stack([x[:3], x[3:]], axis=1)
                                    * np.arange(6.0).reshape(3, 2))
                       + adcore.sum(adcore.transpose(adcore.reshape(x, (2, 3)))
                                    * np.arange(6.0).reshape(3, 2))),
    "indexing_diff": (lambda x: np.sum(np.diff(x) ** 2.0) + x[[0, 2]].sum() * x[-1]
                      + np.sum(np.clip(x, -0.5, 1.0) ** 2.0),
                      lambda x: adcore.sum((x[1:] - x[:-1]) ** 2.0)
                      + adcore.sum(x[[0, 2]]) * x[-1]
                      + adcore.sum(adcore.minimum(adcore.maximum(x, -0.5), 1.0) ** 2.0)),
    "tensordot_round": (lambda x: np.sum(np.tensordot(np.reshape(x, (2, 3)),
                                                      np.reshape(x, (3, 2)), axes=1) ** 2.0)
                        + np.tensordot(x, x, axes=1) + np.sum(np.round(x * 0.7) * x)
                        + np.sum(np.tensordot(np.reshape(x, (1, 2, 3)),
                                              np.arange(6.0).reshape(3, 2), axes=([2, 1], [0, 1]))),
                        lambda x: adcore.sum(adcore.matmul(adcore.reshape(x, (2, 3)),
                                                           adcore.reshape(x, (3, 2))) ** 2.0)
                        + adcore.matmul(x, x) + adcore.sum(adcore.round(x * 0.7) * x)
                        + adcore.sum(x * np.arange(6.0).reshape(3, 2).T.reshape(6))),
    "reduce_methods": (lambda x: np.add.reduce(x * x) + np.maximum.reduce(x)
                       + np.minimum.reduce(x),
                       lambda x: adcore.sum(x * x) + adcore.max(x) - adcore.max(-x)),
    "numpy_operand_left": (lambda x: np.sum(np.arange(6.0) * x + np.ones(6) / (x + 4.0)
                                            - np.float64(2.0) ** x),
                           lambda x: adcore.sum(np.arange(6.0) * x + 1.0 / (x + 4.0)
                                                - 2.0 ** x)),
}


def _grad_of(mode, f):
    if mode == "grad":
        return adcore.grad(f)
    if mode == "jacfwd":
        return adcore.jacfwd(f)
    if mode == "replay":
        def g(x):
            tape = adcore.record(f, X)
            return tape.gradient(x)
        return g
    raise AssertionError(mode)


@pytest.mark.parametrize("mode", ["grad", "jacfwd", "replay"])
@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_numpy_program_differentiates_as_adcore_program(name, mode):
    f_np, f_ad = PROGRAMS[name]
    assert np.isclose(f_np(X), f_ad(X), rtol=1e-12)
    x = X if mode != "replay" else X * 0.9  # replay at another point than recorded
    g_np = np.asarray(_grad_of(mode, f_np)(x))
    g_ad = np.asarray(adcore.grad(f_ad)(x))
    np.testing.assert_allclose(g_np, g_ad, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(g_np, _fd_grad(f_np, x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["ufuncs", "dot_matmul", "norm", "sum_axis", "mean_max"])
def test_numpy_program_second_derivatives(name):
    f_np, f_ad = PROGRAMS[name]
    h_np = np.asarray(adcore.hessian(f_np)(X))
    np.testing.assert_allclose(h_np, np.asarray(adcore.hessian(f_ad)(X)), rtol=1e-10,
                               atol=1e-10)
    v = np.linspace(-1.0, 1.0, X.size)
    np.testing.assert_allclose(adcore.hvp(f_np, X, v), h_np @ v, rtol=1e-10, atol=1e-10)


def test_scalar_ufuncs_on_dual_and_tape_scalars():
    f = lambda a: np.sin(a) * np.exp(a) + np.hypot(a, 2.0) + np.arctan2(a, 3.0)
    d = adcore.derivative(f)(0.7)
    expected = (np.cos(0.7) * np.exp(0.7) + np.sin(0.7) * np.exp(0.7)
                + 0.7 / np.hypot(0.7, 2.0) + 3.0 / (0.7 ** 2 + 9.0))
    assert np.isclose(d, expected, rtol=1e-13)
    assert np.isclose(adcore.grad(f)(0.7), expected, rtol=1e-13)


def test_jacobian_of_vector_valued_numpy_function():
    f = lambda x: np.concatenate([np.sin(x), np.reshape(np.outer(x[:2], x[:2]), (4,))])
    x = X[:3]
    jf = np.asarray(adcore.jacfwd(f)(x))
    jr = np.asarray(adcore.jacrev(f)(x))
    expected = np.zeros((7, 3))
    expected[:3] = np.diag(np.cos(x))
    a, b = x[0], x[1]
    expected[3:, :2] = [[2 * a, 0], [b, a], [b, a], [0, 2 * b]]
    np.testing.assert_allclose(jf, expected, rtol=1e-13)
    np.testing.assert_allclose(jr, expected, rtol=1e-13)


def test_comparison_ufuncs_are_recorded_for_replay():
    def f(x):
        if np.greater(np.sum(x), 0.0):
            return np.sum(x * x)
        return np.sum(np.sin(x))

    tape = adcore.record(f, np.ones(3))
    np.testing.assert_allclose(tape.gradient(np.full(3, 0.5)), np.full(3, 1.0))
    with pytest.raises(adcore.BranchChangedError):
        tape.gradient(-np.ones(3))


def test_rosen_differentiates_as_written_forward_and_nested():
    so = pytest.importorskip("scipy.optimize", reason="scipy is a test-only dependency")
    x = np.linspace(-1.0, 2.0, 7)
    p = np.cos(np.arange(7.0))
    np.testing.assert_allclose(adcore.jacfwd(so.rosen)(x), so.rosen_der(x), rtol=1e-13)
    np.testing.assert_allclose(adcore.hvp(so.rosen, x, p), so.rosen_hess_prod(x, p),
                               rtol=1e-12)


def test_rosen_reverse_mode_as_written():
    so = pytest.importorskip("scipy.optimize", reason="scipy is a test-only dependency")
    x = np.linspace(-1.0, 2.0, 7)
    # rosen calls np.asanyarray(x) first: a recorded array becomes an object array of its
    # recorded elements, so the gradient (and a replay) stays exact
    np.testing.assert_allclose(adcore.grad(so.rosen)(x), so.rosen_der(x), rtol=1e-13)
    tape = adcore.record(so.rosen, x)
    np.testing.assert_allclose(tape.gradient(x + 0.1), so.rosen_der(x + 0.1), rtol=1e-13)
    with pytest.raises(TypeError, match="float64 while recording"):
        adcore.grad(lambda x: np.asarray(x, dtype=float).sum())(x)


@pytest.mark.parametrize("call, name", [
    (lambda x: np.fft.fft(x), "numpy.fft.fft"),
    (lambda x: np.cumsum(x), "numpy.cumsum"),
    (lambda x: np.einsum("i,i", x, x), "numpy.einsum"),
    (lambda x: np.sort(x), "numpy.sort"),
    (lambda x: np.linalg.inv(np.reshape(x[:4], (2, 2))), "numpy.linalg.inv"),
])
@pytest.mark.parametrize("driver", [adcore.grad, adcore.jacfwd])
def test_unsupported_function_names_itself(call, name, driver):
    with pytest.raises(TypeError, match=f"adcore does not support {name} on differentiated"):
        driver(lambda x: np.sum(call(x)))(X[:4])


@pytest.mark.parametrize("call, fragment", [
    (lambda x: np.sum(np.sinc(x)), "numpy.sinc"),  # a Python function over ufuncs...
    (lambda x: np.sum(np.arccos(np.cos(x)) + np.logical_and(x, x)), "numpy.logical_and"),
    (lambda x: np.sum(np.fmod(x, 2.0)), "numpy.fmod"),
    (lambda x: np.sum(np.add.accumulate(x)), "numpy.add.accumulate"),
    (lambda x: np.multiply.reduce(x), "numpy.multiply.reduce"),
    (lambda x: np.sum(np.sin(x, out=np.empty(4))), "numpy.sin: out="),
    (lambda x: np.sum(x, out=np.empty(())), "numpy.sum: the argument out="),
    (lambda x: np.sum(x, where=x.value > 0 if hasattr(x, "value") else x > 0),
     "numpy.sum: initial= and where="),
    (lambda x: np.where(x), "numpy.where with one argument"),
    (lambda x: np.sum(np.add.outer(x, x)), "numpy.add.outer"),
])
@pytest.mark.parametrize("driver", [adcore.grad, adcore.jacfwd])
def test_unsupported_ufuncs_methods_and_arguments_are_type_errors(call, fragment, driver):
    with pytest.raises(TypeError, match=fragment.replace(".", r"\.").replace("=", "=")):
        driver(call)(X[:4])


def test_supported_lists_are_exported():
    assert "sin" in numpy_api.SUPPORTED_UFUNCS and "maximum" in numpy_api.SUPPORTED_UFUNCS
    assert "numpy.linalg.norm" in numpy_api.SUPPORTED_FUNCTIONS
    assert "numpy.sum" in numpy_api.SUPPORTED_FUNCTIONS


def test_shape_queries_and_constants_from_shapes():
    def f(x):
        assert np.shape(x) == (6,) and np.ndim(x) == 1 and np.size(x) == 6
        z = np.zeros_like(x)
        assert isinstance(z, np.ndarray) and z.shape == (6,)
        return np.sum((x + np.ones_like(x)) ** 2.0 + z)

    np.testing.assert_allclose(adcore.grad(f)(X), 2 * (X + 1.0))
    np.testing.assert_allclose(adcore.jacfwd(f)(X), 2 * (X + 1.0))
