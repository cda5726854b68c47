"""numpy's protocols on adcore values: NEP 13 (``__array_ufunc__``) and NEP 18
(``__array_function__``).

Plain numpy code (``np.sin(x)``, ``np.sum(x, axis=0)``, ``np.linalg.norm(x)``)
differentiates without changing imports: a ufunc becomes the rule of the same
meaning through ``adcore.dispatch.apply``, an array function becomes adcore's
primitive (``adcore.array_ops``) or a composition of primitives and rules.  So
every mode (forward, reverse, replay, nesting) sees the same operations as if
adcore's own functions had been called.  Anything else is a TypeError naming
it, never a silently constant result.

The active types delegate here with two short methods::

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        return numpy_api.array_ufunc(self, ufunc, method, inputs, kwargs)
    def __array_function__(self, func, types, args, kwargs):
        return numpy_api.array_function(self, func, types, args, kwargs)
"""

from __future__ import annotations

import operator
from typing import Any, Callable, Dict, Sequence, Tuple

import numpy as np

from . import array_ops
from ._rules import NUMPY_UFUNCS, OPCODES
from .dispatch import apply, is_active

__all__ = ["array_ufunc", "array_function", "SUPPORTED_UFUNCS", "SUPPORTED_FUNCTIONS"]

# ufuncs that are one rule of the table (comparisons are handled before, by _COMPARE)
_RULE_OF_UFUNC = NUMPY_UFUNCS

# comparisons go through the operators of the active operand, so each type keeps
# its own semantics (a tape records the outcome for its replay checks)
_COMPARE = {
    "less": (operator.lt, operator.gt), "less_equal": (operator.le, operator.ge),
    "greater": (operator.gt, operator.lt), "greater_equal": (operator.ge, operator.le),
    "equal": (operator.eq, operator.eq), "not_equal": (operator.ne, operator.ne),
}

_DEG = float(np.pi / 180.0)


def _composite_ufuncs() -> Dict[str, Callable[..., Any]]:
    def op(name: str) -> Callable[..., Any]:
        code = OPCODES[name]
        return lambda *xs: apply(code, xs)

    mul, div, add, sub = op("mul"), op("div"), op("add"), op("sub")
    log1p, exp, absolute, maximum = op("log1p"), op("exp"), op("abs"), op("maximum")

    def logaddexp(x: Any, y: Any) -> Any:
        # max + log1p(exp(-|x - y|)): never overflows
        return add(maximum(x, y), log1p(exp(mul(-1.0, absolute(sub(x, y))))))

    return {
        "positive": lambda x: x,
        "conjugate": lambda x: x,  # real values
        "square": lambda x: mul(x, x),
        "reciprocal": lambda x: div(1.0, x),
        "deg2rad": lambda x: mul(x, _DEG),
        "radians": lambda x: mul(x, _DEG),
        "rad2deg": lambda x: div(x, _DEG),
        "degrees": lambda x: div(x, _DEG),
        "logaddexp": logaddexp,
        "matmul": lambda a, b: array_ops.matmul(a, b),
    }


_COMPOSITE = _composite_ufuncs()

#: the numpy ufuncs that work on adcore values (method "__call__")
SUPPORTED_UFUNCS = tuple(sorted(set(_RULE_OF_UFUNC) | set(_COMPARE) | set(_COMPOSITE)))


def _is_vector(x: Any) -> bool:
    from .vectors import Vector
    return isinstance(x, Vector)


def _operand(x: Any, where: str) -> Any:
    """An input as the kernels take it: active values, numbers and ndarrays as
    they are, anything array-like (lists, bools) as a float ndarray."""
    if is_active(x) or isinstance(x, (float, int, np.ndarray)):
        if isinstance(x, (bool, np.bool_)) or (isinstance(x, np.ndarray) and x.dtype == bool):
            return np.asarray(x, dtype=np.float64)
        return x
    if isinstance(x, np.generic):
        return float(x) if x.dtype.kind in "biuf" else x
    try:
        a = np.asarray(x)
    except Exception:
        raise TypeError(f"{where}: cannot use {type(x).__name__} with differentiated values")
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{where}: an operand of dtype {a.dtype} cannot meet differentiated "
                        f"values")
    return a.astype(np.float64) if a.dtype.kind == "b" else a


def _check_kwargs(kwargs: Dict[str, Any], where: str, allowed: Sequence[str] = ()) -> None:
    out = kwargs.get("out")
    outs = out if isinstance(out, tuple) else (out,)
    if any(o is not None for o in outs):
        raise TypeError(f"{where}: out= is not supported on differentiated values "
                        f"(adcore values are immutable; use the returned result)")
    for key, val in kwargs.items():
        if key == "out" or key in allowed:
            continue
        if key == "dtype" and _float_dtype(val):
            continue
        if key == "where" and val is True:
            continue
        if key == "casting" and val == "same_kind":
            continue
        raise TypeError(f"{where}: the argument {key}={val!r} is not supported on "
                        f"differentiated values")


def _float_dtype(dt: Any) -> bool:
    if dt is None:
        return True
    try:
        return bool(np.dtype(dt).kind == "f")
    except TypeError:
        return False


def array_ufunc(self: Any, ufunc: Any, method: str, inputs: Tuple[Any, ...],
                kwargs: Dict[str, Any]) -> Any:
    """NEP 13: ``ufunc(*inputs, **kwargs)`` where some input is an adcore value."""
    name = getattr(ufunc, "__name__", repr(ufunc))
    where = f"numpy.{name}" if method == "__call__" else f"numpy.{name}.{method}"
    if any(_is_vector(x) for x in inputs) or _is_vector(kwargs.get("out")):
        return NotImplemented  # a Vector maps the ufunc over its coordinates
    if method == "reduce":
        return _reduce(name, where, inputs, kwargs)
    if method != "__call__":
        raise TypeError(f"adcore does not support {where} on differentiated values "
                        f"(only calls and add/maximum/minimum.reduce)")
    _check_kwargs(kwargs, where)
    if name not in SUPPORTED_UFUNCS:
        raise TypeError(f"adcore does not support numpy.{name} on differentiated values")
    xs = tuple(_operand(x, where) for x in inputs)
    if name in _COMPARE:
        straight, reflected = _COMPARE[name]
        a, b = xs
        if is_active(a):
            return straight(a, b)
        return reflected(b, a)
    rule = _RULE_OF_UFUNC.get(name)
    if rule is not None:
        return apply(OPCODES[rule], xs)
    return _COMPOSITE[name](*xs)


def _reduce(name: str, where: str, inputs: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Any:
    kw = dict(kwargs)
    axis = kw.pop("axis", 0)
    keepdims = bool(kw.pop("keepdims", False))
    _check_kwargs(kw, where)
    (x,) = inputs
    if name == "add":
        return array_ops.sum(x, axis=axis, keepdims=keepdims)
    if name == "maximum":
        return array_ops.amax(x, axis=axis, keepdims=keepdims)
    if name == "minimum":
        return -array_ops.amax(-x, axis=axis, keepdims=keepdims)
    raise TypeError(f"adcore does not support {where} on differentiated values "
                    f"(only add/maximum/minimum.reduce)")


# ---------------------------------------------------------------- NEP 18

_FUNCTIONS: Dict[Any, Callable[..., Any]] = {}


def _implements(*funcs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def deco(impl: Callable[..., Any]) -> Callable[..., Any]:
        for f in funcs:
            _FUNCTIONS[f] = impl
        return impl
    return deco


def _qualname(func: Any) -> str:
    mod = getattr(func, "__module__", None) or "numpy"
    return f"{mod}.{getattr(func, '__name__', repr(func))}"


def _no_extras(where: str, **extras: Any) -> None:
    for key, (val, default) in extras.items():
        if key == "dtype":
            if not _float_dtype(val):
                raise TypeError(f"{where}: dtype={val!r} is not supported on differentiated "
                                f"values (they are floating point)")
            continue
        if val is not default and not (default is None and val is None):
            raise TypeError(f"{where}: the argument {key}= is not supported on "
                            f"differentiated values")


_NOVALUE = getattr(np, "_NoValue", None)


def _unset(v: Any) -> bool:
    return v is None or v is _NOVALUE


@_implements(np.sum)
def _sum(a, axis=None, dtype=None, out=None, keepdims=False, initial=_NOVALUE,
         where=_NOVALUE):
    _no_extras("numpy.sum", dtype=(dtype, None), out=(out, None))
    if not _unset(initial) or not (_unset(where) or where is True):
        raise TypeError("numpy.sum: initial= and where= are not supported on "
                        "differentiated values")
    return array_ops.sum(a, axis=axis, keepdims=bool(keepdims))


@_implements(np.mean)
def _mean(a, axis=None, dtype=None, out=None, keepdims=False, *, where=_NOVALUE):
    _no_extras("numpy.mean", dtype=(dtype, None), out=(out, None))
    if not (_unset(where) or where is True):
        raise TypeError("numpy.mean: where= is not supported on differentiated values")
    return array_ops.mean(a, axis=axis, keepdims=bool(keepdims))


def _extremum(which: str):
    def impl(a, axis=None, out=None, keepdims=False, initial=_NOVALUE, where=_NOVALUE):
        _no_extras(f"numpy.{which}", out=(out, None))
        if not _unset(initial) or not (_unset(where) or where is True):
            raise TypeError(f"numpy.{which}: initial= and where= are not supported on "
                            f"differentiated values")
        if which == "max":
            return array_ops.amax(a, axis=axis, keepdims=bool(keepdims))
        return -array_ops.amax(-_operand(a, "numpy.min"), axis=axis, keepdims=bool(keepdims))
    return impl


_implements(np.max, np.amax)(_extremum("max"))
_implements(np.min, np.amin)(_extremum("min"))


@_implements(np.where)
def _where(condition, *xy):
    if len(xy) != 2:
        raise TypeError("numpy.where with one argument (the indices of nonzero entries) "
                        "is not supported on differentiated values; use where(c, x, y)")
    c, x, y = (_operand(v, "numpy.where") for v in (condition,) + xy)
    return apply(OPCODES["where"], (c, x, y))


@_implements(np.dot)
def _dot(a, b, out=None):
    _no_extras("numpy.dot", out=(out, None))
    a, b = _operand(a, "numpy.dot"), _operand(b, "numpy.dot")
    na, nb = np.ndim(array_ops._primal(a)), np.ndim(array_ops._primal(b))
    if na == 0 or nb == 0:
        return apply(OPCODES["mul"], (a, b))
    if na <= 2 and nb <= 2:
        return array_ops.matmul(a, b)
    raise TypeError("numpy.dot of arrays with more than 2 dimensions is not supported on "
                    "differentiated values; use numpy.matmul or numpy.tensordot's "
                    "equivalent with reshape")


@_implements(np.vdot)
def _vdot(a, b):
    return array_ops.sum(apply(OPCODES["mul"], (_ravel(a), _ravel(b))))


@_implements(np.inner)
def _inner(a, b):
    if np.ndim(array_ops._primal(a)) != 1 or np.ndim(array_ops._primal(b)) != 1:
        raise TypeError("numpy.inner is supported on differentiated values for 1-D "
                        "arrays only")
    return array_ops.matmul(a, b)


@_implements(np.outer)
def _outer(a, b, out=None):
    _no_extras("numpy.outer", out=(out, None))
    return apply(OPCODES["mul"], (array_ops.reshape(_ravel(a), (-1, 1)),
                                  array_ops.reshape(_ravel(b), (1, -1))))


@_implements(np.linalg.norm)
def _norm(x, ord=None, axis=None, keepdims=False):
    x = _operand(x, "numpy.linalg.norm")
    nd = np.ndim(array_ops._primal(x))
    if axis is None and ord is not None and nd > 1:
        raise TypeError("numpy.linalg.norm: matrix norms (ord= with a 2-D array) are not "
                        "supported on differentiated values; only vector norms")
    if isinstance(axis, tuple) and len(axis) != 1 and ord is not None:
        raise TypeError("numpy.linalg.norm: matrix norms over two axes are not supported "
                        "on differentiated values")
    kd = bool(keepdims)
    if ord is None or ord == 2:
        return apply(OPCODES["sqrt"], (array_ops.sum(apply(OPCODES["mul"], (x, x)),
                                                     axis=axis, keepdims=kd),))
    ax = apply(OPCODES["abs"], (x,))
    if ord == 1:
        return array_ops.sum(ax, axis=axis, keepdims=kd)
    if ord == np.inf:
        return array_ops.amax(ax, axis=axis, keepdims=kd)
    if isinstance(ord, (int, float)) and ord > 0 and np.isfinite(ord):
        p = float(ord)
        s = array_ops.sum(apply(OPCODES["pow"], (ax, p)), axis=axis, keepdims=kd)
        return apply(OPCODES["pow"], (s, 1.0 / p))
    raise TypeError(f"numpy.linalg.norm: ord={ord!r} is not supported on differentiated "
                    f"values (None, 1, 2, p > 0 and inf are)")


@_implements(np.concatenate)
def _concatenate(arrays, axis=0, out=None, dtype=None, casting="same_kind"):
    _no_extras("numpy.concatenate", out=(out, None), dtype=(dtype, None))
    if axis is None:
        return array_ops.concatenate([_ravel(a) for a in arrays], axis=0)
    return array_ops.concatenate([_operand(a, "numpy.concatenate") for a in arrays],
                                 axis=axis)


@_implements(np.stack)
def _stack(arrays, axis=0, out=None, *, dtype=None, casting="same_kind"):
    _no_extras("numpy.stack", out=(out, None), dtype=(dtype, None))
    return array_ops.stack([_operand(a, "numpy.stack") for a in arrays], axis=axis)


def _at_least(a: Any, n: int) -> Any:
    a = _operand(a, "numpy")
    shape = np.shape(array_ops._primal(a))
    if len(shape) >= n:
        return a
    if n == 2:
        return array_ops.reshape(a, (1,) * (2 - len(shape)) + shape)
    return array_ops.reshape(a, (1,) * (1 - len(shape)) + shape)


@_implements(np.vstack, np.row_stack) if hasattr(np, "row_stack") else _implements(np.vstack)
def _vstack(tup, *, dtype=None, casting="same_kind"):
    _no_extras("numpy.vstack", dtype=(dtype, None))
    return array_ops.concatenate([_at_least(a, 2) for a in tup], axis=0)


@_implements(np.hstack)
def _hstack(tup, *, dtype=None, casting="same_kind"):
    _no_extras("numpy.hstack", dtype=(dtype, None))
    arrs = [_at_least(a, 1) for a in tup]
    axis = 0 if np.ndim(array_ops._primal(arrs[0])) == 1 else 1
    return array_ops.concatenate(arrs, axis=axis)


@_implements(np.reshape)
def _reshape(a, *args, **kwargs):
    # numpy >= 2.1 names it shape=, older ones newshape=
    order = kwargs.pop("order", "C")
    kwargs.pop("copy", None)
    if order != "C":
        raise TypeError(f"numpy.reshape: order={order!r} is not supported on "
                        f"differentiated values (only 'C')")
    if args:
        shape = args[0]
        if len(args) > 1 and args[1] != "C":
            raise TypeError("numpy.reshape: only order='C' is supported on differentiated "
                            "values")
    else:
        shape = kwargs.pop("shape", kwargs.pop("newshape", None))
    if kwargs or shape is None:
        raise TypeError(f"numpy.reshape: unsupported arguments {sorted(kwargs)}")
    return array_ops.reshape(a, shape)


def _ravel(a: Any, order: str = "C") -> Any:
    if order != "C":
        raise TypeError(f"numpy.ravel: order={order!r} is not supported on differentiated "
                        f"values (only 'C')")
    a = _operand(a, "numpy.ravel")
    if not is_active(a):
        return np.ravel(a)
    return array_ops.reshape(a, (-1,))


_implements(np.ravel)(_ravel)


@_implements(np.transpose)
def _transpose(a, axes=None):
    return array_ops.transpose(a, None if axes is None else tuple(axes))


@_implements(np.swapaxes)
def _swapaxes(a, axis1, axis2):
    n = np.ndim(array_ops._primal(a))
    perm = list(range(n))
    i, j = perm[axis1], perm[axis2]
    perm[i], perm[j] = perm[j], perm[i]
    return array_ops.transpose(a, tuple(perm))


@_implements(np.squeeze)
def _squeeze(a, axis=None):
    shape = np.shape(array_ops._primal(a))
    return array_ops.reshape(a, np.squeeze(np.empty(shape, dtype=np.bool_), axis=axis).shape)


@_implements(np.expand_dims)
def _expand_dims(a, axis):
    shape = np.shape(array_ops._primal(a))
    return array_ops.reshape(a, np.expand_dims(np.empty(shape, dtype=np.bool_), axis).shape)


@_implements(np.broadcast_to)
def _broadcast_to(array, shape, subok=False):
    return array_ops.broadcast_to(array, shape)


@_implements(np.clip)
def _clip(a, a_min=None, a_max=None, out=None, **kwargs):
    _no_extras("numpy.clip", out=(out, None))
    lo = kwargs.pop("min", a_min)
    hi = kwargs.pop("max", a_max)
    if kwargs:
        raise TypeError(f"numpy.clip: unsupported arguments {sorted(kwargs)} on "
                        f"differentiated values")
    r = _operand(a, "numpy.clip")
    if lo is not None:
        r = apply(OPCODES["maximum"], (r, _operand(lo, "numpy.clip")))
    if hi is not None:
        r = apply(OPCODES["minimum"], (r, _operand(hi, "numpy.clip")))
    return r


@_implements(np.diff)
def _diff(a, n=1, axis=-1, prepend=_NOVALUE, append=_NOVALUE):
    if not _unset(prepend) or not _unset(append):
        raise TypeError("numpy.diff: prepend= and append= are not supported on "
                        "differentiated values")
    nd = np.ndim(array_ops._primal(a))
    axis = axis + nd if axis < 0 else axis
    for _ in range(operator.index(n)):
        hi = (slice(None),) * axis + (slice(1, None),)
        lo = (slice(None),) * axis + (slice(None, -1),)
        a = apply(OPCODES["sub"], (array_ops.getitem(a, hi), array_ops.getitem(a, lo)))
    return a


@_implements(np.take)
def _take(a, indices, axis=None, out=None, mode="raise"):
    _no_extras("numpy.take", out=(out, None))
    if mode != "raise":
        raise TypeError(f"numpy.take: mode={mode!r} is not supported on differentiated "
                        f"values")
    if axis is None:
        return array_ops.getitem(_ravel(a), indices)
    nd = np.ndim(array_ops._primal(a))
    axis = axis + nd if axis < 0 else axis
    return array_ops.getitem(a, (slice(None),) * axis + (indices,))


@_implements(np.trace)
def _trace(a, offset=0, axis1=0, axis2=1, dtype=None, out=None):
    _no_extras("numpy.trace", out=(out, None), dtype=(dtype, None))
    shape = np.shape(array_ops._primal(a))
    if len(shape) != 2 or axis1 != 0 or axis2 != 1:
        raise TypeError("numpy.trace is supported on differentiated values for 2-D "
                        "arrays only")
    rows = np.arange(max(0, -offset), min(shape[0], shape[1] - offset))
    return array_ops.sum(array_ops.getitem(a, (rows, rows + offset)))


def _round(a: Any, decimals: int = 0, out: Any = None) -> Any:
    _no_extras("numpy.round", out=(out, None))
    if decimals != 0:
        raise TypeError(f"numpy.round: decimals={decimals!r} is not supported on "
                        f"differentiated values (only 0)")
    return apply(OPCODES["round"], (_operand(a, "numpy.round"),))


_implements(*[getattr(np, n) for n in ("round", "around") if hasattr(np, n)])(_round)


def _prod(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


@_implements(np.tensordot)
def _tensordot(a: Any, b: Any, axes: Any = 2) -> Any:
    a, b = _operand(a, "numpy.tensordot"), _operand(b, "numpy.tensordot")
    sa, sb = np.shape(array_ops._primal(a)), np.shape(array_ops._primal(b))
    if isinstance(axes, (int, np.integer)):
        n = int(axes)
        ax_a, ax_b = list(range(len(sa) - n, len(sa))), list(range(n))
    else:
        ax_a, ax_b = axes
        ax_a = [ax_a] if isinstance(ax_a, (int, np.integer)) else list(ax_a)
        ax_b = [ax_b] if isinstance(ax_b, (int, np.integer)) else list(ax_b)
    ax_a = [int(i) % len(sa) for i in ax_a]
    ax_b = [int(i) % len(sb) for i in ax_b]
    if len(ax_a) != len(ax_b) or any(sa[i] != sb[j] for i, j in zip(ax_a, ax_b)):
        raise ValueError(f"numpy.tensordot: shape-mismatch for sum ({sa} over {ax_a}, "
                         f"{sb} over {ax_b})")
    free_a = [i for i in range(len(sa)) if i not in ax_a]
    free_b = [j for j in range(len(sb)) if j not in ax_b]
    k = _prod([sa[i] for i in ax_a])
    a2 = array_ops.reshape(array_ops.transpose(a, tuple(free_a + ax_a)),
                           (_prod([sa[i] for i in free_a]), k))
    b2 = array_ops.reshape(array_ops.transpose(b, tuple(ax_b + free_b)),
                           (k, _prod([sb[j] for j in free_b])))
    return array_ops.reshape(array_ops.matmul(a2, b2),
                             tuple(sa[i] for i in free_a) + tuple(sb[j] for j in free_b))


# shape queries and constants made from a shape: no derivative involved
@_implements(np.shape)
def _shape(a):
    return np.shape(array_ops._primal(a))


@_implements(np.ndim)
def _ndim(a):
    return np.ndim(array_ops._primal(a))


@_implements(np.size)
def _size(a, axis=None):
    return np.size(array_ops._primal(a), axis)


def _like(fill: Callable[..., Any]):
    def impl(a, dtype=None, order="K", subok=True, shape=None, **kwargs):
        p = np.asarray(array_ops._primal(a))
        return fill(p.shape if shape is None else shape, dtype=dtype or p.dtype)
    return impl


_implements(np.zeros_like)(_like(np.zeros))
_implements(np.ones_like)(_like(np.ones))
_implements(np.empty_like)(_like(np.zeros))


@_implements(np.full_like)
def _full_like(a, fill_value, dtype=None, order="K", subok=True, shape=None, **kwargs):
    p = np.asarray(array_ops._primal(a))
    if is_active(fill_value):
        raise TypeError("numpy.full_like: a differentiated fill value is not supported; "
                        "use x * 0.0 + value")
    return np.full(p.shape if shape is None else shape, fill_value, dtype=dtype or p.dtype)


@_implements(np.copy)
def _copy(a, order="K", subok=False):
    return a  # adcore values are immutable


#: the numpy functions that work on adcore values
SUPPORTED_FUNCTIONS = tuple(sorted({_qualname(f) for f in _FUNCTIONS}))


def _adcore_type(t: type) -> bool:
    if issubclass(t, np.ndarray):
        return True
    return getattr(t, "__module__", "").startswith("adcore")


def array_function(self: Any, func: Any, types: Sequence[type], args: Tuple[Any, ...],
                   kwargs: Dict[str, Any]) -> Any:
    """NEP 18: ``func(*args, **kwargs)`` where some argument is an adcore value."""
    if not all(_adcore_type(t) for t in types):
        return NotImplemented  # let the other type decide (NEP 18)
    impl = _FUNCTIONS.get(func)
    if impl is None:
        raise TypeError(f"adcore does not support {_qualname(func)} on differentiated "
                        f"values (adcore.numpy_api.SUPPORTED_FUNCTIONS lists those it does)")
    return impl(*args, **kwargs)
