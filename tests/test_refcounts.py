"""No reference leaks and no memory growth on the C hot paths.

Three measures, each sensitive to one kind of leak:

* ``sys.getrefcount`` of the inputs and constants an operation touches: a kernel
  that forgets a DECREF on an argument shows up here;
* ``sys.getallocatedblocks`` (every live Python object holds a block) and
  tracemalloc (which also sees numpy's array buffers): a leaked result object
  or array grows them by one per call;
* the process's resident size, for buffers the kernels take from C's malloc
  (a Dual's tangents beyond the inline ones, a replay's work space), which
  neither of the above sees: the loops are sized so that a leak would be tens
  of megabytes.
"""

from __future__ import annotations

import gc
import math
import os
import sys
import tracemalloc

import numpy as np
import pytest

import adcore
from adcore import Dual, DualArray


def _growth(measure, fn, n):
    gc.collect()
    before = measure()
    for _ in range(n):
        fn()
    gc.collect()
    return measure() - before


def assert_no_leak(fn, n=1000, slack=64):
    """Live Python objects and traced memory stay flat over n calls of fn.

    Each is measured over three windows of n calls after n warm-up calls, and the
    smallest growth counts: a leak grows every window, a cache that fills up (abc's
    subclass caches, numpy's; Python 3.13 kept filling one for ~10^4 calls of an
    error path) only the first ones.
    """
    for _ in range(n):
        fn()
    grown = min(_growth(sys.getallocatedblocks, fn, n) for _ in range(3))
    assert grown < slack, f"{grown} more live Python blocks after {n} calls"
    tracemalloc.start()
    try:
        traced = min(_growth(lambda: tracemalloc.get_traced_memory()[0], fn, n)
                     for _ in range(2))
    finally:
        tracemalloc.stop()
    # one leaked float (24 bytes) per call would be 24 KB per 1000 calls
    assert traced < 12 * n, f"traced memory grew by {traced} bytes in {n} calls"


def assert_refcounts_stable(objs, fn, n=1000):
    fn()
    gc.collect()  # cycles (a tape and its handles) hold references until collected
    before = [sys.getrefcount(o) for o in objs]
    for _ in range(n):
        fn()
    gc.collect()
    after = [sys.getrefcount(o) for o in objs]
    assert after == before, f"reference counts went from {before} to {after}"


def _rss_bytes():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# AddressSanitizer keeps freed memory in quarantine (to catch use after free), so
# the resident size grows by design there; CI runs these in its other stages
needs_proc = pytest.mark.skipif(
    not os.path.exists("/proc/self/statm") or "libasan" in os.environ.get("LD_PRELOAD", ""),
    reason="needs /proc (Linux) and no AddressSanitizer")

# a float object that is not cached or shared, so its refcount is ours to watch
C = float("1.2345678")
ARR = np.linspace(0.1, 0.9, 5)


# ---------------------------------------------------------------- Dual

def _dual_ops(x, y):
    x * y + C
    C - x / y
    adcore.sin(x) * adcore.exp(y)
    x ** 2.0 + 2.0 ** y
    adcore.atan2(x, y), adcore.maximum(x, C), adcore.where(adcore.less(x, y), x, y)
    -x, abs(x), x < y, x == C
    float(x)


@pytest.mark.parametrize("k", [1, 3, 40], ids=lambda k: f"k={k}")
def test_dual_operations_keep_refcounts(k):
    x = Dual(0.5, np.arange(k, dtype=float))
    y = Dual(1.5, np.ones(k))
    tangents = x.tangents
    assert_refcounts_stable([x, y, C, tangents], lambda: _dual_ops(x, y))


@pytest.mark.parametrize("k", [1, 40], ids=lambda k: f"k={k}")
def test_dual_operations_do_not_leak(k):
    x = Dual(0.5, np.arange(k, dtype=float))
    y = Dual(1.5, np.ones(k))
    assert_no_leak(lambda: _dual_ops(x, y))


def test_dual_results_hold_no_hidden_references():
    # against a fresh local object: what getrefcount reports for a name only
    # (2 up to Python 3.13, fewer where the interpreter borrows stack references)
    o = object()
    alone = sys.getrefcount(o)
    x = Dual(0.5, [1.0, 2.0])
    r = adcore.sin(x) * x
    assert sys.getrefcount(r) == alone
    t = r.tangents
    assert sys.getrefcount(t) == alone  # a fresh array each time, owned by the caller only


def test_errors_on_the_hot_path_do_not_leak():
    x = Dual(0.5, [1.0, 2.0])
    bad = "x"

    def fn():
        for op in (lambda: x + bad, lambda: adcore.sin(bad), lambda: x * 1j,
                   lambda: x + Dual(1.0, [1.0])):
            try:
                op()
            except (TypeError, ValueError):
                pass

    assert_refcounts_stable([x, bad], fn)
    assert_no_leak(fn)


@needs_proc
def test_dual_tangent_buffers_are_freed():
    # k = 1000 is past the inline tangents: each Dual mallocs 8 KB; 20000 of them
    # leaked would be 160 MB
    x = Dual(0.3, np.ones(1000))
    for _ in range(200):
        adcore.sin(x) * x
    gc.collect()
    before = _rss_bytes()
    for _ in range(20000):
        adcore.sin(x) * x
    gc.collect()
    assert _rss_bytes() - before < 16 * 2 ** 20


# ---------------------------------------------------------------- DualArray

def _array_ops(a, b):
    a * b + ARR
    adcore.sin(a) / (1.0 + b * b)
    adcore.maximum(a, ARR), adcore.where(adcore.less(a, b), a, b)
    adcore.sum(a * b), adcore.matmul(a, b)
    a ** 2.0, -a, a[1:3]


def test_dual_array_operations_keep_refcounts():
    a = DualArray(np.linspace(-1, 1, 5), np.ones((3, 5)))
    b = DualArray(np.linspace(0.5, 2, 5), np.zeros((3, 5)))
    objs = [a, b, a.value, a.tangents, b.value, ARR, C]
    assert_refcounts_stable(objs, lambda: _array_ops(a, b), n=500)


def test_dual_array_operations_do_not_leak():
    a = DualArray(np.linspace(-1, 1, 5), np.ones((3, 5)))
    b = DualArray(np.linspace(0.5, 2, 5), np.zeros((3, 5)))
    assert_no_leak(lambda: _array_ops(a, b), n=1000)


def test_dual_array_results_hold_no_hidden_references():
    o = object()
    alone = sys.getrefcount(o)
    a = DualArray(np.linspace(-1, 1, 5), np.ones((3, 5)))
    r = adcore.sin(a) * ARR
    assert sys.getrefcount(r) == alone
    v, t = r.value, r.tangents
    assert sys.getrefcount(v) == alone + 1 and sys.getrefcount(t) == alone + 1  # and r's


# ---------------------------------------------------------------- drivers and the tape

def f_scalar(x, y):
    z = x * y + adcore.sin(x)
    return adcore.where(adcore.greater(z, 0.0), z * z, -z) + adcore.log1p(y * y)


def f_array(x):
    return adcore.sum(adcore.tanh(adcore.matmul(x, x.T if hasattr(x, "T") else x)) * 0.5)


X2 = np.linspace(-1.0, 1.0, 6).reshape(2, 3)


def test_drivers_keep_refcounts_of_inputs():
    x = float("0.75")
    fns = [
        lambda: adcore.grad(f_scalar, argnums=(0, 1))(x, C),
        lambda: adcore.jvp(f_scalar, (x, C), (1.0, 0.0)),
        lambda: adcore.jacfwd(adcore.sin)(ARR),
        lambda: adcore.jacrev(adcore.sin)(ARR),
        lambda: adcore.vjp(adcore.sin, ARR)[1](ARR),
        lambda: adcore.hessian(lambda p: p["a"] * p["a"] * p["b"])({"a": x, "b": C}),
    ]
    assert_refcounts_stable([x, C, ARR], lambda: [fn() for fn in fns], n=100)


def test_recording_does_not_leak():
    assert_no_leak(lambda: adcore.grad(f_scalar)(0.75, 1.5), n=1000)
    assert_no_leak(lambda: adcore.value_and_grad(lambda a: adcore.sum(a * a))(X2), n=1000)


def test_replay_keeps_refcounts_and_does_not_leak():
    tape = adcore.record(f_scalar, 0.75, 1.5)
    atape = adcore.record(lambda a: adcore.sum(adcore.tanh(a) * a), X2)
    x = float("0.5")

    def fn():
        tape(x, C)
        tape.gradient(x, C)
        tape.jacobian(x, C)
        atape(X2)
        atape.gradient(X2)

    assert_refcounts_stable([tape, atape, x, C, X2], fn, n=500)
    assert_no_leak(fn, n=500)
    # a returned gradient is the caller's: writing into it changes no later result
    g = atape.gradient(X2)
    want = g.copy()
    g[...] = np.nan
    h = atape.gradient(X2)
    assert h is not g and np.array_equal(h, want)


def test_replay_errors_do_not_leak():
    tape = adcore.record(lambda x: x * x if x > 0.0 else -x, 1.0)
    atape = adcore.record(lambda a: adcore.sum(a * a), X2)

    def fn():
        for call in (lambda: tape(-1.0), lambda: atape(np.ones(4)), lambda: tape("x"),
                     lambda: atape.gradient(np.ones((2, 3), complex))):
            try:
                call()
            except (adcore.BranchChangedError, TypeError, ValueError):
                pass

    assert_refcounts_stable([tape, atape], fn, n=300)
    assert_no_leak(fn, n=1000)


def test_save_and_load_do_not_leak():
    tape = adcore.record(f_scalar, 0.75, 1.5)
    data = tape.to_bytes()
    damaged = data[:-3]

    def fn():
        adcore.Tape.from_bytes(data).gradient(0.5, 1.0)
        try:
            adcore.Tape.from_bytes(damaged)
        except adcore.TapeFormatError:
            pass

    assert_refcounts_stable([tape, data, damaged], fn, n=300)
    assert_no_leak(fn, n=500)


@needs_proc
def test_replay_work_space_is_freed():
    # each replay of a 2*10**4-instruction tape takes 160 KB of work space from
    # malloc; 400 replays leaked would be 64 MB
    def f(x):
        for _ in range(10 ** 4):
            x = adcore.sin(x) * 1.0001
        return x

    tape = adcore.record(f, 0.3)
    for _ in range(20):
        tape.gradient(0.4)
    gc.collect()
    before = _rss_bytes()
    for i in range(400):
        assert math.isfinite(tape.gradient(0.4 + 1e-4 * i))
    gc.collect()
    assert _rss_bytes() - before < 16 * 2 ** 20


def test_the_measures_catch_leaks():
    # the harness itself: one kept object, or one kept reference, per call is caught
    kept = []
    # (with PYTHONMALLOC=malloc, as under ASan, there are no blocks: tracemalloc sees it)
    with pytest.raises(AssertionError, match="live Python blocks|traced memory grew"):
        assert_no_leak(lambda: kept.append(float(len(kept))), n=2000)
    x = float("2.5")
    with pytest.raises(AssertionError, match="reference counts"):
        assert_refcounts_stable([x], lambda: kept.append(x), n=10)
