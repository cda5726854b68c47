"""Batched replay of a recorded tape over a Dask array of points (``adcore[dask]``).

    import adcore, adcore.dask
    tape = adcore.record(f, x0)                  # x0: the recorded point, shape (k,)
    G = adcore.dask.gradient_map(tape, X)        # X: a Dask array (N, k), chunked by rows
    G.compute()                                  # (N, k): the gradient at every row

Every chunk of rows is one task calling ``tape.gradient_map(chunk)`` (or ``map``,
``jacobian_map``) where the chunk lives.  The tape travels as its bytes
(``tape.to_bytes()``), never as a pickled Python function: the bytes are one key
of the graph that every chunk task depends on, so a distributed scheduler moves
them to each worker once (from a worker that holds them, not per chunk), and
each worker process parses them once (a cache keyed by their digest).
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
from collections import OrderedDict
from typing import Any

try:
    import dask
    import dask.array as da
    from dask.highlevelgraph import HighLevelGraph
except ImportError as _e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "adcore.dask needs Dask, which is not installed: pip install 'adcore[dask]' "
        f"(dask[array,distributed]>=2024.8); the import failed with: {_e}") from _e

import numpy as np

from ._tape import Tape
from .errors import BranchChangedError
from .trees import flatten, unflatten

__all__ = ["map", "gradient_map", "jacobian_map"]

_KINDS = ("map", "gradient_map", "jacobian_map")
_MIN_ROWS = 1024            # rows per chunk when adcore picks the chunks: fewer is all overhead


# ------------------------------------------------------------------ on the workers

# Loaded tapes of this process by the digest of their bytes: parsing (and
# validating) a tape happens once per process, not once per chunk.
_TAPES: "OrderedDict[str, Tape]" = OrderedDict()
_TAPES_MAX = 8
_LOADS: dict = {}           # digest -> how many times this process parsed it (for tests)
_lock = threading.Lock()


def _tape_of(data: bytes, digest: str) -> Tape:
    with _lock:
        tape = _TAPES.get(digest)
        if tape is not None:
            _TAPES.move_to_end(digest)
            return tape
    tape = Tape.from_bytes(data)        # outside the lock: a big tape takes a while
    with _lock:
        if digest not in _TAPES:
            _TAPES[digest] = tape
            _LOADS[digest] = _LOADS.get(digest, 0) + 1
            while len(_TAPES) > _TAPES_MAX:
                _TAPES.popitem(last=False)
        return _TAPES[digest]


def _cache_info() -> dict:
    """{digest: number of parses} of this process (tests ask each worker)."""
    with _lock:
        return dict(_LOADS)


def _run_chunk(data, digest, kind, options, start, *chunks):
    """One chunk task: the flat list of result leaves for rows start.. of the chunk."""
    tape = _tape_of(data, digest)
    try:
        out = getattr(tape, kind)(*chunks, **options)
    except BranchChangedError as e:
        rows = getattr(e, "rows", None)
        if rows is None:
            raise
        raise _global_branch_error(e, [start + int(r) for r in rows],
                                   start, start + len(chunks[0])) from None
    return flatten(out)[0]


def _global_branch_error(err, rows, lo, hi):
    shown = ", ".join(str(r) for r in rows[:10]) + (", ..." if len(rows) > 10 else "")
    msg = (f"the replay takes another branch than the recording at row(s) {shown} of the "
           f"Dask array ({len(rows)} in the chunk of rows {lo}..{hi - 1}; other chunks are "
           f"not reported once one fails: on_branch_change='mask' finds them all). The "
           f"chunk's report, counting rows from {lo}: {err}")
    new = BranchChangedError(msg)
    new.rows = np.asarray(rows, dtype=np.intp)
    return new


def _leaf(leaves, j):
    return leaves[j]


# ------------------------------------------------------------------ building the graph

def _points(X, rows_per_chunk):
    """X as a Dask array chunked by rows only (one chunk along every other axis)."""
    if not isinstance(X, da.Array):
        if isinstance(X, (list, tuple)):
            X = np.asarray(X, dtype=np.float64)
        if not isinstance(X, np.ndarray):
            raise TypeError(f"adcore.dask: the points must be a Dask array or a numpy array "
                            f"with one point per row, got {type(X).__name__}")
        if X.ndim == 0:
            raise ValueError("adcore.dask: the points need a leading axis of rows, got a 0-d "
                             "array")
        rows = int(rows_per_chunk or _auto_rows(X.shape[0]))
        X = da.from_array(X, chunks=(rows,) + X.shape[1:])
    elif X.ndim == 0:
        raise ValueError("adcore.dask: the points need a leading axis of rows, got a 0-d "
                         "Dask array")
    elif rows_per_chunk is not None:
        X = X.rechunk({0: rows_per_chunk})
    if any(len(c) != 1 for c in X.chunks[1:]):
        X = X.rechunk({i: -1 for i in range(1, X.ndim)})
    if any(math.isnan(n) for n in X.shape) or any(math.isnan(c) for c in X.chunks[0]):
        raise ValueError("adcore.dask: the number of rows of each chunk must be known "
                         "(call X.compute_chunk_sizes() first)")
    return X


def _parallelism():
    try:
        from distributed import get_client
        client = get_client()
    except (ImportError, ValueError):
        return os.cpu_count() or 1
    return max(1, sum(client.nthreads().values()))


def _auto_rows(n):
    # about four chunks per thread of the cluster (or core here), for balance
    return max(1, min(n, max(_MIN_ROWS, -(-n // (4 * _parallelism())))))


def _recorded_sample(tape: Tape):
    """One row per positional argument at the recorded point: each argument as the one
    array a chunk of points gives (a recorded list of k floats as shape (1, k))."""
    if tape.in_tree is None or tape.recording:
        raise TypeError("adcore.dask needs a finished tape made by adcore.record")
    out = []
    k = 0
    for i, child in enumerate(tape.in_tree.children):
        m = child.num_leaves
        specs = tape.in_leaves[k:k + m]
        k += m
        values = [tape.value_at(slot) for slot, _, _ in specs]
        if child.kind == "leaf":
            shape, dt = specs[0][1], specs[0][2]
            out.append(np.asarray(values[0], dtype=np.float64 if shape is None else dt)[None])
        elif (child.kind in ("list", "tuple") and m > 0
              and all(c.kind == "leaf" for c in child.children)
              and all(shape is None for _, shape, _ in specs)):
            out.append(np.asarray(values, dtype=np.float64)[None])
        else:
            raise TypeError(f"adcore.dask: positional argument {i} was recorded as "
                            f"{child!r}; give each positional argument as one array of "
                            f"points (a single array or a list/tuple of scalars per point)")
    return out


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _batched(kind, tape, Xs, threads, on_branch_change, rows_per_chunk):
    if not isinstance(tape, Tape):
        raise TypeError(f"adcore.dask.{kind}: the first argument must be an adcore.Tape "
                        f"(from adcore.record), got {type(tape).__name__}")
    if not Xs:
        raise TypeError(f"adcore.dask.{kind}: give the points, one array per positional "
                        f"argument of the recorded function")
    if threads is not None and (not isinstance(threads, (int, np.integer))
                                or isinstance(threads, bool) or threads < 1):
        raise ValueError(f"adcore.dask.{kind}: threads must be None or a positive int, "
                         f"got {threads!r}")
    if rows_per_chunk is not None and (not isinstance(rows_per_chunk, (int, np.integer))
                                       or isinstance(rows_per_chunk, bool)
                                       or rows_per_chunk < 1):
        raise ValueError(f"adcore.dask.{kind}: rows_per_chunk must be None or a positive "
                         f"int, got {rows_per_chunk!r}")
    sample = _recorded_sample(tape)
    if len(Xs) != len(sample):
        raise TypeError(f"adcore.dask.{kind}: the tape was recorded with {len(sample)} "
                        f"positional argument(s), got {len(Xs)} array(s) of points")
    first = _points(Xs[0], rows_per_chunk)
    arrays = [first]
    for X in Xs[1:]:
        X = _points(X, None)
        if X.shape[0] != first.shape[0]:
            raise ValueError(f"adcore.dask.{kind}: every argument needs the same number of "
                             f"rows, got {first.shape[0]} and {X.shape[0]}")
        arrays.append(X.rechunk({0: first.chunks[0]}))
    for i, (X, s) in enumerate(zip(arrays, sample)):
        if tuple(X.shape[1:]) != s.shape[1:]:
            raise ValueError(f"adcore.dask.{kind}: argument {i}: each point must have shape "
                             f"{s.shape[1:]} (as recorded), the array of points has shape "
                             f"{tuple(X.shape)}")

    options = {"threads": 1 if threads is None else int(threads),
               "on_branch_change": on_branch_change}
    # the result's structure, shapes and dtypes: one row at the recorded point
    meta_leaves, treedef = flatten(getattr(tape, kind)(*sample, **options))
    for leaf in meta_leaves:
        if not isinstance(leaf, np.ndarray) or leaf.ndim == 0 or leaf.shape[0] != 1:
            raise TypeError(f"adcore.dask.{kind}: Tape.{kind} returned a leaf that is not "
                            f"stacked by rows ({type(leaf).__name__})")

    data = tape.to_bytes()
    digest = _digest(data)
    tape_key = f"adcore-tape-{digest}"
    token = dask.base.tokenize(digest, kind, options, *arrays)
    name = f"adcore-{kind.replace('_', '-')}-{token}"
    starts = np.concatenate([[0], np.cumsum(first.chunks[0])[:-1]]).astype(int)
    layer: dict = {tape_key: data}
    for i, start in enumerate(starts):
        blocks = [(X.name, i) + (0,) * (X.ndim - 1) for X in arrays]
        layer[(name, i)] = (_run_chunk, tape_key, digest, kind, options, int(start), *blocks)
    graph = HighLevelGraph.from_collections(name, layer, dependencies=arrays)

    # each result leaf is an array whose blocks pick their leaf of the chunk's list
    outs = []
    for j, leaf in enumerate(meta_leaves):
        leaf_name = f"{name}-{j}"
        tail = leaf.shape[1:]
        sub = {(leaf_name, i) + (0,) * len(tail): (_leaf, (name, i), j)
               for i in range(len(starts))}
        g = HighLevelGraph({**graph.layers, leaf_name: sub},
                           {**graph.dependencies, leaf_name: {name}})
        chunks = (first.chunks[0],) + tuple((n,) for n in tail)
        outs.append(da.Array(g, leaf_name, chunks=chunks, meta=leaf[:0]))
    return unflatten(treedef, outs)


# ------------------------------------------------------------------ the public functions

def map(tape: Tape, *X: Any, threads: int | None = None, on_branch_change: str = "raise",
        rows_per_chunk: int | None = None) -> Any:
    """``tape.map`` at every row of the points ``X`` (one Dask or numpy array per
    positional argument of the recorded function, rows on the first axis): the
    stacked values, as Dask arrays in the structure ``tape(...)`` returns.

    ``threads``: threads per chunk task (default 1: Dask's worker threads already
    run chunks in parallel).  ``rows_per_chunk``: rechunk the rows (a numpy array
    is chunked automatically, about four chunks per thread of the cluster).
    ``on_branch_change``: ``"raise"`` (a ``BranchChangedError`` naming the global
    rows, when computed) or ``"mask"`` (``(result, ok)``, ``ok`` a boolean array)."""
    return _batched("map", tape, X, threads, on_branch_change, rows_per_chunk)


def gradient_map(tape: Tape, *X: Any, threads: int | None = None,
                 on_branch_change: str = "raise", rows_per_chunk: int | None = None) -> Any:
    """``tape.gradient_map`` at every row of ``X``: the gradients, stacked by rows, as
    Dask arrays (see ``adcore.dask.map`` for the options)."""
    return _batched("gradient_map", tape, X, threads, on_branch_change, rows_per_chunk)


def jacobian_map(tape: Tape, *X: Any, threads: int | None = None,
                 on_branch_change: str = "raise", rows_per_chunk: int | None = None) -> Any:
    """``tape.jacobian_map`` at every row of ``X``: the Jacobians, stacked by rows, as
    Dask arrays (see ``adcore.dask.map`` for the options)."""
    return _batched("jacobian_map", tape, X, threads, on_branch_change, rows_per_chunk)
