"""Optimizers on parameter trees (dicts / lists / tuples of numpy arrays).

``opt.step(params, grads)`` updates every array leaf of ``params`` in place (no
new arrays per step, so a recorded step can keep reading the same buffers) and
returns ``params``.  The optimizer's own state (momentum, moments) is created
on the first step with the structure and dtypes of the parameters; float32
parameters keep float32 state.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, List, Optional, Tuple

import numpy as np

from .._tape import sub_scaled
from ..trees import flatten

__all__ = ["SGD", "Adam"]


def _zip_leaves(p: Any, g: Any, out: List[Tuple[Any, Any]]) -> bool:
    """Pairs of (parameter, gradient) leaves of two dict/list/tuple trees walked
    together; False when the trees hold other nodes or differ in structure (the
    caller then takes the general, slower path through adcore.trees)."""
    tp = type(p)
    if tp is dict:
        if type(g) is not dict or p.keys() != g.keys():
            return False
        for k in p:
            if not _zip_leaves(p[k], g[k], out):
                return False
        return True
    if tp is list or tp is tuple:
        if type(g) is not tp or len(p) != len(g):
            return False
        for a, b in zip(p, g):
            if not _zip_leaves(a, b, out):
                return False
        return True
    if p is None or isinstance(p, (dict, list, tuple)) or dataclasses.is_dataclass(p):
        return False                      # namedtuples, dict subclasses, dataclasses, None
    out.append((p, g))
    return True


class _Optimizer:
    def __init__(self) -> None:
        self._shapes: Optional[List[Tuple[int, ...]]] = None
        self._dtypes: Optional[List[np.dtype]] = None     # the parameters' at the first step
        self._kept: Any = None        # (hyperparameters, dtypes, constants) of _constants_for
        self.steps = 0

    def _quick(self, params: Any, grads: Any):
        """(parameter leaves, gradient leaves) when this step looks like the last
        ones: a dict of arrays or a list/tuple of arrays and such dicts (the usual
        model parameters), writable arrays of the first step's shapes and dtypes,
        gradients of the same shapes and dtypes; else None (then _leaves checks
        everything and names the problem).  One pass, no recursion."""
        shapes = self._shapes
        if shapes is None:
            return None
        tp = type(params)
        if tp is dict:
            if type(grads) is not dict or params.keys() != grads.keys():
                return None
            ps = list(params.values())
            gs = list(map(grads.__getitem__, params))
        elif tp is list or tp is tuple:
            if type(grads) is not tp or len(params) != len(grads):
                return None
            ps, gs = [], []
            for a, b in zip(params, grads):
                if type(a) is dict:
                    if type(b) is not dict or a.keys() != b.keys():
                        return None
                    ps += a.values()
                    gs += map(b.__getitem__, a)
                else:
                    ps.append(a)
                    gs.append(b)
        else:
            return None
        if len(ps) != len(shapes):
            return None
        nd = np.ndarray
        for p, g, s, d in zip(ps, gs, shapes, self._dtypes):
            if (type(p) is not nd or type(g) is not nd or p.shape != s or g.shape != s
                    or p.dtype != d or g.dtype != d or not p.flags.writeable):
                return None
        return ps, gs

    def _leaves(self, params: Any, grads: Any) -> List[Tuple[Any, Any]]:
        name = type(self).__name__
        pairs: List[Tuple[Any, Any]] = []
        if not _zip_leaves(params, grads, pairs):
            p_leaves, p_def = flatten(params)
            g_leaves, g_def = flatten(grads)
            if p_def != g_def:
                raise ValueError(f"{name}.step: gradients have the structure "
                                 f"{g_def!r} but the parameters {p_def!r}")
            pairs = list(zip(p_leaves, g_leaves))
        shapes = self._shapes
        if shapes is not None and len(shapes) != len(pairs):
            raise ValueError(f"{name}.step: the parameters changed structure since the first "
                             f"step ({len(shapes)} arrays then, {len(pairs)} now); use a new "
                             f"optimizer")
        for i, (p, g) in enumerate(pairs):
            if type(p) is not np.ndarray or not p.flags.writeable:
                raise TypeError(f"{name}.step: parameter leaf {i} must be a writable numpy "
                                f"array (it is updated in place), got {type(p).__name__}")
            if (g.shape if type(g) is np.ndarray else np.shape(g)) != p.shape:
                raise ValueError(f"{name}.step: gradient leaf {i} has shape {np.shape(g)} "
                                 f"but the parameter has {p.shape}")
            if shapes is not None and shapes[i] != p.shape:
                raise ValueError(f"{name}.step: parameter leaf {i} has shape {p.shape}, it had "
                                 f"{shapes[i]} at the first step; use a new optimizer")
        if shapes is None:
            self._shapes = [p.shape for p, _ in pairs]
            self._dtypes = [p.dtype for p, _ in pairs]
            self._init_state([p for p, _ in pairs])
        return pairs

    def _init_state(self, leaves: List[np.ndarray]) -> None:
        pass

    def step(self, params: Any, grads: Any) -> Any:
        quick = self._quick(params, grads)
        if quick is None:
            pairs = self._leaves(params, grads)
            ps = [p for p, _ in pairs]
            gs = [g if type(g) is np.ndarray and g.dtype == p.dtype
                  else np.asarray(g, dtype=p.dtype) for p, g in pairs]
            dtypes = [p.dtype for p in ps]
        else:
            ps, gs = quick
            dtypes = self._dtypes
        self.steps += 1
        self._apply(ps, gs, self._constants_for(dtypes))
        return params

    def _constants_for(self, dtypes: list) -> list:
        """Per leaf, the step's constants in that leaf's dtype; kept while the
        hyperparameters (public attributes: a schedule may change them) and the
        first step's dtypes stay."""
        key = self._key()
        kept = self._kept
        if kept is not None and kept[1] is dtypes and kept[0] == key:
            return kept[2]
        per: dict = {}
        ks = []
        for d in dtypes:
            k = per.get(d)
            if k is None:
                k = per[d] = self._constants(d.type)
            ks.append(k)
        if dtypes is self._dtypes:
            self._kept = (key, dtypes, ks)
        return ks

    def _key(self) -> tuple:
        raise NotImplementedError

    def _constants(self, t: Any) -> tuple:
        raise NotImplementedError

    def _apply(self, ps: list, gs: list, ks: list) -> None:
        raise NotImplementedError


class SGD(_Optimizer):
    """Stochastic gradient descent with momentum and weight decay (PyTorch's form):
    ``v = momentum * v + (g + weight_decay * p)``, ``p -= lr * v``
    (with ``nesterov``: ``p -= lr * (g' + momentum * v)``)."""

    def __init__(self, lr: float = 0.1, momentum: float = 0.0, weight_decay: float = 0.0,
                 nesterov: bool = False):
        super().__init__()
        if not lr > 0.0:
            raise ValueError(f"SGD: lr must be positive, got {lr}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"SGD: momentum must be in [0, 1), got {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"SGD: weight_decay must be non-negative, got {weight_decay}")
        if nesterov and momentum == 0.0:
            raise ValueError("SGD: nesterov needs a positive momentum")
        self.lr, self.momentum, self.weight_decay, self.nesterov = (
            float(lr), float(momentum), float(weight_decay), bool(nesterov))
        self.velocity: Optional[List[np.ndarray]] = None

    def _init_state(self, leaves):
        if self.momentum:
            self.velocity = [np.zeros_like(p) for p in leaves]

    def _key(self):
        return self.lr, self.weight_decay, self.momentum

    def _constants(self, t):
        return t(self.lr), t(self.weight_decay), t(self.momentum)

    def _apply(self, ps, gs, ks):
        wd, mom, nesterov = self.weight_decay, self.momentum, self.nesterov
        if not wd and not mom:
            for p, g, k in zip(ps, gs, ks):
                if not sub_scaled(p, k[0], g):      # one C pass, the same bits
                    p -= k[0] * g
            return
        for i, (p, g, (lr_t, wd_t, mom_t)) in enumerate(zip(ps, gs, ks)):
            if wd:
                g = g + p * wd_t
            if mom:
                v = self.velocity[i]
                v *= mom_t
                v += g
                g = g + v * mom_t if nesterov else v
            if not sub_scaled(p, lr_t, g):
                p -= lr_t * g


class Adam(_Optimizer):
    """Adam (Kingma & Ba, 2015) with bias correction; ``weight_decay`` adds
    ``weight_decay * p`` to the gradient (L2), ``decoupled=True`` makes it AdamW."""

    def __init__(self, lr: float = 1e-3, betas: Any = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, decoupled: bool = False):
        super().__init__()
        b1, b2 = betas
        if not lr > 0.0:
            raise ValueError(f"Adam: lr must be positive, got {lr}")
        if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
            raise ValueError(f"Adam: betas must be in [0, 1), got {betas}")
        if not eps > 0.0:
            raise ValueError(f"Adam: eps must be positive, got {eps}")
        if weight_decay < 0.0:
            raise ValueError(f"Adam: weight_decay must be non-negative, got {weight_decay}")
        self.lr, self.b1, self.b2, self.eps = float(lr), float(b1), float(b2), float(eps)
        self.weight_decay, self.decoupled = float(weight_decay), bool(decoupled)
        self.m: Optional[List[np.ndarray]] = None
        self.v: Optional[List[np.ndarray]] = None

    def _init_state(self, leaves):
        self.m = [np.zeros_like(p) for p in leaves]
        self.v = [np.zeros_like(p) for p in leaves]

    def _key(self):
        return self.lr, self.b1, self.b2, self.eps, self.weight_decay, self.steps

    def _constants(self, t):
        c1 = 1.0 - self.b1 ** self.steps
        c2 = 1.0 - self.b2 ** self.steps
        step = self.lr * math.sqrt(c2) / c1
        # eps scaled so that it is added to the bias-corrected sqrt(v), as in the paper
        return (t(self.b1), t(1.0 - self.b1), t(self.b2), t(1.0 - self.b2), t(step),
                t(self.eps * math.sqrt(c2)), t(self.weight_decay),
                t(self.lr * self.weight_decay))

    def _apply(self, ps, gs, ks):
        coupled = self.weight_decay and not self.decoupled
        decoupled = self.weight_decay and self.decoupled
        for i, (p, g, k) in enumerate(zip(ps, gs, ks)):
            b1, b1c, b2, b2c, step, eps, wd, lr_wd = k
            if coupled:
                g = g + p * wd
            m, v = self.m[i], self.v[i]
            m *= b1
            m += b1c * g
            v *= b2
            v += b2c * (g * g)
            if decoupled:
                p -= lr_wd * p
            p -= step * m / (np.sqrt(v) + eps)
