"""Who computes an operation: tags, the owner of an operation, and ``apply``.

Every differentiation (a jvp, a derivative, a recording) takes a fresh tag from
``new_tag``; inner differentiations have larger tags than outer ones.  An
operation is carried out by the argument with the largest ``(_ad_tag,
_ad_rank)``; arguments with smaller tags are constants to it (see
ARCHITECTURE.md, "Values and the dispatch protocol").
"""

from __future__ import annotations

import itertools
from typing import Any, Sequence

__all__ = ["new_tag", "active_owner", "apply", "is_active"]

_tags = itertools.count(1)


def new_tag() -> int:
    """A tag larger than every tag handed out before (thread-safe under the GIL)."""
    return next(_tags)


def is_active(x: Any) -> bool:
    return getattr(x, "_ad_tag", None) is not None


def active_owner(args: Sequence[Any]) -> Any:
    """The argument that takes charge of an operation: the largest (tag, rank), or None."""
    best = None
    best_key = None
    for a in args:
        tag = getattr(a, "_ad_tag", None)
        if tag is None:
            continue
        key = (tag, a._ad_rank)
        if best_key is None or key > best_key:
            best, best_key = a, key
    return best


def apply(op: int, args: Sequence[Any]) -> Any:
    """Apply rule ``op`` (an opcode of adcore._rules) to ``args``."""
    owner = active_owner(args)
    if owner is None:
        from ._dual import plain_apply  # floats and numpy arrays: the C kernels

        return plain_apply(op, args)
    return type(owner)._ad_apply(op, args)
