"""Replays reuse their buffers; what they hand out is never one of them."""

import threading

import numpy as np
import pytest

import adcore


def _f(x, w):
    h = adcore.tanh(x * w + 0.5)
    return (h * h * w).sum() + (x[1:] * x[:-1]).sum()


def _points(n, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype))
            for _ in range(4)]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_gradients_handed_out_survive_the_next_replay(dtype):
    pts = _points(300, dtype)
    tape = adcore.record(_f, *pts[0])
    first = tape.gradient(*pts[1])
    kept = [g.copy() for g in first]
    for x, w in pts[2:] + pts[:2]:
        again = tape.gradient(x, w)
        for g, h in zip(first, again):
            assert not np.shares_memory(g, h)
    for g, k in zip(first, kept):
        np.testing.assert_array_equal(g, k)
    assert first[0].dtype == dtype and first[0].flags.writeable


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_reused_buffers_give_the_gradients_of_fresh_recordings(dtype):
    pts = _points(50, dtype, seed=1)
    tape = adcore.record(_f, *pts[0])
    for x, w in pts * 2:           # adjoints must start from zero on every sweep
        got = tape.gradient(x, w)
        want = adcore.grad(_f, argnums=(0, 1))(x, w)
        for g, h in zip(got, want):
            np.testing.assert_array_equal(g, h)
        assert tape(x, w) == pytest.approx(float(_f(x, w)), rel=1e-6)


def _rosen(x):        # x[:-1] and x[1:] read by one fused group: x's adjoint is new
    a = x[:-1]
    return adcore.sum(100.0 * (x[1:] - a * a) ** 2.0 + (1.0 - a) ** 2.0)


def _sliced_then_whole(x):      # x's adjoint exists before its slices' reverses
    return adcore.sum(adcore.sin(x[2:-3]) * x[:-5]) + adcore.sum(x * x)


def _rows(x):                   # 2-D rows, a slice of a slice
    y = x[1:]
    return adcore.sum(adcore.tanh(y[3:]) * 2.0) + adcore.sum(x[:-4] * y[:-3])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("f, shape", [(_rosen, (5000,)), (_sliced_then_whole, (5000,)),
                                      (_rows, (1200, 5))], ids=["rosen", "whole", "rows"])
def test_large_slices_adjoints_survive_and_keep_their_bits(f, shape, dtype):
    # A large slice's adjoint lies inside an array of its source's shape, which
    # becomes the source's adjoint (no copy): the gradient handed out must not be
    # written by the next replay, and the bits are the unfused sweep's.
    rng = np.random.default_rng(5)
    pts = [rng.uniform(-1.2, 1.2, shape).astype(dtype) for _ in range(4)]
    tape = adcore.record(f, pts[0])
    plain = adcore.record(f, pts[0])
    plain._fusion = False
    first = tape.gradient(pts[1])
    kept = first.copy()
    for x in pts[2:] + pts[:2]:
        got = tape.gradient(x)
        assert not np.shares_memory(got, first)
        assert got.dtype == dtype
        np.testing.assert_array_equal(got, plain.gradient(x))
        np.testing.assert_array_equal(got, adcore.grad(f)(x))
    np.testing.assert_array_equal(first, kept)


def test_values_handed_out_survive_the_next_replay():
    tape = adcore.record(lambda x: adcore.sin(x) * 2.0, np.zeros(5))
    a = tape(np.ones(5))
    b = tape(np.full(5, 2.0))
    np.testing.assert_array_equal(a, 2 * np.sin(np.ones(5)))
    assert not np.shares_memory(a, b)
    jac = tape.jacobian(np.ones(5))
    tape.jacobian(np.full(5, 3.0))
    np.testing.assert_allclose(jac, np.diag(2 * np.cos(np.ones(5))))


def test_a_released_workspace_keeps_its_result_buffers():
    x0 = np.linspace(-1, 1, 64)
    tape = adcore.record(lambda x: (adcore.exp(x) * x).sum(), x0)
    rp = tape._replay_pooled([x0 + 1.0])
    slots = [s for s in range(len(tape)) if tape.is_array_slot(s)]
    before = {s: tape.value_at(s, rp) for s in slots}
    tape._release(rp)
    rp2 = tape._replay_pooled([x0 - 1.0])
    assert rp2 is rp
    reused = [s for s in slots if tape.value_at(s, rp2) is before[s]]
    # exp(x) and exp(x) * x are written in place, the input is the caller's array
    assert len(reused) >= 2
    np.testing.assert_allclose(tape.value_at(reused[-1], rp2),
                               np.exp(x0 - 1.0) * (x0 - 1.0))
    tape._release(rp2)


def test_threads_take_separate_workspaces():
    pts = _points(200, np.float64, seed=2)
    tape = adcore.record(_f, *pts[0])
    want = [adcore.grad(_f, argnums=(0, 1))(x, w) for x, w in pts]
    errors = []

    def work(k):
        try:
            for _ in range(30):
                for (x, w), ww in zip(pts[k:] + pts[:k], want[k:] + want[:k]):
                    got = tape.gradient(x, w)
                    for g, h in zip(got, ww):
                        np.testing.assert_array_equal(g, h)
        except Exception as e:      # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


def test_branch_error_leaves_the_workspace_usable():
    tape = adcore.record(lambda x: (x * x).sum() if x[0] > 0.0 else x.sum(),
                         np.array([1.0, 2.0]))
    with pytest.raises(adcore.BranchChangedError):
        tape.gradient(np.array([-1.0, 2.0]))
    np.testing.assert_array_equal(tape.gradient(np.array([3.0, 4.0])), [6.0, 8.0])


def test_a_number_replays_a_zero_dimensional_array_input():
    x0 = np.array(2.0)
    tape = adcore.record(lambda x: x * x, x0)
    assert float(tape.gradient(x0 * 1.5)) == 6.0     # x0 * 1.5 is a numpy scalar
    assert float(tape(3.0)) == 9.0


def test_tree_arguments_replay_on_the_quick_layout():
    rng = np.random.default_rng(4)
    params = [{"w": rng.standard_normal((3, 2)), "b": np.zeros(2)}, {}]
    x = rng.standard_normal((4, 3))
    labels = np.array([0, 1, 1, 0])          # integers, recorded as float64 inputs

    def loss(p, x, y):
        z = adcore.nn.functional.linear(x, p[0]["w"], p[0]["b"])
        return adcore.nn.cross_entropy(z, y)

    tape = adcore.record(loss, params, x, labels)
    p2 = [{"w": rng.standard_normal((3, 2)), "b": rng.standard_normal(2)}, {}]
    gp, gx, gy = tape.gradient(p2, x, labels[::-1].copy())
    want = adcore.grad(loss, argnums=(0, 1))(p2, x, labels[::-1].copy())
    assert set(gp[0]) == {"w", "b"} and gp[1] == {}
    np.testing.assert_allclose(gp[0]["w"], want[0][0]["w"], rtol=1e-12)
    np.testing.assert_allclose(gp[0]["b"], want[0][0]["b"], rtol=1e-12)
    np.testing.assert_allclose(gx, want[1], rtol=1e-12)
    np.testing.assert_array_equal(gy, np.zeros(4))
    # another structure still gets the general path's error
    with pytest.raises(TypeError, match="structure"):
        tape.gradient({"w": p2[0]["w"]}, x, labels)
    with pytest.raises(ValueError, match="shape"):
        tape.gradient([{"w": np.zeros((2, 2)), "b": np.zeros(2)}, {}], x, labels)
