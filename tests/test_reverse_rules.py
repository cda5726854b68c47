"""Every rule of the table in reverse mode: against finite differences, forward mode
(dual numbers), the stated conventions at kinks, and arrays against scalars."""

import numpy as np
import pytest

import adcore
from adcore._rules import RULES
from adcore.dispatch import apply

SMOOTH = [r for r in RULES if not r.compare and any(p != "0.0" for p in r.partials)]


def _points(rule, count=4, seed=0):
    rng = np.random.default_rng(seed + rule.opcode)
    return [tuple(float(rng.uniform(lo, hi)) for lo, hi in rule.domain) for _ in range(count)]


def _f(rule):
    return lambda *a: apply(rule.opcode, a)


def _reverse(rule, point):
    g = adcore.grad(_f(rule), argnums=tuple(range(rule.arity)))(*point)
    return np.array(g, dtype=float)


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.name)
def test_reverse_equals_finite_differences(rule):
    for point in _points(rule):
        g = _reverse(rule, point)
        for i in range(rule.arity):
            h = 1e-6 * max(1.0, abs(point[i]))
            up = list(point)
            dn = list(point)
            up[i] += h
            dn[i] -= h
            fd = (apply(rule.opcode, up) - apply(rule.opcode, dn)) / (2 * h)
            if rule.partials[i] == "0.0":
                assert g[i] == 0.0       # piecewise constant: exactly 0
            else:
                assert g[i] == pytest.approx(fd, rel=1e-5, abs=1e-7), (rule.name, i, point)


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.name)
def test_reverse_equals_forward(rule):
    for point in _points(rule, seed=1):
        g = _reverse(rule, point)
        for i in range(rule.arity):
            tangents = tuple(1.0 if j == i else 0.0 for j in range(rule.arity))
            _, d = adcore.jvp(_f(rule), point, tangents)
            assert g[i] == pytest.approx(float(d), rel=1e-14, abs=1e-300), (rule.name, i)


def _kink_cases():
    for r in RULES:
        for point, expected in r.kinks:
            yield pytest.param(r, point, expected, id=f"{r.name}{point}")


@pytest.mark.parametrize("rule, point, expected", list(_kink_cases()))
def test_conventions_at_kinks(rule, point, expected):
    g = _reverse(rule, point)
    np.testing.assert_array_equal(g, expected)


@pytest.mark.parametrize("rule", [r for r in RULES if r.kinks], ids=lambda r: r.name)
def test_reverse_equals_forward_at_kinks(rule):
    for point, _ in rule.kinks:
        g = _reverse(rule, point)
        for i in range(rule.arity):
            tangents = tuple(1.0 if j == i else 0.0 for j in range(rule.arity))
            _, d = adcore.jvp(_f(rule), point, tangents)
            assert g[i] == float(d), (rule.name, point, i)


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.name)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_arrays_in_reverse_equal_elementwise_scalar_reverse(rule, dtype):
    rng = np.random.default_rng(100 + rule.opcode)
    xs = [rng.uniform(lo, hi, size=5).astype(dtype) for lo, hi in rule.domain]
    w = rng.uniform(0.5, 1.5, size=5)

    def f(*a):
        return (apply(rule.opcode, a) * w).sum()

    ga = adcore.grad(f, argnums=tuple(range(rule.arity)))(*xs)
    for i in range(rule.arity):
        assert ga[i].dtype == dtype
    for k in range(5):
        point = tuple(float(x[k]) for x in xs)
        gs = _reverse(rule, point) * w[k]
        tol = 1e-12 if dtype == np.float64 else 2e-5
        for i in range(rule.arity):
            assert float(ga[i][k]) == pytest.approx(gs[i], rel=tol, abs=tol), (rule.name, k, i)


@pytest.mark.parametrize("rule", [r for r in RULES if r.arity == 2], ids=lambda r: r.name)
def test_constant_operand_either_side(rule):
    # the constant-in-instruction encoding (x op c and c op x) against both handles
    x, y = _points(rule, 1, seed=3)[0]
    both = _reverse(rule, (x, y))
    gx = adcore.grad(lambda a: apply(rule.opcode, (a, y)))(x)
    gy = adcore.grad(lambda b: apply(rule.opcode, (x, b)))(y)
    assert gx == both[0] and gy == both[1]


@pytest.mark.parametrize("rule", [r for r in RULES if r.arity >= 2], ids=lambda r: r.name)
def test_broadcast_arrays_reverse_sums(rule):
    rng = np.random.default_rng(7 + rule.opcode)
    shapes = [(3, 1), (1, 4), (4,)][: rule.arity]
    xs = [rng.uniform(lo, hi, size=s) for (lo, hi), s in zip(rule.domain, shapes)]
    ga = adcore.grad(lambda *a: apply(rule.opcode, a).sum(),
                     argnums=tuple(range(rule.arity)))(*xs)
    full = np.broadcast_shapes(*shapes)
    for i in range(rule.arity):
        expected = np.zeros(shapes[i])
        for idx in np.ndindex(full):
            point = tuple(float(np.broadcast_to(x, full)[idx]) for x in xs)
            gi = _reverse(rule, point)[i]
            padded = (1,) * (len(full) - len(shapes[i])) + shapes[i]
            sub = tuple(0 if padded[d] == 1 else idx[d]
                        for d in range(len(full)))[len(full) - len(shapes[i]):]
            expected[sub] += gi
        np.testing.assert_allclose(ga[i], expected, rtol=1e-12, atol=1e-14)
