"""Array primitives: operations defined once by numpy code with their own rules.

Element-wise operations come from the rule table and run as C kernels.  Array
operations that are not element-wise (sum, indexing, reshape, matmul, softmax,
convolution, ...) are *primitives*: a value function, a forward rule (jvp) and a
reverse rule (vjp), written once with numpy.  Every differentiation mode uses
the same three functions: forward mode calls ``jvp``, the tape records one
instruction per call and its reverse sweep calls ``vjp``, a replay calls
``value``.

Calling a primitive dispatches like the element-wise functions: the argument
with the largest ``(_ad_tag, _ad_rank)`` decides, through its type's
``_ad_primitive(prim, args, params)``; with no active argument the value is
computed directly.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

import numpy as np

from .dispatch import active_owner

__all__ = ["Primitive", "REGISTRY"]

#: every primitive instance by name (saved tapes refer to primitives by name)
REGISTRY: dict = {}


class Primitive:
    """An array operation: value, jvp and vjp in numpy.  Subclass and override.

    * ``value(*xs, **params)``: the result (ndarray or float) at plain inputs.
    * ``jvp(xs, dxs, out, **params)``: forward rule.  ``dxs[i]`` is ``None`` for an
      input that is constant, else its tangents as an array with a leading axis of
      length k (one slice per direction).  Returns the output's tangents, also with
      the leading k axis.
    * ``vjp(g, xs, out, needs, **params)``: reverse rule.  ``g`` is the output's
      cotangent (the shape of ``out``); ``needs[i]`` says whether input i's cotangent
      is wanted.  Returns a tuple with one cotangent per input (shape of that input)
      or ``None``.

    * ``vjp_rows(G, xs, out, needs, **params)`` (optional): the reverse rule for a
      stack of cotangents, ``G.shape == (B,) + shape of out``, returning stacked
      cotangents ``(B,) + shape of input`` (or None).  The tape's batched sweep
      (``Tape.jacobian_rows``: all rows of a Jacobian in one sweep) uses it when
      present, else calls ``vjp`` once per row; results must equal ``vjp`` row by
      row to rounding.

    ``params`` are keyword arguments that are not differentiated (axis, shape, ...);
    they must be hashable or numpy arrays of integers (they are saved with tapes).
    """

    name = "primitive"
    #: input positions that are differentiable (None: all)
    differentiable: Optional[Tuple[int, ...]] = None
    #: linear in all inputs together: the jvp in one direction is the primitive
    #: applied to that direction's tangents (nested forward mode uses it)
    linear = False

    def register(self) -> "Primitive":
        """Record this instance in REGISTRY under its name (names are unique)."""
        if REGISTRY.get(self.name, self) is not self:
            raise ValueError(f"a primitive named {self.name!r} is already registered")
        REGISTRY[self.name] = self
        return self

    #: the stacked reverse rule (see above); None: the tape calls vjp row by row
    vjp_rows: Any = None

    def value(self, *xs: Any, **params: Any) -> Any:
        raise NotImplementedError

    def jvp(self, xs: Sequence[Any], dxs: Sequence[Any], out: Any, **params: Any) -> Any:
        raise NotImplementedError(f"{self.name} has no forward rule")

    def vjp(self, g: Any, xs: Sequence[Any], out: Any, needs: Sequence[bool],
            **params: Any) -> Tuple[Any, ...]:
        raise NotImplementedError(f"{self.name} has no reverse rule")

    def __call__(self, *args: Any, **params: Any) -> Any:
        owner = active_owner(args)
        if owner is None:
            return self.value(*[_plain(a) for a in args], **params)
        return type(owner)._ad_primitive(self, args, params)

    def __repr__(self) -> str:
        return f"<adcore primitive {self.name}>"


def _plain(a: Any) -> Any:
    if isinstance(a, (float, int, np.ndarray, np.generic)):
        return a
    return np.asarray(a)
