"""Nesting of differentiations: a dual number whose parts are other adcore values.

When a differentiation with tag T meets an active value of an outer
differentiation (a smaller tag), the result must carry both perturbations
without confusing them (Siskind & Pearlmutter's perturbation confusion).  A
``NestedDual`` of tag T holds a *value* and k *tangents* that are themselves
values of the outer differentiations: floats, arrays, Duals or DualArrays of
smaller tags, tape handles of smaller tags, or further NestedDuals.

Its operations compute the value with ``adcore.dispatch.apply`` on the parts
and the tangents with the rule's *partial expressions* from ``adcore/_rules.py``,
compiled here into Python functions whose calls dispatch as well; so every
order of derivative comes from the same row of the rule table, and the outer
differentiations see only ordinary operations on their own values.
"""

from __future__ import annotations

import ast
import operator
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import array_ops as _ao
from ._dual import Dual, DualArray, wrap_forward
from ._rules import OPCODES, RULES
from .dispatch import apply
from .errors import NestingError

# the operators' rules
_ADD, _SUB, _MUL, _DIV, _POW = (OPCODES[n] for n in ("add", "sub", "mul", "div", "pow"))

__all__ = ["NestedDual", "partial_functions"]

_OP_MULZ = next(r.opcode for r in RULES if r.name == "mulz")


def _rule_caller(op: int) -> Callable[..., Any]:
    def call(*args: Any) -> Any:
        return apply(op, args)
    return call


def _pow_caller(op: int) -> Callable[..., Any]:
    def call(x: Any, y: Any) -> Any:
        # pow(x, 1.0) is x exactly (the rule's value): the square's partial
        # mulz(2.0, pow(x, 1.0)) then records one instruction, not two
        if type(y) is float and y == 1.0 and getattr(x, "_ad_tag", None) is not None:
            return x
        return apply(op, (x, y))
    return call


def _compile_partials() -> Dict[int, Tuple[Any, ...]]:
    """Per opcode, per input: a float (a constant partial) or a function (x, y, z, r)."""
    namespace = {rule.name: _rule_caller(rule.opcode) for rule in RULES}
    namespace["pow"] = _pow_caller(OPCODES["pow"])
    table: Dict[int, Tuple[Any, ...]] = {}
    for rule in RULES:
        names = ("x", "y", "z")[: rule.arity]
        parts: List[Any] = []
        for text in rule.partials:
            tree = ast.parse(text, mode="eval")
            const = _constant(tree.body)
            if const is not None:
                parts.append(const)
                continue
            source = f"lambda {', '.join(names)}, r: {text}"
            parts.append(eval(compile(source, f"<partial of {rule.name}>", "eval"),
                              dict(namespace)))
        table[rule.opcode] = tuple(parts)
    return table


def _constant(node: ast.AST) -> Optional[float]:
    if isinstance(node, ast.Constant) and isinstance(node.value, float):
        return node.value
    if (isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub)
            and isinstance(node.operand, ast.Constant) and isinstance(node.operand.value, float)):
        return -node.operand.value
    return None


#: opcode -> one entry per input: a float constant or a function of (inputs..., r)
partial_functions: Dict[int, Tuple[Any, ...]] = _compile_partials()


def _is_zero(t: Any) -> bool:
    # only a plain zero is skipped: an active zero may carry outer perturbations
    return type(t) in (float, int) and t == 0


def _times(t: Any, p: Any) -> Any:
    """The contribution t * p of one tangent through a partial; exactly 0 when t == 0,
    even if p is inf or NaN (the table's zero-tangent convention; callers skip
    plain zero tangents and plain zero partials)."""
    if isinstance(p, float):
        if p == 1.0:
            return t
        if p == -1.0:
            return -t
    if type(t) is float or type(t) is int:
        return p * t
    return apply(_OP_MULZ, (t, p))


class NestedDual:
    """A dual number of tag ``tag`` whose value and k tangents are other values."""

    __slots__ = ("value", "tangents", "tag", "_ad_tag")
    _ad_rank = 2
    __array_priority__ = 100

    def __init__(self, value: Any, tangents: Sequence[Any], tag: int) -> None:
        tangents = list(tangents)
        if not tangents:
            raise ValueError("NestedDual: needs at least one tangent")
        vtag = getattr(value, "_ad_tag", None)
        if vtag is not None and vtag >= tag:
            raise NestingError(f"NestedDual of tag {tag}: its value belongs to the same "
                               f"or an inner differentiation (tag {vtag})")
        self.value = value
        self.tangents = tangents
        self.tag = self._ad_tag = tag

    @property
    def k(self) -> int:
        return len(self.tangents)

    def __repr__(self) -> str:
        return f"NestedDual({self.value!r}, {self.tangents!r}, tag={self.tag})"

    # -- the dispatch protocol

    @classmethod
    def _ad_apply(cls, op: int, args: Sequence[Any]) -> Any:
        return _apply_nested(op, args, _top_tag(args))

    @classmethod
    def _ad_primitive(cls, prim: Any, args: Sequence[Any], params: Dict[str, Any]) -> Any:
        return _primitive_nested(prim, args, params, _top_tag(args))

    # -- operators: NestedDual's own rule unless the other operand owns the operation

    def __add__(self, o): return _binary(_ADD, self, o, o)
    def __radd__(self, o): return _binary(_ADD, o, self, o)
    def __sub__(self, o): return _binary(_SUB, self, o, o)
    def __rsub__(self, o): return _binary(_SUB, o, self, o)
    def __mul__(self, o): return _binary(_MUL, self, o, o)
    def __rmul__(self, o): return _binary(_MUL, o, self, o)
    def __truediv__(self, o): return _binary(_DIV, self, o, o)
    def __rtruediv__(self, o): return _binary(_DIV, o, self, o)
    def __pow__(self, o): return _binary(_POW, self, o, o)
    def __rpow__(self, o): return _binary(_POW, o, self, o)
    def __neg__(self): return _apply_nested(OPCODES["neg"], (self,), self._ad_tag)
    def __pos__(self): return self
    def __abs__(self): return _apply_nested(OPCODES["abs"], (self,), self._ad_tag)
    # Reads and comparisons go one level down, to the value's own type, so an outer
    # tape records them and a replay that would take another branch says so.
    def __float__(self) -> float:
        return float(self.value)

    def __bool__(self) -> bool:
        return bool(self.value)

    def __lt__(self, o): return _compare(self, o, operator.lt)
    def __le__(self, o): return _compare(self, o, operator.le)
    def __gt__(self, o): return _compare(self, o, operator.gt)
    def __ge__(self, o): return _compare(self, o, operator.ge)
    def __eq__(self, o): return _compare(self, o, operator.eq)  # type: ignore[override]
    def __ne__(self, o): return _compare(self, o, operator.ne)  # type: ignore[override]

    __hash__ = None  # type: ignore[assignment]

    # array-like access goes through the primitives, as for DualArray
    @property
    def shape(self) -> Tuple[int, ...]:
        return tuple(np.shape(_primal(self)))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def dtype(self) -> Any:
        return np.asarray(_primal(self)).dtype

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d NestedDual")
        return self.shape[0]

    def __iter__(self) -> Any:
        for i in range(len(self)):
            yield self[i]

    def __getitem__(self, index: Any) -> Any:
        return _ao.getitem(self, index)

    def __matmul__(self, o: Any) -> Any:
        return _ao.matmul(self, o) if _is_operand(o) else NotImplemented

    def __rmatmul__(self, o: Any) -> Any:
        return _ao.matmul(o, self) if _is_operand(o) else NotImplemented

    def sum(self, axis: Any = None, keepdims: bool = False) -> Any:
        return _ao.sum(self, axis=axis, keepdims=keepdims)

    def mean(self, axis: Any = None, keepdims: bool = False) -> Any:
        return _ao.mean(self, axis=axis, keepdims=keepdims)

    def reshape(self, *shape: Any) -> Any:
        if len(shape) == 1 and not isinstance(shape[0], int):
            shape = shape[0]
        return _ao.reshape(self, shape)

    def transpose(self, *axes: Any) -> Any:
        if len(axes) == 1 and not isinstance(axes[0], int):
            axes = axes[0]
        return _ao.transpose(self, tuple(axes) if axes else None)

    @property
    def T(self) -> Any:
        return _ao.transpose(self)

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        from . import numpy_api
        return numpy_api.array_ufunc(self, ufunc, method, inputs, kwargs)

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        from . import numpy_api
        return numpy_api.array_function(self, func, types, args, kwargs)


def _apply_nested(op: int, args: Sequence[Any], tag: int) -> Any:
    """Rule op on args, owned by NestedDual of tag: the value by dispatch, each
    direction's tangent from the rule's partials."""
    values, tangents, k = _split_args(args, tag)
    r = apply(op, values)
    parts = partial_functions[op]
    out: List[Any] = [0.0] * k
    for i, ts in enumerate(tangents):
        if ts is None:
            continue
        p = parts[i]
        if type(p) is not float:
            p = p(*values, r)
        if type(p) is float:
            if p == 0.0:
                continue  # a zero partial contributes exactly 0, whatever the tangent
            if p == -1.0:
                # o - t is o + (-t) exactly: one subtraction, no negation
                for j, t in enumerate(ts):
                    if not _is_zero(t):
                        o = out[j]
                        out[j] = -t if _is_zero(o) else _sum2(1, o, t)
                continue
        for j, t in enumerate(ts):
            if _is_zero(t):
                continue
            term = _times(t, p)
            o = out[j]
            out[j] = term if _is_zero(o) else _sum2(0, o, term)
    return _build(r, out, tag)


def _sum2(op: int, a: Any, b: Any) -> Any:
    """a + b (op 0) or a - b (op 1) of two tangent terms: numpy's or Python's for
    plain ones, else the rule by dispatch (not through numpy's protocol)."""
    if getattr(a, "_ad_tag", None) is None and getattr(b, "_ad_tag", None) is None:
        return a + b if op == 0 else a - b
    return apply(op, (a, b))


def _primitive_nested(prim: Any, args: Sequence[Any], params: Dict[str, Any], tag: int) -> Any:
    values, tangents, k = _split_args(args, tag)
    active = False
    for v in values:
        if getattr(v, "_ad_tag", None) is not None:
            active = True
            break
    else:
        for ts in tangents:
            if ts is not None and any(getattr(t, "_ad_tag", None) is not None for t in ts):
                active = True
                break
    if not active:
        return _plain_primitive(prim, values, tangents, params, tag)
    # parts of outer differentiations: the value and the jvp rule run on them
    # through the dispatcher (jvp rules use only adcore operations), so every outer
    # differentiation sees ordinary primitive calls on its own values
    out = prim(*values, **params)
    if prim.linear and None not in tangents:
        # a linear primitive's tangent in each direction is the primitive of that
        # direction's tangents (its jvp rule, without stacking and splitting)
        return _build(out, [prim(*[_tangent_as(ts[j], v) for v, ts in zip(values, tangents)],
                                 **params) for j in range(k)], tag)
    # the k directions travel stacked on a leading axis, as in plain forward mode
    dxs = [None if ts is None else _stacked(ts, v) for v, ts in zip(values, tangents)]
    t = prim.jvp(values, dxs, out, **params)
    want = (k,) + tuple(np.shape(_primal(out)))
    if tuple(np.shape(_primal(t))) != want:
        raise ValueError(f"forward mode: adcore.{prim.name}'s jvp gave tangents of "
                         f"shape {np.shape(_primal(t))} for a result of shape "
                         f"{want[1:]} (expected {want})")
    return _build(out, [_ao.getitem(t, j) for j in range(k)], tag)


def _tangent_as(t: Any, value: Any) -> Any:
    """One direction's tangent for an input of a primitive: of the value's shape (a
    rule's tangent keeps the shape of the input it came from), a plain one in the
    value's float dtype, as ``_stacked`` makes it."""
    shape = tuple(np.shape(_primal(value)))
    if getattr(t, "_ad_tag", None) is None:
        dt = np.asarray(_primal(value)).dtype
        dt = dt if dt == np.float32 else np.dtype(np.float64)
        if type(t) is np.ndarray and t.dtype == dt and t.shape == shape:
            return t
        return np.broadcast_to(np.asarray(t, dtype=dt), shape)
    if tuple(np.shape(_primal(t))) != shape:
        return _ao.broadcast_to(t, shape)
    return t


def _stacked(ts: List[Any], value: Any) -> Any:
    """One argument's k tangents as one array with a leading axis of k directions;
    each tangent broadcast to the value's shape first (a rule's tangent keeps the
    shape of the input it came from)."""
    shape = tuple(np.shape(_primal(value)))
    dt = np.asarray(_primal(value)).dtype
    dt = dt if dt == np.float32 else np.dtype(np.float64)
    parts: List[Any] = []
    for t in ts:
        if getattr(t, "_ad_tag", None) is None:
            parts.append(np.broadcast_to(np.asarray(t, dtype=dt), shape))
        elif tuple(np.shape(_primal(t))) != shape:
            parts.append(_ao.broadcast_to(t, shape))
        else:
            parts.append(t)
    if all(getattr(p, "_ad_tag", None) is None for p in parts):
        return np.stack(parts)
    return _ao.stack(parts, axis=0)


def _plain_primitive(prim: Any, values: List[Any], tangents: List[Optional[List[Any]]],
                     params: Dict[str, Any], tag: int) -> Any:
    xs = [np.asarray(v) if not isinstance(v, (float, int)) else v for v in values]
    dxs = [None if ts is None else np.stack([np.broadcast_to(np.asarray(t, dtype=float),
                                                             np.shape(x)) for t in ts])
           for x, ts in zip(xs, tangents)]
    out = prim.value(*xs, **params)
    return wrap_forward(out, prim.jvp(xs, dxs, out, **params), tag)



def _is_operand(x: Any) -> bool:
    return (getattr(x, "_ad_tag", None) is not None
            or isinstance(x, (float, int, np.ndarray, np.generic)))


def _binary(op: int, a: Any, b: Any, other: Any) -> Any:
    """Operator op of a NestedDual and ``other`` (a or b): NestedDual's rule unless
    other is a value that owns the operation (a larger tag, or rank at one tag)."""
    otag = getattr(other, "_ad_tag", None)
    if otag is None:
        if not isinstance(other, (float, int, np.ndarray, np.generic)):
            return NotImplemented
        return _apply_nested(op, (a, b), (b if other is a else a)._ad_tag)
    own = (b if other is a else a)._ad_tag
    if otag < own or (otag == own and other._ad_rank <= 2):
        return _apply_nested(op, (a, b), own)
    return apply(op, (a, b))


def _primal(x: Any) -> Any:
    while getattr(x, "_ad_tag", None) is not None:
        x = x.value
    return x


def _compare(a: NestedDual, b: Any, fn: Any) -> Any:
    btag = getattr(b, "_ad_tag", None)
    if btag is not None and (btag, b._ad_rank) > (a.tag, 2):
        return NotImplemented
    if not _is_operand(b):
        return NotImplemented
    if btag == a.tag:
        b = b.value
    result = fn(a.value, b)
    if isinstance(result, (bool, np.bool_)):
        return bool(result)
    return result


def _top_tag(args: Sequence[Any]) -> int:
    """The largest tag among args (the caller owns one of them)."""
    tag = -1
    for a in args:
        t = getattr(a, "_ad_tag", None)
        if t is not None and t > tag:
            tag = t
    return tag


def _split_args(args: Sequence[Any], tag: int) -> Tuple[List[Any], List[Optional[List[Any]]], int]:
    """Each argument's value part and tangent parts (None for a constant of tag)."""
    values: List[Any] = []
    tangents: List[Optional[List[Any]]] = []
    k = -1
    for a in args:
        atag = getattr(a, "_ad_tag", None)
        if atag is None or atag < tag:
            values.append(a)
            tangents.append(None)
            continue
        if atag > tag:
            raise NestingError(f"a value of differentiation {atag} reached differentiation "
                               f"{tag}, which runs outside it")
        if type(a) is NestedDual:
            v, ts = a.value, a.tangents  # read, never changed
        elif type(a) is Dual:
            v, ts = a.value, [float(t) for t in a.tangents]
        elif type(a) is DualArray:
            v, ts = a.value, list(a.tangents)
        else:
            raise NestingError(f"a {type(a).__name__} cannot take part in a forward-mode "
                               f"differentiation nested in another one (tag {tag})")
        if k >= 0 and len(ts) != k:
            raise ValueError(f"forward-mode values of one differentiation carry different "
                             f"numbers of tangents: k={k} and k={len(ts)}")
        k = len(ts)
        values.append(v)
        tangents.append(ts)
    return values, tangents, k


def _build(r: Any, tangents: List[Any], tag: int) -> Any:
    """The result: a plain Dual/DualArray when every part is plain, else a NestedDual."""
    if getattr(r, "_ad_tag", None) is None and not any(
            getattr(t, "_ad_tag", None) is not None for t in tangents):
        shape = np.shape(r)
        dt = np.asarray(r).dtype
        dt = dt if dt == np.float32 else np.float64
        tans = np.stack([np.broadcast_to(np.asarray(t, dtype=dt), shape) for t in tangents])
        return wrap_forward(r, tans, tag)
    return NestedDual(r, tangents, tag)
