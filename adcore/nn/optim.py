"""Optimizers on parameter trees (dicts / lists / tuples of numpy arrays).

``opt.step(params, grads)`` updates every array leaf of ``params`` in place (no
new arrays per step, so a recorded step can keep reading the same buffers) and
returns ``params``.  The optimizer's own state (momentum, moments) is created
on the first step with the structure and dtypes of the parameters; float32
parameters keep float32 state.
"""

from __future__ import annotations

import math
from typing import Any, List, Optional

import numpy as np

from ..trees import flatten

__all__ = ["SGD", "Adam"]


class _Optimizer:
    def __init__(self) -> None:
        self._treedef = None
        self.steps = 0

    def _leaves(self, params: Any, grads: Any):
        p_leaves, p_def = flatten(params)
        g_leaves, g_def = flatten(grads)
        if p_def != g_def:
            raise ValueError(f"{type(self).__name__}.step: gradients have the structure "
                             f"{g_def!r} but the parameters {p_def!r}")
        for i, (p, g) in enumerate(zip(p_leaves, g_leaves)):
            if not isinstance(p, np.ndarray) or not p.flags.writeable:
                raise TypeError(f"{type(self).__name__}.step: parameter leaf {i} must be a "
                                f"writable numpy array (it is updated in place), got "
                                f"{type(p).__name__}")
            if np.shape(g) != p.shape:
                raise ValueError(f"{type(self).__name__}.step: gradient leaf {i} has shape "
                                 f"{np.shape(g)} but the parameter has {p.shape}")
        if self._treedef is None:
            self._treedef = p_def
            self._init_state(p_leaves)
        elif p_def != self._treedef:
            raise ValueError(f"{type(self).__name__}.step: the parameters changed structure "
                             f"since the first step; use a new optimizer")
        return p_leaves, g_leaves

    def _init_state(self, leaves: List[np.ndarray]) -> None:
        pass

    def step(self, params: Any, grads: Any) -> Any:
        p_leaves, g_leaves = self._leaves(params, grads)
        self.steps += 1
        for i, (p, g) in enumerate(zip(p_leaves, g_leaves)):
            self._update(i, p, np.asarray(g, dtype=p.dtype))
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
