"""Replaying a recorded tape at new inputs, and the branch checks."""

import numpy as np
import pytest

import adcore
from adcore import reverse
from adcore._rules import OPCODES
from adcore.dispatch import apply


def scalar_program(x, y):
    z = x * y + adcore.sin(x) / (1.0 + y * y)
    for k in range(20):
        z = adcore.tanh(z) * 0.9 + adcore.exp(-x * x) * k - adcore.hypot(z, y)
    return z ** 2 + adcore.atan2(x, y) + 3.0


def array_program(w, x):
    h = adcore.tanh(w @ x + 0.5)
    return (h * h).sum() + adcore.softplus(h[1:] - h[:-1]).sum() + h.T[0]


@pytest.mark.parametrize("at", [(0.3, 1.2), (-1.1, 0.4), (2.0, -0.7)])
def test_replay_equals_rerecording_scalar(at):
    tape = adcore.record(scalar_program, 0.5, 0.5)
    value, grads = adcore.value_and_grad(scalar_program, argnums=(0, 1))(*at)
    assert tape(*at) == value
    assert tape.gradient(*at) == grads
    J = tape.jacobian(*at)
    assert J == grads


def test_replay_equals_rerecording_arrays():
    rng = np.random.default_rng(0)
    w0, x0 = rng.normal(size=(4, 3)), rng.normal(size=3)
    w1, x1 = rng.normal(size=(4, 3)), rng.normal(size=3)
    tape = adcore.record(array_program, w0, x0)
    value, (gw, gx) = adcore.value_and_grad(array_program, argnums=(0, 1))(w1, x1)
    assert tape(w1, x1) == value
    rw, rx = tape.gradient(w1, x1)
    np.testing.assert_array_equal(rw, gw)
    np.testing.assert_array_equal(rx, gx)


def test_replay_jacobian_equals_jacrev():
    f = lambda x: adcore.sin(x) * x[::-1]
    x0, x1 = np.array([0.1, 0.2, 0.3]), np.array([1.0, -2.0, 0.5])
    tape = adcore.record(f, x0)
    np.testing.assert_array_equal(tape.jacobian(x1), reverse.jacrev(f)(x1))
    np.testing.assert_array_equal(tape(x1), np.sin(x1) * x1[::-1])


def test_replay_does_not_change_the_tape():
    tape = adcore.record(scalar_program, 0.5, 0.5)
    g0 = tape.gradient(0.5, 0.5)
    tape.gradient(1.5, -0.5)
    assert tape.gradient(0.5, 0.5) == g0


def test_branch_change_is_detected():
    f = lambda x: 0.0 if x < 0 else x
    tape = adcore.record(f, -1.3)
    assert tape.gradient(-0.5) == 0.0
    with pytest.raises(adcore.BranchChangedError, match="less"):
        tape.gradient(1.34)
    with pytest.raises(adcore.BranchChangedError, match="comparison"):
        tape(1.34)


def test_value_read_by_python_is_checked():
    def f(x):
        n = int(x)                # Python decides with the value
        return x * n

    tape = adcore.record(f, 2.5)
    assert tape.gradient(2.5) == 2.0
    with pytest.raises(adcore.BranchChangedError, match="read by Python"):
        tape.gradient(3.5)


def test_bool_of_handle_is_checked():
    tape = adcore.record(lambda x: x if adcore.greater(x, 1.0) else -x, 2.0)
    assert tape(3.0) == 3.0
    with pytest.raises(adcore.BranchChangedError):
        tape(0.5)


def test_where_replays_across_the_switch():
    def f(x):
        return adcore.where(adcore.less(x, 0.0), x * x, adcore.sin(x))

    tape = adcore.record(f, -1.3)
    assert tape.gradient(-1.3) == 2 * -1.3
    assert tape.gradient(1.34) == np.cos(1.34)
    assert tape(1.34) == np.sin(1.34)


def test_where_zero_cotangent_branch_never_nan_on_replay():
    def f(x):
        return adcore.where(adcore.greater(x, 0.0), adcore.log(x), x)

    tape = adcore.record(f, 2.0)
    assert tape.gradient(-3.0) == 1.0          # log's partial 1/x is finite but log(-3) nan
    tape0 = adcore.record(lambda x: adcore.where(adcore.greater(x, 0.0), adcore.sqrt(x), 0.0),
                          4.0)
    assert tape0.gradient(0.0) == 0.0          # sqrt'(0) = inf, times cotangent 0 -> 0
    assert tape0.gradient(-1.0) == 0.0


def test_where_arrays_replay():
    f = lambda x: adcore.where(x > 0.0, x * x, -x).sum()
    tape = adcore.record(f, np.array([1.0, -1.0]))
    np.testing.assert_array_equal(tape.gradient(np.array([-2.0, 3.0])), [-1.0, 6.0])


def test_wrong_inputs_raise_specific_errors():
    tape = adcore.record(lambda x, p: x.sum() * p["a"], np.ones(3), {"a": 2.0})
    with pytest.raises(TypeError, match="structure"):
        tape(np.ones(3))
    with pytest.raises(ValueError, match=r"shape \(3,\), got \(4,\)"):
        tape(np.ones(4), {"a": 2.0})
    with pytest.raises(ValueError, match="scalar"):
        tape(np.ones(3), {"a": np.ones(2)})
    with pytest.raises(TypeError, match=r"argument 1\['a'\].*str"):
        tape(np.ones(3), {"a": "2"})
    with pytest.raises(TypeError, match="structure"):
        tape(np.ones(3), {"b": 2.0})


def test_float32_inputs_replay_as_float32():
    tape = adcore.record(lambda x: (x * x).sum(), np.ones(3, np.float32))
    g = tape.gradient(np.array([1.0, 2.0, 3.0]))     # float64 input is cast
    assert g.dtype == np.float32
    np.testing.assert_array_equal(g, [2.0, 4.0, 6.0])


def test_gradient_needs_scalar_output():
    tape = adcore.record(lambda x: x * 2.0, np.ones(2))
    with pytest.raises(TypeError, match="scalar output"):
        tape.gradient(np.ones(2))
    np.testing.assert_array_equal(tape.jacobian(np.ones(2)), 2 * np.eye(2))


def test_replay_of_tree_outputs():
    tape = adcore.record(lambda x: {"a": x * 2.0, "b": (x, 5.0)}, 1.0)
    assert tape(3.0) == {"a": 6.0, "b": (3.0, 5.0)}


def test_replay_through_primitives_and_broadcast():
    f = lambda A, b: ((A + b) ** 2).sum(axis=0).sum()
    A0, b0 = np.ones((2, 3)), np.zeros(3)
    tape = adcore.record(f, A0, b0)
    A1, b1 = np.arange(6.0).reshape(2, 3), np.array([1.0, -1.0, 0.5])
    gA, gb = tape.gradient(A1, b1)
    np.testing.assert_allclose(gA, 2 * (A1 + b1))
    np.testing.assert_allclose(gb, (2 * (A1 + b1)).sum(axis=0))


def test_replay_with_every_rule():
    # a tape of every rule replays to what its recording at the new point gives
    def f(*xs):
        total = 0.0
        for rule in adcore._rules.RULES:
            args = [lo + (hi - lo) * (0.4 + 0.1 * xs[i]) for i, (lo, hi) in enumerate(rule.domain)]
            total = total + apply(rule.opcode, args) * 0.5
        return total

    p0, p1 = (0.1, 0.2, 0.3), (0.3, 0.1, -0.2)
    tape = adcore.record(f, *p0)
    expected = adcore.grad(f, argnums=(0, 1, 2))(*p1)
    assert all(np.isfinite(expected)) and expected[0] != 0.0 and expected[1] != 0.0
    assert tape.gradient(*p1) == expected


def test_replay_with_list_of_scalars():
    def rosen(xs):
        s = 0.0
        for i in range(len(xs) - 1):
            a = xs[i]
            s = s + 100.0 * (xs[i + 1] - a * a) ** 2 + (1.0 - a) ** 2
        return s

    x0 = [0.5, -0.3, 1.2, 0.8]
    x1 = list(np.array([0.1, 0.2, -0.7, 1.1]))        # numpy scalars are accepted
    tape = adcore.record(rosen, x0)
    g = tape.gradient(x1)
    assert isinstance(g, list) and g == adcore.grad(rosen)([float(v) for v in x1])
    with pytest.raises(TypeError, match=r"argument 0\[2\].*str"):
        tape.gradient([0.1, 0.2, "x", 1.1])
    with pytest.raises(TypeError, match="structure"):
        tape.gradient([0.1, 0.2])
    with pytest.raises(TypeError, match="structure"):
        tape.gradient(tuple(x0))
