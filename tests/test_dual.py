"""adcore.Dual: construction, operators, conversions, errors."""

import math
import pickle

import numpy as np
import pytest

import adcore
from adcore import Dual, DualArray
from adcore._dual import plain_apply
from adcore._rules import OPCODES


def test_construction_and_attributes():
    d = Dual(2, [1, 0, 3])
    assert d.value == 2.0 and type(d.value) is float
    assert d.k == 3 and d.tag == 0
    t = d.tangents
    assert t.dtype == np.float64 and t.tolist() == [1.0, 0.0, 3.0]
    t[0] = 99.0  # a new array each time: the Dual is unchanged
    assert d.tangents[0] == 1.0
    assert Dual(1.5, 2.0).tangents.tolist() == [2.0]  # one tangent may be a scalar
    assert Dual(np.float32(0.5), np.array([1.0])).value == 0.5
    assert Dual(1.0, [1.0], tag=7).tag == 7


@pytest.mark.parametrize("k", [1, 2, 3, 8, 9, 64, 100])
def test_any_number_of_tangents(k):
    a = Dual(3.0, np.arange(k, dtype=float))
    b = Dual(-2.0, np.ones(k))
    out = adcore.sin(a * b + a / b - a ** 2.0)
    x, y = 3.0, -2.0
    da = y + 1 / y - 2 * x  # d/da of the inner expression
    db = x - x / y ** 2
    want = math.cos(x * y + x / y - x * x) * (da * np.arange(k) + db * np.ones(k))
    assert out.k == k
    assert np.allclose(out.tangents, want, rtol=1e-14, atol=1e-14)


def test_operators_with_numbers_of_every_kind():
    d = Dual(2.0, [1.0])
    for c in (3, 3.0, np.float64(3.0), np.float32(3.0), np.int64(3), True):
        cv = float(c)
        assert (d + c).value == 2.0 + cv and (c + d).value == cv + 2.0
        assert (d - c).value == 2.0 - cv and (c - d).tangents[0] == -1.0
        assert (d * c).tangents[0] == cv and (c * d).tangents[0] == cv
        assert (d / c).tangents[0] == pytest.approx(1.0 / cv)
        assert (c / d).tangents[0] == pytest.approx(-cv / 4.0)
        assert (d ** c).tangents[0] == pytest.approx(cv * 2.0 ** (cv - 1.0))
        assert (c ** d).tangents[0] == pytest.approx(cv ** 2.0 * math.log(cv))
    assert (-d).value == -2.0 and (-d).tangents[0] == -1.0
    assert (+d) is d
    assert abs(Dual(-2.0, [1.0])).tangents[0] == -1.0
    assert (d ** d).tangents[0] == pytest.approx(4.0 * (1.0 + math.log(2.0)))


def test_negative_base_with_integer_exponent():
    d = Dual(-2.0, [1.0])
    assert (d ** 3).value == -8.0 and (d ** 3).tangents[0] == 12.0
    assert (d ** 2).tangents[0] == -4.0


def test_conversions_comparisons_repr():
    d = Dual(2.5, [1.0, -0.5])
    assert float(d) == 2.5
    assert bool(d) and not bool(Dual(0.0, [1.0]))
    assert (d < 3) is True and (d > 3) is False and (d <= 2.5) is True
    assert (d >= Dual(2.5, [0.0, 0.0])) is True
    assert (d == 2.5) is True and (d != 2.5) is False
    assert (3 > d) is True and (np.float64(2.0) < d)
    assert hash(d) == hash(2.5)
    assert repr(d) == "Dual(2.5, [1.0, -0.5])"
    assert repr(Dual(1.0, [2.0], tag=4)) == "Dual(1.0, [2.0], tag=4)"
    assert str(Dual(42, [16, -4, 1])) == "Dual(42.0, [16.0, -4.0, 1.0])"


def test_pickle_roundtrip():
    d = Dual(1.25, [0.5, -1.0], tag=3)
    e = pickle.loads(pickle.dumps(d))
    assert (e.value, e.tangents.tolist(), e.tag) == (1.25, [0.5, -1.0], 3)


def test_mixing_different_k_is_a_value_error_naming_both():
    with pytest.raises(ValueError, match="k=3 and k=2"):
        Dual(1.0, [1, 0, 0]) + Dual(2.0, [0, 1])
    with pytest.raises(ValueError, match="k=1 and k=2"):
        adcore.atan2(Dual(1.0, [1.0]), Dual(2.0, [0.0, 1.0]))


@pytest.mark.parametrize("bad", ["1.0", None, 1j, [1.0], object()])
def test_bad_operands_are_type_errors(bad):
    d = Dual(1.0, [1.0])
    with pytest.raises(TypeError):
        d + bad
    with pytest.raises(TypeError):
        bad * d


@pytest.mark.parametrize("value,tangents,error,match", [
    ("1.0", [1.0], TypeError, "str"),
    (None, [1.0], TypeError, "NoneType"),
    (1j, [1.0], TypeError, "complex"),
    (np.ones(2), [1.0], ValueError, "scalar"),
    (1.0, [], ValueError, "at least one tangent"),
    (1.0, [[1.0]], ValueError, "1-D"),
    (1.0, ["a"], TypeError, "dtype"),
    (1.0, [1j], TypeError, "dtype"),
])
def test_bad_construction(value, tangents, error, match):
    with pytest.raises(error, match=match):
        Dual(value, tangents)


def test_a_dual_of_a_dual_is_refused_with_a_pointer_to_the_drivers():
    with pytest.raises(TypeError, match="derivative"):
        Dual(Dual(1.0, [1.0]), [1.0])
    with pytest.raises(ValueError, match="tag"):
        Dual(1.0, [1.0], tag=-1)


def test_public_functions_on_floats_ints_and_duals():
    assert type(adcore.sin(1.0)) is float and adcore.sin(1.0) == math.sin(1.0)
    assert type(adcore.exp(1)) is float and adcore.exp(1) == math.exp(1.0)
    assert adcore.atan2(1, 2) == math.atan2(1.0, 2.0)
    d = adcore.exp(Dual(1.0, [2.0]))
    assert d.value == math.exp(1.0) and d.tangents[0] == 2.0 * math.exp(1.0)
    d = adcore.hypot(Dual(3.0, [1.0, 0.0]), 4.0)
    assert d.value == 5.0 and d.tangents.tolist() == [0.6, 0.0]
    w = adcore.where(adcore.less(Dual(-1.0, [1.0]), 0.0), -Dual(-1.0, [1.0]), 7.0)
    assert w.value == 1.0 and w.tangents[0] == -1.0
    assert adcore.where(0.0, 1.0, 2.0) == 2.0


def test_numpy_interop():
    d = Dual(2.0, [1.0])
    out = np.array([1.0, 2.0]) * d  # numpy defers to Dual instead of making object arrays
    assert isinstance(out, DualArray) and out.value.tolist() == [2.0, 4.0]
    assert out.tangents.tolist() == [[1.0, 2.0]]
    s = np.sin(d)
    assert isinstance(s, Dual) and s.tangents[0] == math.cos(2.0)
    assert (np.array([1.0, 3.0]) < d).tolist() == [True, False]
    assert isinstance(np.float64(3.0) * d, Dual)


def test_plain_apply_types_and_errors():
    add = OPCODES["add"]
    assert plain_apply(add, (1, 2)) == 3.0 and type(plain_apply(add, (1, 2))) is float
    assert plain_apply(add, (np.float32(1), np.float32(2))).dtype == np.float32
    for bad, name in [("x", "str"), (None, "NoneType"), (1j, "complex"),
                      (np.array([1j]), "complex"), (np.array([None]), "object")]:
        with pytest.raises(TypeError, match=name):
            plain_apply(add, (bad, 1.0))
        with pytest.raises(TypeError, match=name):
            adcore.add(1.0, bad)
    with pytest.raises(TypeError, match="takes 2 arguments"):
        plain_apply(add, (1.0,))
    with pytest.raises(ValueError, match="opcode"):
        plain_apply(10**6, (1.0,))


def test_many_duals_do_not_share_storage():
    # the freelist recycles objects: a recycled Dual must not see old tangents
    keep = []
    for i in range(600):
        d = Dual(float(i), np.full(10 if i % 2 else 3, float(i)))
        keep.append(d * 1.0)
        del d
    for i, d in enumerate(keep):
        assert d.value == float(i) and d.tangents.tolist() == [float(i)] * (10 if i % 2 else 3)


@pytest.mark.parametrize("tangents", [
    [1.0, 0.0, -2.5], (1.0, 0.0, -2.5), [1, 0, -2.5], np.array([1.0, 0.0, -2.5]),
    np.array([1.0, 0.0, -2.5], dtype=np.float32), np.array([1.0, 9.0, 0.0, 9.0, -2.5])[::2],
    np.array([[1.0, 0.0, -2.5]])[0], np.array([1, 0, -2]) * 1.25 - np.array([0, 0, 0.0]),
])
def test_construction_from_lists_tuples_and_arrays(tangents):
    # every path (C fast paths and the checked numpy one) gives the same Dual
    d = adcore.Dual(2.0, tangents)
    want = np.asarray(tangents, dtype=np.float64)
    assert d.value == 2.0 and d.k == 3 and d.tag == 0
    assert d.tangents.tolist() == want.tolist()
    big = adcore.Dual(1.5, list(range(20)), 3)
    assert big.k == 20 and big.tag == 3 and big.tangents.tolist() == list(range(20))
    assert adcore._dual._array_fields_checked()  # numpy's array layout is the one we read


def test_construction_errors_from_the_fast_paths():
    with pytest.raises(ValueError, match="at least one tangent"):
        adcore.Dual(1.0, [])
    with pytest.raises(ValueError, match="at least one tangent"):
        adcore.Dual(1.0, np.zeros(0))
    with pytest.raises(ValueError, match="1-D"):
        adcore.Dual(1.0, [[1.0, 2.0]])
    with pytest.raises(ValueError, match="tag"):
        adcore.Dual(1.0, [1.0], -1)
    with pytest.raises(TypeError, match="real number"):
        adcore.Dual(1.0, ["a"])
    with pytest.raises(OverflowError):
        adcore.Dual(1.0, [10 ** 400])


def test_seeds_are_the_unit_tangents():
    a, b, c = adcore.Dual.seeds([3.0, 1, np.float32(-2.0)])
    assert (a.value, b.value, c.value) == (3.0, 1.0, -2.0)
    assert [d.tangents.tolist() for d in (a, b, c)] == np.eye(3).tolist()
    # the seed's polynomial: z = a x^2 + b x y + c y^2 at x = 4, y = -1
    z = a * 4.0 ** 2 + b * 4.0 * -1.0 + c * (-1.0) ** 2
    assert z.value == 42.0 and z.tangents.tolist() == [16.0, -4.0, 1.0]
    many = adcore.Dual.seeds(np.arange(12.0), tag=5)
    assert len(many) == 12 and all(d.k == 12 and d.tag == 5 for d in many)
    assert np.array_equal(np.stack([d.tangents for d in many]), np.eye(12))
    with pytest.raises(ValueError, match="at least one"):
        adcore.Dual.seeds([])
    with pytest.raises(ValueError, match="1-D"):
        adcore.Dual.seeds(np.ones((2, 2)))
    with pytest.raises(ValueError, match="scalar"):
        adcore.Dual.seeds([1.0, [2.0]])
    with pytest.raises(TypeError, match="real numbers"):
        adcore.Dual.seeds([a, 1.0])
