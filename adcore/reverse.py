"""Reverse-mode drivers on the tape: grad, value_and_grad, vjp, jacrev, record.

Each call records the function once on a fresh ``Tape`` (adcore/_tape.pyx) and
sweeps it backwards in C.  ``record`` keeps the tape so that it can be replayed
at new inputs (``tape(x)``, ``tape.gradient(x)``, ``tape.jacobian(x)``) or saved.
Inputs and gradients are trees (adcore.trees): floats, arrays, and dicts, lists,
tuples of them.
"""

from __future__ import annotations

import operator
from typing import Any, Callable, List, Sequence, Tuple, Union

import numpy as np

from ._tape import Tape, TapeArray, TapeValue
from .dispatch import is_active
from .errors import NestingError, TapeError
from .tapefile import load_tape
from .trees import TreeDef, flatten, leaf_paths, unflatten

__all__ = ["grad", "value_and_grad", "vjp", "jacrev", "record", "load_tape", "Tape"]


_DTYPES: dict = {}
_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)
_F32_F64 = (_F32, _F64)
_F32_STR, _F64_STR = _F32.str, _F64.str


def _dtype(dt: str) -> np.dtype:
    """np.dtype of a recorded dtype string (parsing it costs ~1 us per leaf and call)."""
    d = _DTYPES.get(dt)
    if d is None:
        d = _DTYPES[dt] = np.dtype(dt)
    return d


def _path_name(argnum: int, path: Tuple[Any, ...]) -> str:
    return f"argument {argnum}" + "".join(f"[{p!r}]" for p in path)


def _input_leaf(x: Any, name: Any) -> Any:
    """A leaf as the tape takes it: float, or float32/float64 array.

    ``name`` (a str, or a function giving it: paths are only worked out for errors)
    names the leaf in error messages."""
    if type(x) is float:
        return x
    if type(x) is np.ndarray and x.dtype in _F32_F64:
        return x                  # the usual array, without the checks below
    if isinstance(x, (bool, np.bool_, int, float, np.integer, np.floating)):
        return float(x)
    if isinstance(x, np.ndarray) and x.dtype.kind in "biuf":
        if x.dtype.kind != "f":
            return x.astype(np.float64)
        return x if x.dtype in (np.float32, np.float64) else x.astype(np.float64)
    if callable(name):
        name = name()
    if is_active(x):
        raise NestingError(
            f"{name} is a {type(x).__name__} from an outer differentiation: reverse mode of "
            "a function of forward-mode or reverse-mode values is not supported; use "
            "adcore.hessian or adcore.hvp for second derivatives")
    if isinstance(x, np.ndarray):
        raise TypeError(f"{name}: cannot differentiate with respect to an array of dtype "
                        f"{x.dtype} (real float32/float64 arrays, or integers, which are "
                        "promoted to float64)")
    raise TypeError(f"{name}: cannot differentiate with respect to a {type(x).__name__} "
                    "(floats, integers, real numpy arrays, and dicts/lists/tuples of them)")


def _leaf_name(args: Sequence[Any], i: int, j: int) -> str:
    """The name of leaf j of argument i, e.g. "argument 0['w']"."""
    return _path_name(i, leaf_paths(args[i])[j])


def _argnums(argnums: Union[int, Sequence[int]], nargs: int) -> Tuple[int, ...]:
    nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    if not nums:
        raise ValueError("argnums is empty")
    for i in nums:
        if not isinstance(i, int) or not -nargs <= i < nargs:
            raise ValueError(f"argnums {argnums!r} does not fit a call with {nargs} "
                             "positional argument(s)")
    return tuple(i % nargs for i in nums)


class _Recording:
    """The result of one recording: the tape, its inputs and its outputs."""

    def __init__(self, tape: Tape, groups: List[Tuple[Any, list]], out: Any, flats=None):
        self.tape = tape
        self.groups = groups      # per differentiated argument: (treedef, [(slot, shape, dtype)])
        self.out = out            # the function's output (handles inside)
        self.flats = flats        # per group its _two_level layout or None (None: all None)


def _out_leaf(tape: Tape, leaf: Any, what: str):
    """An output leaf as ("s"|"a", slot) or ("c", float); constants arrays get a slot."""
    if isinstance(leaf, (TapeValue, TapeArray)):
        if leaf.tape is not tape:
            raise TapeError(f"{what} is a value of another tape")
        return ("a", leaf.slot) if isinstance(leaf, TapeArray) else ("s", leaf.slot)
    if is_active(leaf):
        raise NestingError(f"{what} is a {type(leaf).__name__} of another differentiation")
    if isinstance(leaf, (bool, np.bool_, int, float, np.integer, np.floating)):
        return ("c", float(leaf))
    if isinstance(leaf, np.ndarray):
        if leaf.ndim == 0:
            return ("c", float(leaf))
        return ("a", tape._constant_array(leaf))
    raise TypeError(f"{what} is a {type(leaf).__name__}, not a number or array")


def _leaves_of(arg: Any, i: int, structs: Any):
    """(leaves, treedef, _two_level layout or None) of arg: flatten(arg), or the
    structure of the previous call (structs: argnum -> (TreeDef, layout), kept by the
    driver) when arg still has it and its leaves are floats or arrays: the walk then
    builds no TreeDef (and a two-level tree, the usual parameters, is not walked)."""
    if structs is not None:
        last = structs.get(i)
        if last is not None:
            td, flat = last
            leaves = _flat_leaves(arg, flat[0], flat[1]) if flat is not None else None
            if leaves is None:
                leaves = []
                if not _match(arg, td, leaves):
                    leaves = None
            if leaves is not None and all(
                    type(v) is np.ndarray or type(v) is float for v in leaves):
                return leaves, td, flat
    leaves, td = flatten(arg)
    flat = _two_level(td)
    if structs is not None:
        structs[i] = (td, flat)
    return leaves, td, flat


def _record(f: Callable, args: Sequence[Any], nums: Tuple[int, ...], out_fn=None,
            structs=None):
    """Run f on handles for the arguments in nums; out_fn(tape, out) runs before finishing."""
    if not callable(f):
        raise TypeError(f"expected a function, got {type(f).__name__}")
    for i in nums:
        if args[i] is None:
            raise TypeError(f"argument {i}: cannot differentiate with respect to None")
    tape = Tape()
    tape.start()
    groups = []
    flats = []
    try:
        new_args = list(args)
        for i in nums:
            leaves, td, flat = _leaves_of(args[i], i, structs)
            handles = []
            info = []
            for j, leaf in enumerate(leaves):
                tl = type(leaf)
                if tl is not float and not (tl is np.ndarray and leaf.dtype in _F32_F64):
                    leaf = _input_leaf(leaf, lambda: _leaf_name(args, i, j))
                h = tape.input(leaf)
                handles.append(h)
                if type(h) is TapeValue:
                    info.append((h.slot, None, "<f8"))
                else:
                    dt = h.dtype
                    info.append((h.slot, h.shape, _F32_STR if dt is _F32 else (
                        _F64_STR if dt is _F64 else dt.str)))
            groups.append((td, info))
            flats.append(flat)
            # one handle per leaf
            new_args[i] = (_flat_build(flat[0], flat[1], handles) if flat is not None
                           else _rebuild(td, iter(handles)))
        out = f(*new_args)
        extra = out_fn(tape, out) if out_fn is not None else None
    finally:
        tape.finish()
    rec = _Recording(tape, groups, out, flats)
    rec.extra = extra
    return rec


def _grads(rec: _Recording, adj, copy: bool = False) -> List[Any]:
    """The gradient of each differentiated argument, in its own structure (with
    ``copy`` the adjoint arrays are handed over, Adjoints.take: a pooled replay's
    buffers are reused otherwise)."""
    result = []
    flats = rec.flats
    for k, (td, info) in enumerate(rec.groups):
        leaves = []
        for slot, shape, dt in info:
            if shape is None:
                leaves.append(0.0 if adj is None else adj[slot])
            elif adj is None:
                leaves.append(np.zeros(shape, _dtype(dt)))
            elif copy:
                leaves.append(adj.take(slot, shape, _dtype(dt)))
            else:
                leaves.append(np.asarray(adj.array(slot, shape), dtype=_dtype(dt)))
        flat = flats[k] if flats is not None else None
        result.append(_flat_build(flat[0], flat[1], leaves) if flat is not None
                      else _rebuild(td, iter(leaves)))
    return result


def _scalar_slot(tape: Tape, out: Any, who: str):
    """The slot of a scalar output (None for a constant) and its value."""
    if isinstance(out, TapeValue):
        if out.tape is not tape:
            raise TapeError(f"{who}: the output is a value of another tape")
        return out.slot, out.value
    if isinstance(out, TapeArray):
        if out.tape is not tape:
            raise TapeError(f"{who}: the output is a value of another tape")
        if out.shape != ():
            raise TypeError(f"{who} needs a function with a scalar output, got an array of "
                            f"shape {out.shape} (use jacrev or vjp)")
        return out.slot, float(out.value)
    if is_active(out):
        raise NestingError(f"{who}: the output is a {type(out).__name__} of another "
                           "differentiation")
    if isinstance(out, (int, float, np.integer, np.floating, bool)) or (
            isinstance(out, np.ndarray) and out.shape == ()):
        return None, float(out)
    shape = getattr(out, "shape", None)
    if shape is not None:
        raise TypeError(f"{who} needs a function with a scalar output, got an array of shape "
                        f"{shape} (use jacrev or vjp)")
    raise TypeError(f"{who} needs a function with a scalar output, got a "
                    f"{type(out).__name__}")


def _values(tape: Tape, out: Any, rp=None) -> Any:
    """The output tree with handles replaced by their values."""
    leaves, td = flatten(out)
    vals = []
    for leaf in leaves:
        if isinstance(leaf, (TapeValue, TapeArray)) and leaf.tape is tape:
            v = tape.value_at(leaf.slot, rp)
            vals.append(np.array(v) if isinstance(v, np.ndarray) else v)
        else:
            vals.append(leaf)
    return unflatten(td, vals)


def value_and_grad(f: Callable, argnums: Union[int, Sequence[int]] = 0,
                   has_aux: bool = False) -> Callable:
    """``g(*args) -> (f(*args), gradient)`` by reverse mode (one recording, one sweep).

    With ``has_aux`` f returns ``(value, aux)`` and g returns ``((value, aux), gradient)``.
    The gradient has the structure of ``args[argnums]`` (a tuple of them for a tuple).
    """
    structs: dict = {}       # the arguments' structures at the last call

    def value_and_grad_f(*args):
        nums = _argnums(argnums, len(args))
        rec = _record(f, args, nums, structs=structs)
        out = rec.out
        if has_aux:
            if not isinstance(out, tuple) or len(out) != 2:
                raise TypeError("with has_aux=True the function must return (value, aux)")
            out, aux = out
        slot, value = _scalar_slot(rec.tape, out, "grad")
        adj = rec.tape.backward({slot: 1.0}) if slot is not None else None
        grads = _grads(rec, adj)
        g = grads[0] if isinstance(argnums, int) else tuple(grads)
        if has_aux:
            return (value, _values(rec.tape, aux)), g
        return value, g

    value_and_grad_f.__name__ = f"value_and_grad({getattr(f, '__name__', 'f')})"
    return value_and_grad_f


def grad(f: Callable, argnums: Union[int, Sequence[int]] = 0) -> Callable:
    """The gradient of a scalar function, by reverse mode: ``grad(f)(*args)``."""
    vg = value_and_grad(f, argnums)

    def grad_f(*args):
        return vg(*args)[1]

    grad_f.__name__ = f"grad({getattr(f, '__name__', 'f')})"
    return grad_f


def _out_leaves(tape: Tape, out: Any):
    leaves, td = flatten(out)
    paths = leaf_paths(out)
    return td, [_out_leaf(tape, leaf, "output" + "".join(f"[{p!r}]" for p in path))
                for leaf, path in zip(leaves, paths)]


def vjp(f: Callable, *primals: Any):
    """``(f(*primals), pullback)``; ``pullback(u)`` gives uᵀ·Df, one tuple entry per primal."""
    if not primals:
        raise TypeError("vjp needs at least one primal")
    nums = tuple(range(len(primals)))
    rec = _record(f, primals, nums, out_fn=_out_leaves)
    tape = rec.tape
    out_td, out_leaves = rec.extra
    out_value = _values(tape, rec.out)

    def pullback(cotangent):
        cts, ct_td = flatten(cotangent)
        if ct_td != out_td:
            if out_td.kind == "leaf" or len(cts) != len(out_leaves):
                raise ValueError(f"pullback: the cotangent has structure {ct_td!r} but the "
                                 f"output has {out_td!r}")
        seeds = {}
        for (kind, ref), ct in zip(out_leaves, cts):
            ct = np.asarray(ct, dtype=np.float64)
            shape = tape.shape_of(ref) if kind != "c" else ()
            if ct.shape != shape:
                raise ValueError(f"pullback: a cotangent of shape {ct.shape} for an output "
                                 f"of shape {shape}")
            if kind == "c":
                continue
            if ref in seeds:
                seeds[ref] = seeds[ref] + ct
            else:
                seeds[ref] = ct if shape else float(ct)
        adj = tape.backward(seeds) if seeds else None
        return tuple(_grads(rec, adj))

    return out_value, pullback


def _jacobian(tape: Tape, groups, out_td, out_leaves, rp=None):
    """All output elements in one stacked reverse sweep (Tape.jacobian_rows);
    outer structure = outputs, inner = inputs."""
    in_leaves = [leaf for _, info in groups for leaf in info]
    J = tape.jacobian_rows(out_leaves, in_leaves, _work=rp)
    per_out = []
    r = 0
    for kind, ref in out_leaves:
        oshape = () if kind == "c" else tuple(tape.shape_of(ref))
        size = int(np.prod(oshape, dtype=np.int64))
        rows = J[r:r + size]
        r += size
        c = 0
        built = []
        for td, info in groups:
            leaves = []
            for slot, shape, dt in info:
                ishape = () if shape is None else tuple(shape)
                n = int(np.prod(ishape, dtype=np.int64))
                # np.array: a contiguous block of its own per leaf
                block = np.array(rows[:, c:c + n], dtype=_dtype(dt)).reshape(oshape + ishape)
                c += n
                leaves.append(float(block) if block.ndim == 0 else block)
            built.append(unflatten(td, leaves))
        per_out.append(built)
    return per_out


def jacrev(f: Callable, argnums: Union[int, Sequence[int]] = 0) -> Callable:
    """The Jacobian by reverse mode: one recording, one stacked reverse sweep for all
    output elements (Tape.jacobian_rows).

    For an output leaf of shape S and an input leaf of shape T the block has shape S + T.
    The result has the output's structure, each leaf holding the inputs' structure.
    """
    def jacrev_f(*args):
        nums = _argnums(argnums, len(args))
        rec = _record(f, args, nums, out_fn=_out_leaves)
        out_td, out_leaves = rec.extra
        per_out = _jacobian(rec.tape, rec.groups, out_td, out_leaves)
        pick = (lambda b: b[0]) if isinstance(argnums, int) else tuple
        return unflatten(out_td, [pick(b) for b in per_out])

    jacrev_f.__name__ = f"jacrev({getattr(f, '__name__', 'f')})"
    return jacrev_f


def record(f: Callable, *example_args: Any) -> Tape:
    """Record ``f`` at ``example_args`` into a replayable, saveable ``Tape``.

    Python control flow is fixed by the recording: comparisons and values read by
    Python are checked on every replay (``adcore.BranchChangedError`` if they differ);
    ``adcore.where`` records both branches and replays across the switch.
    """
    nums = tuple(range(len(example_args)))
    rec = _record(f, example_args, nums, out_fn=_out_leaves)
    tape = rec.tape
    tape.in_tree = flatten(tuple(example_args))[1]
    tape.in_leaves = [leaf for _, info in rec.groups for leaf in info]
    tape.out_tree, tape.out_leaves = rec.extra
    return tape


# --- replaying a recorded tape (Tape.__call__, .gradient, .jacobian) -------------

def _gather(slots: List[int]) -> Callable[[Any], tuple]:
    """adj -> the tuple of adjoints at slots, one C-level loop (itemgetter) rather than
    a Python loop of item reads."""
    if len(slots) == 1:
        s0 = slots[0]
        return lambda adj: (adj[s0],)
    if not slots:
        return lambda adj: ()
    return operator.itemgetter(*slots)


class _Layout:
    """What replaying a tape needs that depends only on the tape (a finished tape
    never changes), kept in ``tape.flat_args``: the quick input layout (``plan``,
    see _plan), per ``argnums`` its normalized tuple, per set of differentiated
    arguments the reverse sweep's ``wrt`` and plan entries, and the checked scalar
    output.  Worked out again when ``in_tree``, ``in_leaves`` or ``out_leaves``
    (public attributes) are replaced."""

    __slots__ = ("in_tree", "in_leaves", "plan", "argnums", "sweeps", "out")

    def __init__(self, tape: Tape):
        self.in_tree, self.in_leaves = tape.in_tree, tape.in_leaves
        self.plan = (_make_plan(tape.in_tree, tape.in_leaves) or None
                     if tape.in_tree is not None else None)
        self.argnums: dict = {}     # an int argnums -> its tuple of argument numbers
        self.sweeps: dict = {}      # nums (None: all) -> (wrt frozenset or None, entries)
        self.out = None             # (out_leaves checked, (kind, ref) of the scalar output)


def _layout(tape: Tape) -> _Layout:
    """The tape's _Layout (the tape must have a recorded structure)."""
    lay = tape.flat_args
    if (type(lay) is not _Layout or lay.in_tree is not tape.in_tree
            or lay.in_leaves is not tape.in_leaves):
        lay = tape.flat_args = _Layout(tape)
    return lay


def _two_level(td: TreeDef):
    """(type, keys) when td is a dict of leaves (keys: its keys) or a list/tuple of
    leaves and dicts of leaves (keys: per item None or the dict's keys), the usual
    model parameters; else None."""
    if td.kind == "dict":
        if all(c.kind == "leaf" for c in td.children):
            return dict, tuple(td.meta)
        return None
    if td.kind != "list" and td.kind != "tuple":
        return None
    keys = []
    for c in td.children:
        if c.kind == "leaf":
            keys.append(None)
        elif c.kind == "dict" and all(g.kind == "leaf" for g in c.children):
            keys.append(tuple(c.meta))
        else:
            return None
    return (list if td.kind == "list" else tuple), keys


def _make_plan(td: TreeDef, in_leaves: list) -> list:
    plan = []
    k = 0
    for c in td.children:
        m = c.num_leaves
        specs = in_leaves[k:k + m]
        k += m
        flat = _two_level(c)
        if c.kind == "leaf":
            sp = specs[0]
            plan.append(("leaf", sp, None if sp[1] is None else _dtype(sp[2])))
        elif (c.kind in ("list", "tuple") and all(g.kind == "leaf" for g in c.children)
              and all(sp[1] is None for sp in specs)):
            plan.append(("seq", list if c.kind == "list" else tuple, specs,
                         _gather([sp[0] for sp in specs])))
        elif flat is not None:
            gspecs = [(s, sh, None if sh is None else _dtype(dt)) for s, sh, dt in specs]
            plan.append(("flat", flat[0], flat[1], specs, gspecs,
                         [sp[1] for sp in specs], [sp[2] for sp in gspecs]))
        else:
            plan.append(("tree", c, specs))
    return plan


def _plan(tape: Tape):
    """The quick replay layout (cached on the tape): per positional argument,
    ("leaf", spec, np.dtype or None) for one leaf, ("seq", list|tuple, specs, gather)
    for a list/tuple of scalars (gather reads their adjoints), ("flat", type, keys,
    specs, gspecs, shapes, dtypes) for a dict of leaves or a list/tuple of leaves and
    such dicts (see _two_level; gspecs: the specs with np.dtype objects, shapes and
    dtypes: theirs, listed for one comparison), or ("tree", treedef, specs) for any
    other structure (matched against the recorded structure while its leaves are
    collected); None when the tape has no recorded structure."""
    if tape.in_tree is None:
        return None
    return _layout(tape).plan


def _match(node: Any, td: TreeDef, out: list) -> bool:
    """Append the leaves of node to out while checking that node has the structure
    td; False on any difference.  Plain dicts, lists and tuples are walked here (a
    flatten and a TreeDef comparison cost several us for a model's parameters);
    other nodes go through flatten."""
    kind = td.kind
    if kind == "leaf":
        out.append(node)          # its type is checked by _quick_leaf
        return True
    tn = type(node)
    if kind == "dict":
        if tn is not dict or tuple(node) != td.meta:
            return False
        for key, c in zip(td.meta, td.children):
            if not _match(node[key], c, out):
                return False
        return True
    if kind == "list" or kind == "tuple":
        if tn is not (list if kind == "list" else tuple) or len(node) != len(td.children):
            return False
        for v, c in zip(node, td.children):
            if not _match(v, c, out):
                return False
        return True
    if kind == "none":
        return node is None
    leaves, tdn = flatten(node)
    if tdn != td:
        return False
    out.extend(leaves)
    return True


def _rebuild(td: TreeDef, it: Any) -> Any:
    """unflatten for a structure known to fit (no leaf count), plain nodes inline."""
    kind = td.kind
    if kind == "leaf":
        return next(it)
    if kind == "dict":
        return {key: _rebuild(c, it) for key, c in zip(td.meta, td.children)}
    if kind == "list":
        return [_rebuild(c, it) for c in td.children]
    if kind == "tuple":
        return tuple([_rebuild(c, it) for c in td.children])
    if kind == "none":
        return None
    return unflatten(td, [next(it) for _ in range(td.num_leaves)])


def _flat_leaves(a: Any, tp: type, keys: Any):
    """The leaves of a when it has the structure (tp, keys) of _two_level, in
    order; None on any difference (dict keys count in order, as in _match)."""
    if type(a) is not tp:
        return None
    if tp is dict:
        return list(a.values()) if tuple(a) == keys else None
    if len(a) != len(keys):
        return None
    leaves = []
    for v, ks in zip(a, keys):
        if ks is None:
            leaves.append(v)
        elif type(v) is not dict or tuple(v) != ks:
            return None
        else:
            leaves += v.values()
    return leaves


def _flat_build(tp: type, keys: Any, leaves: list) -> Any:
    """The tree of structure (tp, keys) around leaves (the inverse of _flat_leaves)."""
    if tp is dict:
        return dict(zip(keys, leaves))
    out = []
    k = 0
    for ks in keys:
        if ks is None:
            out.append(leaves[k])
            k += 1
        else:
            out.append(dict(zip(ks, leaves[k:k + len(ks)])))
            k += len(ks)
    return out if tp is list else tuple(out)


def _quick_leaf(a, spec):
    """A leaf's replay value when it needs no conversion beyond integers to float64,
    else None (the general path converts or names the error)."""
    slot, shape, dt = spec
    if shape is None:
        return a if type(a) is float else None
    if type(a) is np.ndarray and a.shape == shape and a.flags.c_contiguous:
        d = a.dtype
        if d is _dtype(dt):
            return a
        if dt == "<f8" and d.kind in "iu":     # integer labels, as recorded
            return a.astype(np.float64)
        if d.str == dt:             # an equal dtype object that is not numpy's own
            return a
    return None


def _quick_leaves(leaves: list, specs: list, values: list) -> bool:
    """Append the replay values of leaves (as _quick_leaf gives them) to values;
    False when one needs the general path."""
    for a, spec in zip(leaves, specs):
        v = _quick_leaf(a, spec)
        if v is None:
            return False
        values.append(v)
    return True


_shape_of = operator.attrgetter("shape")
_dtype_of = operator.attrgetter("dtype")


def _quick_inputs(plan, args):
    """Input leaf values by the quick layout, or None (then the general path decides,
    and names any error).  Arrays of the recorded shape and dtype pass as they are
    (the tape copies a non-contiguous one, as the general path would)."""
    if len(plan) != len(args):
        return None
    values = []
    nd = np.ndarray
    for p, a in zip(plan, args):
        kind = p[0]
        if kind == "flat":
            leaves = _flat_leaves(a, p[1], p[2])
            if leaves is None:
                return None
            # all arrays as recorded: three C-level passes
            if (list(map(type, leaves)).count(nd) == len(leaves)
                    and list(map(_dtype_of, leaves)) == p[6]
                    and list(map(_shape_of, leaves)) == p[5]):
                values += leaves
            elif not _quick_leaves(leaves, p[3], values):
                return None
        elif kind == "leaf":
            if type(a) is nd and a.dtype is p[2] and a.shape == p[1][1]:
                values.append(a)
                continue
            v = _quick_leaf(a, p[1])
            if v is None:
                return None
            values.append(v)
        elif kind == "tree":
            leaves = []
            if not _match(a, p[1], leaves) or not _quick_leaves(leaves, p[2], values):
                return None
        else:
            if type(a) is not p[1] or len(a) != len(p[2]):
                return None
            if list(map(type, a)).count(float) == len(a):
                values.extend(a)        # all floats: one C-level pass checks them
                continue
            for v in a:
                if type(v) is float:
                    values.append(v)
                elif isinstance(v, (int, np.floating, np.integer)) and not isinstance(v, bool):
                    values.append(float(v))
                else:
                    return None
    return values


def _replay_inputs(tape: Tape, args: Tuple[Any, ...], lay=None) -> list:
    if tape.in_tree is None:
        raise TapeError("only tapes made by adcore.record can be replayed")
    plan = (lay if lay is not None else _layout(tape)).plan
    if plan is not None:
        values = _quick_inputs(plan, args)
        if values is not None:
            return values
    leaves, td = flatten(tuple(args))
    if td != tape.in_tree:
        raise TypeError(f"the tape was recorded with arguments of structure {tape.in_tree!r}, "
                        f"got {td!r}")
    values = []
    for j, (leaf, (slot, shape, dt)) in enumerate(zip(leaves, tape.in_leaves)):
        if shape is None and type(leaf) is float:
            values.append(leaf)
            continue

        def name(j=j):
            path = leaf_paths(tuple(args))[j]
            return _path_name(path[0], path[1:])

        v = _input_leaf(leaf, name)
        if shape is None:
            if isinstance(v, np.ndarray):
                if v.shape != ():
                    raise ValueError(f"{name()}: the tape was recorded with a scalar here, got "
                                     f"an array of shape {v.shape}")
                v = float(v)
            values.append(v)
        else:
            if not isinstance(v, np.ndarray) and tuple(shape) == ():
                # a number for a 0-d array (numpy arithmetic on 0-d arrays gives scalars)
                v = np.asarray(v, dtype=np.dtype(dt))
            if not isinstance(v, np.ndarray):
                raise ValueError(f"{name()}: the tape was recorded with an array of shape "
                                 f"{tuple(shape)} here, got a scalar")
            if v.shape != tuple(shape):
                raise ValueError(f"{name()}: the tape was recorded with shape {tuple(shape)}, "
                                 f"got {v.shape}")
            values.append(np.asarray(v, dtype=np.dtype(dt), order="C"))
    return values


def _out_values(tape: Tape, rp) -> Any:
    vals = []
    for kind, ref in tape.out_leaves:
        if kind == "c":
            vals.append(ref)
        else:
            v = tape.value_at(ref, rp)
            vals.append(np.array(v) if isinstance(v, np.ndarray) else v)
    return unflatten(tape.out_tree, vals)


def _tape_call(tape: Tape, args) -> Any:
    # fused: only the outputs are read
    rp = tape._replay_pooled(_replay_inputs(tape, args), True)
    try:
        return _out_values(tape, rp)        # copies: the workspace is reused
    finally:
        tape._release(rp)


def _groups_of(tape: Tape, nargs: int):
    # one group per positional argument, from the argument-tuple structure
    groups = []
    k = 0
    for child in tape.in_tree.children:
        m = child.num_leaves
        groups.append((child, tape.in_leaves[k:k + m]))
        k += m
    return groups


def _tape_gradient(tape: Tape, args, argnums=None, with_value: bool = False) -> Any:
    """Tape.gradient; with ``with_value``, Tape.value_and_gradient."""
    if tape.in_tree is None:
        raise TapeError("only tapes made by adcore.record can be replayed")
    lay = _layout(tape)
    nums = None
    if argnums is not None:
        if type(argnums) is int:        # the usual argnums=0: checked once per tape
            nums = lay.argnums.get(argnums)
            if nums is None:
                nums = lay.argnums[argnums] = _argnums(argnums, len(tape.in_tree.children))
        else:
            nums = _argnums(argnums, len(tape.in_tree.children))
    values = _replay_inputs(tape, args, lay)
    out = lay.out
    if out is not None and out[0] is tape.out_leaves and out[1][0] == "s":
        # a scalar output checked before: a tape of scalars replays and sweeps
        # in one C call (None: not such a tape)
        swept = tape._scalar_gradient_pooled(values, out[1][1])
        if swept is not None:
            try:
                g = _gradient_of(tape, args, swept[0], argnums, nums, lay, swept[1])
                return (_scalar_value(tape, lay, swept[0]), g) if with_value else g
            finally:
                tape._release(swept[0])
    # fused: the outputs and the (fused) reverse sweep read nothing else
    rp = tape._replay_pooled(values, True)
    try:
        # hands over: the workspace is reused
        g = _gradient_of(tape, args, rp, argnums, nums, lay)
        return (_scalar_value(tape, lay, rp), g) if with_value else g
    finally:
        tape._release(rp)


def _scalar_value(tape: Tape, lay: _Layout, rp) -> float:
    """The replayed scalar output as a float (as adcore.value_and_grad gives it),
    after _gradient_of checked it."""
    kind, ref = lay.out[1]
    return ref if kind == "c" else float(tape.value_at(ref, rp))


def _leaf_grad(adj, spec):
    """One input leaf's gradient, the caller's own array (Adjoints.take: a pooled
    workspace's buffer leaves the pool, so the next sweep cannot overwrite it)."""
    slot, shape, dt = spec
    if shape is None:
        return 0.0 if adj is None else adj[slot]
    if adj is None:
        return np.zeros(shape, _dtype(dt))
    return adj.take(slot, shape, _dtype(dt))


def _leaf_grads(adj, gspecs: list) -> list:
    """_leaf_grad for each of gspecs ((slot, shape, np.dtype) per leaf)."""
    if adj is None:
        return [0.0 if shape is None else np.zeros(shape, dt) for _, shape, dt in gspecs]
    take = adj.take
    return [adj[slot] if shape is None else take(slot, shape, dt)
            for slot, shape, dt in gspecs]


def _scalar_output(tape: Tape, lay: _Layout):
    """(kind, ref) of the tape's one scalar output, checked once per out_leaves."""
    out = lay.out                   # one tuple: threads see both parts or neither
    if out is not None and out[0] is tape.out_leaves:
        return out[1]
    if len(tape.out_leaves) != 1:
        raise TypeError("Tape.gradient needs a recorded function with one scalar output "
                        "(use Tape.jacobian)")
    kind, ref = tape.out_leaves[0]
    if kind == "a" and tape.shape_of(ref) != ():
        raise TypeError(f"Tape.gradient needs a scalar output, the recorded output has shape "
                        f"{tape.shape_of(ref)} (use Tape.jacobian)")
    lay.out = (tape.out_leaves, (kind, ref))
    return kind, ref


def _gradient_of(tape: Tape, args, rp, argnums=None, nums=None, lay=None,
                 swept=None) -> Any:
    """The gradient for every argument (nums None), or for the arguments nums only
    (then the sweep skips what leads only to the others).  ``swept``: the
    adjoints of a sweep from the scalar output that already ran."""
    if lay is None:
        lay = _layout(tape)
    kind, ref = _scalar_output(tape, lay)
    plan = lay.plan
    if plan is not None and len(plan) == len(args):
        # quick layout: no tree walk; wrt and the entries kept per nums
        sweep = lay.sweeps.get(nums)
        if sweep is None:
            wrt = None
            if nums is not None:
                groups = _groups_of(tape, len(args))
                wrt = frozenset([sp[0] for i in nums for sp in groups[i][1]])
            sweep = lay.sweeps[nums] = (wrt, plan if nums is None else [plan[i] for i in nums])
        wrt, entries = sweep
        if kind == "c":
            adj = None
        elif swept is not None:
            adj = swept
        else:
            adj = tape.backward({ref: (np.ones(()) if kind == "a" else 1.0)}, _work=rp,
                                wrt=wrt)
        grads = []
        for p in entries:
            if p[0] == "flat":
                grads.append(_flat_build(p[1], p[2], _leaf_grads(adj, p[4])))
            elif p[0] == "seq":
                grads.append(p[1](p[3](adj)) if adj is not None
                             else p[1]([0.0] * len(p[2])))
            elif p[0] == "tree":
                grads.append(_rebuild(p[1], iter([_leaf_grad(adj, sp) for sp in p[2]])))
            else:
                grads.append(_leaf_grad(adj, p[1]))
        return _pick(grads, argnums)
    wrt = None
    if nums is not None:
        groups = _groups_of(tape, len(args))
        wrt = frozenset([sp[0] for i in nums for sp in groups[i][1]])
    groups = _groups_of(tape, len(args))
    if nums is not None:
        groups = [groups[i] for i in nums]
    rec = _Recording(tape, groups, None)
    if kind == "c":
        grads = _grads(rec, None)
    else:
        seed = np.ones(()) if kind == "a" else 1.0
        if swept is None:
            swept = tape.backward({ref: seed}, _work=rp, wrt=wrt)
        grads = _grads(rec, swept, copy=True)
    return _pick(grads, argnums)


def _pick(grads: list, argnums) -> Any:
    """argnums None: one gradient per argument (the gradient itself for one); an
    int: that gradient; a sequence: a tuple."""
    if argnums is None:
        return grads[0] if len(grads) == 1 else tuple(grads)
    return grads[0] if isinstance(argnums, int) else tuple(grads)


def _tape_jacobian(tape: Tape, args) -> Any:
    rp = tape._replay_pooled(_replay_inputs(tape, args))
    try:
        groups = _groups_of(tape, len(args))
        # _jacobian copies every adjoint into blocks of its own
        per_out = _jacobian(tape, groups, tape.out_tree, tape.out_leaves, rp)
    finally:
        tape._release(rp)
    pick = (lambda b: b[0]) if len(groups) == 1 else tuple
    return unflatten(tape.out_tree, [pick(b) for b in per_out])
