"""A training step recorded once per batch shape and replayed: the tape's answer
to ``jax.jit(jax.value_and_grad(loss))``."""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..errors import BranchChangedError
from ..reverse import record, value_and_grad
from .functional import _masks_drawn

__all__ = ["ReplayedStep"]


class ReplayedStep:
    """``(loss, gradient) = step(params, x, y)`` by replaying a recording of
    ``loss(params, x, y)``: one recording per layout of the batch (the last batch
    of an epoch is smaller), as jax.jit traces once per shape.  The gradient is
    the parameters' only; they keep the structure and shapes of the first call.

    A replay that would take another branch of Python control flow raises
    ``adcore.BranchChangedError``; the step then records anew, so it gives what
    ``adcore.value_and_grad(loss)`` gives, bit for bit.  What the loss reads
    besides its arguments (a random generator, outside arrays) is fixed by the
    recording: pass it as an argument (``nn.functional.dropout_mask`` masks, say)
    to change it per step.  A loss that draws dropout masks itself (``nn.dropout``
    or ``Dropout`` layers with an rng) is recorded anew every step instead, by
    ``adcore.value_and_grad``, so that each step draws its own masks.
    """

    def __init__(self, loss: Callable):
        self.loss = loss
        self.tapes: dict = {}       # (x's and y's shape and dtype) -> Tape, or None: draws masks
        self._each_step = value_and_grad(loss)

    def __call__(self, params, x, y):
        if type(x) is not np.ndarray:
            x = np.asarray(x)
        if type(y) is not np.ndarray:
            y = np.asarray(y)
        key = (x.shape, x.dtype, y.shape, y.dtype)
        tape = self.tapes.get(key, False)
        if tape is None:
            return self._each_step(params, x, y)
        if tape is not False:
            try:
                return tape.value_and_gradient(params, x, y, argnums=0)
            except BranchChangedError:
                pass                # record this batch's branch instead
        before = _masks_drawn()
        tape = record(self.loss, params, x, y)
        # a mask drawn while recording would be replayed: this step uses it, later
        # steps record (and draw) anew
        self.tapes[key] = tape if _masks_drawn() == before else None
        return tape.value_and_gradient(params, x, y, argnums=0)
