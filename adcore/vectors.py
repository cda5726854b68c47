"""V(C): vectors as functions from a coordinate set C to the reals.

``Vector(coords, values)`` holds one value per coordinate, in the set's canonical
order, in a flat buffer:

* a float64 numpy array when every value is a plain number (the fast case);
* an object array when some values are adcore values (dual numbers, tape
  handles, nested duals), so functions built from vectors differentiate;
* a one-dimensional adcore array value (a dual array or a recorded array), as
  the Jacobian drivers pass in, so the arithmetic runs as whole-array kernels.

Arithmetic (``+ - * / **``, unary minus, ``abs``) and every function of the rule
table act element-wise, with scalars broadcast (the seed's element-wise
extension v[i] = f(u0[i], s1, u1[i], ...)).  ``adcore.sin(v)``, ``numpy.sin(v)``
and ``v.apply("sin")`` all give the Vector of sines.  Combining vectors over
different coordinate sets raises :class:`adcore.CoordinateError` naming both.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any, Callable, Dict, Iterator, List, Tuple, Union

import numpy as np

from . import dispatch
from ._rules import BY_NAME, NUMPY_UFUNCS, OPCODES
from .coords import CoordinateSet
from .errors import CoordinateError

__all__ = ["Vector", "basis", "distance", "dot", "norm", "elementwise",
           "VECTOR_TAG"]

#: Vectors are containers, not values of one differentiation: this tag is larger
#: than any tag dispatch.new_tag() hands out, so a Vector takes charge of every
#: operation it takes part in and maps it over its elements (ARCHITECTURE.md).
VECTOR_TAG = 1 << 62

_OP_ADD, _OP_SUB, _OP_MUL = OPCODES["add"], OPCODES["sub"], OPCODES["mul"]
_OP_DIV, _OP_NEG, _OP_POW = OPCODES["div"], OPCODES["neg"], OPCODES["pow"]
_OP_ABS, _OP_SQRT = OPCODES["abs"], OPCODES["sqrt"]

# the rules numpy computes identically (IEEE arithmetic) on float64 arrays
_NUMPY_FAST = {_OP_ADD: np.add, _OP_SUB: np.subtract, _OP_MUL: np.multiply,
               _OP_DIV: np.true_divide, _OP_NEG: np.negative}

_OPNAMES = {op: name for name, op in OPCODES.items()}


def _is_active(x: Any) -> bool:
    return getattr(x, "_ad_tag", None) is not None and not isinstance(x, Vector)


def _is_active_array(x: Any) -> bool:
    return _is_active(x) and len(getattr(x, "shape", ())) > 0


def _is_scalar(x: Any) -> bool:
    """A plain real number or an adcore scalar value (broadcast over a vector)."""
    if isinstance(x, (bool, np.bool_)):
        return True
    if isinstance(x, numbers.Real):
        return True
    if isinstance(x, np.ndarray):
        return x.ndim == 0 and x.dtype.kind in "biuf"
    return _is_active(x) and len(getattr(x, "shape", ())) == 0


def _check_element(x: Any, coords: CoordinateSet, i: int) -> Any:
    """A value fit to be stored at flat place i: a float or an adcore scalar."""
    if isinstance(x, (float, int, np.floating, np.integer, np.bool_)) and not isinstance(x, complex):
        return float(x)
    if isinstance(x, np.ndarray) and x.ndim == 0 and x.dtype.kind in "biuf":
        return float(x)
    if _is_active(x):
        shape = getattr(x, "shape", ())
        if len(shape) == 0:
            return x
        raise ValueError(f"Vector over {coords!r}: the value at coordinate "
                         f"{coords.coord_at(i)!r} is an array of shape {tuple(shape)}, "
                         f"not a scalar")
    if isinstance(x, (complex, np.complexfloating)):
        raise TypeError(f"Vector over {coords!r}: the value at coordinate "
                        f"{coords.coord_at(i)!r} is complex ({x!r}); vectors are real")
    raise TypeError(f"Vector over {coords!r}: the value at coordinate {coords.coord_at(i)!r} "
                    f"is a {type(x).__name__} ({x!r}), not a number")


def _pack(items: List[Any], coords: CoordinateSet) -> np.ndarray:
    """A flat float64 array if every item is plain, else an object array."""
    checked = [_check_element(x, coords, i) for i, x in enumerate(items)]
    if all(type(x) is float for x in checked):
        return np.array(checked, dtype=np.float64).reshape(len(checked))
    out = np.empty(len(checked), dtype=object)
    for i, x in enumerate(checked):
        out[i] = x
    return out


def _nested_leaves(values: Any) -> Tuple[List[Any], Tuple[int, ...]]:
    """Flatten nested lists/tuples (row-major) and report their regular shape."""
    if isinstance(values, (list, tuple)):
        if len(values) == 0:
            return [], (0,)
        parts = [_nested_leaves(v) for v in values]
        inner = parts[0][1]
        if any(p[1] != inner for p in parts):
            raise ValueError("Vector: the nested sequences of values are ragged")
        return [x for p in parts for x in p[0]], (len(values),) + inner
    return [values], ()


def _size_error(coords: CoordinateSet, got: Any) -> ValueError:
    return ValueError(f"Vector over {coords!r} needs {coords.size} values (shape "
                      f"{coords.shape}), got {got}")


def _as_data(coords: CoordinateSet, values: Any) -> Any:
    n = coords.size
    if isinstance(values, Vector):
        if values._coords != coords:
            raise CoordinateError(f"a Vector over {values._coords!r} cannot be a Vector "
                                  f"over {coords!r}")
        d = values._data
        return d.copy() if isinstance(d, np.ndarray) else d
    if isinstance(values, Mapping):
        items = []
        for c in coords:
            try:
                items.append(values[c])
            except KeyError:
                raise CoordinateError(f"Vector over {coords!r}: no value for coordinate "
                                      f"{c!r}") from None
        if len(values) != n:
            for key in values:
                coords.index(key)  # raises CoordinateError naming the stray key
        return _pack(items, coords)
    if isinstance(values, np.ndarray):
        if values.dtype.kind == "c":
            raise TypeError(f"Vector over {coords!r}: complex values are not supported")
        if values.shape not in (coords.shape, (n,)):
            raise _size_error(coords, f"an array of shape {values.shape}")
        if values.dtype.kind in "biuf":
            return np.array(values, dtype=np.float64).reshape(n)
        if values.dtype.kind == "O":
            return _pack(list(values.reshape(n)), coords)
        raise TypeError(f"Vector over {coords!r}: an array of dtype {values.dtype} "
                        f"does not hold numbers")
    if _is_active_array(values):
        shape = tuple(values.shape)
        if shape == (n,):
            return values
        if shape == coords.shape:
            from .array_ops import reshape

            return reshape(values, (n,))
        raise _size_error(coords, f"an array of shape {shape}")
    if isinstance(values, (str, bytes)):
        raise TypeError(f"Vector over {coords!r}: values must be numbers, not a "
                        f"{type(values).__name__}")
    if _is_scalar(values) or isinstance(values, complex):
        if coords.shape == ():  # V(SCALAR) is the scalars
            return _pack([values], coords)
        raise _size_error(coords, "a single number")
    if isinstance(values, (list, tuple)):
        leaves, shape = _nested_leaves(values)
        if shape not in (coords.shape, (n,)) and not (n == 0 and leaves == []):
            raise _size_error(coords, len(leaves) if len(shape) == 1 else
                              f"nested sequences of shape {shape}")
        return _pack(leaves, coords)
    if isinstance(values, Sequence) or hasattr(values, "__iter__"):
        items = list(values)
        if len(items) != n:
            raise _size_error(coords, len(items))
        return _pack(items, coords)
    raise TypeError(f"Vector over {coords!r}: cannot take values from a "
                    f"{type(values).__name__}")


def _scalar_box(x: Any) -> np.ndarray:
    """A 0-d object array holding x (numpy must not look inside adcore values)."""
    box = np.empty((), dtype=object)
    box[()] = x
    return box


def _to_objects(d: Any, n: int) -> np.ndarray:
    if isinstance(d, np.ndarray) and d.dtype == object:
        return d
    out = np.empty(n, dtype=object)
    if isinstance(d, np.ndarray):
        out[:] = [float(x) for x in d]
    else:
        for i in range(n):
            out[i] = d[i]
    return out


_frompyfunc_cache: Dict[Tuple[int, int], Any] = {}


def _object_kernel(op: int, arity: int) -> Any:
    key = (op, arity)
    fn = _frompyfunc_cache.get(key)
    if fn is None:
        apply = dispatch.apply
        fn = np.frompyfunc(lambda *xs: apply(op, xs), arity, 1)
        _frompyfunc_cache[key] = fn
    return fn


def _combine(op: int, args: Sequence[Any], n: int) -> Any:
    """Apply rule ``op`` to flat buffers of length n and scalars, element-wise."""
    plain = all(isinstance(a, (float, int)) or
                (isinstance(a, np.ndarray) and a.dtype == np.float64) for a in args)
    if plain:
        fast = _NUMPY_FAST.get(op)
        if fast is not None:
            with np.errstate(all="ignore"):  # IEEE: inf and nan, never an exception
                return np.asarray(fast(*args), dtype=np.float64)
        out = dispatch.apply(op, [np.full(n, float(a)) if isinstance(a, (float, int))
                                  else a for a in args])
        return np.asarray(out, dtype=np.float64).reshape(n)
    if any(isinstance(a, np.ndarray) and a.dtype == object for a in args):
        boxed = []
        for a in args:
            if isinstance(a, np.ndarray) and a.ndim == 1:
                boxed.append(_to_objects(a, n) if a.dtype != np.float64 else a)
            elif _is_active_array(a):
                boxed.append(_to_objects(a, n))
            else:
                boxed.append(_scalar_box(a))
        out = np.asarray(_object_kernel(op, len(args))(*boxed), dtype=object).reshape(n)
        if not any(_is_active(x) for x in out):  # e.g. comparisons: back to the fast case
            return np.array(out, dtype=np.float64)
        return out
    # adcore array values (with plain arrays and scalars): whole-array kernels
    return dispatch.apply(op, list(args))


def _plain_scalar(x: Any) -> Any:
    """A broadcast scalar as stored: float for plain numbers, else the value."""
    if _is_active(x):
        return x
    return float(x)


class Vector:
    """An element of V(C): one real (or adcore) value per coordinate of C."""

    __slots__ = ("_coords", "_data")
    _ad_tag = VECTOR_TAG
    _ad_rank = 0
    # numpy: let Vector's operators and __array_ufunc__ decide, never broadcast into it
    __array_priority__ = 1000

    def __init__(self, coords: CoordinateSet, values: Any) -> None:
        if not isinstance(coords, CoordinateSet):
            raise TypeError(f"Vector: {coords!r} is not a coordinate set (use adcore.Range, "
                            f"adcore.Named, adcore.Product or adcore.SCALAR)")
        self._coords = coords
        self._data = _as_data(coords, values)

    @classmethod
    def _wrap(cls, coords: CoordinateSet, data: Any) -> "Vector":
        v = cls.__new__(cls)
        v._coords = coords
        v._data = data
        return v

    # ---------------------------------------------------------- structure
    @property
    def coords(self) -> CoordinateSet:
        """The coordinate set C of this vector's space V(C)."""
        return self._coords

    @property
    def size(self) -> int:
        return self._coords.size

    @property
    def shape(self) -> Tuple[int, ...]:
        return self._coords.shape

    @property
    def values(self) -> Any:
        """The values as one flat array in canonical order: float64 when plain, else
        an adcore array value (a vector of adcore scalars is stacked into one), so
        array operations apply to it."""
        d = self._data
        if isinstance(d, np.ndarray) and d.dtype == object:
            from .array_ops import stack

            return stack(list(d)) if len(d) else np.zeros(0)
        return d

    @property
    def is_plain(self) -> bool:
        """Whether every value is a plain float (the buffer is float64)."""
        d = self._data
        return isinstance(d, np.ndarray) and d.dtype == np.float64

    def __len__(self) -> int:
        return self._coords.size

    def __getitem__(self, coord: Any) -> Any:
        i = self._coords.index(coord)
        d = self._data
        if isinstance(d, np.ndarray):
            x = d[i]
            return float(x) if d.dtype == np.float64 else x
        return d[i]

    def __iter__(self) -> Iterator[Any]:
        """The values, in canonical order (``items()`` pairs them with coordinates)."""
        for i in range(self._coords.size):
            yield self._at(i)

    def _at(self, i: int) -> Any:
        d = self._data
        if isinstance(d, np.ndarray) and d.dtype == np.float64:
            return float(d[i])
        return d[i]

    def items(self) -> Iterator[Tuple[Any, Any]]:
        """(coordinate, value) pairs in canonical order."""
        for i, c in enumerate(self._coords):
            yield c, self._at(i)

    def to_dict(self) -> Dict[Any, Any]:
        return dict(self.items())

    def elements(self) -> List[Any]:
        """The values as a list, in canonical order."""
        return list(self)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        d = self._data
        if not isinstance(d, np.ndarray):
            d = _to_objects(d, self.size)
        out: np.ndarray = d.reshape(self._coords.shape)
        if dtype is not None:
            out = out.astype(dtype)
        return out.copy() if copy else out

    # ---------------------------------------------------------- element-wise
    def _operand(self, other: Any) -> Any:
        """The buffer or broadcast scalar of an operand, or None if not combinable."""
        if isinstance(other, Vector):
            if other._coords != self._coords:
                raise CoordinateError(f"cannot combine a Vector over {self._coords!r} with "
                                      f"a Vector over {other._coords!r}")
            return other._data
        if _is_scalar(other):
            return _plain_scalar(other)
        return None

    def _binary(self, op: int, other: Any, reflected: bool = False) -> "Vector":
        o = self._operand(other)
        if o is None:
            return NotImplemented  # type: ignore[no-any-return]
        args = (o, self._data) if reflected else (self._data, o)
        return Vector._wrap(self._coords, _combine(op, args, self.size))

    def __add__(self, other: Any) -> "Vector": return self._binary(_OP_ADD, other)
    def __radd__(self, other: Any) -> "Vector": return self._binary(_OP_ADD, other, True)
    def __sub__(self, other: Any) -> "Vector": return self._binary(_OP_SUB, other)
    def __rsub__(self, other: Any) -> "Vector": return self._binary(_OP_SUB, other, True)
    def __mul__(self, other: Any) -> "Vector": return self._binary(_OP_MUL, other)
    def __rmul__(self, other: Any) -> "Vector": return self._binary(_OP_MUL, other, True)
    def __truediv__(self, other: Any) -> "Vector": return self._binary(_OP_DIV, other)
    def __rtruediv__(self, other: Any) -> "Vector": return self._binary(_OP_DIV, other, True)
    def __pow__(self, other: Any) -> "Vector": return self._binary(_OP_POW, other)
    def __rpow__(self, other: Any) -> "Vector": return self._binary(_OP_POW, other, True)

    def __neg__(self) -> "Vector":
        return Vector._wrap(self._coords, _combine(_OP_NEG, (self._data,), self.size))

    def __pos__(self) -> "Vector":
        return self

    def __abs__(self) -> "Vector":
        return Vector._wrap(self._coords, _combine(_OP_ABS, (self._data,), self.size))

    def apply(self, fn: Union[str, Callable[..., Any]], *others: Any) -> "Vector":
        """The element-wise extension of ``fn`` to this vector (and ``others``).

        ``fn`` is the name of a rule-table function (``"sin"``, ``"maximum"``) or
        any function of scalars built from adcore's operations; other arguments
        are vectors over the same set or scalars, broadcast.
        """
        return elementwise(fn, self, *others)

    # the dispatch protocol (ARCHITECTURE.md, "Containers"): adcore.sin(v) etc.
    @classmethod
    def _ad_apply(cls, op: int, args: Sequence[Any]) -> "Vector":
        return elementwise(_OPNAMES[op], *args)

    @classmethod
    def _ad_primitive(cls, prim: Any, args: Sequence[Any], params: Any) -> Any:
        raise TypeError(f"the array operation {prim.name!r} does not take a Vector; "
                        f"use the Vector's methods (dot, sum, norm) or numpy.asarray(v)")

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        name = _UFUNC_RULES.get(ufunc.__name__)
        if method != "__call__" or name is None or kwargs:
            return NotImplemented
        return elementwise(name, *inputs)

    # ---------------------------------------------------------- inner product
    def sum(self) -> Any:
        """The sum of the values (a float, or an adcore scalar)."""
        return _sum(self._data, self.size)

    def dot(self, other: "Vector") -> Any:
        """The inner product v . w = sum over i in C of v[i] w[i]."""
        if not isinstance(other, Vector):
            raise TypeError(f"dot: {type(other).__name__} is not a Vector")
        return (self * other).sum()

    def norm(self) -> Any:
        """The length |v| = sqrt(v . v)."""
        sq = self.dot(self)
        if type(sq) is float:
            return math.sqrt(sq)
        return dispatch.apply(_OP_SQRT, (sq,))

    # ---------------------------------------------------------- comparison, repr
    def __eq__(self, other: object) -> bool:
        """Structural equality: the same coordinate set and equal values."""
        if not isinstance(other, Vector):
            return NotImplemented
        if other._coords != self._coords:
            return False
        if self.is_plain and other.is_plain:
            return bool(np.array_equal(self._data, other._data))
        return all(bool(a == b) for a, b in zip(self, other))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        limit = 12
        items = list(zip(range(limit), self.items()))
        named = any(not _is_range(f) for f in self._coords.factors)
        more = ", ..." if self.size > limit else ""
        if named:
            body = ", ".join(f"{c!r}: {_short(x)}" for _, (c, x) in items)
            return f"Vector({self._coords!r}, {{{body}{more}}})"
        body = ", ".join(_short(x) for _, (_, x) in items)
        return f"Vector({self._coords!r}, [{body}{more}])"


def _is_range(s: CoordinateSet) -> bool:
    return type(s).__name__ == "Range"


def _short(x: Any) -> str:
    return repr(x) if not isinstance(x, float) else f"{x!r}"


def _sum(d: Any, n: int) -> Any:
    if isinstance(d, np.ndarray):
        if d.dtype == np.float64:
            return float(np.sum(d))
        total: Any = 0.0
        for x in d:
            total = total + x
        return total
    from .array_ops import sum as array_sum

    return array_sum(d)


# numpy ufuncs that are rule-table functions
_UFUNC_RULES = NUMPY_UFUNCS


def elementwise(fn: Union[str, Callable[..., Any]], *args: Any) -> Vector:
    """The element-wise extension of ``fn`` to vectors over one set and scalars.

    ``fn`` is a rule-table name (run as whole-buffer kernels) or a Python
    function of scalars (called once per coordinate).
    """
    coords = None
    for a in args:
        if isinstance(a, Vector):
            if coords is None:
                coords = a._coords
            elif a._coords != coords:
                raise CoordinateError(f"cannot combine a Vector over {coords!r} with a "
                                      f"Vector over {a._coords!r}")
    if coords is None:
        raise TypeError("elementwise: no argument is a Vector")
    n = coords.size
    if isinstance(fn, str):
        rule = BY_NAME.get(fn)
        if rule is None:
            raise ValueError(f"elementwise: {fn!r} is not a rule-table function")
        if len(args) != rule.arity:
            raise TypeError(f"{fn} takes {rule.arity} argument(s), got {len(args)}")
        buffers = []
        for a in args:
            if isinstance(a, Vector):
                buffers.append(a._data)
            elif _is_scalar(a):
                buffers.append(_plain_scalar(a))
            else:
                raise TypeError(f"{fn}: cannot combine a Vector with a {type(a).__name__}; "
                                f"wrap arrays as Vector(coords, array)")
        return Vector._wrap(coords, _combine(rule.opcode, buffers, n))
    if not callable(fn):
        raise TypeError(f"elementwise: {fn!r} is neither a rule name nor callable")
    columns = []
    for a in args:
        if isinstance(a, Vector):
            columns.append(list(a))
        elif _is_scalar(a):
            columns.append([_plain_scalar(a)] * n)
        else:
            raise TypeError(f"elementwise: cannot combine a Vector with a {type(a).__name__}")
    return Vector(coords, [fn(*xs) for xs in zip(*columns)])


def basis(coords: CoordinateSet, i: Any) -> Vector:
    """The basis vector 1_i of V(coords): 1 at coordinate i, 0 elsewhere."""
    if not isinstance(coords, CoordinateSet):
        raise TypeError(f"basis: {coords!r} is not a coordinate set")
    data = np.zeros(coords.size)
    data[coords.index(i)] = 1.0
    return Vector._wrap(coords, data)


def dot(v: Vector, w: Vector) -> Any:
    """The inner product of two vectors over the same set."""
    if not isinstance(v, Vector):
        raise TypeError(f"dot: {type(v).__name__} is not a Vector")
    return v.dot(w)


def norm(v: Vector) -> Any:
    """The length |v|."""
    if not isinstance(v, Vector):
        raise TypeError(f"norm: {type(v).__name__} is not a Vector")
    return v.norm()


def distance(v: Vector, w: Vector) -> Any:
    """d(v, w) = |v - w|."""
    if not isinstance(v, Vector) or not isinstance(w, Vector):
        raise TypeError("distance: both arguments must be Vectors")
    return (v - w).norm()


# Vectors are tree nodes for the engines (grad, vjp, jvp take and give Vectors):
# one child, the flat buffer; the coordinate set is static.
from . import trees as _trees  # noqa: E402

_trees.register_node(Vector, lambda v: ([v.values], v.coords),
                     lambda coords, children: Vector._wrap(coords, children[0]))
