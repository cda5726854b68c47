"""scipy.optimize from one function: ``fun``, ``jac``, ``hess`` and ``hessp``.

adcore's drivers already have the shapes scipy wants: ``value_and_grad(f)``
is ``minimize(..., jac=True)``'s objective (a float and an ndarray),
``grad(f)`` works as ``jac=`` and ``lambda x, p: hvp(f, x, p)`` as ``hessp=``.
``scipy_functions(f)`` goes further: it records ``f`` once and replays that
tape at every new point (no Python in the loop), and records
``(x, v) -> Df(x) v`` once for Hessian-vector products.  A replay whose
comparisons come out differently (another branch of ``f``) raises
``BranchChangedError`` inside; the tape is then recorded again at the new
point, so results are always those of ``f`` itself.

scipy is not needed to import this module.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

from .errors import BranchChangedError
from . import forward
from .drivers import _directional_part
from .nested import NestedDual
from .reverse import record

__all__ = ["scipy_functions", "ScipyObjective"]


def _point(x: Any) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"scipy_functions: scipy.optimize passes a 1-D array, got shape "
                         f"{a.shape}")
    return a


class ScipyObjective:
    """One scalar function ``f(x)`` of a 1-D float array, with its derivatives by
    replaying recorded tapes.  ``stats`` counts recordings and replays."""

    def __init__(self, f: Callable[[Any], Any], replay: bool = True) -> None:
        if not callable(f):
            raise TypeError(f"scipy_functions: f must be callable, got {type(f).__name__}")
        self.f = f
        self.replay = replay
        self._tape: Any = None
        self._hvp_tape: Any = None
        self._hvp_generation = -1  # the count of f's recordings it was made under
        self._last: Optional[Tuple[bytes, float, np.ndarray]] = None
        self.stats = {"records": 0, "replays": 0, "branch_changes": 0}

    # ---------------------------------------------------------------- f and its gradient
    def _record(self, x: np.ndarray) -> Tuple[float, np.ndarray]:
        self._tape = record(self.f, x)
        self.stats["records"] += 1
        return self._replayed(x)

    def _replayed(self, x: np.ndarray) -> Tuple[float, np.ndarray]:
        value = float(self._tape(x))
        g = np.array(self._tape.gradient(x), dtype=np.float64).reshape(x.shape)
        return value, g

    def value_and_grad(self, x: Any) -> Tuple[float, np.ndarray]:
        """``(f(x), gradient)``: what ``minimize(..., jac=True)`` expects."""
        x = _point(x)
        key = x.tobytes()
        if self._last is not None and self._last[0] == key:
            return self._last[1], self._last[2].copy()
        if not self.replay or self._tape is None:
            value, g = self._record(x)
        else:
            try:
                value, g = self._replayed(x)
                self.stats["replays"] += 1
            except BranchChangedError:
                self.stats["branch_changes"] += 1
                value, g = self._record(x)
        self._last = (key, value, g)
        return value, g.copy()

    def fun(self, x: Any) -> float:
        return self.value_and_grad(x)[0]

    def jac(self, x: Any) -> np.ndarray:
        return self.value_and_grad(x)[1]

    # ---------------------------------------------------------------- second derivatives
    def _directional(self, x: Any, v: Any) -> Any:
        # forward over the recording: x and v are both tape inputs (as adcore.hessian)
        with forward._Differentiation() as tag:
            y = self.f(NestedDual(x, [v], tag))
            if tuple(np.shape(getattr(y, "value", y))) not in ((), (1,)):
                raise ValueError(f"scipy_functions: f must return a scalar, got shape "
                                 f"{np.shape(getattr(y, 'value', y))}")
            if tuple(np.shape(getattr(y, "value", y))) == (1,):
                y = y[0]
            return _directional_part(y, tag)

    def hessp(self, x: Any, p: Any) -> np.ndarray:
        """H(x) p, exact: the gradient in x of x -> Df(x) p, by replaying one tape."""
        x = _point(x)
        p = np.asarray(p, dtype=np.float64).reshape(x.shape)
        # Comparisons made on the nested values of the directional tape are not all
        # recorded for replay checks, so f's own tape vouches for the branches: it
        # replays at x (or is recorded again there), and the directional tape is
        # reused only if it was recorded under that same recording of f.
        self.value_and_grad(x)
        if (self.replay and self._hvp_tape is not None
                and self._hvp_generation == self.stats["records"]):
            try:
                hv = self._hvp_tape.gradient(x, p)[0]
                self.stats["replays"] += 1
                return np.array(hv, dtype=np.float64).reshape(x.shape)
            except BranchChangedError:
                self.stats["branch_changes"] += 1
        self._hvp_tape = record(self._directional, x, p)
        self._hvp_generation = self.stats["records"]
        return np.array(self._hvp_tape.gradient(x, p)[0], dtype=np.float64).reshape(x.shape)

    def hess(self, x: Any) -> np.ndarray:
        """The Hessian as an (n, n) ndarray: one Hessian-vector product per column of
        the identity, all from one tape."""
        x = _point(x)
        n = x.shape[0]
        h = np.empty((n, n))
        eye = np.eye(n)
        for j in range(n):
            h[:, j] = self.hessp(x, eye[j])
        return h

    def functions(self) -> Dict[str, Callable[..., Any]]:
        return {"fun": self.fun, "jac": self.jac, "hess": self.hess, "hessp": self.hessp}


def scipy_functions(f: Callable[[Any], Any], replay: bool = True
                    ) -> Dict[str, Callable[..., Any]]:
    """``dict(fun=..., jac=..., hess=..., hessp=...)`` for ``scipy.optimize.minimize``,
    built from one scalar function ``f`` of a 1-D array::

        minimize(method="trust-ncg", x0=x0, **adcore.optimize.scipy_functions(f))

    ``fun`` and ``jac`` share one replay per point; ``hessp``/``hess`` replay one
    recording of ``(x, v) -> Df(x) v``.  With ``replay=False`` every call records
    ``f`` afresh.  (Pass only the keys your method takes: scipy warns about
    ``hess``/``hessp`` for first-order methods.)
    """
    return ScipyObjective(f, replay=replay).functions()
