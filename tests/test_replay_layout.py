"""The replay driver's cached layout (reverse._Layout, kept in tape.flat_args):
two-level parameter trees (a dict of leaves, a list/tuple of leaves and dicts of
leaves) matched and rebuilt without recursion, argnums, the sweep's wrt and the
output check kept per tape.  Every result against the recorded-per-call driver
(adcore.grad) bitwise, and every difference of structure or leaf still takes the
checked path with its errors."""

import numpy as np
import pytest

import adcore
from adcore import reverse

RNG = np.random.default_rng(21)


def _f(p, x):
    """A function of a list of per-layer dicts (with an empty one and a plain leaf)."""
    h = adcore.tanh(x @ p[0]["w"] + p[0]["b"])
    return (h @ p[2]["w"]).sum() * p[3] + (p[0]["b"] * p[0]["b"]).sum()


def _params(dtype=np.float64, container=list):
    return container([{"w": RNG.standard_normal((3, 4)).astype(dtype),
                       "b": RNG.standard_normal(4).astype(dtype)},
                      {},
                      {"w": RNG.standard_normal((4, 2)).astype(dtype)},
                      RNG.standard_normal(())[()] if dtype == np.float64 else 1.5])


def _same(a, b):
    la, ta = adcore.trees.flatten(a)
    lb, tb = adcore.trees.flatten(b)
    assert ta == tb and type(a) is type(b)
    for u, v in zip(la, lb):
        assert type(u) is type(v)
        if isinstance(u, np.ndarray):
            assert u.dtype == v.dtype and u.shape == v.shape
            assert u.tobytes() == v.tobytes()
        else:
            assert u == v


@pytest.mark.parametrize("container", [list, tuple])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_two_level_trees_replay_as_recorded(container, dtype):
    p = _params(dtype, container)
    p = container([p[0], p[1], p[2], float(p[3])])
    x = RNG.standard_normal((5, 3)).astype(dtype)
    tape = adcore.record(_f, p, x)
    assert [e[0] for e in reverse._plan(tape)] == ["flat", "leaf"]
    for _ in range(3):
        q = container([{k: RNG.standard_normal(v.shape).astype(dtype) for k, v in p[0].items()},
                       {}, {"w": RNG.standard_normal((4, 2)).astype(dtype)},
                       float(RNG.standard_normal())])
        xq = RNG.standard_normal((5, 3)).astype(dtype)
        want = adcore.grad(_f, argnums=(0, 1))(q, xq)
        _same(tape.gradient(q, xq), want)
        _same(tape.gradient(q, xq, argnums=0), want[0])
        _same(tape.gradient(q, xq, argnums=(1, 0)), (want[1], want[0]))
        assert tape(q, xq) == adcore.value_and_grad(_f)(q, xq)[0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_value_and_gradient_is_value_and_grad_from_one_replay(dtype):
    p = _params(dtype)
    x = RNG.standard_normal((5, 3)).astype(dtype)
    tape = adcore.record(_f, p, x)
    for _ in range(3):
        q = [{k: RNG.standard_normal(v.shape).astype(dtype) for k, v in p[0].items()}, {},
             {"w": RNG.standard_normal((4, 2)).astype(dtype)}, p[3]]
        xq = RNG.standard_normal((5, 3)).astype(dtype)
        want_value, want = adcore.value_and_grad(_f, argnums=(0, 1))(q, xq)
        value, g = tape.value_and_gradient(q, xq)
        assert type(value) is float and value == want_value
        _same(g, want)
        value, g = tape.value_and_gradient(q, xq, argnums=0)
        assert value == want_value
        _same(g, want[0])


def test_value_and_gradient_of_scalar_constant_and_array_outputs():
    tape = adcore.record(_scalar_program, 0.4, -0.7, 1.2)
    for k in range(3):          # the second call on takes the one-call scalar path
        pt = (0.4 + 0.1 * k, -0.7, 1.2)
        want = adcore.value_and_grad(_scalar_program, argnums=(0, 1, 2))(*pt)
        assert tape.value_and_gradient(*pt) == want
    with pytest.raises(adcore.BranchChangedError):
        tape.value_and_gradient(-0.5, -0.7, 1.2)
    assert adcore.record(lambda x: 2.0, 1.0).value_and_gradient(3.0) == (2.0, 0.0)
    atape = adcore.record(lambda a: a * 2.0, np.ones(3))
    with pytest.raises(TypeError, match="scalar output"):
        atape.value_and_gradient(np.ones(3))


def test_a_dict_of_leaves_replays_as_recorded():
    f = lambda p, x: (p["a"] * x).sum() * p["s"] + p["b"].sum()      # noqa: E731
    p = {"a": np.arange(3.0), "s": 2.0, "b": np.ones((2, 2))}
    tape = adcore.record(f, p, np.ones(3))
    assert reverse._plan(tape)[0][0] == "flat"
    q = {"a": RNG.standard_normal(3), "s": 0.5, "b": RNG.standard_normal((2, 2))}
    x = RNG.standard_normal(3)
    _same(tape.gradient(q, x), adcore.grad(f, argnums=(0, 1))(q, x))
    # integers, numpy scalars and non-contiguous arrays: the checked path converts
    q2 = {"a": np.arange(6.0)[::2], "s": np.float32(0.5), "b": np.ones((2, 2), np.int64)}
    want = adcore.grad(f, argnums=(0, 1))(
        {"a": np.arange(6.0)[::2].copy(), "s": 0.5, "b": np.ones((2, 2))}, x)
    _same(tape.gradient(q2, x), want)


def test_two_level_trees_that_differ_take_the_checked_path():
    p = _params()
    x = RNG.standard_normal((5, 3))
    tape = adcore.record(_f, p, x)
    tape.gradient(p, x, argnums=0)
    swapped = [{"b": p[0]["b"], "w": p[0]["w"]}, {}, p[2], p[3]]       # keys in another order
    extra = [p[0], {"c": 1.0}, p[2], p[3]]
    short = [p[0], {}, p[2]]
    leaf_for_dict = [p[0], 1.0, p[2], p[3]]
    dict_for_leaf = [p[0], {}, p[2], {"s": 1.0}]
    for bad in (swapped, extra, short, leaf_for_dict, dict_for_leaf, tuple(p), dict(a=1)):
        with pytest.raises(TypeError, match="recorded with arguments of structure"):
            tape.gradient(bad, x, argnums=0)
    wrong = [{"w": np.zeros((3, 5)), "b": p[0]["b"]}, {}, p[2], p[3]]
    with pytest.raises(ValueError, match=r"argument 0\[0\]\['w'\].*shape \(3, 4\), got \(3, 5\)"):
        tape.gradient(wrong, x, argnums=0)
    with pytest.raises(TypeError, match=r"argument 0\[3\].*str"):
        tape.gradient([p[0], {}, p[2], "s"], x, argnums=0)
    # and the quick path still gives the right result afterwards
    _same(tape.gradient(p, x, argnums=0), adcore.grad(_f)(p, x))


def test_argnums_checked_on_every_call():
    p = _params()
    x = RNG.standard_normal((5, 3))
    tape = adcore.record(_f, p, x)
    want = adcore.grad(_f, argnums=(0, 1))(p, x)
    for _ in range(2):
        _same(tape.gradient(p, x, argnums=1), want[1])
        _same(tape.gradient(p, x, argnums=-2), want[0])
        for bad in (2, -3, 5, (0, 2)):
            with pytest.raises(ValueError, match="does not fit"):
                tape.gradient(p, x, argnums=bad)
        with pytest.raises(TypeError):
            tape.gradient(p, x, argnums=0.0)        # 0.0 == 0, but not an argument number
        with pytest.raises(ValueError, match="empty"):
            tape.gradient(p, x, argnums=())


def test_replaced_tape_attributes_are_noticed():
    """in_tree, in_leaves and out_leaves are public: a layout worked out for the old
    ones is not used for new ones."""
    f = lambda x, y: (x * y).sum()                                   # noqa: E731
    tape = adcore.record(f, np.ones(3), np.ones(3))
    x, y = RNG.standard_normal(3), RNG.standard_normal(3)
    _same(tape.gradient(x, y), (y, x))
    kept = tape.out_leaves
    tape.out_leaves = kept + kept
    with pytest.raises(TypeError, match="one scalar output"):
        tape.gradient(x, y)
    tape.out_leaves = kept
    _same(tape.gradient(x, y, argnums=1), x)
    # the arguments' structure replaced by that of one tuple argument
    tape.in_tree = adcore.trees.flatten(((np.ones(3), np.ones(3)),))[1]
    with pytest.raises(TypeError, match="recorded with arguments of structure"):
        tape.gradient(x, y)
    _same(tape.gradient((x, y)), (y, x))


def _scalar_program(x, y, z):
    """~400 scalar instructions (more than the GIL threshold) with a recorded branch."""
    s = x * y
    for k in range(60):
        s = adcore.sin(s) * 0.5 + y / (1.5 + z * z) - adcore.exp(-x * x) * k
    return s * s if x > 0.0 else -s


@pytest.mark.parametrize("fn, at", [(_scalar_program, (0.4, -0.7, 1.2)),
                                    (lambda x, y: x * y + 2.0 * x, (1.5, -2.0)),
                                    (lambda x, y: x, (1.5, -2.0))])
def test_scalar_tapes_replay_and_sweep_in_one_call_as_recorded(fn, at):
    tape = adcore.record(fn, *at)
    lay = reverse._layout(tape)
    for k in range(4):
        pt = tuple(float(v + 0.1 * k * (i + 1)) for i, v in enumerate(at))
        want = adcore.grad(fn, argnums=tuple(range(len(at))))(*pt)
        got = tape.gradient(*pt)
        assert got == want and all(type(g) is float for g in got)
        assert tape.gradient(*pt, argnums=1) == want[1]
        assert tape.gradient(*pt, argnums=(1, 0)) == (want[1], want[0])
        # the one-call path ran: the output was checked on the first call
        assert lay.out is not None and lay.out[1][0] == "s"
        swept = tape._scalar_gradient_pooled(list(pt), lay.out[1][1])
        assert swept is not None
        tape._release(swept[0])


def test_scalar_tape_one_call_path_reports_a_branch_change_and_recovers():
    tape = adcore.record(_scalar_program, 0.4, -0.7, 1.2)
    want = adcore.grad(_scalar_program, argnums=(0, 1, 2))(0.5, -0.7, 1.2)
    assert tape.gradient(0.5, -0.7, 1.2) == want
    for _ in range(3):
        with pytest.raises(adcore.BranchChangedError, match="instruction"):
            tape.gradient(-0.5, -0.7, 1.2)
        assert tape.gradient(0.5, -0.7, 1.2) == want


def test_scalar_tape_one_call_path_declines_what_it_does_not_handle():
    tape = adcore.record(lambda x, y: x * y, 1.0, 2.0)
    tape.gradient(1.0, 2.0)
    ref = reverse._layout(tape).out[1][1]
    swept = tape._scalar_gradient_pooled([1.0, 2.0], ref)
    assert swept is not None
    tape._release(swept[0])
    assert tape._scalar_gradient_pooled([1.0], ref) is None                 # count
    assert tape._scalar_gradient_pooled([1.0, np.float64(2.0)], ref) is None  # not a float
    assert tape._scalar_gradient_pooled([1.0, 2.0], len(tape)) is None       # seed slot
    assert tape._scalar_gradient_pooled([1.0, 2.0], -1) is None
    # integers and numpy floats take the general path and give the same gradient
    assert tape.gradient(3, np.float64(2.0)) == tape.gradient(3.0, 2.0) == (2.0, 3.0)
    # in_leaves is public: a slot that is not an input is declined, never written
    leaves = tape.in_leaves
    tape.in_leaves = [(ref, None, leaves[0][2]), leaves[1]]
    try:
        assert tape._scalar_gradient_pooled([1.0, 2.0], ref) is None
    finally:
        tape.in_leaves = leaves
    # a tape with arrays is declined
    atape = adcore.record(lambda a: adcore.sum(a * a), np.ones(3))
    atape.gradient(np.ones(3))
    assert atape._scalar_gradient_pooled([np.ones(3)], 0) is None


def test_scalar_tape_one_call_path_starts_each_replay_from_the_recorded_values():
    # the one-call path restores only the input slots it wrote last time: an input
    # slot no longer listed in in_leaves must read its recorded value again
    tape = adcore.record(lambda x, y: x * y + 3.0 * y, 1.0, 2.0)
    assert tape.gradient(4.0, 5.0) == tape.gradient(4.0, 5.0) == (5.0, 7.0)
    leaves = tape.in_leaves
    ref = reverse._layout(tape).out[1][1]
    rp, adj = tape._scalar_gradient_pooled([4.0, 5.0], ref)     # writes both slots
    tape._release(rp)
    tape.in_leaves = [leaves[0], leaves[0]]       # slot of y no longer written
    try:
        rp, adj = tape._scalar_gradient_pooled([6.0, 7.0], ref)
        tape._release(rp)
        assert adj[leaves[0][0]] == 2.0           # d/dx = y, the recorded y
        for _ in range(3):
            got = tape.gradient(6.0, 7.0)         # x = 7.0 (written last), y as recorded
            general = tape.gradient(6, 7)         # integers: the general path
            assert got == general == (2.0, 2.0)
    finally:
        tape.in_leaves = leaves
    assert tape.gradient(4.0, 5.0) == (5.0, 7.0)
