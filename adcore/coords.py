"""Coordinate sets: the sets C that index vectors, V(C) = {v : C -> R}.

* ``Range(n)``: the von Neumann integer n = {0, 1, ..., n-1}.
* ``Named(*labels)``: any finite set of distinct hashable labels, e.g. {x, y}.
* ``Product(*sets)`` or ``C0 * C1``: the Cartesian product; its coordinates are
  tuples.  A numpy shape (2, 3, 5) is ``Range(2) * Range(3) * Range(5)``.
* ``SCALAR``: the empty product.  It has exactly one coordinate, the empty tuple
  ``()``, so V(SCALAR) is one-dimensional: the scalars (numpy's shape ``()``).

Products are flattened (``(A * B) * C`` is ``A * B * C``) and the empty product is
their unit (``SCALAR * A`` is ``A``), so a product with one factor is that factor.

Every set has a canonical order -- the order of iteration, and the order of the
flat buffer of a vector over it.  For products it is row-major (numpy's C order).
``index(coord)`` and ``coord_at(i)`` convert between a coordinate and its place
in that order.  The order is part of a set's identity: ``Named("x", "y")`` and
``Named("y", "x")`` are different sets, as their vectors are laid out differently.
"""

from __future__ import annotations

import operator
from typing import Any, Dict, Hashable, Iterator, List, Tuple

from .errors import CoordinateError

__all__ = ["CoordinateSet", "Range", "Named", "Product", "SCALAR", "from_shape"]

_REPR_LIMIT = 8  # labels shown in a repr before eliding


class CoordinateSet:
    """A finite set of coordinates in a canonical order (abstract base)."""

    __slots__ = ()

    @property
    def size(self) -> int:
        """The number of coordinates."""
        raise NotImplementedError

    @property
    def shape(self) -> Tuple[int, ...]:
        """The numpy shape of a vector over this set."""
        raise NotImplementedError

    @property
    def factors(self) -> Tuple["CoordinateSet", ...]:
        """The sets whose product this is (a single non-product set: itself)."""
        return (self,)

    def index(self, coord: Any) -> int:
        """The place of ``coord`` in the canonical order."""
        raise NotImplementedError

    def coord_at(self, i: int) -> Any:
        """The coordinate at flat position ``i`` (negative counts from the end)."""
        raise NotImplementedError

    def _check_flat(self, i: Any) -> int:
        try:
            k = operator.index(i)
        except TypeError:
            raise TypeError(f"a flat index must be an integer, not {type(i).__name__}") from None
        n = self.size
        if k < 0:
            k += n
        if not 0 <= k < n:
            raise IndexError(f"flat index {i} is out of range for {self!r} of size {n}")
        return k

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[Any]:
        for i in range(self.size):
            yield self.coord_at(i)

    def __contains__(self, coord: Any) -> bool:
        try:
            self.index(coord)
        except (CoordinateError, TypeError):
            return False
        return True

    def __mul__(self, other: Any) -> "CoordinateSet":
        if not isinstance(other, CoordinateSet):
            return NotImplemented
        return Product(self, other)

    def _unknown(self, coord: Any) -> CoordinateError:
        return CoordinateError(f"coordinate {coord!r} is not in {self!r}")


def _as_size(n: Any) -> int:
    if isinstance(n, bool):
        raise TypeError("Range(n) needs an integer n, not a bool")
    try:
        k = operator.index(n)
    except TypeError:
        raise TypeError(f"Range(n) needs an integer n, not {type(n).__name__}") from None
    if k < 0:
        raise ValueError(f"Range(n) needs n >= 0, not {k}")
    return k


class Range(CoordinateSet):
    """The von Neumann integer n = {0, 1, ..., n-1} as a coordinate set."""

    __slots__ = ("_n",)

    def __init__(self, n: int) -> None:
        self._n = _as_size(n)

    @property
    def n(self) -> int:
        return self._n

    @property
    def size(self) -> int:
        return self._n

    @property
    def shape(self) -> Tuple[int, ...]:
        return (self._n,)

    def index(self, coord: Any) -> int:
        # bools and floats are not coordinates of a Range, even when 1.0 == 1
        if isinstance(coord, bool) or not hasattr(coord, "__index__"):
            raise self._unknown(coord)
        k = operator.index(coord)
        if not 0 <= k < self._n:
            raise self._unknown(coord)
        return k

    def coord_at(self, i: int) -> int:
        return self._check_flat(i)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self._n))

    def __eq__(self, other: object) -> bool:
        return type(other) is Range and other._n == self._n

    def __hash__(self) -> int:
        return hash(("Range", self._n))

    def __repr__(self) -> str:
        return f"Range({self._n})"


class Named(CoordinateSet):
    """A coordinate set of distinct hashable labels, in the order given."""

    __slots__ = ("_labels", "_where")

    def __init__(self, *labels: Hashable) -> None:
        where: Dict[Any, int] = {}
        for i, label in enumerate(labels):
            try:
                hash(label)
            except TypeError:
                raise TypeError(f"Named: label {label!r} is not hashable") from None
            if label in where:
                raise ValueError(f"Named: the label {label!r} appears twice")
            where[label] = i
        self._labels: Tuple[Hashable, ...] = tuple(labels)
        self._where = where

    @property
    def labels(self) -> Tuple[Hashable, ...]:
        return self._labels

    @property
    def size(self) -> int:
        return len(self._labels)

    @property
    def shape(self) -> Tuple[int, ...]:
        return (len(self._labels),)

    def index(self, coord: Any) -> int:
        try:
            return self._where[coord]
        except (KeyError, TypeError):
            raise self._unknown(coord) from None

    def coord_at(self, i: int) -> Hashable:
        return self._labels[self._check_flat(i)]

    def __iter__(self) -> Iterator[Hashable]:
        return iter(self._labels)

    def __eq__(self, other: object) -> bool:
        return type(other) is Named and other._labels == self._labels

    def __hash__(self) -> int:
        return hash(("Named", self._labels))

    def __repr__(self) -> str:
        shown = ", ".join(map(repr, self._labels[:_REPR_LIMIT]))
        if len(self._labels) > _REPR_LIMIT:
            shown += f", ... ({len(self._labels)} labels)"
        return f"Named({shown})"


class Product(CoordinateSet):
    """The Cartesian product of coordinate sets; coordinates are tuples.

    ``Product()`` is ``SCALAR``; ``Product(A)`` is ``A``; nested products are
    flattened, so the factors are never products themselves.
    """

    __slots__ = ("_factors", "_shape", "_size", "_strides")
    _factors: Tuple[CoordinateSet, ...]
    _shape: Tuple[int, ...]
    _size: int
    _strides: Tuple[int, ...]

    def __new__(cls, *sets: CoordinateSet) -> "CoordinateSet":  # type: ignore[misc]
        factors: List[CoordinateSet] = []
        for s in sets:
            if not isinstance(s, CoordinateSet):
                raise TypeError(f"Product: {s!r} is not a coordinate set")
            factors.extend(s.factors)
        if len(factors) == 1:
            return factors[0]
        self: Product = super().__new__(cls)
        self._factors = tuple(factors)
        self._shape = tuple(n for f in factors for n in f.shape)
        sizes = [f.size for f in factors]
        strides = [1] * len(sizes)
        for i in range(len(sizes) - 2, -1, -1):
            strides[i] = strides[i + 1] * sizes[i + 1]
        self._strides = tuple(strides)
        total = 1
        for n in sizes:
            total *= n
        self._size = total
        return self

    def __init__(self, *sets: CoordinateSet) -> None:
        pass  # all done in __new__ (which may return a factor instead)

    def __getnewargs__(self) -> Tuple[CoordinateSet, ...]:
        return self._factors

    @property
    def factors(self) -> Tuple[CoordinateSet, ...]:
        return self._factors

    @property
    def size(self) -> int:
        return self._size

    @property
    def shape(self) -> Tuple[int, ...]:
        return self._shape

    def index(self, coord: Any) -> int:
        if type(coord) is not tuple or len(coord) != len(self._factors):
            raise CoordinateError(
                f"coordinate {coord!r} is not in {self!r}: its coordinates are tuples "
                f"of {len(self._factors)}")
        flat = 0
        for f, c, stride in zip(self._factors, coord, self._strides):
            try:
                flat += f.index(c) * stride
            except CoordinateError:
                raise CoordinateError(f"coordinate {coord!r} is not in {self!r}: "
                                      f"{c!r} is not in {f!r}") from None
        return flat

    def coord_at(self, i: int) -> Tuple[Any, ...]:
        k = self._check_flat(i)
        out = []
        for f, stride in zip(self._factors, self._strides):
            q, k = divmod(k, stride)
            out.append(f.coord_at(q))
        return tuple(out)

    def __iter__(self) -> Iterator[Tuple[Any, ...]]:
        if not self._factors:
            yield ()
            return
        # row-major: the last factor varies fastest
        import itertools

        yield from itertools.product(*self._factors)

    def __eq__(self, other: object) -> bool:
        return type(other) is Product and other._factors == self._factors

    def __hash__(self) -> int:
        return hash(("Product", self._factors))

    def __repr__(self) -> str:
        if not self._factors:
            return "SCALAR"
        return " * ".join(map(repr, self._factors))


#: the empty product: one coordinate, ``()``; V(SCALAR) is the scalars
SCALAR: CoordinateSet = Product()


def from_shape(shape: Any) -> CoordinateSet:
    """The coordinate set of a numpy shape: a product of ranges (``()`` is SCALAR)."""
    if isinstance(shape, int) and not isinstance(shape, bool):
        shape = (shape,)
    shape = tuple(shape)
    found = _shape_sets.get(shape)
    if found is None:
        found = Product(*(Range(n) for n in shape))
        if len(_shape_sets) < 1024:  # sets are immutable: share them
            _shape_sets[shape] = found
    return found


_shape_sets: Dict[Tuple[Any, ...], CoordinateSet] = {}
