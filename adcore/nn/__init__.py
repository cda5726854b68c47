"""Deep learning on adcore: operations, layers, optimizers, data, training.

Parameters are plain trees (dicts and lists of numpy arrays), so models work
with ``adcore.grad`` / ``adcore.value_and_grad`` and with recorded tapes.
"""

from .._dual import gelu, relu, sigmoid, softplus, tanh  # rows of the rule table
from . import data, functional, layers, optim
from .data import batches, load_digits, train_test_split
from .functional import (avg_pool2d, conv2d, cross_entropy, dropout, flatten, linear,
                         log_softmax, logsumexp, max_pool2d, mse, one_hot, softmax)
from .layers import (MLP, Activation, AvgPool2d, Conv2d, Dropout, Flatten, Layer, Linear,
                     MaxPool2d, Sequential, count_parameters, glorot_normal, glorot_uniform,
                     he_normal, he_uniform)
from .optim import SGD, Adam
from .step import ReplayedStep

__all__ = [
    "data", "functional", "layers", "optim",
    "batches", "load_digits", "train_test_split",
    "avg_pool2d", "conv2d", "cross_entropy", "dropout", "flatten", "linear", "log_softmax",
    "logsumexp", "max_pool2d", "mse", "one_hot", "softmax",
    "MLP", "Activation", "AvgPool2d", "Conv2d", "Dropout", "Flatten", "Layer", "Linear",
    "MaxPool2d", "Sequential", "count_parameters", "glorot_normal", "glorot_uniform",
    "he_normal", "he_uniform", "SGD", "Adam", "ReplayedStep",
    "gelu", "relu", "sigmoid", "softplus", "tanh",
]
