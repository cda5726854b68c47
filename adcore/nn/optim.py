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
        self.steps = 0

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
            self._init_state([p for p, _ in pairs])
        return pairs

    def _init_state(self, leaves: List[np.ndarray]) -> None:
        pass

    def step(self, params: Any, grads: Any) -> Any:
        pairs = self._leaves(params, grads)
        self.steps += 1
        for i, (p, g) in enumerate(pairs):
            if type(g) is not np.ndarray or g.dtype != p.dtype:
                g = np.asarray(g, dtype=p.dtype)
            self._update(i, p, g)
        return params

    def _update(self, i: int, p: np.ndarray, g: np.ndarray) -> None:
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

    def _update(self, i, p, g):
        if self.weight_decay:
            g = g + p * p.dtype.type(self.weight_decay)
        if self.momentum:
            v = self.velocity[i]
            v *= p.dtype.type(self.momentum)
            v += g
            g = g + v * p.dtype.type(self.momentum) if self.nesterov else v
        p -= p.dtype.type(self.lr) * g


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

    def _update(self, i, p, g):
        t = p.dtype.type
        if self.weight_decay and not self.decoupled:
            g = g + p * t(self.weight_decay)
        m, v = self.m[i], self.v[i]
        m *= t(self.b1)
        m += t(1.0 - self.b1) * g
        v *= t(self.b2)
        v += t(1.0 - self.b2) * (g * g)
        c1 = 1.0 - self.b1 ** self.steps
        c2 = 1.0 - self.b2 ** self.steps
        step = self.lr * math.sqrt(c2) / c1
        if self.weight_decay and self.decoupled:
            p -= t(self.lr * self.weight_decay) * p
        # eps scaled so that it is added to the bias-corrected sqrt(v), as in the paper
        p -= t(step) * m / (np.sqrt(v) + t(self.eps * math.sqrt(c2)))
