"""Deep learning on adcore: operations, layers, optimizers, data, training."""

from . import functional
from .functional import (avg_pool2d, conv2d, cross_entropy, dropout, flatten, linear,
                         log_softmax, logsumexp, max_pool2d, mse, one_hot, softmax)
