"""Deferred element-wise values while recording (Tape._aval, _force, _settle).

An element-wise result of 4096 elements or more is computed when something first
reads it; a run of them read only at its end is computed in one block loop and its
intermediates are never stored (the fused reverse recomputes them).  Everything a
user or a sweep reads must be what eager recording gives, bit for bit.
"""

import threading

import numpy as np
import pytest

import adcore
import adcore._tape as T
from test_tape_fused import _inputs, _program, _same

N = 5000            # above the deferral threshold (4096 elements)


def _eager(call):
    old = T._defer_min(1 << 62)
    try:
        return call()
    finally:
        T._defer_min(old)


def _rosen(x):
    a = x[:-1]
    return adcore.sum(100.0 * (x[1:] - a * a) ** 2.0 + (1.0 - a) ** 2.0)


def test_rosen_records_its_run_deferred_and_differentiates_bitwise():
    x = np.random.default_rng(0).uniform(-1.2, 1.2, N)
    tape = adcore.record(_rosen, x)
    # seven element-wise steps; the six before the last are read only inside the
    # run: never computed (the sum computed the last one)
    assert len(tape._deferred_slots) == 6
    value, g = adcore.value_and_grad(_rosen)(x)
    v0, g0 = _eager(lambda: adcore.value_and_grad(_rosen)(x))
    assert _same(value, v0) and _same(g, g0)
    assert _same(tape.gradient(x), g0)


@pytest.mark.parametrize("seed", range(40))
def test_random_programs_one_off_bitwise(seed):
    rng = np.random.default_rng(3000 + seed)
    f = _program(rng, int(rng.integers(2, 14)), int(rng.integers(0, 3)))
    dtype = np.float32 if seed % 4 == 3 else np.float64
    with np.errstate(all="ignore"):
        for special in (False, True):
            x, y, s = _inputs(rng, N, special)
            x, y = x.astype(dtype), y.astype(dtype)
            vg = adcore.value_and_grad(f, argnums=(0, 1, 2))
            got = vg(x, y, s)
            want = _eager(lambda: vg(x, y, s))
            assert _same(got[0], want[0]) and _same(got[1], want[1]), (seed, special)
            got = adcore.grad(f, argnums=1)(x, y, s)
            assert _same(got, want[1][1]), (seed, special)


def test_values_read_in_any_order_are_the_eager_ones():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=N), rng.normal(size=N)

    def run():
        seen = {}

        def f(x, y):
            a = adcore.sin(x) * y
            b = a * a + 1.0
            c = adcore.exp(-b) - a
            d = c * x
            # the later ones first: each computed from the deferred ones it needs
            for k, v in (("d", d), ("b", b), ("c", c), ("a", a)):
                seen[k] = np.array(v.value)
            return adcore.sum(d * b), (a, c)

        out = adcore.value_and_grad(f, argnums=(0, 1), has_aux=True)(x, y)
        return out, seen

    (got, seen), (want, seen0) = run(), _eager(run)
    assert _same(got[0][0], want[0][0]) and _same(got[0][1], want[0][1])
    assert _same(got[1], want[1])
    assert all(_same(seen[k], seen0[k]) for k in "abcd")


def test_an_intermediate_output_gets_its_cotangent():
    rng = np.random.default_rng(2)
    x = rng.normal(size=N)

    def f(x):
        a = x * 3.0
        b = adcore.tanh(a) + a
        return b * x, a       # a is deferred until the output needs it

    out, pull = adcore.vjp(f, x)
    ct = (rng.normal(size=N), rng.normal(size=N))
    got = pull(ct)
    out0, pull0 = _eager(lambda: adcore.vjp(f, x))
    assert _same(out, out0) and _same(got, _eager(lambda: pull0(ct)))


def test_operands_of_other_kinds_force_their_values():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(N, 2))
    x32 = x.astype(np.float32)

    def f(x, x32):
        a = x * 2.0 + 1.0                     # deferred
        b = a[:, :1] * a                      # broadcast of a slice (a primitive)
        c = adcore.tanh(x32 * 2.0) + a        # a float32 run read by a float64 one
        m = adcore.mean(c, axis=0)            # a primitive of a deferred value
        return adcore.sum(b * m) + (1.0 if float(adcore.sum(a)) > 0 else 0.0)

    want = _eager(lambda: adcore.value_and_grad(f, argnums=(0, 1))(x, x32))
    old = T._defer_min(1)           # every element-wise value deferred
    try:
        got = adcore.value_and_grad(f, argnums=(0, 1))(x, x32)
    finally:
        T._defer_min(old)
    assert _same(got[0], want[0]) and _same(got[1], want[1])


def test_a_float32_run_inside_a_float64_one():
    # a float64 step with a deferred float32 operand is computed as it is recorded
    # (a deferred value's cone has one dtype); the float64 steps after it defer again
    rng = np.random.default_rng(8)
    x = rng.normal(size=N)
    x32 = rng.normal(size=N).astype(np.float32)

    def f(x, x32):
        a = x * 2.0 + 1.0
        c = adcore.tanh(x32 * 2.0)
        d = (c + a) * a - x
        return adcore.sum(d * d)

    got = adcore.value_and_grad(f, argnums=(0, 1))(x, x32)
    want = _eager(lambda: adcore.value_and_grad(f, argnums=(0, 1))(x, x32))
    assert _same(got[0], want[0]) and _same(got[1], want[1])
    assert got[1][1].dtype == np.float32


def test_a_long_run_read_once_is_bounded_and_exact():
    x = np.random.default_rng(5).uniform(0.5, 1.5, N)

    def f(x):
        v = x
        for i in range(60):        # more than a deferred value computes with it
            v = v * 0.99 + 0.01 * x
        return adcore.sum(v)

    assert _same(adcore.grad(f)(x), _eager(lambda: adcore.grad(f)(x)))


def test_saving_and_the_recorded_values_see_every_value():
    x = np.random.default_rng(6).uniform(-1.2, 1.2, N)
    tape = adcore.record(_rosen, x)
    deferred = tape._deferred_slots
    assert deferred
    plain = _eager(lambda: adcore.record(_rosen, x))
    for s in deferred:
        assert _same(tape.value_at(s), plain.value_at(s))
    again = adcore.Tape.from_bytes(tape.to_bytes())
    assert again.to_bytes() == plain.to_bytes()
    assert _same(again.gradient(x), plain.gradient(x))


def test_threads_sweep_one_deferred_recording():
    x = np.random.default_rng(7).uniform(-1.2, 1.2, N)
    want = _eager(lambda: adcore.grad(_rosen)(x))
    results = []
    for _ in range(4):
        tape = adcore.record(_rosen, x)
        slot = tape.out_leaves[0][1]
        outs = [None] * 4

        def run(i):
            outs[i] = tape.backward({slot: 1.0}).take(tape.in_leaves[0][0], (N,),
                                                      np.float64)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        results.extend(outs)
    for g in results:
        assert _same(g, want)
