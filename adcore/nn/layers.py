"""Layers: a model is a function of (parameters, input); parameters are plain trees.

A layer holds only its configuration.  ``layer.init(rng, dtype)`` returns its
parameters as a dict of numpy arrays (``{}`` for a layer without any), and
``layer(params, x)`` applies it.  Because parameters are ordinary dicts and
lists of arrays, ``adcore.grad(loss)(params, x, y)`` returns gradients in the
same structure, optimizers walk them with ``adcore.tree_map``, and a training
step can be recorded once and replayed (``adcore.record``).

Initializers take an explicit ``numpy.random.Generator``: there is no hidden
global random state.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .. import _dual  # the rule table's element-wise functions (adcore.relu, ...)
from . import functional as F

__all__ = ["glorot_uniform", "glorot_normal", "he_uniform", "he_normal", "zeros",
           "Layer", "Linear", "Conv2d", "Activation", "MaxPool2d", "AvgPool2d",
           "Flatten", "Dropout", "Sequential", "MLP", "count_parameters"]

Shape = Tuple[int, ...]


# ---------------------------------------------------------------- initializers

def _fans(shape: Shape) -> Tuple[int, int]:
    """(fan_in, fan_out) of a Linear weight (in, out) or a Conv2d weight (O, C, kh, kw)."""
    if len(shape) == 2:
        return shape[0], shape[1]
    if len(shape) == 4:
        field = shape[2] * shape[3]
        return shape[1] * field, shape[0] * field
    raise ValueError(f"initializers expect a (in, out) or (O, C, kh, kw) weight, got {shape}")


def _check_rng(rng: Any, name: str) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"{name}: rng must be a numpy.random.Generator, "
                        f"e.g. numpy.random.default_rng(0)")
    return rng


def glorot_uniform(rng: np.random.Generator, shape: Shape, dtype: Any = np.float32) -> np.ndarray:
    """Glorot & Bengio (2010): U(-a, a), a = sqrt(6 / (fan_in + fan_out))."""
    fan_in, fan_out = _fans(tuple(shape))
    a = math.sqrt(6.0 / (fan_in + fan_out))
    return _check_rng(rng, "glorot_uniform").uniform(-a, a, shape).astype(dtype)


def glorot_normal(rng: np.random.Generator, shape: Shape, dtype: Any = np.float32) -> np.ndarray:
    """Glorot & Bengio (2010): N(0, 2 / (fan_in + fan_out))."""
    fan_in, fan_out = _fans(tuple(shape))
    std = math.sqrt(2.0 / (fan_in + fan_out))
    return (_check_rng(rng, "glorot_normal").standard_normal(shape) * std).astype(dtype)


def he_uniform(rng: np.random.Generator, shape: Shape, dtype: Any = np.float32) -> np.ndarray:
    """He et al. (2015), for ReLU networks: U(-a, a), a = sqrt(6 / fan_in)."""
    fan_in, _ = _fans(tuple(shape))
    a = math.sqrt(6.0 / fan_in)
    return _check_rng(rng, "he_uniform").uniform(-a, a, shape).astype(dtype)


def he_normal(rng: np.random.Generator, shape: Shape, dtype: Any = np.float32) -> np.ndarray:
    """He et al. (2015), for ReLU networks: N(0, 2 / fan_in)."""
    fan_in, _ = _fans(tuple(shape))
    return (_check_rng(rng, "he_normal").standard_normal(shape)
            * math.sqrt(2.0 / fan_in)).astype(dtype)


def zeros(rng: Optional[np.random.Generator], shape: Shape, dtype: Any = np.float32) -> np.ndarray:
    return np.zeros(shape, dtype=dtype)


INITIALIZERS: Dict[str, Callable[..., np.ndarray]] = {
    "glorot_uniform": glorot_uniform, "glorot_normal": glorot_normal,
    "he_uniform": he_uniform, "he_normal": he_normal, "zeros": zeros,
}


def _initializer(init: Union[str, Callable[..., np.ndarray]]) -> Callable[..., np.ndarray]:
    if callable(init):
        return init
    try:
        return INITIALIZERS[init]
    except KeyError:
        raise ValueError(f"unknown initializer {init!r}; choose one of "
                         f"{sorted(INITIALIZERS)} or pass a function (rng, shape, dtype)") from None


# ---------------------------------------------------------------- layers

class Layer:
    """Configuration of one step of a model; parameters live outside it."""

    def init(self, rng: np.random.Generator, dtype: Any = np.float32) -> Dict[str, np.ndarray]:
        return {}

    def __call__(self, params: Any, x: Any, *, rng: Optional[np.random.Generator] = None,
                 training: bool = False) -> Any:
        raise NotImplementedError

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


class Linear(Layer):
    """y = x @ w + b with w of shape (in_features, out_features)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 init: Union[str, Callable[..., np.ndarray]] = "he_normal"):
        if in_features < 1 or out_features < 1:
            raise ValueError(f"Linear: sizes must be positive, got {in_features}, {out_features}")
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.bias = bool(bias)
        self.init_name = init
        self._init = _initializer(init)

    def init(self, rng, dtype=np.float32):
        p = {"w": self._init(rng, (self.in_features, self.out_features), dtype)}
        if self.bias:
            p["b"] = np.zeros(self.out_features, dtype=dtype)
        return p

    def __call__(self, params, x, *, rng=None, training=False):
        return F.linear(x, params["w"], params.get("b"))


class Conv2d(Layer):
    """NCHW convolution with weight (out_channels, in_channels, kh, kw) and bias."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any = 3,
                 stride: Any = 1, padding: Any = 0, bias: bool = True,
                 init: Union[str, Callable[..., np.ndarray]] = "he_normal"):
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.kernel_size = F.pair(kernel_size, "Conv2d: kernel_size")
        self.stride = F.pair(stride, "Conv2d: stride")
        self.padding = F.pair(padding, "Conv2d: padding")
        self.bias = bool(bias)
        self.init_name = init
        self._init = _initializer(init)

    def init(self, rng, dtype=np.float32):
        shape = (self.out_channels, self.in_channels) + self.kernel_size
        p = {"w": self._init(rng, shape, dtype)}
        if self.bias:
            p["b"] = np.zeros(self.out_channels, dtype=dtype)
        return p

    def __call__(self, params, x, *, rng=None, training=False):
        return F.conv2d(x, params["w"], params.get("b"), self.stride, self.padding)


ACTIVATIONS = ("relu", "tanh", "sigmoid", "softplus", "gelu")


class Activation(Layer):
    """An element-wise activation of the rule table (adcore.relu, adcore.tanh, ...)."""

    def __init__(self, name: str = "relu"):
        if name not in ACTIVATIONS:
            raise ValueError(f"Activation: unknown activation {name!r}; choose one of {ACTIVATIONS}")
        self.name = name

    def __call__(self, params, x, *, rng=None, training=False):
        return getattr(_dual, self.name)(x)


class MaxPool2d(Layer):
    def __init__(self, kernel_size: Any = 2, stride: Any = None, padding: Any = 0):
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def __call__(self, params, x, *, rng=None, training=False):
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding)


class AvgPool2d(Layer):
    def __init__(self, kernel_size: Any = 2, stride: Any = None, padding: Any = 0):
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def __call__(self, params, x, *, rng=None, training=False):
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding)


class Flatten(Layer):
    def __init__(self, start_axis: int = 1):
        self.start_axis = start_axis

    def __call__(self, params, x, *, rng=None, training=False):
        return F.flatten(x, self.start_axis)


class Dropout(Layer):
    """Active only when called with ``training=True`` and an ``rng``."""

    def __init__(self, rate: float = 0.5):
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"Dropout: rate must be in [0, 1), got {rate}")
        self.rate = float(rate)

    def __call__(self, params, x, *, rng=None, training=False):
        if not training:
            return x
        if rng is None:
            raise ValueError("Dropout: training=True needs an rng (a numpy.random.Generator)")
        return F.dropout(x, self.rate, rng)


class Sequential(Layer):
    """Layers applied in order; the parameters are a list, one entry per layer."""

    def __init__(self, *layers: Layer):
        for layer in layers:
            if not isinstance(layer, Layer):
                raise TypeError(f"Sequential: {layer!r} is not an adcore.nn layer")
        self.layers: List[Layer] = list(layers)

    def init(self, rng, dtype=np.float32):
        _check_rng(rng, "Sequential.init")
        return [layer.init(rng, dtype) for layer in self.layers]

    def __call__(self, params, x, *, rng=None, training=False):
        if len(params) != len(self.layers):
            raise ValueError(f"Sequential: {len(self.layers)} layers but parameters for "
                             f"{len(params)}")
        for layer, p in zip(self.layers, params):
            x = layer(p, x, rng=rng, training=training)
        return x

    def __repr__(self) -> str:
        inner = ",\n  ".join(repr(layer) for layer in self.layers)
        return f"Sequential(\n  {inner})"


class MLP(Sequential):
    """Linear layers of the given sizes with an activation between them
    (none after the last: it gives logits)."""

    def __init__(self, sizes: Sequence[int], activation: str = "relu",
                 init: Union[str, Callable[..., np.ndarray]] = "he_normal"):
        sizes = [int(s) for s in sizes]
        if len(sizes) < 2:
            raise ValueError(f"MLP: needs at least an input and an output size, got {sizes}")
        layers: List[Layer] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            last = i == len(sizes) - 2
            # the output layer feeds a softmax: Glorot keeps its logits small
            layers.append(Linear(a, b, init="glorot_uniform" if last else init))
            if not last:
                layers.append(Activation(activation))
        super().__init__(*layers)
        self.sizes = sizes
        self.activation = activation


def count_parameters(params: Any) -> int:
    """The number of scalars in a parameter tree."""
    from ..trees import flatten

    return int(sum(np.size(leaf) for leaf in flatten(params)[0]))
