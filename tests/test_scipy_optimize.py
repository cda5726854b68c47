"""adcore's derivatives fed to scipy.optimize.minimize: the drivers as they are
(value_and_grad for jac=True, grad for jac=, hvp for hessp=) and
adcore.optimize.scipy_functions (replayed tapes)."""

import numpy as np
import pytest

import adcore
from adcore.optimize import ScipyObjective, scipy_functions

so = pytest.importorskip("scipy.optimize",
                         reason="scipy is a test-only dependency (pip install adcore[test])")


def rosen(x):
    # scipy.optimize.rosen's formula in plain numpy (scipy's own copy first converts x
    # with numpy.asanyarray, which a recorded array refuses: see test_numpy_protocols)
    return np.sum(100.0 * (x[1:] - x[:-1] ** 2.0) ** 2.0 + (1 - x[:-1]) ** 2.0)


N = 100


def x0():
    x = np.full(N, -1.2)
    x[1::2] = 1.0
    return x


def _reference(method, **extra):
    kw = {"hessp": so.rosen_hess_prod} if method in ("Newton-CG", "trust-ncg") else {}
    kw.update(extra)
    return so.minimize(so.rosen, x0(), method=method, jac=so.rosen_der, **kw)


def _check(res, ref):
    assert res.success, res.message
    assert ref.success, ref.message
    # BFGS's path over 100 dimensions follows the gradient's last bits (ours sums in
    # another order than rosen_der) and BLAS's: 545 vs 541 iterations on an AMD EPYC
    # (Zen 5) machine, fewer than the reference on others.  A few percent is rounding.
    assert res.nit <= ref.nit + max(10, ref.nit // 20), (res.nit, ref.nit)
    # both at the minimum x = 1 (Newton-CG stops with the looser accuracy of its xtol)
    tol = 0.05 if ref.fun > 1e-8 else 1e-4
    np.testing.assert_allclose(res.x, np.ones(N), atol=tol)
    assert res.fun <= max(1e-3, 10 * ref.fun)


def test_rosen_formula_matches_scipy():
    x = np.linspace(-1.0, 2.0, N)
    assert rosen(x) == pytest.approx(so.rosen(x), rel=1e-14)
    np.testing.assert_allclose(adcore.grad(rosen)(x), so.rosen_der(x), rtol=1e-12)
    p = np.sin(np.arange(N, dtype=float))
    np.testing.assert_allclose(adcore.hvp(rosen, x, p), so.rosen_hess_prod(x, p),
                               rtol=1e-11, atol=1e-9)


def test_value_and_grad_is_what_jac_true_expects():
    value, g = adcore.value_and_grad(rosen)(x0())
    assert type(value) is float
    assert isinstance(g, np.ndarray) and g.shape == (N,) and g.dtype == np.float64
    res = so.minimize(adcore.value_and_grad(rosen), x0(), method="BFGS", jac=True)
    _check(res, _reference("BFGS"))


def test_grad_as_jac_and_hvp_as_hessp():
    res = so.minimize(rosen, x0(), method="Newton-CG", jac=adcore.grad(rosen),
                      hessp=lambda x, p: adcore.hvp(rosen, x, p))
    _check(res, _reference("Newton-CG"))


@pytest.mark.parametrize("method", ["BFGS", "Newton-CG", "trust-ncg"])
def test_scipy_functions_minimize_rosenbrock(method):
    fs = scipy_functions(rosen)
    kw = {"hessp": fs["hessp"]} if method != "BFGS" else {}
    res = so.minimize(fs["fun"], x0(), method=method, jac=fs["jac"], **kw)
    _check(res, _reference(method))


def test_one_recording_replayed_at_every_point():
    obj = ScipyObjective(rosen)
    res = so.minimize(obj.fun, x0(), method="trust-ncg", jac=obj.jac, hessp=obj.hessp)
    assert res.success
    assert obj.stats["records"] == 1
    assert obj.stats["branch_changes"] == 0
    assert obj.stats["replays"] > res.nit


def test_hess_matches_scipy_and_drives_trust_exact():
    fs = scipy_functions(rosen)
    x = np.linspace(-1.0, 2.0, 10)
    np.testing.assert_allclose(fs["hess"](x), so.rosen_hess(x), rtol=1e-12, atol=1e-9)
    start = np.linspace(-1.0, 0.5, 10)
    res = so.minimize(fs["fun"], start, method="trust-exact", jac=fs["jac"], hess=fs["hess"])
    ref = so.minimize(so.rosen, start, method="trust-exact", jac=so.rosen_der,
                      hess=so.rosen_hess)
    assert res.success and res.nit <= ref.nit
    np.testing.assert_allclose(res.x, np.ones(10), atol=1e-6)


def _branchy(x):
    if x[0] > 0.0:
        return np.sum(x ** 3.0)
    return np.sum(np.sin(x))


@pytest.mark.parametrize("replay", [True, False])
def test_branch_changes_fall_back_to_recording(replay):
    obj = ScipyObjective(_branchy, replay=replay)
    v = np.array([1.0, 0.5, -2.0])
    for x in (np.array([0.5, 1.0, 2.0]), np.array([-0.5, 1.0, 2.0]),
              np.array([0.7, -1.0, 2.0]), np.array([-0.1, 0.3, 0.2])):
        if x[0] > 0:
            g, hv = 3 * x ** 2, 6 * x * v
        else:
            g, hv = np.cos(x), -np.sin(x) * v
        np.testing.assert_allclose(obj.jac(x), g, rtol=1e-14)
        assert obj.fun(x) == pytest.approx(_branchy(x), rel=1e-14)
        np.testing.assert_allclose(obj.hessp(x, v), hv, rtol=1e-13, atol=1e-15)
    if replay:
        assert obj.stats["branch_changes"] >= 3


def test_results_are_fresh_arrays():
    obj = ScipyObjective(rosen)
    x = np.linspace(0.0, 1.0, 5)
    g = obj.jac(x)
    g[:] = 0.0
    np.testing.assert_allclose(obj.jac(x), so.rosen_der(x))


def test_bad_inputs():
    with pytest.raises(TypeError, match="must be callable"):
        scipy_functions(3.0)
    with pytest.raises(ValueError, match="1-D array"):
        scipy_functions(rosen)["jac"](np.ones((2, 2)))


def test_replay_of_forward_over_recording_checks_branches():
    tape = adcore.record(lambda x: adcore.jvp(_branchy, (x,), (np.ones(3),))[1], np.ones(3))
    # forward mode inside a recording: its comparisons are recorded and checked on replay
    with pytest.raises(adcore.BranchChangedError):
        tape(-np.ones(3))
    assert tape(2 * np.ones(3)) == pytest.approx(3 * 3 * 4.0)
