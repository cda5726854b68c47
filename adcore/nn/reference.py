"""Hand-written numpy backpropagation for a ReLU MLP with softmax cross-entropy.

The baseline the benchmarks compare adcore against, and an independent check of
its gradients in the tests.  Parameters use the layout of
``adcore.nn.MLP(sizes).init(rng)``: a list with ``{"w": (in, out), "b": (out,)}``
for each Linear layer and ``{}`` for each activation between them.
"""

from __future__ import annotations

from typing import Any, List, Tuple

import numpy as np

__all__ = ["mlp_logits", "mlp_loss_and_grads", "mlp_sgd_step"]


def _linears(params: List[dict]) -> List[dict]:
    layers = [p for p in params if p]
    if not layers or any(set(p) != {"w", "b"} for p in layers):
        raise ValueError("reference MLP: expected a list of {'w', 'b'} layers "
                         "(and {} for the activations), as MLP(sizes).init gives")
    return layers


def mlp_logits(params: List[dict], x: np.ndarray) -> np.ndarray:
    layers = _linears(params)
    h = x
    for i, p in enumerate(layers):
        h = h @ p["w"] + p["b"]
        if i < len(layers) - 1:
            h = np.maximum(h, 0)
    return h


def mlp_loss_and_grads(params: List[dict], x: np.ndarray,
                       y: np.ndarray) -> Tuple[Any, List[dict]]:
    """Mean softmax cross-entropy and its gradient, by the chain rule written out:
    dL/dz = (softmax(z) - onehot(y)) / n at the logits, then for each layer
    dL/dw = h_in^T dL/dz, dL/db = sum_rows dL/dz, dL/dh_in = dL/dz w^T, and through
    the ReLU dL/dz_prev = dL/dh_in * [z_prev > 0] (relu'(0) = 0)."""
    layers = _linears(params)
    n = x.shape[0]
    hs = [x]            # the input of each layer
    h = x
    for i, p in enumerate(layers):
        z = h @ p["w"] + p["b"]
        if i < len(layers) - 1:
            h = np.maximum(z, 0)
            hs.append(h)
        else:
            h = z
    z = h - h.max(axis=1, keepdims=True)
    e = np.exp(z)
    s = e.sum(axis=1, keepdims=True)
    rows = np.arange(n)
    loss = np.mean(np.log(s[:, 0]) - z[rows, y])
    dz = e / s
    dz[rows, y] -= 1
    dz *= dz.dtype.type(1.0 / n)
    grads = []
    for i in range(len(layers) - 1, -1, -1):
        h_in = hs[i]
        grads.append({"w": h_in.T @ dz, "b": dz.sum(axis=0)})
        if i > 0:
            dz = dz @ layers[i]["w"].T
            dz *= h_in > 0
    grads.reverse()
    out: List[dict] = []
    it = iter(grads)
    for p in params:
        out.append(next(it) if p else {})
    return loss, out


def mlp_sgd_step(params: List[dict], x: np.ndarray, y: np.ndarray, lr: float) -> Any:
    """One plain SGD step in place; returns the loss before the step."""
    loss, grads = mlp_loss_and_grads(params, x, y)
    for p, g in zip(params, grads):
        for k in p:
            p[k] -= p[k].dtype.type(lr) * g[k]
    return loss
