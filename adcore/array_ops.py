"""The core array primitives: indexing, reductions, reshaping, matmul, joining.

Each operation is one :class:`~adcore.primitives.Primitive` whose value, forward
rule (jvp) and reverse rule (vjp) are written once with numpy; every mode of
differentiation uses those three functions (see ``adcore/primitives.py``).

Conventions:

* tangents carry a leading axis of k directions: ``dx.shape == (k,) + x.shape``;
* cotangents have the shape of the value they belong to, are fresh writable
  arrays, and keep the dtype of the incoming cotangent (float32 stays float32);
* ``amax`` splits the gradient evenly among tied maxima (a NaN maximum sends it
  to the NaN entries), as PyTorch does;
* ``broadcast_to``'s reverse rule sums over the broadcast axes: the tape inserts
  it so that reverse mode stays correct under numpy broadcasting.
"""

from __future__ import annotations

import builtins
import operator
from typing import Any, Optional, Sequence, Tuple

import numpy as np

from .primitives import Primitive
from ._tape import TapeArray, rows_scaled

__all__ = ["getitem", "sum", "mean", "amax", "max", "reshape", "transpose",
           "broadcast_to", "matmul", "concatenate", "stack", "sum_to_shape", "cotangent",
           "normalize_index"]


# ---------------------------------------------------------------- helpers

# numpy 2 moved AxisError (a ValueError and IndexError) to numpy.exceptions
_AxisError = getattr(getattr(np, "exceptions", np), "AxisError", ValueError)

def _shape(x: Any) -> Tuple[int, ...]:
    shape = getattr(x, "shape", None)  # active values (Dual arrays, tape arrays) have one too
    return tuple(shape) if shape is not None else tuple(np.shape(x))


def _ndim(x: Any) -> int:
    return len(_shape(x))


def _primal(x: Any) -> Any:
    """The plain value under any number of active layers."""
    while getattr(x, "_ad_tag", None) is not None:
        x = x.value
    return x


def _axes(axis: Any, ndim: int, name: str) -> Tuple[int, ...]:
    """``axis`` (None, int or tuple of ints) as a sorted tuple of non-negative axes."""
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, (tuple, list)):
        raw = tuple(axis)
    else:
        raw = (axis,)
    out = []
    for a in raw:
        try:
            a = operator.index(a)
        except TypeError:
            raise TypeError(f"{name}: axis must be an int or a tuple of ints, got {a!r}") from None
        if not -ndim <= a < ndim:
            raise _AxisError(f"{name}: axis {a} is out of bounds for an array of dimension {ndim}")
        a %= ndim if ndim else 1
        if a in out:
            raise ValueError(f"{name}: axis {a} is repeated in {axis!r}")
        out.append(a)
    return tuple(sorted(out))


def _fresh(a: Any, dtype: Any = None) -> np.ndarray:
    """A writable array owning its memory (cotangents may be accumulated in place)."""
    return np.array(a, dtype=dtype, copy=True)


def sum_to_shape(g: Any, shape: Sequence[int]) -> np.ndarray:
    """Sum ``g`` over the axes numpy broadcasting added to ``shape``: the adjoint of
    broadcasting ``shape`` to ``g.shape``."""
    g = np.asarray(g)
    shape = tuple(shape)
    if g.shape == shape:
        return g
    lead = g.ndim - len(shape)
    if lead < 0:
        raise ValueError(f"sum_to_shape: cannot sum an array of shape {g.shape} "
                         f"to the larger shape {shape}")
    axes = tuple(range(lead)) + tuple(
        lead + i for i, n in enumerate(shape) if n == 1 and g.shape[lead + i] != 1)
    for i, n in enumerate(shape):
        if n != 1 and g.shape[lead + i] != n:
            raise ValueError(f"sum_to_shape: shape {g.shape} is not a broadcast of {shape}")
    out = g.sum(axis=axes, keepdims=True) if axes else g
    return out.reshape(shape)


def _rows_sum_to(g: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """sum_to_shape for a stack of cotangents: g is (B,) + a broadcast of shape."""
    shape = tuple(shape)
    body = g.shape[1:]
    if body == shape:
        return g
    lead = len(body) - len(shape)
    if lead < 0:
        raise ValueError(f"sum_to_shape: cannot sum rows of shape {body} to the larger "
                         f"shape {shape}")
    axes = tuple(range(1, 1 + lead)) + tuple(
        1 + lead + i for i, n in enumerate(shape) if n == 1 and body[lead + i] != 1)
    out = g.sum(axis=axes, keepdims=True) if axes else g
    return out.reshape((g.shape[0],) + shape)


def cotangent(g: Any, out: Any) -> Any:
    """The cotangent ``g`` in the dtype of the value it belongs to: a float32 output
    gets float32 cotangents (float64 ones would send BLAS down a slow mixed path)."""
    if out is not None and getattr(g, "dtype", None) == np.float64 \
            and getattr(out, "dtype", None) == np.float32:
        return np.asarray(g, dtype=np.float32)
    return g


def _zeros_tangent(k: int, x: Any, dtype: Any) -> np.ndarray:
    return np.zeros((k,) + _shape(x), dtype=dtype)


def _k_and_dtype(dxs: Sequence[Any]) -> Tuple[int, Any]:
    for d in dxs:
        if d is not None:
            return _shape(d)[0], np.asarray(_primal(d)).dtype
    raise ValueError("jvp called without any tangent")


# ---------------------------------------------------------------- indexing

def normalize_index(index: Any) -> Tuple[Any, ...]:
    """An index as a tuple of ints, slices, None, Ellipsis and integer arrays.

    Lists become integer arrays, boolean masks become the integer arrays of their
    ``nonzero()`` (numpy's own meaning of a mask), so a recorded index never
    depends on Python objects that could change later.
    """
    if not isinstance(index, tuple):
        index = (index,)
    out = []
    for item in index:
        if item is None or item is Ellipsis or isinstance(item, slice):
            out.append(item)
            continue
        if isinstance(item, (bool, np.bool_)):
            raise TypeError("getitem: a lone boolean is not a supported index")
        if isinstance(item, (int, np.integer)):
            out.append(int(item))
            continue
        if getattr(item, "_ad_tag", None) is not None:
            raise TypeError("getitem: an index cannot be a differentiated value; "
                            "pass integers or integer arrays")
        arr = np.asarray(item)
        if arr.dtype == np.bool_:
            out.extend(np.nonzero(arr))
        elif np.issubdtype(arr.dtype, np.integer):
            out.append(arr.astype(np.intp, copy=True))
        elif arr.size == 0:
            out.append(arr.astype(np.intp))  # x[[]]: numpy reads an empty list as integers
        else:
            raise IndexError(f"getitem: only integers, slices, None, Ellipsis and integer "
                             f"or boolean arrays are valid indices, got {item!r}")
    return tuple(out)


def _is_basic(index: Tuple[Any, ...]) -> bool:
    return not any(isinstance(i, np.ndarray) for i in index)


def _explicit(index: Tuple[Any, ...], ndim: int) -> Tuple[Any, ...]:
    """``index`` with its Ellipsis (or the implied trailing one) written out as slices."""
    used = builtins.sum(1 for i in index if i is not None and i is not Ellipsis)
    fill = (slice(None),) * builtins.max(ndim - used, 0)
    if Ellipsis in [i for i in index if not isinstance(i, np.ndarray)]:
        pos = next(n for n, i in enumerate(index)
                   if not isinstance(i, np.ndarray) and i is Ellipsis)
        return index[:pos] + fill + index[pos + 1:]
    return index + fill


class GetItem(Primitive):
    name = "getitem"
    linear = True

    def value(self, x, *, index):
        return np.asarray(x)[index]

    def jvp(self, xs, dxs, out, *, index):
        (x,), (dx,) = xs, dxs
        n = _ndim(x)
        if _is_basic(index):
            # basic indexing keeps the leading direction axis in front
            return _getitem(dx, index=(slice(None),) + _explicit(index, n))
        # advanced indices may move axes to the front: put the directions last
        last = _transpose(dx, axes=tuple(range(1, n + 1)) + (0,))
        t = _getitem(last, index=_explicit(index, n) + (slice(None),))
        m = _ndim(t)
        return _transpose(t, axes=(m - 1,) + tuple(range(m - 1)))

    def vjp(self, g, xs, out, needs, *, index):
        g = cotangent(g, out)
        (x,) = xs
        g = np.asarray(g)
        shape = _shape(x)
        if _is_basic(index):
            z = np.zeros(shape, dtype=g.dtype)
            z[index] = g  # basic indexing never repeats an element
            return (z,)
        # repeated integer indices accumulate: scatter-add through flat positions
        flat = np.arange(int(np.prod(shape)), dtype=np.intp).reshape(shape)[index]
        z = np.bincount(np.ravel(flat), weights=np.ravel(g), minlength=int(np.prod(shape)))
        return (z.astype(g.dtype, copy=False).reshape(shape),)

    def vjp_rows(self, G, xs, out, needs, *, index):
        G = np.asarray(cotangent(G, out))
        if not _is_basic(index):
            return (np.stack([self.vjp(g, xs, out, needs, index=index)[0] for g in G]),)
        z = np.zeros((G.shape[0],) + _shape(xs[0]), dtype=G.dtype)
        z[(slice(None),) + tuple(index)] = G
        return (z,)


_getitem = GetItem().register()


def getitem(x: Any, index: Any) -> Any:
    """``x[index]`` for ints, slices, Ellipsis, None, tuples of them and integer or
    boolean arrays (numpy's rules); repeated indices accumulate in reverse mode."""
    return _getitem(x, index=normalize_index(index))


# ---------------------------------------------------------------- reductions

class Sum(Primitive):
    name = "sum"
    linear = True

    def value(self, x, *, axis=None, keepdims=False):
        axes = _axes(axis, _ndim(x), "sum")
        if type(x) is np.ndarray:
            return np.add.reduce(x, axis=axes, keepdims=keepdims)   # np.sum's own call
        return np.sum(x, axis=axes, keepdims=keepdims)

    def jvp(self, xs, dxs, out, *, axis=None, keepdims=False):
        (x,), (dx,) = xs, dxs
        axes = tuple(a + 1 for a in _axes(axis, _ndim(x), "sum"))
        return _sum(dx, axis=axes, keepdims=keepdims)

    def vjp(self, g, xs, out, needs, *, axis=None, keepdims=False):
        g = cotangent(g, out)
        (x,) = xs
        g = np.asarray(g)
        axes = _axes(axis, _ndim(x), "sum")
        if not keepdims:
            g = np.expand_dims(g, axes) if axes else g
        return (_fresh(np.broadcast_to(g, _shape(x))),)

    def vjp_rows(self, G, xs, out, needs, *, axis=None, keepdims=False):
        G = np.asarray(cotangent(G, out))
        (x,) = xs
        axes = _axes(axis, _ndim(x), "sum")
        if not keepdims and axes:
            G = np.expand_dims(G, tuple(a + 1 for a in axes))
        return (_fresh(np.broadcast_to(G, (G.shape[0],) + _shape(x))),)


class Mean(Primitive):
    name = "mean"
    linear = True

    @staticmethod
    def _count(x, axis):
        shape = _shape(x)
        n = 1
        for a in _axes(axis, len(shape), "mean"):
            n *= shape[a]
        return n

    def value(self, x, *, axis=None, keepdims=False):
        return np.mean(x, axis=_axes(axis, _ndim(x), "mean"), keepdims=keepdims)

    def jvp(self, xs, dxs, out, *, axis=None, keepdims=False):
        (x,), (dx,) = xs, dxs
        axes = tuple(a + 1 for a in _axes(axis, _ndim(x), "mean"))
        return _mean(dx, axis=axes, keepdims=keepdims)

    def vjp(self, g, xs, out, needs, *, axis=None, keepdims=False):
        g = cotangent(g, out)
        (x,) = xs
        g = np.asarray(g)
        axes = _axes(axis, _ndim(x), "mean")
        if not keepdims:
            g = np.expand_dims(g, axes) if axes else g
        n = self._count(x, axis)
        scale = np.asarray(1.0 / n if n else np.nan, dtype=g.dtype)
        return (_fresh(np.broadcast_to(g * scale, _shape(x))),)

    def vjp_rows(self, G, xs, out, needs, *, axis=None, keepdims=False):
        # the sum's stacked rule on the scaled cotangents
        G = np.asarray(cotangent(G, out))
        n = self._count(xs[0], axis)
        scale = np.asarray(1.0 / n if n else np.nan, dtype=G.dtype)
        return _sum.vjp_rows(G * scale, xs, out, needs, axis=axis, keepdims=keepdims)


class AMax(Primitive):
    name = "amax"

    @staticmethod
    def _weights(x, axis, dtype):
        """Where the maximum is, each entry weighted 1/(number of ties)."""
        x = np.asarray(x)
        axes = _axes(axis, x.ndim, "amax")
        m = np.max(x, axis=axes, keepdims=True)
        mask = (x == m) | (np.isnan(x) & np.isnan(m))
        count = np.sum(mask, axis=axes, keepdims=True)
        return mask.astype(dtype) / count.astype(dtype), axes

    def value(self, x, *, axis=None, keepdims=False):
        x = np.asarray(x)
        if x.size == 0:
            raise ValueError("amax: the maximum of an empty array is not defined")
        return np.max(x, axis=_axes(axis, x.ndim, "amax"), keepdims=keepdims)

    def jvp(self, xs, dxs, out, *, axis=None, keepdims=False):
        (x,), (dx,) = xs, dxs
        if getattr(x, "_ad_tag", None) is None:
            w, axes = self._weights(x, axis, np.asarray(_primal(dx)).dtype)
        else:
            # x active for an outer differentiation: the mask from recorded comparisons,
            # so that a tape replaying this at another point checks the argmax
            from ._dual import equal
            axes = _axes(axis, _ndim(x), "amax")
            m = out if keepdims else _reshape(out, shape=tuple(
                1 if i in axes else n for i, n in enumerate(_shape(x))))
            mask = equal(x, m)
            w = mask / _sum(mask, axis=axes, keepdims=True)
        return _sum(dx * w, axis=tuple(a + 1 for a in axes), keepdims=keepdims)

    def vjp(self, g, xs, out, needs, *, axis=None, keepdims=False):
        g = cotangent(g, out)
        (x,) = xs
        g = np.asarray(g)
        w, axes = self._weights(x, axis, g.dtype)
        if not keepdims:
            g = np.expand_dims(g, axes) if axes else g
        return (g * w,)


_sum = Sum().register()
_mean = Mean().register()
_amax = AMax().register()


def _axis_param(axis: Any) -> Any:
    if isinstance(axis, list):
        return tuple(axis)
    return axis


def sum(x: Any, axis: Any = None, keepdims: bool = False) -> Any:  # noqa: A001
    """The sum of ``x`` over ``axis`` (None: all axes), as ``numpy.sum``."""
    params = {"axis": _axis_param(axis), "keepdims": bool(keepdims)}
    if type(x) is TapeArray:
        return x.tape._unary_prim(_sum, x, params)      # no dispatch for one tape array
    return _sum(x, **params)


def mean(x: Any, axis: Any = None, keepdims: bool = False) -> Any:
    """The mean of ``x`` over ``axis`` (None: all axes), as ``numpy.mean``."""
    return _mean(x, axis=_axis_param(axis), keepdims=bool(keepdims))


def amax(x: Any, axis: Any = None, keepdims: bool = False) -> Any:
    """The maximum of ``x`` over ``axis``; tied maxima share the derivative evenly."""
    return _amax(x, axis=_axis_param(axis), keepdims=bool(keepdims))


max = amax  # noqa: A001  (adcore.max, as numpy.max)


# ---------------------------------------------------------------- shapes

def _shape_param(shape: Any, name: str) -> Tuple[int, ...]:
    if isinstance(shape, (int, np.integer)):
        return (int(shape),)
    try:
        return tuple(operator.index(n) for n in shape)
    except TypeError:
        raise TypeError(f"{name}: shape must be an int or a sequence of ints, "
                        f"got {shape!r}") from None


class Reshape(Primitive):
    name = "reshape"
    linear = True

    def value(self, x, *, shape):
        return np.reshape(x, shape)

    def jvp(self, xs, dxs, out, *, shape):
        (dx,) = dxs
        return _reshape(dx, shape=(_shape(dx)[0],) + _shape(out))

    def vjp(self, g, xs, out, needs, *, shape):
        g = cotangent(g, out)
        return (_fresh(np.reshape(g, _shape(xs[0]))),)

    def vjp_rows(self, G, xs, out, needs, *, shape):
        G = np.asarray(cotangent(G, out))
        return (_fresh(np.reshape(G, (G.shape[0],) + _shape(xs[0]))),)


class Transpose(Primitive):
    name = "transpose"
    linear = True

    @staticmethod
    def _perm(x, axes):
        n = _ndim(x)
        if axes is None:
            return tuple(range(n))[::-1]
        perm = tuple(a % n if -n <= a < n else a for a in axes)
        if sorted(perm) != list(range(n)):
            raise ValueError(f"transpose: axes {axes!r} are not a permutation of the "
                             f"{n} axes of the input")
        return perm

    def value(self, x, *, axes=None):
        return np.transpose(x, self._perm(x, axes))

    def jvp(self, xs, dxs, out, *, axes=None):
        (x,), (dx,) = xs, dxs
        return _transpose(dx, axes=(0,) + tuple(a + 1 for a in self._perm(x, axes)))

    def vjp(self, g, xs, out, needs, *, axes=None):
        g = cotangent(g, out)
        perm = self._perm(xs[0], axes)
        return (_fresh(np.transpose(g, np.argsort(perm))),)

    def vjp_rows(self, G, xs, out, needs, *, axes=None):
        G = np.asarray(cotangent(G, out))
        back = np.argsort(self._perm(xs[0], axes))
        return (_fresh(np.transpose(G, (0,) + tuple(int(a) + 1 for a in back))),)


class BroadcastTo(Primitive):
    name = "broadcast_to"
    linear = True

    def value(self, x, *, shape):
        return np.broadcast_to(x, shape)

    def jvp(self, xs, dxs, out, *, shape):
        (x,), (dx,) = xs, dxs
        k = _shape(dx)[0]
        lifted = _reshape(dx, shape=(k,) + (1,) * (len(shape) - _ndim(x)) + _shape(x))
        return _broadcast_to(lifted, shape=(k,) + tuple(shape))

    def vjp(self, g, xs, out, needs, *, shape):
        g = cotangent(g, out)
        return (_fresh(sum_to_shape(g, _shape(xs[0]))),)

    def vjp_rows(self, G, xs, out, needs, *, shape):
        G = np.asarray(cotangent(G, out))
        return (_fresh(_rows_sum_to(G, _shape(xs[0]))),)


_reshape = Reshape().register()
_transpose = Transpose().register()
_broadcast_to = BroadcastTo().register()


def reshape(x: Any, shape: Any) -> Any:
    """``x`` with a new shape (one entry may be -1), as ``numpy.reshape``."""
    return _reshape(x, shape=_shape_param(shape, "reshape"))


def transpose(x: Any, axes: Optional[Sequence[int]] = None) -> Any:
    """``x`` with its axes permuted (reversed by default), as ``numpy.transpose``."""
    return _transpose(x, axes=None if axes is None else _shape_param(axes, "transpose"))


def broadcast_to(x: Any, shape: Any) -> Any:
    """``x`` broadcast to ``shape``; reverse mode sums over the broadcast axes."""
    return _broadcast_to(x, shape=_shape_param(shape, "broadcast_to"))


# ---------------------------------------------------------------- matmul

def _as_matrices(a, b):
    """numpy's matmul rules made explicit: 1-D operands become 1xn / nx1 matrices."""
    a = np.asarray(a)
    b = np.asarray(b)
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError("matmul: operands must have at least one dimension "
                         f"(got shapes {a.shape} and {b.shape}); use * for scalars")
    a2 = a.reshape((1,) + a.shape) if a.ndim == 1 else a
    b2 = b.reshape(b.shape + (1,)) if b.ndim == 1 else b
    return a2, b2


def _worth_a_look(rows: int, inner: int, cols: int, c_path: bool = True) -> bool:
    """Whether looking for one non-zero per row of a ``rows x inner`` factor may pay.
    The C look (float64) stops at the first dense row and copies in one pass; the
    numpy one (float32) takes a few passes over O(rows x cols), and BLAS does the
    O(rows x inner x cols) product about ten times faster per element."""
    if c_path:
        return inner >= 8 and rows * inner * cols >= 1 << 15
    return inner >= 32 and rows * inner * cols >= 1 << 16


def rows_matmul(g: np.ndarray, m: np.ndarray) -> np.ndarray:
    """``g @ m`` for plain 2-D float arrays, exploiting the structure the Jacobian
    drivers seed: when every row of g has at most one non-zero (rows of the
    identity, scaled by element-wise partials), row b of the product is
    ``g[b, c] * m[c]``, O(rows x cols) instead of O(rows x inner x cols).

    Bitwise the product (plus 0.0: BLAS sums to +0, never -0) when m is finite:
    the other terms are exact zeros.  A non-finite m (0 * inf is NaN in the
    product) or a dense g takes the product itself."""
    rows, inner = g.shape
    cols = m.shape[1]
    if (g.dtype != m.dtype or g.dtype.kind != "f"
            or not _worth_a_look(rows, inner, cols, g.dtype == np.float64)):
        return np.matmul(g, m)
    if g.dtype == np.float64:
        # one C pass: stops at the first row with two non-zeros
        out = rows_scaled(g, m)
        return np.matmul(g, m) if out is None else out
    if rows == inner:
        # a square g: its off-diagonal entries are a strided view of the flat buffer
        flat = g.reshape(-1)
        if flat[1:].reshape(rows - 1, rows + 1)[:, :rows].any():  # NaN counts as non-zero
            return np.matmul(g, m)
        vals = np.diagonal(g)
        picked = m
    else:
        nz = g != 0.0
        c = nz.argmax(axis=1)
        vals = g[np.arange(rows), c]
        if np.count_nonzero(nz) != np.count_nonzero(vals):
            return np.matmul(g, m)                  # some row has two non-zeros
        picked = m[c]
    mt = m.T                                        # m is often a transposed matrix
    if not np.isfinite((mt if mt.flags.c_contiguous else m).sum()):
        return np.matmul(g, m)                      # inf/nan (or overflow): conservative
    out = np.multiply(picked, vals[:, None])
    out += 0.0                                      # -0.0 -> +0.0, as the product sums
    return out


class MatMul(Primitive):
    name = "matmul"

    def value(self, a, b):
        return np.matmul(a, b)

    def jvp(self, xs, dxs, out, **params):
        a, b = xs
        sa, sb = _shape(a), _shape(b)
        if not sa or not sb:
            raise ValueError("matmul: operands must have at least one dimension "
                             f"(got shapes {sa} and {sb}); use * for scalars")
        # numpy's rules made explicit: 1-D operands as 1xn / nx1 matrices
        sa2 = (1,) + sa if len(sa) == 1 else sa
        sb2 = sb + (1,) if len(sb) == 1 else sb
        k, _ = _k_and_dtype(dxs)
        nb = builtins.max(len(sa2), len(sb2)) - 2
        tshape = (k,) + _shape(out)
        if all(getattr(v, "_ad_tag", None) is None for v in (a, b, dxs[0], dxs[1])):
            # plain arrays (no outer differentiation): numpy itself, without a
            # primitive call per reshape
            mm, tr = np.matmul, np.transpose
            rs = np.reshape
        else:
            mm, tr = _matmul, _transpose
            rs = lambda x, shape: x if _shape(x) == tuple(shape) else _reshape(  # noqa: E731
                x, shape=tuple(shape))
        total = None
        if dxs[0] is not None:
            if len(sa) == 2 and len(sb) <= 2:
                # one BLAS product: the k directions stacked as rows, (k m, n) @ b
                da = rs(dxs[0], (k * sa[0], sa[1]))
                if mm is np.matmul and len(sb) == 2:
                    term = rows_matmul(da, np.asarray(b)).reshape(tshape)
                else:
                    term = rs(mm(da, b), tshape)
            else:  # the directions ride in front of the batch axes
                da = rs(dxs[0], (k,) + (1,) * (nb - (len(sa2) - 2)) + sa2)
                term = rs(mm(da, b if sb2 == sb else rs(b, sb2)), tshape)
            total = term
        if dxs[1] is not None:
            if len(sb) == 1 and len(sa) <= 2:
                # one BLAS product, (k, n) @ a^T, not k matrix-vector products
                if mm is np.matmul and len(sa) == 2:
                    term = rows_matmul(np.asarray(dxs[1]), np.asarray(a).T).reshape(tshape)
                else:
                    term = rs(mm(dxs[1], tr(a) if len(sa) == 2 else a), tshape)
            else:
                db = rs(dxs[1], (k,) + (1,) * (nb - (len(sb2) - 2)) + sb2)
                term = rs(mm(a if sa2 == sa else rs(a, sa2), db), tshape)
            total = term if total is None else total + term
        return total

    def vjp(self, g, xs, out, needs, **params):
        g = cotangent(g, out)
        a, b = xs
        a2, b2 = _as_matrices(a, b)
        batch = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
        g2 = np.reshape(g, batch + (a2.shape[-2], b2.shape[-1]))
        ga = gb = None
        if needs[0]:
            ga = sum_to_shape(np.matmul(g2, np.swapaxes(b2, -1, -2)), a2.shape)
            ga = _fresh(ga.reshape(_shape(a)))
        if needs[1]:
            gb = sum_to_shape(np.matmul(np.swapaxes(a2, -1, -2), g2), b2.shape)
            gb = _fresh(gb.reshape(_shape(b)))
        return ga, gb

    def vjp_rows(self, G, xs, out, needs, **params):
        """vjp for a stack of cotangents (a leading axis of rows): one product for all
        rows, e.g. G @ W for W @ x, with rows_matmul's shortcut for seeded rows."""
        G = np.asarray(cotangent(G, out))
        a, b = xs
        a = np.asarray(a)
        b = np.asarray(b)
        a2, b2 = _as_matrices(a, b)
        B = G.shape[0]
        ga = gb = None
        if a.ndim == 2 and b.ndim == 1:              # W @ x: G is (B, p)
            if needs[0]:
                ga = G[:, :, None] * b.astype(G.dtype, copy=False)
            if needs[1]:
                gb = rows_matmul(G, a)
            return ga, gb
        if a.ndim == 1 and b.ndim == 2:              # x @ W: G is (B, q)
            if needs[0]:
                ga = rows_matmul(G, b.T)
            if needs[1]:
                gb = a.astype(G.dtype, copy=False)[None, :, None] * G[:, None, :]
            return ga, gb
        batch = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
        g2 = np.reshape(G, (B,) + batch + (a2.shape[-2], b2.shape[-1]))
        if needs[0]:
            ga = _rows_sum_to(np.matmul(g2, np.swapaxes(b2, -1, -2)), a2.shape)
            ga = _fresh(ga.reshape((B,) + a.shape))
        if needs[1]:
            gb = _rows_sum_to(np.matmul(np.swapaxes(a2, -1, -2), g2), b2.shape)
            gb = _fresh(gb.reshape((B,) + b.shape))
        return ga, gb


_matmul = MatMul().register()


def matmul(a: Any, b: Any) -> Any:
    """``a @ b`` with numpy's rules: 1-D, 2-D and batched (broadcast) operands."""
    return _matmul(a, b)


# ---------------------------------------------------------------- joining

def single_axis(axis: Any, ndim: int, name: str) -> int:
    """One axis (an int, negative counts from the end) of an array of ``ndim`` dimensions."""
    try:
        axis = operator.index(axis)
    except TypeError:
        raise TypeError(f"{name}: axis must be an int, got {axis!r}") from None
    if not -ndim <= axis < ndim:
        raise ValueError(f"{name}: axis {axis} is out of bounds for an array of "
                         f"dimension {ndim}")
    return axis % ndim


class Concatenate(Primitive):
    name = "concatenate"
    linear = True

    def value(self, *xs, axis=0):
        if not xs:
            raise ValueError("concatenate: needs at least one array")
        return np.concatenate([np.asarray(x) for x in xs], axis=axis)

    def jvp(self, xs, dxs, out, *, axis=0):
        k, dtype = _k_and_dtype(dxs)
        ax = single_axis(axis, _ndim(out), "concatenate")
        parts = [d if d is not None else _zeros_tangent(k, x, dtype) for x, d in zip(xs, dxs)]
        return _concatenate(*parts, axis=ax + 1)

    def vjp(self, g, xs, out, needs, *, axis=0):
        g = cotangent(g, out)
        g = np.asarray(g)
        ax = single_axis(axis, g.ndim, "concatenate")
        bounds = np.cumsum([_shape(x)[ax] for x in xs])[:-1]
        pieces = np.split(g, bounds, axis=ax)
        return tuple(_fresh(p) if need else None for p, need in zip(pieces, needs))


class Stack(Primitive):
    name = "stack"
    linear = True

    def value(self, *xs, axis=0):
        if not xs:
            raise ValueError("stack: needs at least one array")
        return np.stack([np.asarray(x) for x in xs], axis=axis)

    def jvp(self, xs, dxs, out, *, axis=0):
        k, dtype = _k_and_dtype(dxs)
        ax = single_axis(axis, _ndim(out), "stack")
        parts = [d if d is not None else _zeros_tangent(k, x, dtype) for x, d in zip(xs, dxs)]
        return _stack(*parts, axis=ax + 1)

    def vjp(self, g, xs, out, needs, *, axis=0):
        g = cotangent(g, out)
        g = np.asarray(g)
        ax = single_axis(axis, g.ndim, "stack")
        return tuple(_fresh(np.take(g, i, axis=ax)) if need else None
                     for i, need in enumerate(needs))


_concatenate = Concatenate().register()
_stack = Stack().register()


def concatenate(xs: Sequence[Any], axis: int = 0) -> Any:
    """Join arrays along an existing axis, as ``numpy.concatenate``."""
    xs = tuple(xs)
    if not xs:
        raise ValueError("concatenate: needs at least one array")
    return _concatenate(*xs, axis=operator.index(axis))


def stack(xs: Sequence[Any], axis: int = 0) -> Any:
    """Join arrays along a new axis, as ``numpy.stack``."""
    xs = tuple(xs)
    if not xs:
        raise ValueError("stack: needs at least one array")
    return _stack(*xs, axis=operator.index(axis))
