"""Batched replay: a recorded tape evaluated at many points in one call.

``tape.map(*X)``, ``tape.gradient_map(*X)`` and ``tape.jacobian_map(*X)`` are
``tape(...)``, ``tape.gradient(...)`` and ``tape.jacobian(...)`` at each row of
stacked arguments: every input leaf gets a leading axis of N points, and every
result leaf comes back with the same leading axis, in the recorded structure.
A list or tuple of k scalars may also be given as one (N, k) array; its
gradient then comes back as one (N, k) array.

A scalar tape (no array instructions: a scalar program recorded at floats)
runs in C, one loop per chunk of rows with the GIL released; the rows are split
over ``threads`` threads.  Other tapes replay row by row through the ordinary
replay (their element-wise kernels release the GIL).  Every row is computed by
the same code whatever the thread count, so results are bitwise identical for
any ``threads``.  A row whose replay takes another branch than the recording is
never returned as a number: ``on_branch_change="raise"`` raises
``BranchChangedError`` listing the rows (``.rows``), ``"mask"`` returns
``(result, ok)`` with NaN in the rows where ``ok`` is False.

>>> import numpy as np
>>> import adcore
>>> def f(x, y):
...     return x * x * y + adcore.sin(y)
>>> tape = adcore.record(f, 1.0, 2.0)
>>> x = np.array([0.0, 1.0, 2.0])
>>> y = np.array([1.0, 2.0, 3.0])
>>> tape.map(x, y)
array([ 0.84147098,  2.90929743, 12.14112001])
>>> dx, dy = tape.gradient_map(x, y)
>>> dx
array([ 0., 4., 12.])
>>> def rosen(xs):
...     return sum(100.0 * (xs[i + 1] - xs[i] ** 2) ** 2 + (1.0 - xs[i]) ** 2
...                for i in range(len(xs) - 1))
>>> tape = adcore.record(rosen, [0.0, 0.0, 0.0])
>>> X = np.array([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
>>> tape.gradient_map(X, threads=2)
array([[ 0.,  0.,  0.],
       [-2., -2.,  0.]])
>>> def relu(x):
...     return x if x > 0.0 else 0.0 * x
>>> tape = adcore.record(relu, 1.0)
>>> values, ok = tape.map(np.array([2.0, -1.0, 3.0]), on_branch_change="mask")
>>> values, ok
(array([ 2., nan,  3.]), array([ True, False,  True]))
"""

from __future__ import annotations

import os
import threading
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from . import _tape
from .errors import BranchChangedError, TapeError
from .trees import TreeDef, flatten, unflatten

__all__ = ["map", "gradient_map", "jacobian_map"]

_VALUES, _GRADIENT, _JACOBIAN = 0, 1, 2
_MODES = ("raise", "mask")
_SHOW_ROWS = 10          # offending rows named in a BranchChangedError message
# instructions replayed per thread before threads=None starts another (~0.3 ms of
# work; starting a thread costs ~0.1 ms)
_WORK_PER_THREAD = 100_000


# --------------------------------------------------------------------- inputs

def _name(argnum: int, path: Tuple[Any, ...]) -> str:
    return f"argument {argnum}" + "".join(f"[{p!r}]" for p in path)


class _Leaves:
    """The stacked input leaves of one call, in the tape's input leaf order."""

    def __init__(self, tape):
        self.specs = tape.in_leaves
        self.arrays: List[Optional[np.ndarray]] = [None] * len(self.specs)
        self.n: Optional[int] = None
        self.first: Optional[str] = None     # the leaf that fixed n (for messages)
        self.packed: List[Tuple[np.ndarray, range]] = []   # (N, k) arrays as given

    def count(self, n: int, name: str) -> None:
        if self.n is None:
            self.n, self.first = n, name
        elif n != self.n:
            raise ValueError(f"{name} has {n} points (leading axis) but {self.first} has "
                             f"{self.n}: every stacked input needs the same number of points")


def _stacked_array(x: Any, name: str, dt: str) -> np.ndarray:
    """x as an array of the recorded dtype (integers and bools promoted), or the
    error that names what x is."""
    if isinstance(x, (str, bytes)):
        raise TypeError(f"{name}: cannot replay at a {type(x).__name__} (stacked real numbers)")
    try:
        a = np.asarray(x)
    except (ValueError, TypeError) as e:
        raise TypeError(f"{name}: not an array of stacked numbers ({e})") from None
    kind = a.dtype.kind
    if kind == "c":
        raise TypeError(f"{name}: cannot differentiate with respect to complex values "
                        f"(dtype {a.dtype}); give real float32/float64 values")
    if kind not in "biuf":
        raise TypeError(f"{name}: cannot replay at an array of dtype {a.dtype} "
                        "(real float32/float64, or integers, which are promoted)")
    return np.asarray(a, dtype=np.dtype(dt))


def _leaf(L: _Leaves, x: Any, idx: int, name: str) -> None:
    slot, shape, dt = L.specs[idx]
    shape = () if shape is None else tuple(shape)
    a = _stacked_array(x, name, dt)
    if a.ndim == 0:
        raise ValueError(f"{name}: a single number where stacked points are needed: give an "
                         f"array with a leading axis of N points, shape (N, *{shape})")
    if a.shape[1:] != shape:
        raise ValueError(f"{name}: the tape was recorded with shape {shape} here, so the "
                         f"stacked input needs shape (N, *{shape}), got {a.shape}")
    L.count(a.shape[0], name)
    L.arrays[idx] = a


def _scalar_group(td: TreeDef, specs) -> bool:
    return (td.kind in ("list", "tuple") and len(td.children) > 0
            and all(c.kind == "leaf" for c in td.children)
            and all(sp[1] is None for sp in specs))


def _match(L: _Leaves, td: TreeDef, x: Any, start: int, argnum: int,
           path: Tuple[Any, ...]):
    """Read x as the recorded structure td with stacked leaves; returns the layout
    that the results are built with: ("leaf", i), ("packed", td, range) for a
    list/tuple of scalars given as one (N, k) array, or ("node", td, children)."""
    name = _name(argnum, path)
    m = td.num_leaves
    if td.kind == "leaf":
        _leaf(L, x, start, name)
        return ("leaf", start)
    if _scalar_group(td, L.specs[start:start + m]) and not isinstance(x, (list, tuple)):
        a = _stacked_array(x, name, "<f8")
        if a.ndim != 2 or a.shape[1] != m:
            raise ValueError(f"{name}: the tape was recorded with a {td.kind} of {m} numbers "
                             f"here, so the stacked input needs shape (N, {m}) (or a "
                             f"{td.kind} of {m} arrays of shape (N,)), got shape {a.shape}")
        L.count(a.shape[0], name)
        for k in range(m):
            L.arrays[start + k] = a[:, k]
        L.packed.append((a, range(start, start + m)))
        return ("packed", td, range(start, start + m))
    if td.kind == "none":
        if x is not None:
            raise TypeError(f"{name}: the tape was recorded with None here, got a "
                            f"{type(x).__name__}")
        return ("node", td, [])
    if td.kind == "dict":
        if not isinstance(x, dict) or set(x) != set(td.meta):
            got = f"keys {list(x)}" if isinstance(x, dict) else f"a {type(x).__name__}"
            raise TypeError(f"{name}: the tape was recorded with a dict with keys "
                            f"{list(td.meta)} here, got {got}")
        items = [x[k] for k in td.meta]
        keys = list(td.meta)
    elif td.kind in ("list", "tuple"):
        want = list if td.kind == "list" else tuple
        if not isinstance(x, want) or len(x) != len(td.children):
            got = (f"a {type(x).__name__} of {len(x)}" if isinstance(x, (list, tuple))
                   else f"a {type(x).__name__}")
            raise TypeError(f"{name}: the tape was recorded with a {td.kind} of "
                            f"{len(td.children)} here, got {got}")
        items = list(x)
        keys = list(range(len(items)))
    else:
        # namedtuples, dataclasses, registered nodes: the same structure, stacked leaves
        leaves, xtd = flatten(x)
        if xtd != td:
            raise TypeError(f"{name}: the tape was recorded with structure {td!r} here, "
                            f"got {xtd!r}")
        for k, leaf in enumerate(leaves):
            _leaf(L, leaf, start + k, f"{name} (leaf {k})")
        return ("node", td, [("leaf", start + k) for k in range(m)])
    children = []
    k = start
    for key, c, item in zip(keys, td.children, items):
        children.append(_match(L, c, item, k, argnum, path + (key,)))
        k += c.num_leaves
    return ("node", td, children)


def _inputs(tape, args: Sequence[Any]):
    """The stacked input leaves of a call and its per-argument layouts."""
    if tape.in_tree is None or tape.in_leaves is None or tape.out_leaves is None:
        raise TapeError("only tapes made by adcore.record can be replayed")
    want = tape.in_tree.children
    if len(args) != len(want):
        raise TypeError(f"the tape was recorded with {len(want)} positional argument(s), "
                        f"got {len(args)}")
    L = _Leaves(tape)
    layouts = []
    k = 0
    for i, (td, x) in enumerate(zip(want, args)):
        layouts.append(_match(L, td, x, k, i, ()))
        k += td.num_leaves
    if L.n is None:
        raise ValueError("the tape has no input leaf, so stacked inputs cannot say how many "
                         "points to replay at")
    return L, layouts


def _threads(threads: Any, n: int, size: int) -> int:
    """The thread count: as asked, or one per core for None (fewer when the rows
    times the tape's size are too little work to be worth starting a thread)."""
    if threads is None:
        threads = min(os.cpu_count() or 1, max(1, n * size // _WORK_PER_THREAD))
    elif isinstance(threads, bool) or not isinstance(threads, (int, np.integer)):
        raise TypeError(f"threads must be an int >= 1 or None, got {type(threads).__name__}")
    elif threads < 1:
        raise ValueError(f"threads must be >= 1 (or None for one per core), got {threads}")
    return max(1, min(int(threads), n))


def _mode(on_branch_change: Any) -> str:
    if on_branch_change not in _MODES:
        raise ValueError(f"on_branch_change must be 'raise' or 'mask', got "
                         f"{on_branch_change!r}")
    return on_branch_change


# -------------------------------------------------------------------- threads

def _run_chunks(work, n: int, threads: int) -> None:
    """work(r0, r1) over contiguous chunks of rows 0..n-1, one per thread (the
    calling thread takes the first); the first exception of any chunk is raised."""
    bounds = [n * t // threads for t in range(threads + 1)]
    if threads == 1:
        work(0, n)
        return
    errors: List[BaseException] = []

    def run(r0, r1):
        try:
            work(r0, r1)
        except BaseException as e:       # handed to the caller below
            errors.append(e)

    workers = [threading.Thread(target=run, args=(bounds[t], bounds[t + 1]),
                                name=f"adcore-batch-{t}", daemon=True)
               for t in range(1, threads)]
    for w in workers:
        w.start()
    try:
        run(bounds[0], bounds[1])
    finally:
        for w in workers:
            w.join()
    if errors:
        raise errors[0]


# ------------------------------------------------------------------ the sweeps

def _out_specs(tape):
    """Per output leaf: (kind, ref, shape, dtype)."""
    specs = []
    for kind, ref in tape.out_leaves:
        if kind == "c":
            specs.append((kind, ref, (), np.dtype(np.float64)))
        elif kind == "a":
            v = tape.value_at(ref)
            specs.append((kind, ref, tuple(np.shape(v)), np.asarray(v).dtype))
        else:
            specs.append((kind, ref, (), np.dtype(np.float64)))
    return specs


def _scalar_path(tape, L: _Leaves) -> bool:
    # the C path: a scalar tape (every input and output a scalar slot or constant)
    return (_tape._batch_scalar_ok(tape) and all(sp[1] is None for sp in L.specs)
            and all(kind in ("s", "c") for kind, _ in tape.out_leaves))


def _input_matrix(L: _Leaves) -> np.ndarray:
    """One C-contiguous float64 (N, n_in) matrix of the scalar inputs (the array
    given, when one (N, k) array covers every input in order)."""
    n_in = len(L.specs)
    if len(L.packed) == 1 and L.packed[0][1] == range(n_in):
        a = L.packed[0][0]
        if a.dtype == np.float64 and a.flags.c_contiguous:
            return a
    U = np.empty((L.n, n_in), np.float64)
    for i, a in enumerate(L.arrays):
        U[:, i] = a
    return U


def _c_sweep(tape, L: _Leaves, mode: int, threads: int):
    """The C path: (out, bad, badval) with out of shape (N, width)."""
    U = _input_matrix(L)
    n_in = len(L.specs)
    in_slots = np.array([sp[0] for sp in L.specs], np.int32)
    out_slots = np.array([-1 if kind == "c" else ref for kind, ref in tape.out_leaves],
                         np.int32)
    width = {_VALUES: len(out_slots), _GRADIENT: n_in,
             _JACOBIAN: len(out_slots) * n_in}[mode]
    N = L.n
    out = np.empty((N, width), np.float64)
    bad = np.empty(N, np.intp)
    badval = np.empty(N, np.float64)

    def work(r0, r1):
        _tape._batch_scalar_chunk(tape, mode, U, in_slots, out_slots, out, bad, badval,
                                  r0, r1)

    _run_chunks(work, N, threads)
    return out, bad, badval


def _row_values(L: _Leaves, row: int) -> list:
    values = []
    for (slot, shape, dt), a in zip(L.specs, L.arrays):
        # a 0-d view for an array leaf (a[row] of a 1-D array would be a numpy scalar)
        values.append(float(a[row]) if shape is None else a[row, ...])
    return values


def _row_sweep(tape, L: _Leaves, mode: int, threads: int, blocks: list):
    """The row-by-row path: each thread replays its rows into one workspace and
    writes every result leaf's row into blocks (preallocated stacked arrays).
    Returns the messages of offending rows (row -> str)."""
    outs = _out_specs(tape)
    failed: dict = {}

    def work(r0, r1):
        rp = None
        try:
            for row in range(r0, r1):
                values = _row_values(L, row)
                try:
                    if rp is None:
                        rp = tape._replay_pooled(values)
                    else:
                        _tape._batch_refill(tape, rp, values)
                except BranchChangedError as e:
                    failed[row] = str(e)
                    continue
                if mode == _VALUES:
                    for (kind, ref, shape, dt), block in zip(outs, blocks):
                        block[row] = ref if kind == "c" else tape.value_at(ref, rp)
                elif mode == _GRADIENT:
                    kind, ref, shape, dt = outs[0]
                    if kind == "c":
                        for block in blocks:
                            block[row] = 0.0
                        continue
                    adj = tape.backward({ref: (np.ones(()) if kind == "a" else 1.0)},
                                        _work=rp)
                    for (slot, shape, dt), block in zip(L.specs, blocks):
                        block[row] = adj[slot] if shape is None else adj.array(slot, shape)
                else:
                    # the stacked sweep of tape.jacobian, so that a row is bitwise
                    # what tape.jacobian gives at that point
                    J = tape.jacobian_rows(tape.out_leaves, L.specs, _work=rp)
                    r = 0
                    for j, (kind, ref, oshape, odt) in enumerate(outs):
                        size = int(np.prod(oshape, dtype=np.int64))
                        rows = J[r:r + size]
                        r += size
                        c = 0
                        for (slot, shape, dt), block in zip(L.specs, blocks[j]):
                            ishape = () if shape is None else tuple(shape)
                            n = int(np.prod(ishape, dtype=np.int64))
                            block[row] = rows[:, c:c + n].reshape(oshape + ishape)
                            c += n
        finally:
            if rp is not None:
                tape._release(rp)

    _run_chunks(work, L.n, threads)
    return failed


# ----------------------------------------------------------------- the results

def _build(layout, leaf_results: list, pack):
    """The recorded structure around per-leaf results; a packed group as one array
    (pack joins its leaves' results on a last axis)."""
    kind = layout[0]
    if kind == "leaf":
        return leaf_results[layout[1]]
    if kind == "packed":
        return pack([leaf_results[i] for i in layout[2]])
    td, children = layout[1], layout[2]
    if td.kind in ("none",):
        return None
    if td.kind not in ("dict", "list", "tuple"):
        return unflatten(td, [leaf_results[c[1]] for c in children])
    flat = TreeDef(td.kind, td.meta, tuple(TreeDef("leaf") for _ in children))
    return unflatten(flat, [_build(c, leaf_results, pack) for c in children])


def _stack_last(parts):
    return np.stack(parts, axis=-1)


def _branch_report(tape, N: int, bad_rows: np.ndarray, first_message: str):
    rows = [int(r) for r in bad_rows[:_SHOW_ROWS]]
    more = " and more" if len(bad_rows) > _SHOW_ROWS else ""
    err = BranchChangedError(
        f"the replay takes another branch than the recording at {len(bad_rows)} of {N} "
        f"point(s): rows {rows}{more} (all {len(bad_rows)} in the exception's .rows); "
        f"at row {rows[0]}: {first_message}")
    err.rows = bad_rows
    return err


def _finish(tape, N, bad_rows, messages, mode_opt, result):
    """Raise for offending rows, or return (result, ok) in mask mode (the offending
    rows of result already hold NaN)."""
    if mode_opt == "raise":
        if len(bad_rows):
            raise _branch_report(tape, N, bad_rows, messages(bad_rows[0]))
        return result
    ok = np.ones(N, bool)
    ok[bad_rows] = False
    return result, ok


def _batched(tape, args, mode: int, threads=None, on_branch_change="raise"):
    opt = _mode(on_branch_change)
    L, layouts = _inputs(tape, args)
    N = L.n
    nthreads = _threads(threads, N, len(tape))
    outs = _out_specs(tape)
    if mode == _GRADIENT:
        if len(outs) != 1:
            raise TypeError("Tape.gradient_map needs a recorded function with one scalar "
                            "output (use Tape.jacobian_map)")
        if outs[0][2] != ():
            raise TypeError(f"Tape.gradient_map needs a scalar output, the recorded output "
                            f"has shape {outs[0][2]} (use Tape.jacobian_map)")
    in_shapes = [() if sp[1] is None else tuple(sp[1]) for sp in L.specs]
    in_dtypes = [np.dtype(sp[2]) for sp in L.specs]

    if _scalar_path(tape, L):
        out, bad, badval = _c_sweep(tape, L, mode, nthreads)
        bad_rows = np.flatnonzero(bad >= 0)

        def message(row):
            return _tape._batch_branch_message(tape, int(bad[row]), float(badval[row]))

        n_in = len(L.specs)
        if mode == _VALUES:
            for j, (kind, ref, shape, dt) in enumerate(outs):
                if kind == "c":
                    out[:, j] = ref
                    out[bad_rows, j] = np.nan
            leaves = [out[:, j].copy() for j in range(len(outs))]
            result = unflatten(tape.out_tree, leaves)
        elif mode == _GRADIENT:
            result = _grad_result(tape, layouts, L, [out[:, i] for i in range(n_in)], out)
        else:
            per_out = []
            for j in range(len(outs)):
                cols = [out[:, j * n_in + i].copy() for i in range(n_in)]
                per_out.append(_per_input(layouts, cols))
            result = unflatten(tape.out_tree, per_out)
        return _finish(tape, N, bad_rows, message, opt, result)

    # row by row: stacked result blocks, filled per row, NaN where a row failed
    if mode == _VALUES:
        blocks = [np.empty((N,) + shape, dt) for kind, ref, shape, dt in outs]
        flat_blocks = blocks
    elif mode == _GRADIENT:
        blocks = [np.empty((N,) + s, d) for s, d in zip(in_shapes, in_dtypes)]
        flat_blocks = blocks
    else:
        blocks = [[np.empty((N,) + oshape + s, d) for s, d in zip(in_shapes, in_dtypes)]
                  for kind, ref, oshape, odt in outs]
        flat_blocks = [b for bs in blocks for b in bs]
    failed = _row_sweep(tape, L, mode, nthreads, blocks)
    bad_rows = np.array(sorted(failed), np.intp)
    for b in flat_blocks:
        b[bad_rows] = np.nan
    if mode == _VALUES:
        result = unflatten(tape.out_tree, blocks)
    elif mode == _GRADIENT:
        result = _grad_result(tape, layouts, L, blocks, None)
    else:
        result = unflatten(tape.out_tree, [_per_input(layouts, bs) for bs in blocks])
    return _finish(tape, N, bad_rows, lambda row: failed[int(row)], opt, result)


def _per_input(layouts, leaf_results):
    """One output's blocks in the input structure: the structure of the one
    positional argument, or a tuple over several (as tape.jacobian)."""
    built = [_build(lay, leaf_results, _stack_last) for lay in layouts]
    return built[0] if len(built) == 1 else tuple(built)


def _grad_result(tape, layouts, L: _Leaves, leaf_results, matrix):
    # one (N, k) array covering every input in order: the C path's matrix itself
    if (matrix is not None and len(layouts) == 1 and layouts[0][0] == "packed"
            and layouts[0][2] == range(len(L.specs))):
        return matrix
    leaf_results = [np.ascontiguousarray(r) for r in leaf_results]
    return _per_input(layouts, leaf_results)


# --------------------------------------------------------------- the entry points

def tape_map(tape, args, threads=None, on_branch_change="raise"):
    """Tape.map: the values at each row (see the module's docstring)."""
    return _batched(tape, args, _VALUES, threads, on_branch_change)


def tape_gradient_map(tape, args, threads=None, on_branch_change="raise"):
    """Tape.gradient_map: the gradients at each row (scalar output)."""
    return _batched(tape, args, _GRADIENT, threads, on_branch_change)


def tape_jacobian_map(tape, args, threads=None, on_branch_change="raise"):
    """Tape.jacobian_map: the Jacobians at each row (leading axis N on every block)."""
    return _batched(tape, args, _JACOBIAN, threads, on_branch_change)


def map(tape, *X, threads=None, on_branch_change="raise"):
    """``tape.map(*X)``: the recorded function's values at each of N stacked points."""
    return tape_map(tape, X, threads=threads, on_branch_change=on_branch_change)


def gradient_map(tape, *X, threads=None, on_branch_change="raise"):
    """``tape.gradient_map(*X)``: the gradient at each of N stacked points."""
    return tape_gradient_map(tape, X, threads=threads, on_branch_change=on_branch_change)


def jacobian_map(tape, *X, threads=None, on_branch_change="raise"):
    """``tape.jacobian_map(*X)``: the Jacobian at each of N stacked points."""
    return tape_jacobian_map(tape, X, threads=threads, on_branch_change=on_branch_change)
