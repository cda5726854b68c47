"""Structured inputs and outputs (dicts, tuples, lists, namedtuples, dataclasses of
arrays, nested) through grad, jvp, vjp, jacfwd, jacrev, jacobian, hessian, hvp and
record/replay.  Every result is checked against the same function written on one
flat vector (the structure must only rearrange numbers, never change them)."""

import dataclasses
from collections import namedtuple

import numpy as np
import pytest

import adcore


@dataclasses.dataclass
class Params:
    w: np.ndarray
    b: float


Pair = namedtuple("Pair", "first second")

W = np.array([[1.0, 2.0], [3.0, -1.0]])
B = np.array([0.5, -0.3])
S = 0.7


def _core(w, b, s):
    # a scalar function of a (2, 2) matrix, a 2-vector and a scalar, in numpy
    return np.sum(np.tanh(w @ b) * s) + np.sum(np.sin(w) * w) * s + np.sum(b ** 3.0)


def _flat_core(v):
    return _core(np.reshape(v[:4], (2, 2)), v[4:6], v[6])


# (the tree, f on the tree, the tree's leaves in flattening order as (w, b, s))
TREES = {
    "dict": ({"w": W, "b": B, "s": S}, lambda p: _core(p["w"], p["b"], p["s"])),
    "tuple": ((W, B, S), lambda p: _core(*p)),
    "list": ([W, B, S], lambda p: _core(p[0], p[1], p[2])),
    "namedtuple": (Pair(W, (B, S)), lambda p: _core(p.first, p.second[0], p.second[1])),
    "dataclass": ((Params(W, S), B), lambda p: _core(p[0].w, p[1], p[0].b)),
    "nested": ({"layer": [{"w": W}, (B,)], "scale": S},
               lambda p: _core(p["layer"][0]["w"], p["layer"][1][0], p["scale"])),
}


def _flat(tree):
    """The leaves of a tree in a fixed order (w, b, s), as one vector."""
    leaves, _ = adcore.tree_flatten(tree)
    by_size = sorted(leaves, key=lambda a: -np.size(a))  # w (4), b (2), s (1)
    return np.concatenate([np.ravel(np.asarray(a, dtype=float)) for a in by_size])


V = _flat(TREES["dict"][0])


def _same_structure(a, b):
    return adcore.tree_flatten(a)[1] == adcore.tree_flatten(b)[1]


@pytest.fixture(params=sorted(TREES))
def case(request):
    return TREES[request.param]


def test_grad_has_the_input_structure(case):
    tree, f = case
    g = adcore.grad(f)(tree)
    assert _same_structure(g, tree)
    expected = adcore.grad(_flat_core)(V)
    np.testing.assert_allclose(_flat(g), expected, rtol=1e-13)
    v, g2 = adcore.value_and_grad(f)(tree)
    assert v == pytest.approx(_flat_core(V), rel=1e-14)
    np.testing.assert_allclose(_flat(g2), expected, rtol=1e-13)


@pytest.mark.parametrize("driver", ["jacfwd", "jacrev"])
def test_jacobian_of_scalar_function_has_the_input_structure(case, driver):
    tree, f = case
    j = getattr(adcore, driver)(f)(tree)
    assert _same_structure(j, tree)
    np.testing.assert_allclose(_flat(j), adcore.grad(_flat_core)(V), rtol=1e-13)


def test_jacobian_matrix_and_hessian_over_leaf_coordinates(case):
    tree, f = case
    # the Matrix's columns follow the tree's own leaf order: permute the flat reference
    sizes = [np.size(a) for a in adcore.tree_flatten(tree)[0]]
    starts = {4: 0, 2: 4, 1: 6}
    perm = np.concatenate([np.arange(starts[n], starts[n] + n) for n in sizes])
    J = np.asarray(adcore.jacobian(f)(tree))
    np.testing.assert_allclose(J.reshape(-1), adcore.grad(_flat_core)(V)[perm], rtol=1e-13)
    H = np.asarray(adcore.hessian(f)(tree))
    H_flat = np.asarray(adcore.hessian(_flat_core)(V))
    np.testing.assert_allclose(H, H_flat[np.ix_(perm, perm)], rtol=1e-12, atol=1e-13)
    # hvp keeps the structure
    direction = adcore.tree_map(lambda a: np.ones_like(np.asarray(a, dtype=float)) * 0.5, tree)
    hv = adcore.hvp(f, tree, direction)
    assert _same_structure(hv, tree)
    np.testing.assert_allclose(_flat(hv), H_flat @ np.full(7, 0.5), rtol=1e-12, atol=1e-13)


def test_record_replay_takes_and_returns_the_structure(case):
    tree, f = case
    tape = adcore.record(f, tree)
    moved = adcore.tree_map(lambda a: np.asarray(a, dtype=float) * 1.1, tree)
    if isinstance(tree, tuple) and isinstance(tree[0], Params):
        moved = (Params(tree[0].w * 1.1, tree[0].b * 1.1), tree[1] * 1.1)
    v2 = _flat(moved)
    assert float(tape(moved)) == pytest.approx(_flat_core(v2), rel=1e-13)
    g = tape.gradient(moved)
    assert _same_structure(g, tree)
    np.testing.assert_allclose(_flat(g), adcore.grad(_flat_core)(v2), rtol=1e-13)
    if isinstance(tree, Pair) or (isinstance(tree, tuple) and isinstance(tree[0], Params)):
        # saved tapes hold dicts, lists and tuples; namedtuples and dataclasses are
        # refused by name (the tape in memory takes them)
        with pytest.raises(TypeError, match="namedtuple|dataclass"):
            tape.to_bytes()
        return
    back = adcore.Tape.from_bytes(tape.to_bytes())
    np.testing.assert_allclose(_flat(back.gradient(moved)), _flat(g), rtol=1e-15)


def test_structured_outputs_jacobians_vjp_jvp_and_replay():
    p = {"w": W, "b": B}

    def f(p):
        h = p["w"] @ p["b"]
        return {"h": np.sin(h), "rest": (np.sum(h * h), [p["b"] * 2.0])}

    h = W @ B
    dh_dw = np.zeros((2, 2, 2))
    for i in range(2):
        dh_dw[i, i, :] = B
    expected = {"h": {"w": np.cos(h)[:, None, None] * dh_dw, "b": np.cos(h)[:, None] * W},
                "rest": ({"w": 2 * np.einsum("i,ijk->jk", h, dh_dw), "b": 2 * h @ W},
                         [{"w": np.zeros((2, 2, 2)), "b": 2.0 * np.eye(2)}])}
    tape = adcore.record(f, p)
    for jac in (adcore.jacfwd(f)(p), adcore.jacrev(f)(p), tape.jacobian(p)):
        assert _same_structure(jac, expected)
        for got, want in zip(adcore.tree_flatten(jac)[0], adcore.tree_flatten(expected)[0]):
            np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15)

    out, pullback = adcore.vjp(f, p)
    cot = {"h": np.array([1.0, -2.0]), "rest": (0.5, [np.array([1.0, 1.0])])}
    (gp,) = pullback(cot)
    want_b = cot["h"] @ expected["h"]["b"] + 0.5 * expected["rest"][0]["b"] + 2.0
    np.testing.assert_allclose(gp["b"], want_b, rtol=1e-13)

    tangent = {"w": np.ones((2, 2)), "b": np.array([1.0, 0.0])}
    _, t = adcore.jvp(f, (p,), (tangent,))
    want_h = np.cos(h) * (np.einsum("ijk,jk->i", dh_dw, tangent["w"]) + W @ tangent["b"])
    np.testing.assert_allclose(t["h"], want_h, rtol=1e-13)
    assert _same_structure(t, out)
    replayed = tape({"w": W * 2.0, "b": B})
    np.testing.assert_allclose(replayed["h"], np.sin(2.0 * W @ B), rtol=1e-14)


def test_dataclass_output_and_several_structured_arguments():
    @dataclasses.dataclass
    class Out:
        y: np.ndarray
        z: float

    def f(a, b):
        h = a["x"] * b[0]
        return Out(np.sin(h), np.sum(h * h))

    a, b = {"x": B}, (np.array([2.0, 3.0]),)
    jac = adcore.jacrev(f, argnums=(0, 1))(a, b)
    assert isinstance(jac, Out)
    np.testing.assert_allclose(jac.y[0]["x"], np.diag(np.cos(B * b[0]) * b[0]), rtol=1e-14)
    np.testing.assert_allclose(jac.y[1][0], np.diag(np.cos(B * b[0]) * B), rtol=1e-14)
    v, (ga, gb) = adcore.value_and_grad(lambda a, b: f(a, b).z, argnums=(0, 1))(a, b)
    assert v == pytest.approx(np.sum((B * b[0]) ** 2), rel=1e-14)
    np.testing.assert_allclose(ga["x"], 2 * B * b[0] ** 2, rtol=1e-14)
    np.testing.assert_allclose(gb[0], 2 * B ** 2 * b[0], rtol=1e-14)
