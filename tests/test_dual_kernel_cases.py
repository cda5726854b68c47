"""The dual kernel's loop cases on large arrays: every rule with a broadcast scalar
operand (the strided loop), several directions (the shared accumulation with its
"plain" shortcut), values from numpy or from the C loop, float32 and float64."""

import numpy as np
import pytest

from adcore import Dual, DualArray
from adcore._dual import _NUMPY_VALUE
from adcore._rules import RULES

from test_rules_forward import call  # noqa: E402  (tests/ is on sys.path)

IDS = [r.name for r in RULES]


def test_numpy_values_only_for_transcendental_rules():
    # arithmetic must never take numpy's values (the C loop has no case reading them)
    named = {r.name for r in RULES if _NUMPY_VALUE[r.opcode] is not None}
    assert {"exp", "log", "tanh"} <= named
    assert not named & {"add", "sub", "mul", "div", "pow", "sin", "cos", "maximum", "where"}


@pytest.mark.parametrize("rule", RULES, ids=IDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_broadcast_operand_and_four_directions_on_large_arrays(rule, dtype):
    n, k = 3000, 4
    rng = np.random.default_rng(100 + rule.opcode)
    cols = [rng.uniform(lo, hi, n).astype(dtype) for lo, hi in rule.domain]
    tans = [rng.standard_normal((k, n)).astype(dtype) for _ in cols]
    args = [DualArray(c, t) for c, t in zip(cols, tans)]
    # the last operand of a multi-input rule: one scalar Dual, broadcast over the array
    # (its element stride is 0: the kernel's strided loop and scalar tangents)
    last = rule.arity - 1
    if rule.arity > 1:
        args[last] = Dual(float(cols[last][0]), tans[last][:, 0].astype(np.float64))
    out = call(rule, *args)
    assert out.dtype == dtype and out.tangents.shape == (k, n)
    tol = 1e-13 if dtype == np.float64 else 1e-5
    for e in (0, 511, 512, 1777, n - 1):
        scalar_args = []
        for i in range(rule.arity):
            if rule.arity > 1 and i == last:
                scalar_args.append(args[last])
            else:
                scalar_args.append(Dual(float(cols[i][e]), tans[i][:, e].astype(np.float64)))
        ref = call(rule, *scalar_args)
        assert out.value[e] == pytest.approx(ref.value, rel=tol, abs=tol), (rule.name, e)
        assert out.tangents[:, e].astype(np.float64) == pytest.approx(
            ref.tangents, rel=10 * tol, abs=10 * tol), (rule.name, e)
