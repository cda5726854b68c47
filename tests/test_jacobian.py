"""Jacobians indexed by (output coordinate, input coordinate), in every mode."""

import numpy as np
import pytest

import adcore
from adcore import SCALAR, Matrix, Named, Range, Vector

C0 = Named("x", "y")
C1 = Named("z0", "z1", "z2")
MODES = ["auto", "forward", "reverse"]


def seed_f(v):
    return Vector(C1, [v["x"] ** 2, v["x"] * v["y"], v["y"] ** 2])


@pytest.mark.parametrize("mode", MODES)
def test_the_seeds_jacobian(mode):
    x, y = 3.0, 5.0
    J = adcore.jacobian(seed_f, mode=mode)(Vector(C0, {"x": x, "y": y}))
    assert isinstance(J, Matrix)
    assert J.out_coords == C1 and J.in_coords == C0
    assert J["z1", "x"] == 5.0
    expected = {("z0", "x"): 2 * x, ("z0", "y"): 0.0, ("z1", "x"): y, ("z1", "y"): x,
                ("z2", "x"): 0.0, ("z2", "y"): 2 * y}
    for (i, j), d in expected.items():
        assert J[i, j] == d


@pytest.mark.parametrize("mode", MODES)
def test_seed_polynomial_gradient_by_keys(mode):
    def z(p):
        return p["a"] * p["x"] ** 2 + p["b"] * p["x"] * p["y"] + p["c"] * p["y"] ** 2

    J = adcore.jacobian(z, mode=mode)({"a": 3.0, "b": 1.0, "c": -2.0, "x": 4.0, "y": -1.0})
    assert J.out_coords == SCALAR and J.in_coords == Named("a", "b", "c", "x", "y")
    assert (J["a"], J["b"], J["c"]) == (16.0, -4.0, 1.0)
    assert J[(), "x"] == 2 * 3.0 * 4.0 + 1.0 * -1.0
    assert J[(), "y"] == 1.0 * 4.0 + 2 * -2.0 * -1.0


def _bench_f(W):
    def f(x):
        s = adcore.matmul(W, adcore.sin(x))
        return adcore.tanh(s) + 0.1 * s
    return f


def _bench_analytic(W, x):
    s = W @ np.sin(x)
    return ((1.0 - np.tanh(s) ** 2 + 0.1)[:, None] * W) * np.cos(x)[None, :]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("n, m", [(6, 6), (3, 9), (9, 3)])
def test_numpy_jacobian_against_the_analytic_one(mode, n, m):
    rng = np.random.default_rng(n * 10 + m)
    W = rng.standard_normal((m, n))
    x = rng.standard_normal(n)
    J = adcore.jacobian(_bench_f(W), mode=mode)(x)
    assert J.out_coords == Range(m) and J.in_coords == Range(n)
    np.testing.assert_allclose(np.asarray(J), _bench_analytic(W, x), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("mode", MODES)
def test_numpy_shapes_follow_jax(mode):
    x = np.array([[0.5, 1.0, 1.5], [2.0, 2.5, 3.0]])
    J = adcore.jacobian(lambda a: adcore.sin(a) * 2.0, mode=mode)(x)
    A = np.asarray(J)
    assert A.shape == (2, 3, 2, 3)
    for i in np.ndindex(2, 3):
        for j in np.ndindex(2, 3):
            assert A[i + j] == (2 * np.cos(x[i]) if i == j else 0.0)
    assert J[(1, 2), (1, 2)] == J[1, 2, 1, 2] == 2 * np.cos(3.0)
    # a scalar function of an array, and an array function of a scalar
    g = adcore.jacobian(lambda a: adcore.sum(a * a), mode=mode)(x)
    assert np.asarray(g).shape == (2, 3)
    np.testing.assert_allclose(np.asarray(g), 2 * x)
    d = adcore.jacobian(lambda t: adcore.exp(t * np.arange(3.0)), mode=mode)(0.5)
    assert np.asarray(d).shape == (3,)
    np.testing.assert_allclose(np.asarray(d), np.arange(3.0) * np.exp(0.5 * np.arange(3.0)))


@pytest.mark.parametrize("mode", MODES)
def test_dict_inputs_and_outputs_are_indexed_by_keys(mode):
    def f(p):
        return {"area": p["w"] * p["h"], "ratio": p["w"] / p["h"]}

    J = adcore.jacobian(f, mode=mode)({"w": 2.0, "h": 4.0})
    assert J.out_coords == Named("area", "ratio") and J.in_coords == Named("w", "h")
    assert (J["area", "w"], J["area", "h"]) == (4.0, 2.0)
    assert (J["ratio", "w"], J["ratio", "h"]) == (0.25, -2.0 / 16.0)
    # arrays inside a dict: coordinates (key, index)
    K = adcore.jacobian(lambda p: adcore.sum(p["a"] * p["b"]), mode=mode)(
        {"a": np.array([1.0, 2.0]), "b": 3.0})
    assert K.in_coords == Named(("a", 0), ("a", 1), "b")
    assert (K[("a", 0)], K[("a", 1)], K["b"]) == (3.0, 3.0, 3.0)


def test_auto_picks_forward_for_tall_and_reverse_for_wide():
    seen = []

    def spy(n_out):
        def f(v):
            seen.append(type(v[0]).__name__)
            return Vector(Range(n_out), [v.sum() * k for k in range(1, n_out + 1)])
        return f

    wide_in = Vector(Range(5), np.arange(5.0))
    seen.clear()
    J = adcore.jacobian(spy(2))(wide_in)  # |C0| = 5 > |C1| = 2: reverse
    assert seen[-1] == "TapeValue"
    np.testing.assert_array_equal(np.asarray(J), [[1.0] * 5, [2.0] * 5])
    seen.clear()
    J = adcore.jacobian(spy(7))(wide_in)  # |C0| = 5 <= |C1| = 7: forward
    assert seen[-1] == "Dual"
    seen.clear()
    adcore.jacobian(spy(5))(wide_in)  # a tie goes to forward
    assert seen[-1] == "Dual"
    seen.clear()
    adcore.jacobian(spy(2), mode="forward")(wide_in)
    assert seen == ["Dual"]  # forced: no probing evaluation
    seen.clear()
    adcore.jacobian(spy(7), mode="reverse")(wide_in)
    assert seen == ["TapeValue"]


def test_vector_aware_jacfwd_and_jacrev():
    x = Vector(C0, {"x": 3.0, "y": 5.0})
    for engine in (adcore.jacfwd, adcore.jacrev):
        J = engine(seed_f)(x)
        assert isinstance(J, Matrix) and J["z1", "x"] == 5.0
        # a function of an array returning a Vector: coordinates as well
        K = engine(lambda a: Vector(C0, [a[0] * a[1], a[1]]))(np.array([2.0, 3.0]))
        assert isinstance(K, Matrix) and K["x", 1] == 2.0
        # functions of arrays keep the engine's (JAX's) plain result
        A = engine(lambda a: adcore.sin(a))(np.array([0.0, 1.0]))
        assert isinstance(A, np.ndarray)
        np.testing.assert_allclose(A, np.diag(np.cos([0.0, 1.0])))


@pytest.mark.parametrize("mode", MODES)
def test_products_of_named_sets(mode):
    C = Named("u", "w") * Range(2)

    def f(v):  # V(C) -> V(C0): sums over the range coordinate, weighted
        return Vector(C0, [v["u", 0] * v["w", 1], v["u", 1] + 2.0 * v["w", 0]])

    x = Vector(C, [1.0, 2.0, 3.0, 4.0])
    J = adcore.jacobian(f, mode=mode)(x)
    assert J.in_coords == C
    assert J["x", ("u", 0)] == 4.0 and J["x", ("w", 1)] == 1.0
    assert J["y", ("u", 1)] == 1.0 and J["y", ("w", 0)] == 2.0
    assert J["x", ("u", 1)] == 0.0


def test_errors():
    x = Vector(C0, {"x": 3.0, "y": 5.0})
    with pytest.raises(ValueError, match="mode must be one of"):
        adcore.jacobian(seed_f, mode="sideways")
    with pytest.raises(TypeError, match="cannot differentiate with respect to a str"):
        adcore.jacobian(lambda s: s)("x")
    with pytest.raises(ValueError, match="argnums=3"):
        adcore.jacobian(seed_f, argnums=3)(x)
    with pytest.raises(TypeError, match="complex"):
        adcore.jacobian(lambda a: a)(1j)


@pytest.mark.parametrize("mode", MODES)
def test_argnums_and_constant_outputs(mode):
    def f(a, v):
        return v * a

    J = adcore.jacobian(f, mode=mode, argnums=1)(2.0, Vector(C0, [1.0, 1.0]))
    assert J == Matrix(C0, C0, [[2.0, 0.0], [0.0, 2.0]])
    K = adcore.jacobian(lambda v: Vector(Range(2), [1.0, 2.0]), mode=mode)(
        Vector(C0, [1.0, 1.0]))
    assert K == Matrix(Range(2), C0, np.zeros((2, 2)))


def test_jacobian_inside_another_differentiation_is_refused_not_wrong():
    x = Vector(C0, [1.0, 2.0])
    # f closes over a value of the outer differentiation
    with pytest.raises(adcore.NestingError, match="outer differentiation"):
        adcore.grad(lambda t: adcore.jacobian(lambda v: v * t, mode="forward")(x)["x", "x"])(2.0)
    # x itself holds values of the outer differentiation
    with pytest.raises(adcore.NestingError, match="outer differentiation"):
        adcore.grad(lambda t: adcore.jacobian(seed_f)(Vector(C0, [t, 1.0]))["z0", "x"])(2.0)


@pytest.mark.parametrize("mode", MODES)
def test_value_and_jacobian(mode):
    x = Vector(C0, {"x": 3.0, "y": 5.0})
    y, J = adcore.value_and_jacobian(seed_f, mode=mode)(x)
    assert y == seed_f(x)
    assert J == adcore.jacobian(seed_f, mode=mode)(x)


def test_auto_remembers_the_output_size_and_stays_correct_when_it_changes():
    calls = []

    def f(v):
        calls.append(type(v["x"]).__name__)
        k = int(v["x"] > 0) * 3 + 1  # 1 output at x <= 0, 4 outputs at x > 0
        return Vector(Range(k), [v["x"] * v["y"] * (i + 1) for i in range(k)])

    J = adcore.jacobian(f)
    low = J(Vector(C0, [-1.0, 2.0]))  # probes f, |C1| = 1 < 2: reverse
    assert low == Matrix(Range(1), C0, [[2.0, -1.0]])
    high = J(Vector(C0, [1.0, 2.0]))  # remembered |C1| = 1: reverse again, now 4 rows
    assert high.out_coords == Range(4)
    np.testing.assert_array_equal(high.values, [[2.0 * i, 1.0 * i] for i in range(1, 5)])
    assert J(Vector(C0, [1.0, 2.0])) == high  # |C1| = 4 >= 2 remembered: forward
    assert calls[-1] == "Dual"


@pytest.mark.parametrize("mode", ["forward", "reverse"])
@pytest.mark.parametrize("coords", [C0, Range(9)])  # scalar and array transport
def test_forward_differentiation_nested_inside_a_jacobian(mode, coords):
    first, second = coords.coord_at(0), coords.coord_at(1)

    def f(v):  # d/dt (t^2 v0) at t = v1 is 2 v0 v1
        return Vector(Named("d"), [adcore.derivative(lambda t: t * t * v[first])(v[second])])

    values = np.arange(3.0, 3.0 + coords.size)
    J = adcore.jacobian(f, mode=mode)(Vector(coords, values))
    assert J["d", first] == 2 * values[1] and J["d", second] == 2 * values[0]


@pytest.mark.parametrize("mode", MODES)
def test_several_arguments_at_once(mode):
    def f(a, v, scale):
        return Vector(Named("u", "w"), [a * v["x"], v["y"] * scale + a])

    J = adcore.jacobian(f, mode=mode, argnums=(0, 1))(2.0, Vector(C0, [3.0, 5.0]), 10.0)
    # a tuple of arguments is a tree: its coordinates are (position, coordinate)
    assert J.in_coords == Named(0, (1, "x"), (1, "y"))
    assert J["u", 0] == 3.0 and J["u", (1, "x")] == 2.0 and J["u", (1, "y")] == 0.0
    assert J["w", 0] == 1.0 and J["w", (1, "y")] == 10.0
    H = adcore.hessian(lambda a, b: a * a * b, argnums=(0, 1))(2.0, 3.0)
    np.testing.assert_array_equal(np.asarray(H), [[6.0, 4.0], [4.0, 0.0]])
    with pytest.raises(ValueError, match="empty tuple"):
        adcore.jacobian(f, argnums=())(2.0, Vector(C0, [3.0, 5.0]), 10.0)
