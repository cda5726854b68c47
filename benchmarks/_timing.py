"""How the benchmarks time things (the lessons of DESIGN.md, "Benchmarking on these
machines"):

* one BLAS thread: the environment variables are set before numpy is imported
  (``one_thread_env``), threadpoolctl limits what is already loaded, torch gets
  ``set_num_threads(1)`` in its adapter;
* allocate and free ~16 MiB once before timing, so numpy temporaries of 128 KiB
  and more stop page-faulting (glibc raises its mmap threshold after the free);
* the baseline and the candidate are timed alternately in the same process, in
  batches long enough for the clock, and the figure is the median of the
  per-pair ratios (the machine's speed drifts by up to 1.6x within a second).
"""

import gc
import os
import statistics
import time

THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
               "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


def one_thread_env(env=None):
    """The environment for a benchmark process: one thread everywhere."""
    env = dict(os.environ if env is None else env)
    for k in THREAD_VARS:
        env[k] = "1"
    # XLA's CPU client: no intra-op thread pool; jax on the CPU only
    flags = env.get("XLA_FLAGS", "")
    if "xla_cpu_multi_thread_eigen" not in flags:
        flags = (flags + " --xla_cpu_multi_thread_eigen=false "
                 "intra_op_parallelism_threads=1").strip()
    env["XLA_FLAGS"] = flags
    env["JAX_PLATFORMS"] = "cpu"
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return env


def limit_threads():
    """threadpoolctl's limit on every BLAS/OpenMP pool loaded so far (a no-op
    without threadpoolctl: the environment variables already did it).
    Returns a description for the report."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return "1 thread (environment variables; threadpoolctl not installed)"
    threadpool_limits(1)
    return "1 thread (threadpoolctl + environment variables)"


def warm_allocator(mib=16):
    import numpy as np

    a = np.empty(mib * 1024 * 1024 // 8)
    a.fill(1.0)
    del a


# The clock: the process's CPU time by default.  On a machine shared with other
# jobs, wall time also counts the time this process waited for a core; the CPU
# time of a single-threaded workload does not (it still feels cache and
# frequency effects, which the alternate timing evens out).
CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}
_clock = CLOCKS["cpu"]


def use_clock(name):
    global _clock
    _clock = CLOCKS[name]


def _batch(fn, n):
    clock = _clock
    t0 = clock()
    for _ in range(n):
        fn()
    return (clock() - t0) / n


def calls_per_batch(fn, batch_s):
    """How many calls of ``fn`` fill about ``batch_s`` seconds (at least 1),
    from the fastest of a few trial batches (the machine's load only slows)."""
    n = 1
    while True:
        t = _batch(fn, n) * n
        if t >= batch_s / 4 or n >= 1 << 24:
            break
        n *= 4
    per = min(t / n, _batch(fn, n), _batch(fn, n))
    return max(1, round(batch_s / per)) if per > 0 else n


def compare(candidate, baseline, pairs=21, batch_s=0.02, budget_s=None):
    """Time ``candidate`` and ``baseline`` alternately (ABBA order).

    Returns a dict: median seconds per call of each, the median and quartiles of
    the per-pair ratios candidate/baseline, and the number of pairs.  ``budget_s`` caps the
    total time for slow candidates (never below 3 pairs).
    """
    for _ in range(3):                      # first-call effects: caches, lazy setup
        candidate()
        baseline()
    nc = calls_per_batch(candidate, batch_s)
    nb = calls_per_batch(baseline, batch_s)
    if budget_s is not None:
        per_pair = nc * _batch(candidate, 1) + nb * _batch(baseline, 1)
        if per_pair > 0:
            pairs = max(3, min(pairs, int(budget_s / per_pair)))
    gc.collect()
    tc, tb, ratios = [], [], []
    for i in range(pairs):
        if i % 2 == 0:
            c = _batch(candidate, nc)
            b = _batch(baseline, nb)
        else:
            b = _batch(baseline, nb)
            c = _batch(candidate, nc)
        tc.append(c)
        tb.append(b)
        ratios.append(c / b)
    q = statistics.quantiles(ratios, n=4) if pairs >= 2 else [ratios[0]] * 3
    return {"t_cand": statistics.median(tc), "t_base": statistics.median(tb),
            "ratio": statistics.median(ratios), "ratio_q1": q[0], "ratio_q3": q[2],
            "pairs": pairs, "calls": [nc, nb]}
