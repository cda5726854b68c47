"""The chain rule: D(g o f)(x) = Dg(f(x)) Df(x), over general coordinate sets."""

import numpy as np
import pytest

import adcore
from adcore import SCALAR, CoordinateError, Matrix, Named, Range, Vector

# small and named sets travel through the drivers as scalars, larger ranges as
# one array (drivers._scalar_mode): both kinds meet in the compositions
SETS = [Range(1), Range(3), Named("x", "y"), Named("p", "q", "r", "s"),
        Range(2) * Named("a", "b"), SCALAR, Range(12), Range(3) * Range(4)]
ACTIVATIONS = [("sin", np.sin, np.cos), ("tanh", np.tanh, lambda s: 1 - np.tanh(s) ** 2),
               ("exp", np.exp, np.exp), ("softplus", lambda s: np.log1p(np.exp(s)),
                                         lambda s: 1 / (1 + np.exp(-s)))]


def random_map(rng, cin, cout):
    """v -> act(A v) + b * v-dependent product: a smooth map V(cin) -> V(cout),
    with its analytic Jacobian."""
    A = Matrix(cout, cin, rng.standard_normal((cout.size, cin.size)) / np.sqrt(cin.size))
    name, act, dact = ACTIVATIONS[rng.integers(len(ACTIVATIONS))]
    fn = getattr(adcore, name)

    def f(v):
        return fn(A @ v) * 0.5 + (A @ v) * 0.25

    def df(x):
        s = A.values @ x.values
        return Matrix(cout, cin, (0.5 * dact(s) + 0.25)[:, None] * A.values)

    return f, df


@pytest.mark.parametrize("seed", range(16))
def test_random_compositions(seed):
    rng = np.random.default_rng(seed)
    c0, c1, c2 = (SETS[i] for i in rng.integers(len(SETS), size=3))
    f, df = random_map(rng, c0, c1)
    g, dg = random_map(rng, c1, c2)
    x = Vector(c0, rng.standard_normal(c0.size))
    mode = ["auto", "forward", "reverse"][seed % 3]
    J = adcore.jacobian
    whole = J(lambda v: g(f(v)), mode=mode)(x)
    Jf, Jg = J(f, mode=mode)(x), J(g, mode=mode)(f(x))
    assert whole.out_coords == c2 and whole.in_coords == c0
    assert whole.allclose(Jg @ Jf, rtol=1e-12, atol=1e-14)
    assert whole.allclose(adcore.chain(Jg, Jf), rtol=1e-12, atol=1e-14)
    # and against the analytic derivatives
    assert Jf.allclose(df(x), rtol=1e-12, atol=1e-14)
    assert whole.allclose(dg(f(x)) @ df(x), rtol=1e-12, atol=1e-14)
    value, D = adcore.compose(g, f, mode=mode)(x)
    np.testing.assert_allclose(value.values, g(f(x)).values, rtol=1e-15)
    assert D.allclose(whole, rtol=1e-12, atol=1e-14)


def test_three_stage_composition():
    rng = np.random.default_rng(99)
    c0, c1, c2, c3 = Named("x", "y"), Range(4), Range(2) * Range(2), Named("out")
    f, df = random_map(rng, c0, c1)
    g, dg = random_map(rng, c1, c2)
    h, dh = random_map(rng, c2, c3)
    x = Vector(c0, [0.4, -0.9])
    value, D = adcore.compose(h, g, f)(x)
    assert D.out_coords == c3 and D.in_coords == c0
    expected = dh(g(f(x))) @ dg(f(x)) @ df(x)
    assert D.allclose(expected, rtol=1e-12)
    assert adcore.chain(dh(g(f(x))), dg(f(x)), df(x)).allclose(expected, rtol=1e-15)


def test_the_seeds_functions_composed():
    C0, C1 = Named("x", "y"), Named("z0", "z1", "z2")
    f = lambda v: Vector(C1, [v["x"] ** 2, v["x"] * v["y"], v["y"] ** 2])
    g = lambda u: Vector(Named("s"), [u["z0"] + u["z1"] * u["z2"]])
    x = Vector(C0, {"x": 3.0, "y": 5.0})
    D = adcore.jacobian(lambda v: g(f(v)))(x)
    # s = x^2 + x y^3: ds/dx = 2x + y^3, ds/dy = 3 x y^2
    assert D["s", "x"] == 2 * 3.0 + 5.0 ** 3 and D["s", "y"] == 3 * 3.0 * 25.0
    assert D == adcore.jacobian(g)(f(x)) @ adcore.jacobian(f)(x)


def test_mismatched_chains_name_both_sets():
    Jf = Matrix(Named("u"), Named("x", "y"), [[1.0, 2.0]])
    Jg = Matrix(Range(3), Named("u"), [[1.0], [2.0], [3.0]])
    assert adcore.chain(Jg, Jf).out_coords == Range(3)
    with pytest.raises(CoordinateError, match=r"Named\('x', 'y'\).*Range\(3\)"):
        adcore.chain(Jf, Jg)
    with pytest.raises(TypeError, match="not a Matrix"):
        adcore.chain(Jg, np.ones((1, 2)))
    with pytest.raises(TypeError):
        adcore.chain()


@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_scalar_and_array_transport_agree(mode, monkeypatch):
    rng = np.random.default_rng(5)
    c0, c1 = Named("p", "q", "r", "s"), Range(3) * Range(4)
    f, df = random_map(rng, c0, c1)
    g, dg = random_map(rng, c1, c0)
    x = Vector(c0, rng.standard_normal(4))
    h = lambda v: g(f(v)) * v  # noqa: E731
    as_scalars = adcore.jacobian(h, mode=mode)(x)
    monkeypatch.setattr(adcore.drivers, "_SCALAR_MAX", 0)  # one array instead
    as_array = adcore.jacobian(h, mode=mode)(x)
    assert as_scalars.allclose(as_array, rtol=1e-13, atol=1e-15)
    # D(g(f(v)) * v) = diag(v) Dg Df + diag(g(f(v)))
    D = (dg(f(x)) @ df(x)).values * x.values[:, None] + np.diag(g(f(x)).values)
    np.testing.assert_allclose(as_scalars.values, D, rtol=1e-12, atol=1e-14)
