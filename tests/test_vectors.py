"""V(C): vectors as functions from a coordinate set to the reals."""

import math

import numpy as np
import pytest

import adcore
from adcore import SCALAR, CoordinateError, Named, Range, Vector, basis, distance

XY = Named("x", "y")


def test_construction_from_mapping_sequence_and_array():
    v = Vector(XY, {"y": 5, "x": 3})
    assert v["x"] == 3.0 and v["y"] == 5.0
    assert Vector(XY, [3, 5]) == v
    assert Vector(XY, np.array([3.0, 5.0])) == v
    assert Vector(XY, v) == v
    assert v.coords == XY and v.size == 2 and v.shape == (2,) and len(v) == 2
    assert list(v) == [3.0, 5.0]
    assert list(v.items()) == [("x", 3.0), ("y", 5.0)]
    assert v.to_dict() == {"x": 3.0, "y": 5.0}
    assert v.is_plain and v.values.dtype == np.float64


def test_tensor_shaped_vectors():
    p = Range(2) * Range(3) * Range(5)
    a = np.arange(30.0).reshape(2, 3, 5)
    v = Vector(p, a)
    assert v[1, 2, 3] == a[1, 2, 3]
    assert Vector(p, a.ravel()) == v
    assert Vector(p, a.tolist()) == v
    np.testing.assert_array_equal(np.asarray(v), a)
    assert np.asarray(v).shape == (2, 3, 5)


def test_scalars_are_vectors_over_the_empty_product():
    s = Vector(SCALAR, 2.5)
    assert s[()] == 2.5 and s.size == 1 and np.asarray(s).shape == ()
    assert Vector(SCALAR, [2.5]) == s == Vector(SCALAR, np.array(2.5))


@pytest.mark.parametrize("values, exc, pattern", [
    ([1.0, 2.0, 3.0], ValueError, r"Named\('x', 'y'\) needs 2 values .* got 3"),
    (np.zeros(3), ValueError, r"needs 2 values .* shape \(3,\)"),
    (7.0, ValueError, "a single number"),
    ({"x": 1.0}, CoordinateError, "no value for coordinate 'y'"),
    ({"x": 1.0, "y": 2.0, "z": 3.0}, CoordinateError, r"'z' is not in Named\('x', 'y'\)"),
    (["a", 1.0], TypeError, "coordinate 'x' is a str"),
    ([None, 1.0], TypeError, "NoneType"),
    ([1j, 1.0], TypeError, "complex"),
    (np.array([1j, 2.0]), TypeError, "complex"),
    ("xy", TypeError, "not a str"),
])
def test_bad_values_are_named(values, exc, pattern):
    with pytest.raises(exc, match=pattern):
        Vector(XY, values)


def test_bad_coordinate_set_and_lookup():
    with pytest.raises(TypeError, match="not a coordinate set"):
        Vector((2,), [1.0, 2.0])
    with pytest.raises(CoordinateError, match=r"'q' is not in Named\('x', 'y'\)"):
        Vector(XY, [1.0, 2.0])["q"]


def test_integer_and_bool_values_become_floats():
    v = Vector(Range(3), np.array([1, 2, 3], dtype=np.int32))
    assert v.is_plain and v[2] == 3.0 and type(v[2]) is float
    assert Vector(Range(2), [True, False])[0] == 1.0


def test_element_wise_arithmetic_with_scalars_broadcast():
    v = Vector(XY, [3.0, 4.0])
    w = Vector(XY, [1.0, 2.0])
    assert v + w == Vector(XY, [4.0, 6.0])
    assert v - w == Vector(XY, [2.0, 2.0])
    assert v * w == Vector(XY, [3.0, 8.0])
    assert v / w == Vector(XY, [3.0, 2.0])
    assert v ** 2 == Vector(XY, [9.0, 16.0])
    assert 2 ** w == Vector(XY, [2.0, 4.0])
    assert 1 - v == Vector(XY, [-2.0, -3.0])
    assert 12 / v == Vector(XY, [4.0, 3.0])
    assert -v == Vector(XY, [-3.0, -4.0])
    assert abs(-v) == v and +v == v
    assert np.float64(2.0) * v == 2 * v == v * 2
    # IEEE, never an exception
    z = Vector(XY, [0.0, 1.0])
    q = 1.0 / z
    assert q["x"] == math.inf and q["y"] == 1.0


def test_different_sets_do_not_combine():
    v = Vector(XY, [1.0, 2.0])
    u = Vector(Named("y", "x"), [1.0, 2.0])
    with pytest.raises(CoordinateError, match=r"Named\('x', 'y'\).*Named\('y', 'x'\)"):
        v + u
    with pytest.raises(CoordinateError, match=r"Range\(2\)"):
        v.dot(Vector(Range(2), [1.0, 2.0]))
    with pytest.raises(TypeError):
        v + np.array([1.0, 2.0])  # an unlabelled array has no coordinates
    with pytest.raises(TypeError):
        v + "x"


def test_basis_dot_norm_distance():
    c = Range(2) * Named("a", "b")
    for i in c:
        e = basis(c, i)
        assert e[i] == 1.0 and e.sum() == 1.0
        for j in c:
            assert basis(c, i).dot(basis(c, j)) == (1.0 if i == j else 0.0)
    v = Vector(XY, [3.0, 4.0])
    w = Vector(XY, [0.0, 1.0])
    assert v.dot(w) == 4.0 and adcore.vectors.dot(v, w) == 4.0
    assert v.norm() == 5.0
    assert distance(v, w) == math.sqrt(9.0 + 9.0)
    # v = sum over j of v[j] 1_j
    assert sum((v[j] * basis(XY, j) for j in XY), Vector(XY, [0.0, 0.0])) == v
    with pytest.raises(CoordinateError):
        basis(XY, "z")


def test_repr_round_trips():
    for v in (Vector(XY, [3.0, 4.5]), Vector(Range(3), [1.0, 2.0, 3.0]),
              Vector(Range(2) * Named("a"), [1.0, 2.0])):
        assert eval(repr(v), vars(adcore)) == v
    assert "..." in repr(Vector(Range(100), np.zeros(100)))


def test_element_wise_python_function():
    v = Vector(XY, [1.0, 2.0])
    assert v.apply(lambda a, b: a * b + 1.0, Vector(XY, [3.0, 4.0])) == Vector(XY, [4.0, 9.0])
    assert adcore.vectors.elementwise(lambda a, s: a - s, v, 1.0) == Vector(XY, [0.0, 1.0])
    with pytest.raises(ValueError, match="not a rule-table function"):
        v.apply("frobnicate")


# ---------------------------------------------------------------- differentiating through vectors

def test_rule_table_functions_apply_element_wise():
    v = Vector(XY, [0.25, 0.5])
    for name in ("sin", "exp", "tanh", "sqrt", "log1p", "relu", "sigmoid", "floor"):
        fn = getattr(adcore, name)
        got = fn(v)
        assert isinstance(got, Vector) and got.coords == XY
        for c in XY:
            assert got[c] == fn(v[c]), name
    assert np.sin(v) == adcore.sin(v)  # numpy's ufuncs too
    assert adcore.maximum(v, 0.3) == Vector(XY, [0.3, 0.5])
    assert adcore.atan2(v, Vector(XY, [1.0, -1.0]))["y"] == math.atan2(0.5, -1.0)
    assert v.apply("hypot", 1.0)["x"] == math.hypot(0.25, 1.0)
    with pytest.raises(CoordinateError):
        adcore.maximum(v, Vector(Range(2), [0.0, 0.0]))


def test_forward_mode_through_vectors_of_duals():
    def f(t):
        v = Vector(XY, [t, t * t])
        return (adcore.sin(v) * 2.0 + v).dot(Vector(XY, [1.0, 3.0]))

    t = 0.7
    expected = 2 * math.cos(t) + 1 + 3 * (2 * math.cos(t * t) * 2 * t + 2 * t)
    assert adcore.derivative(f)(t) == pytest.approx(expected, rel=1e-14)


def test_reverse_mode_through_vectors_of_tape_values():
    def f(p):
        v = Vector(XY, [p["a"], 2.0 * p["b"]])
        w = Vector(XY, {"x": p["b"], "y": 1.0})
        return v.norm() + adcore.distance(v, w) + abs(v - 3.0).sum()

    p = {"a": 3.0, "b": 2.0}
    g = adcore.grad(f)(p)
    a, b = p["a"], p["b"]
    n1 = math.hypot(a, 2 * b)
    n2 = math.hypot(a - b, 2 * b - 1)
    ga = a / n1 + (a - b) / n2 + 0.0   # |a - 3| has derivative sign(0) = 0 at a = 3
    gb = 2 * (2 * b) / n1 + (-(a - b) + 2 * (2 * b - 1)) / n2 + 2.0 * 1.0
    assert g["a"] == pytest.approx(ga, rel=1e-14)
    assert g["b"] == pytest.approx(gb, rel=1e-14)


def test_vectors_over_dual_arrays_run_whole_array_kernels():
    tag = adcore.dispatch.new_tag()
    d = adcore.DualArray(np.array([1.0, 2.0, 3.0]), np.eye(3), tag)
    v = Vector(Range(3), d)
    assert v.values is d  # kept as one array value, not split into scalars
    w = adcore.exp(v * 2.0) + 1.0
    assert type(w.values).__name__ == "DualArray"
    np.testing.assert_allclose(w.values.tangents, np.diag(2 * np.exp([2.0, 4.0, 6.0])))
    s = v.dot(v)
    assert s.value == 14.0 and list(s.tangents) == [2.0, 4.0, 6.0]
    assert v[1].value == 2.0 and list(v[1].tangents) == [0.0, 1.0, 0.0]


def test_values_is_always_one_array():
    # a vector of adcore scalars gives its values stacked into one adcore array,
    # so array operations (matmul, sum, where) apply to it
    tag = adcore.dispatch.new_tag()
    v = Vector(XY, [adcore.Dual(1.0, [1.0, 0.0], tag), adcore.Dual(2.0, [0.0, 1.0], tag)])
    vals = v.values
    assert type(vals).__name__ == "DualArray"
    np.testing.assert_array_equal(vals.tangents, np.eye(2))
    s = adcore.matmul(np.array([[1.0, 3.0]]), vals)
    assert list(s.tangents.ravel()) == [1.0, 3.0]
    assert Vector(XY, [1.0, 2.0]).values.dtype == np.float64
    J = adcore.jacobian(lambda u: Vector(Range(1), adcore.matmul(np.array([[2.0, 5.0]]), u.values)))(
        Vector(XY, [1.0, 1.0]))
    assert J[0, "x"] == 2.0 and J[0, "y"] == 5.0


def test_engines_take_and_give_vectors():
    # Vectors are tree nodes: grad / jvp return Vectors over the same coordinate set
    C = adcore.Named("x", "y")
    v = adcore.Vector(C, [3.0, 4.0])
    g = adcore.grad(lambda v: v.norm())(v)
    assert isinstance(g, adcore.Vector) and g.coords == C
    assert g["x"] == pytest.approx(0.6) and g["y"] == pytest.approx(0.8)
    out, tangent = adcore.jvp(lambda v: v * v, (v,), (adcore.basis(C, "y"),))
    assert out["y"] == 16.0 and tangent["x"] == 0.0 and tangent["y"] == 8.0
