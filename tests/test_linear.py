"""Matrices of linear maps: matrix_of, application, composition, errors."""

import numpy as np
import pytest

import adcore
from adcore import SCALAR, CoordinateError, Matrix, Named, Range, Vector, basis, matrix_of

C0 = Named("x", "y")
C1 = Named("z0", "z1", "z2")


def _random_linear(rng, cin, cout):
    A = rng.standard_normal((cout.size, cin.size))
    return A, (lambda v: Vector(cout, A @ v.values))


@pytest.mark.parametrize("seed", range(5))
def test_matrix_of_random_linear_maps(seed):
    rng = np.random.default_rng(seed)
    sets = [Range(3), C0, C1, Range(2) * Named("a", "b"), SCALAR, Range(1)]
    cin, cout = sets[rng.integers(len(sets))], sets[rng.integers(len(sets))]
    A, f = _random_linear(rng, cin, cout)
    F = matrix_of(f, cin, rng=rng)
    assert F.in_coords == cin and F.out_coords == cout
    np.testing.assert_array_equal(F.values, A)
    for j in cin:  # F[i, j] = f(1_j)[i]
        for i in cout:
            assert F[i, j] == f(basis(cin, j))[i]
    v = Vector(cin, rng.standard_normal(cin.size))
    np.testing.assert_allclose((F @ v).values, f(v).values, rtol=1e-12)
    assert F(v) == F @ v


def test_matrix_of_scalar_multiplication_and_named_maps():
    F = matrix_of(lambda v: 3.0 * v, C0)
    assert F == Matrix(C0, C0, [[3.0, 0.0], [0.0, 3.0]])
    swap = matrix_of(lambda v: Vector(Named("u", "w"), [v["y"], -v["x"]]), C0)
    assert swap["u", "y"] == 1.0 and swap["w", "x"] == -1.0 and swap["u", "x"] == 0.0
    total = matrix_of(lambda v: v.sum(), Range(3))  # a number: V(SCALAR)
    assert total.out_coords == SCALAR and total[(), 1] == 1.0 and total[2] == 1.0
    arr = matrix_of(lambda v: np.asarray(v)[::-1].copy(), Range(3))
    assert arr.out_coords == Range(3) and arr[0, 2] == 1.0


@pytest.mark.parametrize("f", [lambda v: v * v, lambda v: v + 1.0,
                               lambda v: Vector(C0, [v["x"] * v["y"], v["y"]]),
                               lambda v: abs(v)])
def test_matrix_of_refuses_non_linear_functions(f):
    with pytest.raises(ValueError, match="f is not linear"):
        matrix_of(f, C0, rng=np.random.default_rng(0))


def test_matrix_of_refuses_changing_output_sets():
    def f(v):
        return Vector(Range(1), [v["x"]]) if v["x"] != 0 else Vector(Range(2), [0.0, v["y"]])

    with pytest.raises(CoordinateError, match=r"Range\(1\).*Range\(2\)|Range\(2\).*Range\(1\)"):
        matrix_of(f, C0)


def test_composition_is_the_matrix_product():
    rng = np.random.default_rng(7)
    C2 = Range(2) * Range(2)
    A, f = _random_linear(rng, C0, C1)
    B, g = _random_linear(rng, C1, C2)
    F, G = matrix_of(f, C0), matrix_of(g, C1)
    GF = G @ F
    assert GF.out_coords == C2 and GF.in_coords == C0
    np.testing.assert_allclose(GF.values, B @ A, rtol=1e-12)
    # (GF)[i, k] = sum over j in C1 of G[i, j] F[j, k]
    for i in C2:
        for k in C0:
            assert GF[i, k] == pytest.approx(sum(G[i, j] * F[j, k] for j in C1), rel=1e-12)
    # and it is the matrix of the composed function
    assert matrix_of(lambda v: g(f(v)), C0).allclose(GF)
    v = Vector(C0, [0.3, -1.2])
    np.testing.assert_allclose((G @ (F @ v)).values, (GF @ v).values, rtol=1e-12)


def test_mismatched_composition_names_both_sets():
    F = Matrix(C1, C0, np.ones((3, 2)))
    with pytest.raises(CoordinateError, match=r"Named\('x', 'y'\).*Named\('z0', 'z1', 'z2'\)"):
        F @ F
    with pytest.raises(CoordinateError, match=r"Range\(2\)"):
        F @ Vector(Range(2), [1.0, 2.0])
    with pytest.raises(TypeError, match="wrap the array"):
        F @ np.ones(2)


def test_indexing_asarray_transpose_repr():
    F = Matrix(C1, C0, [[6.0, 0.0], [5.0, 3.0], [0.0, 10.0]])
    assert F["z1", "x"] == 5.0 and F["z2", "y"] == 10.0
    assert np.asarray(F).shape == (3, 2)
    assert F.T["x", "z1"] == 5.0 and F.T.out_coords == C0
    assert F.row("z1") == Vector(C0, [5.0, 3.0])
    assert F.column("y") == Vector(C1, [0.0, 3.0, 10.0])
    assert eval(repr(F), vars(adcore)) == F
    with pytest.raises(CoordinateError, match=r"'w' is not in Named\('x', 'y'\)"):
        F["z0", "w"]
    with pytest.raises(CoordinateError):
        F["z0"]
    # tensors: asarray has shape out.shape + in.shape and numpy-style indexing works
    T = Matrix(Range(2) * Range(3), Range(4), np.arange(24.0).reshape(2, 3, 4))
    assert np.asarray(T).shape == (2, 3, 4)
    assert T[(1, 2), 3] == T[1, 2, 3] == 23.0
    assert T.as_vector()[1, 2, 3] == 23.0


def test_matrix_arithmetic_and_identity():
    F = Matrix(C1, C0, np.arange(6.0).reshape(3, 2))
    I = adcore.identity(C0)
    assert F @ I == F
    assert (F + F) == 2 * F == F * 2 == np.float64(2.0) * F
    assert isinstance(np.float64(2.0) * F, Matrix)
    assert (F - F) == Matrix(C1, C0, np.zeros((3, 2)))
    assert (-F) / 2 == F * -0.5
    with pytest.raises(CoordinateError):
        F + F.T
    with pytest.raises(ValueError, match=r"needs shape \(3, 2\)"):
        Matrix(C1, C0, np.ones((2, 3)))
