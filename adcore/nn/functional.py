"""Deep-learning operations: the seed's unwritten "Deep Learning Operations".

Each operation is one :class:`~adcore.primitives.Primitive` (value, jvp, vjp in
numpy, the matrix products through numpy's BLAS), so a tape records it as a
single instruction and forward mode pushes k directions through it at once.
Element-wise activations (relu, tanh, sigmoid, softplus, gelu) are rows of the
rule table and live in ``adcore`` itself.

Conventions: tangents carry a leading axis of k directions; cotangents have the
shape of their value; float32 inputs give float32 values, tangents and
cotangents.  Max pooling splits the gradient evenly among tied maxima, as
``adcore.max`` does.
"""

from __future__ import annotations

import math
import operator
import threading
from typing import Any, Optional, Sequence, Tuple

import numpy as np

from .. import _dual
from .._tape import labels_intp
from ..array_ops import single_axis as _axis
from ..array_ops import (_broadcast_to, _concatenate, _getitem, _matmul, _mean, _primal,
                         _reshape, _shape, _sum, _transpose, cotangent, sum_to_shape)
from ..primitives import Primitive

__all__ = ["softmax", "log_softmax", "logsumexp", "cross_entropy", "mse", "linear",
           "conv2d", "max_pool2d", "avg_pool2d", "dropout", "dropout_mask", "dropout_apply",
           "flatten", "one_hot",
           "pair"]




_F32_F64 = (np.dtype(np.float32), np.dtype(np.float64))


def _float(x: Any) -> np.ndarray:
    """x as a floating array (integers become float64; float32 stays float32)."""
    if type(x) is np.ndarray and x.dtype in _F32_F64:
        return x                  # the usual case, without issubdtype's ~1 us
    x = np.asarray(x)
    return x if np.issubdtype(x.dtype, np.floating) else x.astype(np.float64)


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    z = x - np.max(x, axis=axis, keepdims=True)
    e = np.exp(z)
    e /= np.sum(e, axis=axis, keepdims=True)
    return e


def _lse(x: np.ndarray, axis: Any, keepdims: bool) -> np.ndarray:
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, np.zeros_like(m))  # all -inf rows: log(0) = -inf
    with np.errstate(divide="ignore"):  # an all -inf slice: log(0) = -inf, as numpy
        out = np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)) + m
    return out if keepdims else np.squeeze(out, axis=axis)


# ---------------------------------------------------------------- softmax family

class Softmax(Primitive):
    name = "softmax"

    def value(self, x, *, axis=-1):
        x = _float(x)
        return _softmax(x, _axis(axis, x.ndim, "softmax"))

    def jvp(self, xs, dxs, out, *, axis=-1):
        (dx,) = dxs
        ax = _axis(axis, len(_shape(out)), "softmax") + 1
        return out * (dx - _sum(out * dx, axis=ax, keepdims=True))

    def vjp(self, g, xs, out, needs, *, axis=-1):
        g = cotangent(g, out)
        ax = _axis(axis, out.ndim, "softmax")
        return (out * (g - np.sum(g * out, axis=ax, keepdims=True)),)


class LogSoftmax(Primitive):
    name = "log_softmax"

    def value(self, x, *, axis=-1):
        x = _float(x)
        ax = _axis(axis, x.ndim, "log_softmax")
        return x - _lse(x, ax, True)

    def jvp(self, xs, dxs, out, *, axis=-1):
        (dx,) = dxs
        ax = _axis(axis, len(_shape(out)), "log_softmax") + 1
        return dx - _sum(_dual.exp(out) * dx, axis=ax, keepdims=True)

    def vjp(self, g, xs, out, needs, *, axis=-1):
        g = cotangent(g, out)
        ax = _axis(axis, out.ndim, "log_softmax")
        return (g - np.exp(out) * np.sum(g, axis=ax, keepdims=True),)


class LogSumExp(Primitive):
    name = "logsumexp"

    @staticmethod
    def _axes(axis, ndim):
        if axis is None:
            return tuple(range(ndim))
        axes = axis if isinstance(axis, tuple) else (axis,)
        return tuple(sorted(_axis(a, ndim, "logsumexp") for a in axes))

    def value(self, x, *, axis=None, keepdims=False):
        x = _float(x)
        return _lse(x, self._axes(axis, x.ndim), keepdims)

    def _weights(self, x, out, axes, keepdims):
        # softmax over the reduced axes, from the result (no second max pass)
        lse = out if keepdims else np.expand_dims(out, axes)
        return np.exp(x - lse)

    def jvp(self, xs, dxs, out, *, axis=None, keepdims=False):
        x, (dx,) = xs[0], dxs
        shape = _shape(x)
        axes = self._axes(axis, len(shape))
        lse = out if keepdims else _reshape(out, shape=tuple(
            1 if i in axes else n for i, n in enumerate(shape)))
        w = _dual.exp(x - lse)
        return _sum(w * dx, axis=tuple(a + 1 for a in axes), keepdims=keepdims)

    def vjp(self, g, xs, out, needs, *, axis=None, keepdims=False):
        g = cotangent(g, out)
        x = _float(xs[0])
        axes = self._axes(axis, x.ndim)
        w = self._weights(x, out, axes, keepdims)
        g = np.asarray(g)
        if not keepdims:
            g = np.expand_dims(g, axes)
        return (g * w,)


_softmax_p = Softmax().register()
_log_softmax_p = LogSoftmax().register()
_logsumexp_p = LogSumExp().register()


def softmax(x: Any, axis: int = -1) -> Any:
    """exp(x) / sum(exp(x)) along ``axis``, computed without overflow."""
    return _softmax_p(x, axis=operator.index(axis))


def log_softmax(x: Any, axis: int = -1) -> Any:
    """x - logsumexp(x) along ``axis``, computed without overflow."""
    return _log_softmax_p(x, axis=operator.index(axis))


def logsumexp(x: Any, axis: Any = None, keepdims: bool = False) -> Any:
    """log(sum(exp(x))) over ``axis`` (None: all), computed without overflow."""
    if isinstance(axis, list):
        axis = tuple(axis)
    return _logsumexp_p(x, axis=axis, keepdims=bool(keepdims))


# ---------------------------------------------------------------- losses

def _labels(labels: Any, n: int, classes: int) -> np.ndarray:
    y = labels if type(labels) is np.ndarray else np.asarray(labels)
    if y.shape != (n,):
        raise ValueError(f"cross_entropy: labels must have shape ({n},) to match the "
                         f"logits, got {y.shape}")
    kind = y.dtype.kind
    if kind == "f":
        # a tape hands integer labels back as float64: checked and cast in one C pass
        yi = labels_intp(y, classes)
        if yi is not None:
            return yi
        # else the checks below name the problem
    if kind != "i" and kind != "u":
        # a tape may hand integer labels back as floats: accept exact integers only
        # (NaN and inf convert to some integer that differs from them)
        yi = None
        if kind == "f":
            with np.errstate(invalid="ignore"):     # the cast of NaN/inf warns
                yi = y.astype(np.intp)
        if yi is None or not np.logical_and.reduce(yi == y):
            raise ValueError("cross_entropy: labels must be integers (class indices)")
        y = yi
    # one reduction checks both bounds: negative labels wrap to huge unsigned values
    if np.maximum.reduce(y.astype(np.intp, copy=False).view(np.uintp)) >= classes:
        raise ValueError(f"cross_entropy: labels must lie in 0..{classes - 1}, got "
                         f"values from {y.min()} to {y.max()}")
    return y


def _check_logits(logits: np.ndarray) -> None:
    if logits.ndim != 2:
        raise ValueError(f"cross_entropy: logits must have shape (batch, classes), got "
                         f"{logits.shape}")
    if logits.shape[0] == 0:
        raise ValueError("cross_entropy: the batch is empty")


_STARTS: dict = {}


def _picks(labels: Any, n: int, c: int) -> np.ndarray:
    """The flat (C order) positions in (n, c) logits of each row's labelled entry,
    labels checked; the row starts i * c are cached per shape."""
    if type(labels) is np.ndarray and labels.shape == (n,):
        at = labels_intp(labels, c, c)      # a replay's float64 labels: one C pass
        if at is not None:
            return at
    y = _labels(labels, n, c)
    starts = _STARTS.get((n, c))
    if starts is None:
        starts = np.arange(n) * c
        starts.flags.writeable = False
        if len(_STARTS) < 64:
            _STARTS[(n, c)] = starts
    return np.add(starts, y, dtype=np.intp)


#: up to this many classes cross_entropy works on the (classes, batch) transpose
_FEW_CLASSES = 64

#: logits of up to this many elements: cross_entropy's value keeps its softmax terms
#: (and a copy of the logits' bytes to check them by) for the reverse rule
_KEEP = 1 << 16


def _by_class(z: np.ndarray):
    """(zc, axis): the logits laid out for reductions over the classes, and the class
    axis.  numpy reduces a short inner axis row by row (max over (512, 10) takes
    23 us); on the C-contiguous transpose the same reduction is c vectorized passes
    over the batch (2 us, the copy 2 us).  Many classes stay in place (a long
    sequential sum would lose accuracy)."""
    if z.shape[1] <= _FEW_CLASSES:
        return np.ascontiguousarray(z.T), 0
    return z, 1


class CrossEntropy(Primitive):
    """mean_i ( logsumexp(logits[i]) - logits[i, labels[i]] )."""

    name = "cross_entropy"
    differentiable = (0,)

    #: (labels, n, c, positions) of the last value call: its reverse rule (which a
    #: replay calls with the same labels object) reuses the checked positions
    _last: Any = None
    #: (z, shape, dtype, bytes of z, axis, e, s) of the last value call for logits of
    #: up to _KEEP elements: its reverse rule reuses e = exp(zc - max) and s = sum(e)
    #: when it gets the same array with the same bytes (bitwise the same work)
    _soft: Any = None

    def value(self, logits, labels):
        z = _float(logits)
        _check_logits(z)
        n, c = z.shape
        at = _picks(labels, n, c)         # checked on every call: a replay's labels are new
        self._last = (labels, n, c, at)
        zc, ax = _by_class(z)
        m = np.maximum.reduce(zc, axis=ax)
        e = np.subtract(zc, m if ax == 0 else m[:, None])
        np.exp(e, out=e)
        s = np.add.reduce(e, axis=ax)
        if z.size <= _KEEP:
            self._soft = (z, z.shape, z.dtype, z.tobytes(), ax, e, s)
        loss = np.log(s)
        loss += m
        picked = z.reshape(-1).take(at)
        loss -= picked
        out = np.add.reduce(loss) * loss.dtype.type(1.0 / n)
        # math.isfinite is exact for float32/float64 (a longdouble might not fit a float)
        if not (math.isfinite(out) if z.dtype in _F32_F64 else np.isfinite(out)):
            # inf logits: the careful logsumexp decides inf or nan
            out = (_lse(z, 1, False) - picked).sum() * loss.dtype.type(1.0 / n)
        return out

    def jvp(self, xs, dxs, out, **params):
        z, labels = xs
        dz = dxs[0]
        n, c = _shape(z)
        dtype = np.asarray(_primal(z)).dtype
        dtype = dtype if dtype.kind == "f" else np.dtype(np.float64)
        if getattr(labels, "_ad_tag", None) is None:
            onehot = np.eye(c, dtype=dtype)[_labels(labels, n, c)]
        else:
            # labels of an outer recording: compare, so that a replay checks them
            _labels(_primal(labels), n, c)
            onehot = _dual.equal(_reshape(labels, shape=(n, 1)), np.arange(c, dtype=dtype))
        # d loss = mean_i sum_j (softmax(z) - onehot)[i, j] dz[i, j]
        return _mean(_sum(dz * (_softmax_p(z, axis=1) - onehot), axis=2), axis=1)

    def vjp(self, g, xs, out, needs, **params):
        g = cotangent(g, out)
        z = _float(xs[0])
        n, c = z.shape
        labels = xs[1]
        last = self._last
        if last is not None and last[0] is labels and last[1] == n and last[2] == c:
            at = last[3]                  # the positions value checked for these labels
        else:
            at = _picks(labels, n, c)
        # g * (softmax(z) - onehot(y)) / n, the scale folded into the normalization
        soft = self._soft
        if (soft is not None and soft[0] is z and soft[1] == z.shape and soft[2] == z.dtype
                and soft[3] == z.tobytes()):
            ax, e, s = soft[4], soft[5], soft[6]     # value's, for these very logits
        else:
            zc, ax = _by_class(z)
            m = np.maximum.reduce(zc, axis=ax)
            e = np.subtract(zc, m if ax == 0 else m[:, None])
            np.exp(e, out=e)
            s = np.add.reduce(e, axis=ax)
        scale = np.asarray(g, dtype=e.dtype) * e.dtype.type(1.0 / n)
        s = np.divide(scale, s)                     # new arrays: e and s may be kept ones
        if ax == 0:
            # the product written in the logits' own (C) layout: the tape keeps it
            # as the adjoint without a copy
            gz = np.multiply(e.T, s[:, None], order="C")
        else:
            gz = np.multiply(e, s[:, None])
        # the positions count in C order (e has the layout of z, which may be another)
        (gz.reshape(-1) if gz.flags.c_contiguous else gz.flat)[at] -= scale
        return (gz, None)


class MSE(Primitive):
    """mean((prediction - target)**2) over the broadcast shape."""

    name = "mse"

    def value(self, pred, target):
        d = _float(pred) - _float(target)
        return np.mean(d * d)

    def jvp(self, xs, dxs, out, **params):
        a, b = xs
        d = a - b
        dshape = _shape(d)
        k = next(_shape(t)[0] for t in dxs if t is not None)
        dd = 0
        for sign, x, t in ((1, a, dxs[0]), (-1, b, dxs[1])):
            if t is None:
                continue
            t = _reshape(t, shape=(k,) + (1,) * (len(dshape) - len(_shape(x))) + _shape(x))
            dd = dd + t if sign > 0 else dd - t
        size = int(np.prod(dshape)) if dshape else 1
        dtype = np.asarray(_primal(d)).dtype
        two = np.asarray(2.0 / max(size, 1), dtype=dtype if dtype.kind == "f" else np.float64)
        return _sum(dd * d, axis=tuple(range(1, len(dshape) + 1))) * two

    def vjp(self, g, xs, out, needs, **params):
        g = cotangent(g, out)
        d = _float(xs[0]) - _float(xs[1])
        scale = np.asarray(g, dtype=d.dtype) * np.asarray(2.0 / max(d.size, 1), dtype=d.dtype)
        gd = d * scale
        return (sum_to_shape(gd, np.shape(xs[0])) if needs[0] else None,
                sum_to_shape(-gd, np.shape(xs[1])) if needs[1] else None)


_cross_entropy_p = CrossEntropy().register()
_mse_p = MSE().register()


def cross_entropy(logits: Any, labels: Any) -> Any:
    """Softmax cross-entropy of ``logits`` (batch, classes) against integer
    ``labels`` (batch,), averaged over the batch."""
    return _cross_entropy_p(logits, labels)


def mse(prediction: Any, target: Any) -> Any:
    """Mean squared error, averaged over every element."""
    return _mse_p(prediction, target)


def one_hot(labels: Any, classes: int, dtype: Any = np.float64) -> np.ndarray:
    """Integer labels as rows of the identity (a constant, not differentiated)."""
    y = np.asarray(labels)
    if not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"one_hot: labels must be integers, got dtype {y.dtype}")
    if y.size and (y.min() < 0 or y.max() >= classes):
        raise ValueError(f"one_hot: labels must lie in 0..{classes - 1}")
    return np.eye(classes, dtype=dtype)[y]


# ---------------------------------------------------------------- affine layer

class Linear(Primitive):
    """x @ w + b in one instruction (x: (..., in), w: (in, out), b: (out,))."""

    name = "linear"

    def value(self, x, w, b=None):
        out = np.matmul(x, w)
        if b is not None:
            out += b
        return out

    def jvp(self, xs, dxs, out, **params):
        x, w = xs[0], xs[1]
        k = next(_shape(t)[0] for t in dxs if t is not None)
        tshape = (k,) + _shape(out)
        terms = []
        if dxs[0] is not None:                                   # (k, ..., in) @ (in, out)
            terms.append(_matmul(dxs[0], w))
        if dxs[1] is not None:                                   # (M, in) @ (k, in, out)
            x2 = _reshape(x, shape=(-1, _shape(x)[-1]))
            terms.append(_reshape(_matmul(x2, dxs[1]), shape=tshape))
        if len(xs) > 2 and dxs[2] is not None:
            terms.append(_reshape(dxs[2], shape=(k,) + (1,) * (len(tshape) - 2) + (-1,)))
        return _sum_terms(terms, tshape)

    def vjp(self, g, xs, out, needs, **params):
        g = np.asarray(cotangent(g, out))
        x, w = np.asarray(xs[0]), np.asarray(xs[1])
        gx = np.matmul(g, w.T) if needs[0] else None
        gw = gb = None
        # (..., n) -> (M, n): the batch axes joined, so dw is one BLAS product
        g2 = g if g.ndim == 2 else g.reshape(-1, g.shape[-1])
        if needs[1]:
            gw = np.matmul((x if x.ndim == 2 else x.reshape(-1, x.shape[-1])).T, g2)
        if len(xs) > 2 and needs[2]:
            gb = np.add.reduce(g2, axis=0)
        return (gx, gw) if len(xs) == 2 else (gx, gw, gb)


_linear_p = Linear().register()


def _sum_terms(terms, shape):
    """The sum of tangent terms, broadcast to the full tangent shape."""
    total = terms[0]
    for t in terms[1:]:
        total = total + t
    return total if _shape(total) == tuple(shape) else _broadcast_to(total, shape=tuple(shape))


def linear(x: Any, w: Any, b: Any = None) -> Any:
    """The affine map ``x @ w + b`` (w has shape (in, out)), one tape instruction."""
    wshape = np.shape(w) if not hasattr(w, "shape") else tuple(w.shape)
    if len(wshape) != 2:
        raise ValueError(f"linear: the weight must be a matrix (in, out), got shape {wshape}")
    if b is None:
        return _linear_p(x, w)
    return _linear_p(x, w, b)


# ---------------------------------------------------------------- convolution

def pair(v: Any, name: str) -> Tuple[int, int]:
    """An int or a pair of ints as a pair of non-negative ints."""
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"{name} must be an int or a pair of ints, got {v!r}")
        a, b = (operator.index(t) for t in v)
    else:
        a = b = operator.index(v)
    if a < 0 or b < 0:
        raise ValueError(f"{name} must be non-negative, got {v!r}")
    return a, b


def _out_size(n: int, k: int, s: int, p: int, name: str) -> int:
    size = (n + 2 * p - k) // s + 1
    if n + 2 * p < k:
        raise ValueError(f"{name}: the window ({k}) is larger than the padded input ({n + 2 * p})")
    return size


def _pad(x: np.ndarray, ph: int, pw: int, fill: float = 0.0) -> np.ndarray:
    if ph == 0 and pw == 0:
        return x
    n, c, h, w = x.shape
    out = np.full((n, c, h + 2 * ph, w + 2 * pw), fill, dtype=x.dtype)  # np.pad: 3-10x slower
    out[:, :, ph:ph + h, pw:pw + w] = x
    return out


def _im2col(x: np.ndarray, kh: int, kw: int, stride, padding, ho: int, wo: int) -> np.ndarray:
    """The (C*kh*kw, N*Ho*Wo) matrix whose column (n, i, j) is the window of output
    (i, j) of image n, filled one window offset at a time (whole-batch slices)."""
    (sh, sw) = stride
    xt = _pad(x, *padding).transpose(1, 0, 2, 3)                 # (C, N, Hp, Wp) view
    c, n = xt.shape[:2]
    cols = np.empty((c, kh, kw, n, ho, wo), dtype=x.dtype)
    for a in range(kh):
        for b in range(kw):
            cols[:, a, b] = xt[:, :, a:a + sh * (ho - 1) + 1:sh, b:b + sw * (wo - 1) + 1:sw]
    return cols.reshape(c * kh * kw, n * ho * wo)


def _col2im(gcols: np.ndarray, shape: Tuple[int, ...], kh: int, kw: int, stride,
            padding) -> np.ndarray:
    """The adjoint of ``_im2col``: add each window offset's cotangent back in place."""
    n, c, h, w = shape
    (sh, sw), (ph, pw) = stride, padding
    ho, wo = gcols.shape[-2:]
    gcols = gcols.reshape(c, kh, kw, n, ho, wo)
    gxp = np.zeros((c, n, h + 2 * ph, w + 2 * pw), dtype=gcols.dtype)
    for a in range(kh):
        for b in range(kw):
            gxp[:, :, a:a + sh * (ho - 1) + 1:sh, b:b + sw * (wo - 1) + 1:sw] += gcols[:, a, b]
    return np.ascontiguousarray(gxp[:, :, ph:ph + h, pw:pw + w].transpose(1, 0, 2, 3))


def _check_nchw(x: np.ndarray, name: str) -> None:
    if x.ndim != 4:
        raise ValueError(f"{name}: the input must have shape (batch, channels, height, "
                         f"width), got {x.shape}")


class Conv2d(Primitive):
    """2-D cross-correlation (what deep learning calls convolution), NCHW.

    x: (N, C, H, W), w: (O, C, kh, kw), optional b: (O,).  im2col + one BLAS matmul.
    """

    name = "conv2d"

    @staticmethod
    def _geometry(x, w, stride, padding):
        x, w = np.asarray(x), np.asarray(w)
        _check_nchw(x, "conv2d")
        if w.ndim != 4:
            raise ValueError(f"conv2d: the weight must have shape (out_channels, "
                             f"in_channels, kh, kw), got {w.shape}")
        if w.shape[1] != x.shape[1]:
            raise ValueError(f"conv2d: the input has {x.shape[1]} channels but the weight "
                             f"expects {w.shape[1]}")
        sh, sw = stride
        ph, pw = padding
        ho = _out_size(x.shape[2], w.shape[2], sh, ph, "conv2d")
        wo = _out_size(x.shape[3], w.shape[3], sw, pw, "conv2d")
        return ho, wo

    def _conv(self, x, w, stride, padding):
        ho, wo = self._geometry(x, w, stride, padding)
        o, c, kh, kw = w.shape
        cols = _im2col(x, kh, kw, stride, padding, ho, wo)
        out = w.reshape(o, -1) @ cols                            # (O, N*Ho*Wo)
        return np.ascontiguousarray(out.reshape(o, x.shape[0], ho, wo).transpose(1, 0, 2, 3))

    def value(self, x, w, b=None, *, stride=(1, 1), padding=(0, 0)):
        x, w = _float(x), _float(w)
        out = self._conv(x, w, stride, padding)
        if b is not None:
            out += np.asarray(b).reshape(1, -1, 1, 1)
        return out

    def jvp(self, xs, dxs, out, *, stride=(1, 1), padding=(0, 0)):
        x, w = xs[0], xs[1]
        xshape, wshape = _shape(x), _shape(w)
        k = next(_shape(t)[0] for t in dxs if t is not None)
        n, o = xshape[0], wshape[0]
        tshape = (k,) + _shape(out)
        terms = []
        conv = _conv2d_p
        if dxs[0] is not None:   # conv(dx, w): the k directions join the batch
            dx = _reshape(dxs[0], shape=(k * n,) + xshape[1:])
            terms.append(_reshape(conv(dx, w, stride=stride, padding=padding), shape=tshape))
        if dxs[1] is not None:   # conv(x, dw): the k directions join the output channels
            dw = _reshape(dxs[1], shape=(k * o,) + wshape[1:])
            t = conv(x, dw, stride=stride, padding=padding)      # (N, k*O, Ho, Wo)
            t = _reshape(t, shape=(n, k, o) + tshape[3:])
            terms.append(_transpose(t, axes=(1, 0, 2, 3, 4)))
        if len(xs) > 2 and dxs[2] is not None:
            terms.append(_reshape(dxs[2], shape=(k, 1, o, 1, 1)))
        return _sum_terms(terms, tshape)

    def vjp(self, g, xs, out, needs, *, stride=(1, 1), padding=(0, 0)):
        g = cotangent(g, out)
        x, w = _float(xs[0]), _float(xs[1])
        g = np.asarray(g)
        o, c, kh, kw = w.shape
        n, _, ho, wo = g.shape
        g2 = g.transpose(1, 0, 2, 3).reshape(o, n * ho * wo)
        gx = gw = gb = None
        if needs[1]:
            gw = (g2 @ _im2col(x, kh, kw, stride, padding, ho, wo).T).reshape(w.shape)
        if needs[0]:
            gcols = (w.reshape(o, -1).T @ g2).reshape(c * kh * kw, n, ho, wo)
            gx = _col2im(gcols, x.shape, kh, kw, stride, padding)
        if len(xs) > 2 and needs[2]:
            gb = g.sum(axis=(0, 2, 3))
        return (gx, gw) if len(xs) == 2 else (gx, gw, gb)


_conv2d_p = Conv2d().register()


def conv2d(x: Any, w: Any, b: Any = None, stride: Any = 1, padding: Any = 0) -> Any:
    """2-D convolution (cross-correlation) of NCHW ``x`` with ``w`` (O, C, kh, kw),
    plus the bias ``b`` (O,) if given."""
    params = {"stride": pair(stride, "conv2d: stride"), "padding": pair(padding, "conv2d: padding")}
    if 0 in params["stride"]:
        raise ValueError("conv2d: stride must be positive")
    if b is None:
        return _conv2d_p(x, w, **params)
    return _conv2d_p(x, w, b, **params)


# ---------------------------------------------------------------- pooling

class _Pool(Primitive):
    def _geometry(self, x, kernel, stride, padding):
        _check_nchw(x, self.name)
        (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
        if 2 * ph > kh or 2 * pw > kw:
            raise ValueError(f"{self.name}: padding must be at most half the window")
        _out_size(x.shape[2], kh, sh, ph, self.name)
        _out_size(x.shape[3], kw, sw, pw, self.name)


def _offsets(xp: np.ndarray, kernel, stride, ho: int, wo: int):
    """For each window offset (a, b): the strided slice of the padded input that the
    offset reads in every window, shape (N, C, Ho, Wo).  A loop over kh*kw slices
    runs numpy on large blocks, not on tiny strided windows."""
    (kh, kw), (sh, sw) = kernel, stride
    return [xp[:, :, a:a + sh * (ho - 1) + 1:sh, b:b + sw * (wo - 1) + 1:sw]
            for a in range(kh) for b in range(kw)]


def _pool_out_shape(x, kernel, stride, padding):
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    return (x.shape[2] + 2 * ph - kh) // sh + 1, (x.shape[3] + 2 * pw - kw) // sw + 1


def _pad_any(x, ph: int, pw: int, fill: float):
    """``_pad`` for plain or active values (active ones get constant blocks joined)."""
    if getattr(x, "_ad_tag", None) is None:
        return _pad(np.asarray(x), ph, pw, fill)
    n, c, h, w = _shape(x)
    dtype = np.asarray(_primal(x)).dtype
    if pw:
        side = np.full((n, c, h, pw), fill, dtype=dtype)
        x = _concatenate(side, x, side, axis=3)
    if ph:
        band = np.full((n, c, ph, w + 2 * pw), fill, dtype=dtype)
        x = _concatenate(band, x, band, axis=2)
    return x


def _offsets_any(xp, kernel, stride, ho: int, wo: int):
    """``_offsets`` for plain or active values."""
    if getattr(xp, "_ad_tag", None) is None:
        return _offsets(xp, kernel, stride, ho, wo)
    (kh, kw), (sh, sw) = kernel, stride
    return [_getitem(xp, index=(slice(None), slice(None),
                                slice(a, a + sh * (ho - 1) + 1, sh),
                                slice(b, b + sw * (wo - 1) + 1, sw)))
            for a in range(kh) for b in range(kw)]


def _scatter(parts, shape, kernel, stride, padding):
    """The adjoint of ``_offsets`` after padding: add each offset's cotangent back."""
    n, c, h, w = shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    ho, wo = parts[0].shape[2:]
    gxp = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=parts[0].dtype)
    i = 0
    for a in range(kh):
        for b in range(kw):
            gxp[:, :, a:a + sh * (ho - 1) + 1:sh, b:b + sw * (wo - 1) + 1:sw] += parts[i]
            i += 1
    return gxp[:, :, ph:ph + h, pw:pw + w]


class MaxPool2d(_Pool):
    name = "max_pool2d"

    def _shares(self, x, out, kernel, stride, padding):
        """Per offset, each window entry's share of the window's derivative: 1/(ties)
        where it equals the maximum (a NaN maximum goes to the NaN entries)."""
        ho, wo = out.shape[2:]
        parts = _offsets(_pad(x, *padding, fill=-np.inf), kernel, stride, ho, wo)
        nan_out = np.isnan(out)
        if nan_out.any():
            hits = [(p == out) | (nan_out & np.isnan(p)) for p in parts]
        else:
            hits = [p == out for p in parts]
        count = np.zeros(out.shape, dtype=x.dtype)
        for h in hits:
            count += h
        inv = np.asarray(1.0, dtype=x.dtype) / count
        return [h * inv for h in hits]

    def value(self, x, *, kernel, stride, padding):
        x = _float(x)
        self._geometry(x, kernel, stride, padding)
        ho, wo = _pool_out_shape(x, kernel, stride, padding)
        parts = _offsets(_pad(x, *padding, fill=-np.inf), kernel, stride, ho, wo)
        out = parts[0].copy()
        for part in parts[1:]:
            np.maximum(out, part, out=out)
        return out

    def jvp(self, xs, dxs, out, *, kernel, stride, padding):
        x, (dx,) = xs[0], dxs
        xshape, oshape = _shape(x), _shape(out)
        k = _shape(dx)[0]
        ho, wo = oshape[2:]
        if getattr(x, "_ad_tag", None) is None:
            shares = self._shares(_float(x), out, kernel, stride, padding)
        else:
            # x active for an outer differentiation: the shares from recorded comparisons,
            # so that a tape replaying this at another point checks the argmax
            hits = [_dual.equal(p, out) for p in
                    _offsets_any(_pad_any(x, *padding, -np.inf), kernel, stride, ho, wo)]
            count = hits[0]
            for h in hits[1:]:
                count = count + h
            shares = [h / count for h in hits]
        flat = _reshape(dx, shape=(k * xshape[0],) + xshape[1:])
        tshape = (k,) + oshape
        tot = None
        for dp, share in zip(_offsets_any(_pad_any(flat, *padding, 0.0), kernel, stride, ho, wo),
                             shares):
            term = _reshape(dp, shape=tshape) * share
            tot = term if tot is None else tot + term
        return tot

    def vjp(self, g, xs, out, needs, *, kernel, stride, padding):
        g = cotangent(g, out)
        x = _float(xs[0])
        g = np.asarray(g)
        shares = self._shares(x, out, kernel, stride, padding)
        return (_scatter([g * share for share in shares], x.shape, kernel, stride, padding),)


class AvgPool2d(_Pool):
    """Window means; padded zeros count in the mean (PyTorch's default)."""

    name = "avg_pool2d"

    def _pool(self, x, kernel, stride, padding):
        ho, wo = _pool_out_shape(x, kernel, stride, padding)
        parts = _offsets(_pad(x, *padding), kernel, stride, ho, wo)
        out = parts[0].copy()
        for part in parts[1:]:
            out += part
        out *= np.asarray(1.0 / (kernel[0] * kernel[1]), dtype=out.dtype)
        return out

    def value(self, x, *, kernel, stride, padding):
        x = _float(x)
        self._geometry(x, kernel, stride, padding)
        return self._pool(x, kernel, stride, padding)

    def jvp(self, xs, dxs, out, *, kernel, stride, padding):
        (dx,) = dxs
        shape = _shape(dx)
        flat = _reshape(dx, shape=(shape[0] * shape[1],) + shape[2:])
        t = _avg_pool2d_p(flat, kernel=kernel, stride=stride, padding=padding)
        return _reshape(t, shape=(shape[0],) + _shape(out))

    def vjp(self, g, xs, out, needs, *, kernel, stride, padding):
        g = cotangent(g, out)
        x = _float(xs[0])
        g = np.asarray(g)
        kh, kw = kernel
        share = g * np.asarray(1.0 / (kh * kw), dtype=g.dtype)
        return (_scatter([share] * (kh * kw), x.shape, kernel, stride, padding),)


_max_pool2d_p = MaxPool2d().register()
_avg_pool2d_p = AvgPool2d().register()


def _pool_params(kernel_size, stride, padding, name):
    kernel = pair(kernel_size, f"{name}: kernel_size")
    stride = kernel if stride is None else pair(stride, f"{name}: stride")
    if 0 in kernel or 0 in stride:
        raise ValueError(f"{name}: kernel_size and stride must be positive")
    return {"kernel": kernel, "stride": stride, "padding": pair(padding, f"{name}: padding")}


def max_pool2d(x: Any, kernel_size: Any = 2, stride: Any = None, padding: Any = 0) -> Any:
    """Maximum over each window of NCHW ``x`` (stride defaults to the window);
    tied maxima share the derivative evenly."""
    return _max_pool2d_p(x, **_pool_params(kernel_size, stride, padding, "max_pool2d"))


def avg_pool2d(x: Any, kernel_size: Any = 2, stride: Any = None, padding: Any = 0) -> Any:
    """Mean over each window of NCHW ``x`` (stride defaults to the window)."""
    return _avg_pool2d_p(x, **_pool_params(kernel_size, stride, padding, "avg_pool2d"))


# ---------------------------------------------------------------- dropout, reshaping

class Dropout(Primitive):
    """x * mask, the mask (0 or 1/(1-rate)) a constant second input."""

    name = "dropout"
    differentiable = (0,)

    def value(self, x, mask):
        return _float(x) * mask

    def jvp(self, xs, dxs, out, **params):
        return dxs[0] * xs[1]   # the mask: a constant of every differentiation

    def vjp(self, g, xs, out, needs, **params):
        g = cotangent(g, out)
        return (sum_to_shape(np.asarray(g) * xs[1], np.shape(xs[0])), None)


_dropout_p = Dropout().register()


_masks = threading.local()


def _masks_drawn() -> int:
    """How many masks dropout_mask has drawn on this thread: nn.ReplayedStep tells
    by it that a loss drew one while recorded, which a replay would reuse."""
    return getattr(_masks, "count", 0)


def dropout_mask(shape: Any, rate: float, rng: np.random.Generator,
                 dtype: Any = np.float32) -> np.ndarray:
    """A dropout mask: 0 with probability ``rate``, else 1/(1-rate)."""
    rate = float(rate)
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout: rate must be in [0, 1), got {rate}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError("dropout: rng must be a numpy.random.Generator, e.g. "
                        "numpy.random.default_rng(0)")
    _masks.count = _masks_drawn() + 1
    keep = rng.random(shape) >= rate
    return keep.astype(dtype) * np.asarray(1.0 / (1.0 - rate), dtype=dtype)


def dropout_apply(x: Any, mask: Any) -> Any:
    """``x * mask`` as one instruction; the mask is a constant (never differentiated).
    Pass masks drawn by ``dropout_mask`` as arguments of a recorded step to get a
    new mask on every replay."""
    return _dropout_p(x, mask)


def dropout(x: Any, rate: float, rng: Optional[np.random.Generator],
            training: bool = True) -> Any:
    """Zero each element with probability ``rate`` and scale the rest by 1/(1-rate).

    ``rng`` is an explicit ``numpy.random.Generator`` (no hidden global state).
    The mask is drawn when this is called, so a recorded tape replays the mask it
    recorded; see ``dropout_mask`` / ``dropout_apply`` for a new mask per replay.
    """
    rate = float(rate)
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout: rate must be in [0, 1), got {rate}")
    if not training or rate == 0.0:
        return x
    shape = tuple(x.shape) if hasattr(x, "shape") else np.shape(x)
    dtype = getattr(x, "dtype", np.float64)
    dtype = dtype if np.issubdtype(dtype, np.floating) else np.float64
    return _dropout_p(x, dropout_mask(shape, rate, rng, dtype))


def flatten(x: Any, start_axis: int = 1) -> Any:
    """Merge the axes from ``start_axis`` on into one, e.g. (N, C, H, W) -> (N, C*H*W)."""
    from ..array_ops import reshape

    shape = tuple(x.shape) if hasattr(x, "shape") else np.shape(x)
    start = _axis(start_axis, len(shape), "flatten")
    return reshape(x, shape[:start] + (-1,))
