"""Threads: each records into its own tape; replays of one tape run concurrently."""

import threading

import numpy as np

import adcore
from adcore._tape import current_tape


def program(x, w):
    z = x
    for _ in range(200):
        z = adcore.tanh(z * 1.01 + 0.1) + adcore.sin(z) * 0.5
    return z * z + (adcore.exp(w * x) * w).sum()


W = np.array([0.1, -0.2, 0.3])
POINTS = [0.1 * k - 0.3 for k in range(8)]


def run_threads(target, n=8):
    results = [None] * n
    errors = []
    barrier = threading.Barrier(n)

    def body(k):
        try:
            barrier.wait()
            results[k] = target(k)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return results


def test_threads_recording_match_serial():
    grad = adcore.grad(program, argnums=(0, 1))
    serial = [grad(x, W) for x in POINTS]

    def work(k):
        out = []
        for _ in range(3):
            out.append(grad(POINTS[k], W))
        return out

    for k, results in enumerate(run_threads(work)):
        for gx, gw in results:
            assert gx == serial[k][0]
            np.testing.assert_array_equal(gw, serial[k][1])


def test_threads_replaying_one_tape_match_serial():
    tape = adcore.record(program, 0.0, W)
    serial = [tape.gradient(x, W) for x in POINTS]

    def work(k):
        return [tape.gradient(POINTS[k], W) for _ in range(3)]

    for k, results in enumerate(run_threads(work)):
        for gx, gw in results:
            assert gx == serial[k][0]
            np.testing.assert_array_equal(gw, serial[k][1])


def test_active_tape_is_per_thread():
    seen = {}

    def work(k):
        def f(x):
            seen[k] = current_tape()
            return x * 2.0
        adcore.grad(f)(1.0)
        return seen[k]

    tapes = run_threads(work)
    assert len({id(t) for t in tapes}) == len(tapes)
    assert current_tape() is None
