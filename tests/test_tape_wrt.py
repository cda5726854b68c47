"""Sweeps for the gradients asked for (Tape.backward(wrt=...), Tape.gradient(argnums=...)),
cotangents adopted without a copy, Adjoints.take and Tape.input(copy=...): every
result against the full sweep (the old path), bitwise."""

import numpy as np
import pytest

import adcore
from adcore import Tape
from adcore.nn import cross_entropy
from adcore.nn.layers import MLP
from adcore.primitives import Primitive


def _mlp_case(dtype=np.float32, batch=16):
    rng = np.random.default_rng(3)
    sizes = (8, 12, 5)
    model = MLP(sizes)
    params = [{"w": rng.standard_normal((8, 12)).astype(dtype), "b": rng.standard_normal(12).astype(dtype)},
              {},
              {"w": rng.standard_normal((12, 5)).astype(dtype), "b": rng.standard_normal(5).astype(dtype)}]
    x = rng.standard_normal((batch, 8)).astype(dtype)
    y = rng.integers(0, 5, batch)
    return (lambda p, x, y: cross_entropy(model(p, x), y)), params, x, y


def _leaves(tree):
    return adcore.trees.flatten(tree)[0]


def _same(a, b):
    la, lb = _leaves(a), _leaves(b)
    assert len(la) == len(lb)
    for u, v in zip(la, lb):
        assert type(u) is type(v)
        if isinstance(u, np.ndarray):
            assert u.dtype == v.dtype and u.shape == v.shape
            np.testing.assert_array_equal(u, v)
        else:
            assert u == v or (np.isnan(u) and np.isnan(v))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_argnums_equals_the_full_gradient(dtype):
    f, params, x, y = _mlp_case(dtype)
    tape = adcore.record(f, params, x, y)
    full = tape.gradient(params, x, y)
    _same(tape.gradient(params, x, y, argnums=0), full[0])
    _same(tape.gradient(params, x, y, argnums=1), full[1])
    _same(tape.gradient(params, x, y, argnums=(0,)), (full[0],))
    _same(tape.gradient(params, x, y, argnums=(1, 0)), (full[1], full[0]))
    _same(tape.gradient(params, x, y, argnums=-3), full[0])
    # and against value_and_grad's recording at the same point
    _same(tape.gradient(params, x, y, argnums=0), adcore.grad(f)(params, x, y))


def test_argnums_at_a_new_point_and_repeated():
    f, params, x, y = _mlp_case()
    tape = adcore.record(f, params, x, y)
    rng = np.random.default_rng(9)
    for _ in range(3):
        x2 = rng.standard_normal(x.shape).astype(np.float32)
        g = tape.gradient(params, x2, y, argnums=0)
        _same(g, adcore.grad(f)(params, x2, y))
        _same(g, tape.gradient(params, x2, y)[0])


def test_argnums_scalars_and_general_path():
    def f(a, b, c):
        return a * b[0] * b[1] + adcore.sum(adcore.sin(c["k"]) * a)

    tape = adcore.record(f, 1.5, [2.0, 3.0], {"k": np.array([0.5, 1.0])})
    args = (0.7, [1.0, -2.0], {"k": np.array([0.1, 0.2])})
    full = tape.gradient(*args)
    _same(tape.gradient(*args, argnums=1), full[1])
    _same(tape.gradient(*args, argnums=(2, 0)), (full[2], full[0]))
    # an integer array leaf takes the general path (converted), same numbers
    args2 = (0.7, [1.0, -2.0], {"k": np.array([1, 2])})
    full2 = tape.gradient(*args2)
    _same(tape.gradient(*args2, argnums=2), full2[2])


def test_argnums_errors():
    tape = adcore.record(lambda a, b: a * b, 1.0, 2.0)
    with pytest.raises(ValueError, match="argnums"):
        tape.gradient(1.0, 2.0, argnums=2)
    with pytest.raises(ValueError, match="argnums is empty"):
        tape.gradient(1.0, 2.0, argnums=())


class _Count(Primitive):
    """x * w summed over nothing: records which cotangents its vjp was asked for."""
    name = "test_wrt_count"

    def __init__(self):
        self.asked = []

    def value(self, x, w):
        return x * w

    def vjp(self, g, xs, out, needs):
        self.asked.append(tuple(needs))
        x, w = xs
        return (g * w if needs[0] else None, g * x if needs[1] else None)


def test_backward_wrt_skips_what_leads_elsewhere():
    p = _Count()
    t = Tape().start()
    try:
        x = t.input(np.array([1.0, 2.0, 3.0]))
        w = t.input(np.array([0.5, -1.0, 2.0]))
        u = adcore.tanh(x) * 2.0           # leads to x only
        out = adcore.sum(p(u, w)) * 3.0
    finally:
        t.finish()
    full = t.backward({out.slot: 1.0})
    part = t.backward({out.slot: 1.0}, wrt=[w.slot])
    np.testing.assert_array_equal(part.array(w.slot, (3,)), full.array(w.slot, (3,)))
    assert p.asked == [(True, True), (False, True)]
    # x's adjoint was never computed (zeros), and tanh's kernel never ran for it
    np.testing.assert_array_equal(part.array(x.slot, (3,)), np.zeros(3))
    part_x = t.backward({out.slot: 1.0}, wrt=frozenset([x.slot]))
    np.testing.assert_array_equal(part_x.array(x.slot, (3,)), full.array(x.slot, (3,)))
    assert p.asked[-1] == (True, False)
    with pytest.raises(IndexError, match="wrt slot"):
        t.backward({out.slot: 1.0}, wrt=[10 ** 6])


def test_backward_wrt_scalar_tape_matches():
    t = Tape().start()
    try:
        a = t.input(0.3)
        b = t.input(-1.2)
        z = adcore.exp(a * b) + b * b - a
    finally:
        t.finish()
    full = t.backward({z.slot: 1.0})
    for wrt in ([a.slot], [b.slot], [a.slot, b.slot]):
        part = t.backward({z.slot: 1.0}, wrt=wrt)
        for s in wrt:
            assert part[s] == full[s]


class _Twice(Primitive):
    """Returns one fresh array as the cotangent of both inputs: it must not become
    both adjoints (an accumulation into one would change the other)."""
    name = "test_wrt_twice"

    def value(self, a, b):
        return a + b

    def vjp(self, g, xs, out, needs):
        c = np.array(g, copy=True)
        return c, c


class _Echo(Primitive):
    """Returns the incoming cotangent and an operand's value as cotangents."""
    name = "test_wrt_echo"

    def value(self, a, b):
        return a * 1.0 + b * 0.0

    def vjp(self, g, xs, out, needs):
        return g, xs[0]


def test_adopted_cotangents_are_never_shared():
    tw = _Twice()

    def f(a, b):
        s = tw(a, b)
        return adcore.sum(s * a) + adcore.sum(b * b)

    a = np.array([1.0, 2.0])
    b = np.array([3.0, -1.0])
    ga, gb = adcore.grad(f, argnums=(0, 1))(a, b)
    # d/da = (a + b) + a, d/db = a + 2b
    np.testing.assert_array_equal(ga, a + b + a)
    np.testing.assert_array_equal(gb, a + 2 * b)
    tape = adcore.record(f, a, b)
    for _ in range(2):
        ga2, gb2 = tape.gradient(a, b)
        np.testing.assert_array_equal(ga2, ga)
        np.testing.assert_array_equal(gb2, gb)


def test_echoed_cotangents_are_copied():
    ec = _Echo()

    def f(a, b):
        return adcore.sum(ec(a * 2.0, b) * 3.0) + adcore.sum(a * b)

    a = np.array([1.0, 2.0])
    b = np.array([3.0, -1.0])
    ga, gb = adcore.grad(f, argnums=(0, 1))(a, b)
    np.testing.assert_array_equal(ga, 3.0 * 2.0 + b)
    np.testing.assert_array_equal(gb, 2.0 * a + a)
    tape = adcore.record(f, a, b)
    ga2, gb2 = tape.gradient(a, b)
    np.testing.assert_array_equal(ga2, ga)
    np.testing.assert_array_equal(gb2, gb)
    np.testing.assert_array_equal(a, [1.0, 2.0])     # the caller's arrays untouched


def test_taken_gradients_survive_the_next_replay():
    f, params, x, y = _mlp_case()
    tape = adcore.record(f, params, x, y)
    g1 = tape.gradient(params, x, y, argnums=0)
    kept = [v.copy() for v in _leaves(g1)]
    x2 = x[::-1].copy()
    g2 = tape.gradient(params, x2, y, argnums=0)
    for v, k in zip(_leaves(g1), kept):
        np.testing.assert_array_equal(v, k)
    for u, v in zip(_leaves(g1), _leaves(g2)):
        assert not np.shares_memory(u, v)
        assert u.flags.writeable


def test_take_hands_over_pooled_buffers():
    tape = adcore.record(lambda x: adcore.sum(adcore.sin(x) * x), np.linspace(0.0, 1.0, 5))
    x = np.linspace(0.0, 1.0, 5)
    rp = tape._replay_pooled([x])
    try:
        slot = tape.in_leaves[0][0]
        out = tape.out_leaves[0][1]
        adj = tape.backward({out: 1.0}, _work=rp)
        ref = np.array(adj.array(slot, (5,)))
        g = adj.take(slot, (5,), np.float64)
        np.testing.assert_array_equal(g, ref)
        g32 = adj.take(slot, (5,), np.float32)
        assert g32.dtype == np.float32
        adj2 = tape.backward({out: 2.0}, _work=rp)
        np.testing.assert_array_equal(g, ref)            # not overwritten
        np.testing.assert_array_equal(adj2.array(slot, (5,)), 2.0 * ref)
        np.testing.assert_array_equal(adj2.take(slot, (5,), np.float64),
                                      2.0 * ref)
    finally:
        tape._release(rp)


def test_input_copy_and_view():
    a = np.arange(4.0)
    t = Tape().start()
    try:
        h1 = t.input(a)
        h2 = t.input(a, copy=False)
        h3 = t.input(np.arange(4))            # integers: converted, not copied again
        h4 = t.input(a[::2])                  # a strided view: made contiguous
        h5 = t.input(a[::2], copy=False)      # no view of it: kernels read contiguous blocks
        h6 = t.input(a.astype(np.float32)[::2])
        s = adcore.sum(h4 * h5 + h6)
    finally:
        t.finish()
    assert h5.value.flags.c_contiguous and h6.value.flags.c_contiguous
    assert h6.value.dtype == np.float32
    adj = t.backward({s.slot: 1.0})
    np.testing.assert_array_equal(adj.array(h4.slot, (2,)), a[::2])
    np.testing.assert_array_equal(adj.array(h6.slot, (2,)), np.ones(2))
    assert not np.shares_memory(h1.value, a)
    assert np.shares_memory(h2.value, a)
    for h in (h1, h2, h3, h4):
        assert not h.value.flags.writeable
    assert h3.value.dtype == np.float64
    assert not np.shares_memory(h4.value, a)
    assert a.flags.writeable                  # the caller's array is left as it was


def test_a_mutated_input_never_gives_a_wrong_gradient():
    # f writes its argument's memory through a closure while recording: the tape
    # keeps the value at entry, so the gradient is the one of what was computed
    w = np.array([1.0, 2.0, 3.0])

    def f(x):
        u = x * x
        w[:] = 100.0
        return adcore.sum(u * x)

    g = adcore.grad(f)(w)
    np.testing.assert_array_equal(g, 3.0 * np.array([1.0, 2.0, 3.0]) ** 2)
