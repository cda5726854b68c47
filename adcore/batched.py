"""Batched replay: a recorded tape evaluated at many points in one call.

Work in progress (issue 9): Tape.map, Tape.gradient_map and Tape.jacobian_map
call tape_map, tape_gradient_map and tape_jacobian_map here.
"""

from __future__ import annotations

__all__: list = []
