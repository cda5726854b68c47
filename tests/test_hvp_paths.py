"""hvp's own recording (drivers._hvp_sweep) and the short paths of NestedDual.

hvp records x -> Df(x) v once with NestedDual inputs and sweeps it back once;
a linear primitive on a NestedDual applies itself to each tangent (no stacked
jvp), a -1 partial subtracts, and pow(x, 1.0) in a partial is x.  Each of these
must give the Hessian's own numbers: hvp is compared with ``hessian(f)(x) @ v``
(one replay and sweep per row of a separate recording), with analytic Hessians
and with jacfwd of jacfwd (forward over forward, no tape).
"""

import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

import adcore
from adcore import Named, Range, Vector
from adcore.nested import NestedDual

from test_properties import SINGULAR, branches_at, random_inputs, random_program, run

SETTINGS = settings(derandomize=True, database=None, deadline=None, max_examples=60,
                    suppress_health_check=[HealthCheck.too_slow])


def _close(got, want, what, rtol=1e-9):
    got, want = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    scale = max(1.0, float(np.max(np.abs(want), initial=0.0)))
    assert got.shape == want.shape, (what, got.shape, want.shape)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale, err_msg=what)


@SETTINGS
@given(st.randoms(use_true_random=False))
def test_hvp_is_the_hessian_times_v_on_random_scalar_programs(rnd):
    prog = random_program(rnd, shape=None, control_flow=rnd.random() < 0.3)
    note(str(prog))
    xs = random_inputs(rnd, prog)
    if SINGULAR in branches_at(prog, xs):
        return
    C = Named(*[f"x{i}" for i in range(len(xs))])
    f = lambda u: run(prog, tuple(u[c] for c in C))  # noqa: E731
    x = Vector(C, list(xs))
    v = Vector(C, [rnd.uniform(-1.0, 1.0) for _ in xs])
    H = np.asarray(adcore.hessian(f)(x))
    if not np.all(np.isfinite(H)) or np.max(np.abs(H), initial=0.0) > 1e8:
        return  # near a singularity rounding decides
    hv = adcore.hvp(f, x, v)
    assert isinstance(hv, Vector) and hv.coords == C
    _close(hv.values, H @ v.values, str(prog))


@SETTINGS
@given(st.randoms(use_true_random=False))
def test_hvp_is_the_hessian_times_v_on_random_array_programs(rnd):
    # array programs with primitives (sum, getitem, reshape, ...: the linear path)
    prog = random_program(rnd, max_depth=6, n_inputs=1, shape=(3,), primitives=True)
    note(str(prog))
    xs = random_inputs(rnd, prog)
    if SINGULAR in branches_at(prog, xs):
        return
    y0 = np.asarray(run(prog, xs))
    w = np.linspace(-0.7, 1.1, y0.size).reshape(y0.shape)
    f = lambda a: adcore.sum(run(prog, (a,)) * w)  # noqa: E731
    H = np.asarray(adcore.hessian(f)(xs[0]))
    if not np.all(np.isfinite(H)) or np.max(np.abs(H), initial=0.0) > 1e8:
        return
    v = np.array([rnd.uniform(-1.0, 1.0) for _ in range(3)])
    hv = adcore.hvp(f, xs[0], v)
    assert isinstance(hv, np.ndarray) and hv.shape == (3,)
    _close(hv, H @ v, str(prog))
    # forward over forward: NestedDual over Duals, no tape
    _close(hv, np.asarray(adcore.jacfwd(adcore.jacfwd(f))(xs[0])) @ v, "jacfwd(jacfwd)")


def _f_matrix(m):
    # reshape, transpose, getitem, mean, broadcast_to, stack, concatenate
    t = adcore.transpose(adcore.reshape(m, (3, 2)))
    s = adcore.stack([t[0], 2.0 * t[1] ** 2])
    c = adcore.concatenate([adcore.reshape(s, (6,)), m[0, ::-1] ** 3])
    b = adcore.broadcast_to(c, (2, 9))
    return adcore.mean(adcore.sin(b) * b) + adcore.sum(m[1] * m[0])


def test_hvp_of_a_matrix_input_in_its_own_shape():
    rng = np.random.default_rng(7)
    m = rng.uniform(-1.0, 1.0, (2, 3))
    v = rng.standard_normal((2, 3))
    hv = adcore.hvp(_f_matrix, m, v)
    assert hv.shape == (2, 3)
    H = np.asarray(adcore.hessian(_f_matrix)(m)).reshape(6, 6)
    _close(hv.ravel(), H @ v.ravel(), "hessian @ v", rtol=1e-12)
    J = np.asarray(adcore.jacfwd(adcore.jacfwd(_f_matrix))(m)).reshape(6, 6)
    _close(hv.ravel(), J @ v.ravel(), "jacfwd(jacfwd) @ v", rtol=1e-12)


def test_hvp_keeps_every_structure():
    # a float, a Vector, a dict of a float and an array, a nested list: each the same
    # numbers as the flat function's hvp
    rng = np.random.default_rng(11)
    flat = rng.uniform(-1.0, 1.0, 5)
    d = rng.standard_normal(5)

    def g(z):  # z: five scalars in some order
        return adcore.sin(z[0] * z[1]) + z[2] ** 3 * z[3] - adcore.exp(z[4] * z[0])

    want = np.asarray(adcore.hessian(lambda a: g([a[i] for i in range(5)]))(flat)) @ d

    C = Range(5)
    hv = adcore.hvp(lambda u: g([u[i] for i in C]), Vector(C, flat), Vector(C, d))
    _close(hv.values, want, "Vector")

    tree = {"a": float(flat[0]), "b": flat[1:4].copy(), "c": [float(flat[4])]}
    tdir = {"a": float(d[0]), "b": d[1:4].copy(), "c": [float(d[4])]}
    hv = adcore.hvp(lambda t: g([t["a"], t["b"][0], t["b"][1], t["b"][2], t["c"][0]]),
                    tree, tdir)
    assert set(hv) == {"a", "b", "c"} and hv["b"].shape == (3,) and len(hv["c"]) == 1
    _close(np.concatenate([[hv["a"]], hv["b"], hv["c"]]), want, "dict")

    one = adcore.hvp(lambda t: adcore.exp(2.0 * t) * t, 0.5, 1.5)
    assert isinstance(one, float)
    assert one == pytest.approx(1.5 * (4.0 + 4.0 * 0.5) * np.exp(1.0), rel=1e-14)


def test_scalar_tangents_broadcast_into_linear_primitives():
    # a[0] ** 2 + ones(3) has a scalar tangent (a recorded one) under a (3,) value:
    # sum, reshape and getitem of it must broadcast it first, as the stacked jvp did
    def f(a):
        s = adcore.sum(a[0] ** 2 + np.ones(3))
        w = adcore.reshape(a[1] * a[2] + np.ones(3), (3, 1))[1:]
        return s ** 2 + adcore.sum(w ** 3)

    x = np.array([0.3, -0.8, 0.5])
    v = np.array([1.0, -2.0, 0.5])
    hv = adcore.hvp(f, x, v)
    # by hand: s = 3 a0^2 + 3, two copies of w = a1 a2 + 1
    s, w = 3 * x[0] ** 2 + 3, x[1] * x[2] + 1
    H = np.zeros((3, 3))
    H[0, 0] = 72 * x[0] ** 2 + 12 * s
    H[1, 1] = 12 * w * x[2] ** 2
    H[2, 2] = 12 * w * x[1] ** 2
    H[1, 2] = H[2, 1] = 12 * w * x[1] * x[2] + 6 * w ** 2
    _close(hv, H @ v, "analytic", rtol=1e-12)
    _close(np.asarray(adcore.hessian(f)(x)), H, "hessian", rtol=1e-12)


def test_hvp_when_the_derivative_does_not_depend_on_x():
    x = np.array([1.0, 2.0])
    assert np.array_equal(adcore.hvp(lambda a: 3.0 * adcore.sum(a), x, np.ones(2)),
                          np.zeros(2))
    assert np.array_equal(adcore.hvp(lambda a: 7.0, x, np.ones(2)), np.zeros(2))
    C = Named("p", "q")
    zero = adcore.hvp(lambda u: u["p"] - 2.0 * u["q"], Vector(C, [1.0, 2.0]),
                      Vector(C, [0.5, 0.5]))
    assert zero == Vector(C, [0.0, 0.0])


def test_hvp_refuses_what_jvp_refuses():
    x = np.array([1.0, 2.0])
    with pytest.raises(TypeError, match="not a number"):
        adcore.hvp(lambda a: "text", x, np.ones(2))
    with pytest.raises(ValueError, match="must return a scalar"):
        adcore.hvp(lambda a: a * 2.0, x, np.ones(2))
    with pytest.raises(ValueError, match=r"expected shape \(2,\)"):
        adcore.hvp(lambda a: adcore.sum(a ** 3), x, np.ones(3))


def test_hvp_reads_the_x_it_was_given_when_f_writes_it():
    # the tape keeps its own copy of x: a write through a closure while f runs
    # cannot mix old and new values into the partials
    x = np.array([0.5, -1.5])
    v = np.array([1.0, 1.0])

    def f(a):
        y = adcore.sum(a ** 3)
        x[:] = 10.0
        return y

    hv = adcore.hvp(f, x, v)
    np.testing.assert_array_equal(hv, 6.0 * np.array([0.5, -1.5]))


def test_escaped_perturbations_are_still_caught():
    kept = []

    def leak(a):
        kept.append(a)
        return adcore.sum(a * a)

    adcore.hvp(leak, np.ones(2), np.ones(2))
    with pytest.raises(adcore.NestingError):
        adcore.hvp(lambda a: adcore.sum(a * kept[0]), np.ones(2), np.ones(2))


def test_square_partials_record_no_pow_of_one():
    # d/dx x**2 = mulz(2.0, pow(x, 1.0)); pow(x, 1.0) of a recorded x is x itself:
    # input, pow, mulz(2, x), the constant v, mulz(v, .), the two sums
    v = np.array([1.0, 2.0, 3.0])
    tape = adcore.record(
        lambda x: adcore.jvp(lambda a: adcore.sum(a ** 2), (x,), (v,))[1], np.ones(3))
    assert len(tape) <= 7
    np.testing.assert_array_equal(tape.gradient(np.array([0.1, 0.2, 0.3])), 2.0 * v)
    # and higher orders through it stay exact: d3/dx3 x**2 = 0, d2 = 2
    d1 = adcore.derivative(lambda t: t ** 2)
    assert adcore.derivative(d1)(0.7) == 2.0
    assert adcore.derivative(adcore.derivative(d1))(0.7) == 0.0
    assert adcore.hvp(lambda t: t ** 2, 0.0, 1.0) == 2.0


def test_the_rosenbrock_directional_tape_has_no_stacking():
    # hvp of the vectorized Rosenbrock function: the sum's tangent is one sum, not
    # stack + jvp + getitem (31 instructions before the short paths, 26 with them)
    a_v = np.random.default_rng(4).standard_normal(100)

    def rosen(x):
        a = x[:-1]
        return adcore.sum(100.0 * (x[1:] - a * a) ** 2 + (1.0 - a) ** 2)

    x = np.random.default_rng(1).uniform(-1.2, 1.2, 100)
    tape = adcore.record(lambda b: adcore.jvp(rosen, (b,), (a_v,))[1], x)
    assert len(tape) <= 26
    so = pytest.importorskip("scipy.optimize")
    np.testing.assert_allclose(adcore.hvp(rosen, x, a_v), so.rosen_hess_prod(x, a_v),
                               rtol=1e-12, atol=1e-10)


def test_nested_dual_linear_primitive_with_several_directions():
    # k = 2 directions over recorded values: each direction's tangent is the
    # primitive of that direction (jacfwd of a function of recorded values)
    x = np.array([0.2, -0.4, 0.9, 1.3])

    def grad_of_directions(b):
        with adcore.forward._Differentiation() as tag:
            nd = NestedDual(b, [np.array([1.0, 2.0, 0.0, 0.5]), np.array([0.0, 1.0, 0.0, -1.0])],
                            tag)
            y = adcore.sum(adcore.reshape(nd, (2, 2))[:, 1] ** 3)
            assert type(y) is NestedDual and len(y.tangents) == 2
            return y.tangents[0] + 10.0 * y.tangents[1]

    g = adcore.grad(grad_of_directions)(x)
    # y = x1**3 + x3**3: t0 = 3 x1^2 * 2 + 3 x3^2 * 0.5, t1 = 3 x1^2 - 3 x3^2
    want = np.array([0.0, 12.0 * x[1] + 60.0 * x[1], 0.0, 3.0 * x[3] - 60.0 * x[3]])
    np.testing.assert_allclose(g, want, rtol=1e-14)
