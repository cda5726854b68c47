"""Linear maps as matrices: F in V(C1 x C0) for a linear f : V(C0) -> V(C1).

``Matrix(out_coords, in_coords, values)`` is indexed by (output coordinate, input
coordinate), ``F[i, j]``.  ``matrix_of(f, C0)`` builds F[i, j] = f(1_j)[i] by
applying f to the basis; then f(v) = F @ v.  ``G @ F`` is the composition,
(GF)[i, k] = sum over j in C1 of G[i, j] F[j, k], and refuses matrices whose
shared coordinate sets differ.  Jacobians are Matrices too (``adcore.jacobian``),
so the chain rule reads ``jacobian(g)(f(x)) @ jacobian(f)(x)``.

``numpy.asarray(F)`` has shape ``out_coords.shape + in_coords.shape`` (JAX's
convention for Jacobians); the buffer is kept as a 2-D (|C1|, |C0|) array.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Tuple

import numpy as np

from .coords import SCALAR, CoordinateSet, Product, from_shape
from .errors import CoordinateError
from .vectors import Vector, _is_active, _is_active_array, _is_scalar, basis

__all__ = ["Matrix", "matrix_of", "identity"]


def _as_matrix_data(out: CoordinateSet, inp: CoordinateSet, values: Any) -> np.ndarray:
    m, n = out.size, inp.size
    if isinstance(values, Matrix):
        values = values._data
    arr = np.asarray(values) if not isinstance(values, np.ndarray) else values
    if arr.dtype.kind == "c":
        raise TypeError(f"Matrix {out!r} x {inp!r}: complex values are not supported")
    if arr.dtype.kind not in "biufO":
        raise TypeError(f"Matrix {out!r} x {inp!r}: values of dtype {arr.dtype} are not numbers")
    if arr.shape not in ((m, n), out.shape + inp.shape):
        raise ValueError(f"Matrix over {out!r} x {inp!r} needs shape {(m, n)} or "
                         f"{out.shape + inp.shape}, got {arr.shape}")
    arr = arr.reshape(m, n)
    if arr.dtype.kind == "O":
        if all(not _is_active(x) for x in arr.flat):
            return np.array(arr, dtype=np.float64)
        return arr.copy()
    return np.array(arr, dtype=np.float64)


class Matrix:
    """An element F of V(C1 x C0): the matrix of a linear map V(C0) -> V(C1)."""

    __slots__ = ("_out", "_in", "_data")
    # numpy's operators defer to Matrix's (np.float64(2) * F stays a Matrix);
    # numpy.asarray(F) still works through __array__
    __array_ufunc__ = None

    def __init__(self, out_coords: CoordinateSet, in_coords: CoordinateSet, values: Any) -> None:
        for c in (out_coords, in_coords):
            if not isinstance(c, CoordinateSet):
                raise TypeError(f"Matrix: {c!r} is not a coordinate set")
        self._out = out_coords
        self._in = in_coords
        self._data = _as_matrix_data(out_coords, in_coords, values)

    @classmethod
    def _wrap(cls, out: CoordinateSet, inp: CoordinateSet, data: np.ndarray) -> "Matrix":
        F = cls.__new__(cls)
        F._out, F._in, F._data = out, inp, data
        return F

    # ------------------------------------------------------------ structure
    @property
    def out_coords(self) -> CoordinateSet:
        """C1: the coordinates of the output (rows)."""
        return self._out

    @property
    def in_coords(self) -> CoordinateSet:
        """C0: the coordinates of the input (columns)."""
        return self._in

    @property
    def coords(self) -> CoordinateSet:
        """C1 x C0, the coordinate set of F as a vector."""
        return Product(self._out, self._in)

    @property
    def shape(self) -> Tuple[int, ...]:
        return self._out.shape + self._in.shape

    @property
    def values(self) -> np.ndarray:
        """The (|C1|, |C0|) buffer, rows and columns in canonical order."""
        return self._data

    @property
    def T(self) -> "Matrix":
        """The transpose, in V(C0 x C1)."""
        return Matrix._wrap(self._in, self._out, self._data.T)

    def as_vector(self) -> Vector:
        """F as the vector of V(C1 x C0) it is."""
        return Vector(self.coords, self._data.reshape(-1))

    def _split(self, key: Any) -> Tuple[int, int]:
        if (type(key) is tuple and len(key) == 2 and key[0] in self._out
                and key[1] in self._in):
            return self._out.index(key[0]), self._in.index(key[1])
        p, q = len(self._out.factors), len(self._in.factors)
        # a gradient (SCALAR rows) by input coordinate; a derivative (SCALAR columns) by output
        if p == 0 and key in self._in:
            return 0, self._in.index(key)
        if q == 0 and key in self._out:
            return self._out.index(key), 0
        # numpy-style: the factors' coordinates in one flat tuple, as in asarray(F)
        flat = key if type(key) is tuple else (key,)
        if len(flat) == p + q and (p, q) != (1, 1):
            i = flat[0] if p == 1 else tuple(flat[:p])
            j = flat[p] if q == 1 else tuple(flat[p:])
            return self._out.index(i), self._in.index(j)
        if type(key) is tuple and len(key) == 2:
            return self._out.index(key[0]), self._in.index(key[1])  # names the bad one
        raise CoordinateError(f"index a Matrix over {self._out!r} x {self._in!r} by "
                              f"(output coordinate, input coordinate), got {key!r}")

    def __getitem__(self, key: Any) -> Any:
        i, j = self._split(key)
        x = self._data[i, j]
        return float(x) if self._data.dtype == np.float64 else x

    def row(self, i: Any) -> Vector:
        """F[i, .] as a vector over C0."""
        return Vector(self._in, self._data[self._out.index(i)])

    def column(self, j: Any) -> Vector:
        """F[., j] = f(1_j) as a vector over C1."""
        return Vector(self._out, self._data[:, self._in.index(j)])

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self._data.reshape(self.shape)
        if dtype is not None:
            out = out.astype(dtype)
        return out.copy() if copy else out

    # ------------------------------------------------------------ algebra
    def __matmul__(self, other: Any) -> Any:
        if isinstance(other, Matrix):
            if other._out != self._in:
                raise CoordinateError(
                    f"cannot compose: the left matrix takes {self._in!r} but the right "
                    f"one gives {other._out!r}")
            return Matrix._wrap(self._out, other._in, _matmul(self._data, other._data))
        if isinstance(other, Vector):
            if other.coords != self._in:
                raise CoordinateError(f"cannot apply a Matrix over {self._out!r} x "
                                      f"{self._in!r} to a Vector over {other.coords!r}")
            d = other._data
            if _is_active_array(d):
                from .array_ops import matmul

                return Vector._wrap(self._out, matmul(self._data, d))
            return Vector._wrap(self._out, _matmul(self._data, d))
        if isinstance(other, np.ndarray):
            raise TypeError("a Matrix applies to a Vector or composes with a Matrix; wrap "
                            "the array as Vector(F.in_coords, array)")
        return NotImplemented

    def __call__(self, v: Vector) -> Vector:
        """The linear function f(v) = F v."""
        if not isinstance(v, Vector):
            raise TypeError(f"a Matrix applies to a Vector, not a {type(v).__name__}")
        out: Vector = self @ v
        return out

    def _same(self, other: "Matrix") -> None:
        if other._out != self._out or other._in != self._in:
            raise CoordinateError(f"cannot combine a Matrix over {self._out!r} x {self._in!r} "
                                  f"with one over {other._out!r} x {other._in!r}")

    def __add__(self, other: Any) -> Any:
        if not isinstance(other, Matrix):
            return NotImplemented
        self._same(other)
        return Matrix._wrap(self._out, self._in, self._data + other._data)

    def __sub__(self, other: Any) -> Any:
        if not isinstance(other, Matrix):
            return NotImplemented
        self._same(other)
        return Matrix._wrap(self._out, self._in, self._data - other._data)

    def __mul__(self, s: Any) -> Any:
        if not _is_scalar(s) or isinstance(s, np.ndarray):
            return NotImplemented
        return Matrix._wrap(self._out, self._in, _scale(self._data, s))

    __rmul__ = __mul__

    def __truediv__(self, s: Any) -> Any:
        if not _is_scalar(s) or isinstance(s, np.ndarray):
            return NotImplemented
        return Matrix._wrap(self._out, self._in, _scale(self._data, 1.0 / s))

    def __neg__(self) -> "Matrix":
        return Matrix._wrap(self._out, self._in, -self._data)

    def __eq__(self, other: object) -> bool:
        """Structural equality: the same coordinate sets and equal entries."""
        if not isinstance(other, Matrix):
            return NotImplemented
        return (self._out == other._out and self._in == other._in
                and bool(np.all(self._data == other._data)))

    __hash__ = None  # type: ignore[assignment]

    def allclose(self, other: "Matrix", rtol: float = 1e-9, atol: float = 1e-12) -> bool:
        """Same coordinate sets and entries equal within the tolerances."""
        if not isinstance(other, Matrix):
            raise TypeError(f"allclose: {type(other).__name__} is not a Matrix")
        self._same(other)
        return bool(np.allclose(self._data, other._data, rtol=rtol, atol=atol))

    def __repr__(self) -> str:
        m, n = self._data.shape
        if m * n <= 64:
            body = repr(self._data.tolist())
        else:
            body = f"<{m} x {n} values>"
        return f"Matrix({self._out!r}, {self._in!r}, {body})"


def _matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.dtype == np.float64 and b.dtype == np.float64:
        out: np.ndarray = a @ b
        return out
    # adcore values inside: numpy's object matmul uses their * and +
    out = np.dot(a.astype(object), b.astype(object))
    return out


def _scale(data: np.ndarray, s: Any) -> np.ndarray:
    if data.dtype == np.float64 and not _is_active(s):
        return data * float(s)
    out = np.empty(data.shape, dtype=object)
    for idx, x in np.ndenumerate(data):
        out[idx] = x * s
    return out


def identity(coords: CoordinateSet) -> Matrix:
    """The identity map of V(coords) as a Matrix."""
    if not isinstance(coords, CoordinateSet):
        raise TypeError(f"identity: {coords!r} is not a coordinate set")
    return Matrix._wrap(coords, coords, np.eye(coords.size))


def _as_output(y: Any) -> Vector:
    """f's result as a Vector: numbers are V(SCALAR), arrays V(their shape)."""
    if isinstance(y, Vector):
        return y
    if _is_scalar(y) and not isinstance(y, np.ndarray):
        return Vector(SCALAR, [y])
    if isinstance(y, np.ndarray):
        return Vector(from_shape(y.shape), y)
    raise TypeError(f"matrix_of: f returned a {type(y).__name__}; it must return a Vector "
                    f"(or a number, or a numpy array)")


def matrix_of(f: Callable[[Vector], Any], in_coords: CoordinateSet,
              rng: Optional[np.random.Generator] = None, rtol: float = 1e-9) -> Matrix:
    """The matrix F of a linear ``f : V(in_coords) -> V(C1)``: F[i, j] = f(1_j)[i].

    Linearity is checked on a random combination, f(s0 x0 + s1 x1) against
    s0 f(x0) + s1 f(x1) (relative tolerance ``rtol``): a function that fails
    raises ValueError, as its "matrix" would describe some other function.
    """
    if not isinstance(in_coords, CoordinateSet):
        raise TypeError(f"matrix_of: {in_coords!r} is not a coordinate set")
    if not callable(f):
        raise TypeError(f"matrix_of: {f!r} is not callable")
    columns = []
    out_coords = None
    for j in in_coords:
        y = _as_output(f(basis(in_coords, j)))
        if out_coords is None:
            out_coords = y.coords
        elif y.coords != out_coords:
            raise CoordinateError(f"matrix_of: f gives a Vector over {out_coords!r} for one "
                                  f"basis vector and over {y.coords!r} for another")
        columns.append(np.asarray(y.values, dtype=np.float64) if y.is_plain else
                       _plain_or_fail(y))
    if out_coords is None:  # an empty C0: f's output set comes from f(0)
        out_coords = _as_output(f(Vector(in_coords, np.zeros(0)))).coords
        data = np.zeros((out_coords.size, 0))
    else:
        data = np.stack(columns, axis=1)
    F = Matrix._wrap(out_coords, in_coords, data)
    _check_linear(f, F, rng if rng is not None else np.random.default_rng(), rtol)
    return F


def _plain_or_fail(y: Vector) -> np.ndarray:
    raise TypeError(f"matrix_of: f returned a Vector over {y.coords!r} holding adcore values; "
                    f"matrix_of needs plain numbers (differentiate with adcore.jacobian)")


def _check_linear(f: Callable[[Vector], Any], F: Matrix, rng: np.random.Generator,
                  rtol: float) -> None:
    n = F.in_coords.size
    x0 = Vector(F.in_coords, rng.standard_normal(n))
    x1 = Vector(F.in_coords, rng.standard_normal(n))
    s0, s1 = rng.uniform(0.5, 2.0) * rng.choice([-1.0, 1.0]), rng.uniform(0.5, 2.0)
    lhs = _as_output(f(s0 * x0 + s1 * x1))
    y0, y1 = _as_output(f(x0)), _as_output(f(x1))
    for y in (lhs, y0, y1):
        if y.coords != F.out_coords:
            raise CoordinateError(f"matrix_of: f gives Vectors over {F.out_coords!r} and "
                                  f"over {y.coords!r}")
        if not y.is_plain:
            _plain_or_fail(y)
    a, b0, b1 = lhs.values, y0.values, y1.values
    rhs = s0 * b0 + s1 * b1
    # also against the matrix itself: f(x) = F x on the combination
    via_F = F.values @ (s0 * x0.values + s1 * x1.values)
    scale = np.abs(s0 * b0) + np.abs(s1 * b1) + np.abs(a) + np.abs(via_F)
    with np.errstate(invalid="ignore"):
        bad = ~((np.abs(a - rhs) <= rtol * scale + 1e-300)
                & (np.abs(a - via_F) <= rtol * scale + 1e-300))
    if n and np.any(bad):
        i = int(np.argmax(bad))
        raise ValueError(
            f"matrix_of: f is not linear: at coordinate {F.out_coords.coord_at(i)!r}, "
            f"f(s0 x0 + s1 x1) = {float(a[i])!r} but s0 f(x0) + s1 f(x1) = {float(rhs[i])!r} "
            f"(random x0, x1 over {F.in_coords!r}, s0 = {s0:.3g}, s1 = {s1:.3g})")
