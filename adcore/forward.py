"""Forward-mode drivers: jvp, derivative, jacfwd.

Each call takes a fresh tag from ``adcore.dispatch.new_tag``, seeds its inputs
as Duals / DualArrays of that tag (or NestedDuals when an input is itself
active for an outer differentiation), runs the function once (or once per
chunk of directions), and reads back only the parts of its own tag: a result of
a smaller tag, or a constant, has derivative 0 with respect to this call.
"""

from __future__ import annotations

import functools
import operator
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import array_ops
from ._dual import Dual, DualArray
from .dispatch import new_tag
from .errors import NestingError
from .nested import NestedDual
from .trees import TreeDef, flatten as _tree_flatten, unflatten as _tree_unflatten

__all__ = ["jvp", "derivative", "jacfwd"]


#: tags of the forward-mode differentiations running now (to catch escaped values)
_running: set = set()


class _Differentiation:
    """A fresh tag, registered as running while the function is evaluated."""

    def __enter__(self) -> int:
        self.tag = new_tag()
        _running.add(self.tag)
        return self.tag

    def __exit__(self, *exc: Any) -> None:
        _running.discard(self.tag)


def _check_alive(x: Any, tag: int) -> None:
    """Refuse forward-mode values of differentiations that have finished: their
    perturbation escaped (e.g. through a closure) and would read as a constant."""
    xtag = getattr(x, "_ad_tag", None)
    if xtag is None or type(x) not in (Dual, DualArray, NestedDual):
        return
    if xtag != 0 and xtag != tag and xtag not in _running:
        raise NestingError(f"a value of forward differentiation {xtag}, which has finished, "
                           f"reached differentiation {tag}: a perturbation escaped its "
                           f"differentiation (returned or stored from inside it)")
    if type(x) is NestedDual:
        _check_alive(x.value, tag)
        for t in x.tangents:
            _check_alive(t, tag)


def _primal(x: Any) -> Any:
    while getattr(x, "_ad_tag", None) is not None:
        x = x.value
    return x


def _plain_input(x: Any, where: str) -> Any:
    """A plain leaf as a float or a float ndarray (float32 kept)."""
    if isinstance(x, (bool, np.bool_)):
        return float(x)
    if isinstance(x, (float, int)):
        return float(x)
    if isinstance(x, (str, bytes, complex)) or x is None:
        raise TypeError(f"{where}: inputs must be real numbers or arrays, got {type(x).__name__}")
    arr = np.asarray(x)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{where}: inputs must be real numbers or arrays, got "
                        f"{type(x).__name__} of dtype {arr.dtype}")
    if arr.dtype != np.float32:
        arr = arr.astype(np.float64, copy=False)
    return float(arr) if arr.ndim == 0 and not isinstance(x, np.ndarray) else arr


def _seed(x: Any, rows: np.ndarray, tag: int, where: str) -> Any:
    """Leaf x as an active value of ``tag`` with tangents rows ((k,) + shape of x)."""
    if getattr(x, "_ad_tag", None) is not None:
        shape = np.shape(_primal(x))
        parts = [float(r) if not shape else np.asarray(r) for r in rows]
        return NestedDual(x, parts, tag)
    x = _plain_input(x, where)
    if isinstance(x, float):
        return Dual(x, rows.reshape(-1), tag)
    return DualArray(x, rows.astype(x.dtype, copy=False), tag)


def _zero_like(y: Any) -> Any:
    value = _primal(y)
    if np.ndim(value) == 0:
        return 0.0
    value = np.asarray(value)
    return np.zeros(value.shape, dtype=value.dtype if value.dtype == np.float32 else np.float64)


def _check_numeric_output(y: Any) -> None:
    """A constant output must still be a number: a str or an object is no value to
    differentiate (reverse mode refuses it too), never a derivative 0."""
    if isinstance(y, (bool, int, float, np.integer, np.floating, np.bool_)):
        return
    if isinstance(y, np.ndarray) and y.dtype.kind in "biuf":
        return
    kind = type(y).__name__ if not isinstance(y, np.ndarray) else f"array of dtype {y.dtype}"
    raise TypeError(f"the function returned a {kind}, not a number or a numeric array: "
                    f"forward mode differentiates numbers only")


def _split(y: Any, tag: int, k: int) -> Tuple[Any, List[Any]]:
    """The value of output leaf y and its k tangents with respect to differentiation tag."""
    _check_alive(y, tag)
    ytag = getattr(y, "_ad_tag", None)
    if ytag is None:
        _check_numeric_output(y)
    if ytag is None or ytag < tag:
        return y, [_zero_like(y)] * k
    if ytag > tag:
        raise NestingError(f"the function returned a value of differentiation {ytag}, "
                           f"which started inside this one (tag {tag}) and has finished; "
                           f"a perturbation escaped its differentiation")
    if type(y) is Dual:
        return y.value, [float(t) for t in y.tangents]
    if type(y) is DualArray:
        return y.value, list(y.tangents)
    if type(y) is NestedDual:
        shape = np.shape(_primal(y.value))
        ts = []
        for t in y.tangents:
            if shape and getattr(t, "_ad_tag", None) is None and np.shape(t) != shape:
                t = np.broadcast_to(np.asarray(t, dtype=np.float64), shape).copy()
            ts.append(t)
        return y.value, ts
    raise NestingError(f"a {type(y).__name__} of differentiation {tag} cannot be read "
                       f"by forward mode")


def _as_tuple(xs: Any, name: str) -> tuple:
    if not isinstance(xs, (tuple, list)):
        raise TypeError(f"jvp: {name} must be a tuple (or list) of arguments, "
                        f"got {type(xs).__name__}")
    return tuple(xs)


def jvp(f: Callable[..., Any], primals: Sequence[Any], tangents: Sequence[Any]) -> Tuple[Any, Any]:
    """``(f(*primals), Df(primals) . tangents)`` by forward mode.

    ``primals`` and ``tangents`` are tuples of trees (floats, arrays, dicts,
    lists, tuples) of the same structure and leaf shapes; the results are trees
    shaped like ``f``'s output.
    """
    primals = _as_tuple(primals, "primals")
    tangents = _as_tuple(tangents, "tangents")
    if len(primals) == len(tangents) and all(type(x) in _LEAVES for x in primals) \
            and all(type(t) in _LEAVES for t in tangents):
        # arguments that are plain leaves already: no tree walk (the common case)
        leaves, tleaves, treedef = list(primals), list(tangents), None
    else:
        leaves, treedef = _tree_flatten(primals)
        tleaves, tdef = _tree_flatten(tangents)
        if tdef != treedef:
            raise ValueError(f"jvp: primals and tangents have different structures: "
                             f"{treedef!r} and {tdef!r}")
    with _Differentiation() as tag:
        seeded = []
        for x, t in zip(leaves, tleaves):
            shape = np.shape(_primal(x))
            if getattr(t, "_ad_tag", None) is not None:
                raise NestingError("jvp: tangents must be plain numbers or arrays")
            tarr = np.asarray(_plain_input(t, "jvp"))
            if tarr.shape != shape:
                raise ValueError(f"jvp: a tangent of shape {tarr.shape} for a primal of "
                                 f"shape {shape}")
            seeded.append(_seed(x, tarr[None], tag, "jvp"))
        out = f(*(seeded if treedef is None else _tree_unflatten(treedef, seeded)))
        if type(out) in _OUT_LEAVES:
            v, ts = _split(out, tag, 1)
            return v, ts[0]
        oleaves, odef = flatten(out)
        values, touts = [], []
        for y in oleaves:
            v, ts = _split(y, tag, 1)
            values.append(v)
            touts.append(ts[0])
    return unflatten(odef, values), unflatten(odef, touts)


#: leaf types that need no tree walk (argument leaves; output leaves)
_LEAVES = (float, int, np.ndarray)
_OUT_LEAVES = (float, int, np.ndarray, Dual, DualArray, NestedDual)
_LEAF = TreeDef("leaf")


def flatten(tree: Any) -> Tuple[List[Any], Any]:
    """trees.flatten, without a tree walk for a single leaf (the common case)."""
    if type(tree) in _OUT_LEAVES:
        return [tree], _LEAF
    return _tree_flatten(tree)


def unflatten(treedef: Any, leaves: List[Any]) -> Any:
    if treedef == _LEAF and len(leaves) == 1:
        return leaves[0]
    return _tree_unflatten(treedef, leaves)


def derivative(f: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """f' for a function f of one real number, by forward mode.

    Nests safely: ``derivative(derivative(f))`` is f'', and a derivative taken
    inside another never confuses the two perturbations.
    """
    @functools.wraps(f)
    def df(x: Any) -> Any:
        if np.ndim(_primal(x)) != 0:
            raise TypeError(f"derivative: x must be a real number, got shape "
                            f"{np.shape(_primal(x))}; use jvp or jacfwd for arrays")
        with _Differentiation() as tag:
            y = f(_seed(x, np.ones((1,)), tag, "derivative"))
            leaves, odef = flatten(y)
            return unflatten(odef, [_split(leaf, tag, 1)[1][0] for leaf in leaves])
    return df


def _argnums(argnums: Union[int, Sequence[int]], nargs: int) -> Union[int, Tuple[int, ...]]:
    def check(i: Any) -> int:
        i = operator.index(i)
        if not -nargs <= i < nargs:
            raise ValueError(f"jacfwd: argnums {i} is out of range for {nargs} arguments")
        return i % nargs
    if isinstance(argnums, (tuple, list)):
        if not argnums:
            raise ValueError("jacfwd: argnums is empty")
        return tuple(check(i) for i in argnums)
    return check(argnums)


def jacfwd(f: Callable[..., Any], argnums: Union[int, Sequence[int]] = 0,
           chunk_size: Optional[int] = None) -> Callable[..., Any]:
    """The Jacobian of ``f`` by forward mode: all input directions in one pass
    (or in passes of ``chunk_size`` directions).

    For an output leaf of shape S_out and an input leaf of shape S_in the block
    has shape ``S_out + S_in`` (JAX's convention).  The result has the output's
    structure, each leaf holding the input's structure (a tuple of them when
    ``argnums`` is a tuple).
    """
    if chunk_size is not None:
        chunk_size = operator.index(chunk_size)
        if chunk_size < 1:
            raise ValueError(f"jacfwd: chunk_size must be a positive int, got {chunk_size}")

    @functools.wraps(f)
    def jac(*args: Any) -> Any:
        which = _argnums(argnums, len(args))
        selected = tuple(args[i] for i in which) if isinstance(which, tuple) else args[which]
        leaves, treedef = flatten(selected)
        shapes = [np.shape(_primal(x)) for x in leaves]
        sizes = [int(np.prod(s)) for s in shapes]
        offsets = np.cumsum([0] + sizes)
        n = int(offsets[-1])
        step = n if chunk_size is None else min(chunk_size, max(n, 1))
        blocks: Optional[List[List[Any]]] = None
        odef = None
        starts = range(0, n, step) if n else [None]
        for start in starts:
            with _Differentiation() as tag:
                out, oleaves, this_def, kc = _run_chunk(f, args, which, leaves, treedef, shapes,
                                                        sizes, offsets, start, step, n, tag)
                if odef is None:
                    odef = this_def
                    blocks = [[] for _ in oleaves]
                elif this_def != odef:
                    raise ValueError("jacfwd: the function's output structure changed "
                                     "between chunks of directions")
                for slot, y in zip(blocks, oleaves):
                    if kc:
                        slot.append(_stack_tangents(_split(y, tag, kc)[1]))
                    else:
                        slot.append(np.zeros((0,) + np.shape(_primal(y))))
        assert blocks is not None and odef is not None
        per_output = []
        for parts in blocks:
            full = parts[0] if len(parts) == 1 else array_ops.concatenate(parts, axis=0)
            out_shape = tuple(np.shape(_primal(full)))[1:]
            per_input = []
            for shape, size, off in zip(shapes, sizes, offsets):
                piece = full if (off == 0 and size == n) else array_ops.getitem(
                    full, slice(int(off), int(off) + size))
                piece = _reshape(piece, shape + out_shape)
                # (in..., out...) -> (out..., in...)
                nin, nout = len(shape), len(out_shape)
                perm = tuple(range(nin, nin + nout)) + tuple(range(nin))
                if perm != tuple(range(nin + nout)):
                    piece = array_ops.transpose(piece, perm)
                per_input.append(_finish(piece))
            per_output.append(unflatten(treedef, per_input))
        return unflatten(odef, per_output)
    return jac


def _run_chunk(f, args, which, leaves, treedef, shapes, sizes, offsets, start, step, n, tag):
    """Evaluate f once with the input directions start .. start+step seeded under tag."""
    if start is None:  # no input directions: the Jacobian is empty
        kc, seeded = 0, list(leaves)
    elif step >= n and all(type(x) is float for x in leaves):
        kc, seeded = n, list(Dual.seeds(leaves, tag))  # scalars: unit tangents in one call
    else:
        kc = min(step, n - start)
        seeded = []
        for x, shape, size, off in zip(leaves, shapes, sizes, offsets):
            rows = np.zeros((kc, size))
            lo, hi = max(start, off), min(start + kc, off + size)
            for d in range(lo, hi):
                rows[d - start, d - off] = 1.0
            seeded.append(_seed(x, rows.reshape((kc,) + shape), tag, "jacfwd"))
    new_args = list(args)
    picked = unflatten(treedef, seeded)
    if isinstance(which, tuple):
        for i, v in zip(which, picked):
            new_args[i] = v
    else:
        new_args[which] = picked
    out = f(*new_args)
    oleaves, this_def = flatten(out)
    return out, oleaves, this_def, kc


def _stack_tangents(ts: List[Any]) -> Any:
    if all(getattr(t, "_ad_tag", None) is None for t in ts):
        return np.stack([np.asarray(t) for t in ts])
    return array_ops.stack(ts, axis=0)


def _reshape(x: Any, shape: Tuple[int, ...]) -> Any:
    if tuple(np.shape(_primal(x))) == shape:
        return x
    return array_ops.reshape(x, shape)


def _finish(x: Any) -> Any:
    """A 0-d plain block as a float; everything else unchanged."""
    if getattr(x, "_ad_tag", None) is None and np.ndim(x) == 0:
        return float(x)
    return x
