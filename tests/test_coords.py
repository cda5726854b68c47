"""Coordinate sets: von Neumann ranges, named sets, products, the empty product."""

import itertools
import pickle

import numpy as np
import pytest

import adcore
from adcore import SCALAR, CoordinateError, Named, Product, Range


def test_range_is_the_von_neumann_integer():
    assert list(Range(0)) == []
    assert list(Range(5)) == [0, 1, 2, 3, 4]
    r = Range(5)
    assert r.size == len(r) == 5 and r.shape == (5,)
    assert [r.index(i) for i in r] == [0, 1, 2, 3, 4]
    assert [r.coord_at(i) for i in range(5)] == [0, 1, 2, 3, 4]
    assert r.coord_at(-1) == 4
    assert 4 in r and 5 not in r and -1 not in r and "x" not in r
    assert np.int64(3) in r
    assert True not in r  # a bool is not a coordinate of a range


@pytest.mark.parametrize("bad, exc", [(-1, ValueError), (2.5, TypeError), (True, TypeError),
                                      ("3", TypeError)])
def test_range_rejects_bad_sizes(bad, exc):
    with pytest.raises(exc):
        Range(bad)


def test_unknown_coordinate_names_the_coordinate_and_the_set():
    with pytest.raises(CoordinateError, match=r"coordinate 7 is not in Range\(5\)"):
        Range(5).index(7)
    with pytest.raises(CoordinateError, match=r"'q' is not in Named\('x', 'y'\)"):
        Named("x", "y").index("q")
    with pytest.raises(CoordinateError, match=r"9 is not in Range\(3\)"):
        (Range(2) * Range(3)).index((1, 9))
    with pytest.raises(CoordinateError, match="tuples of 2"):
        (Range(2) * Range(3)).index(1)
    with pytest.raises(IndexError, match="out of range"):
        Range(3).coord_at(3)
    # CoordinateError is a KeyError: mapping-style code can catch it
    assert issubclass(CoordinateError, KeyError)


def test_named_sets():
    n = Named("x", "y", ("a", 1), 3)
    assert list(n) == ["x", "y", ("a", 1), 3]
    assert n.index(("a", 1)) == 2 and n.coord_at(3) == 3
    assert n.size == 4 and n.shape == (4,)
    assert n.labels == ("x", "y", ("a", 1), 3)
    with pytest.raises(ValueError, match="'x' appears twice"):
        Named("x", "y", "x")
    with pytest.raises(TypeError, match="not hashable"):
        Named(["x"])
    assert [1] not in n  # unhashable probes are simply not members


def test_product_matches_numpy_shapes_and_order():
    p = Range(2) * Range(3) * Range(5)
    assert p.size == 30 and p.shape == (2, 3, 5)
    assert p == Product(Range(2), Range(3), Range(5))
    assert list(p) == list(itertools.product(range(2), range(3), range(5)))
    flat = np.arange(30).reshape(2, 3, 5)
    for coord in p:
        assert p.index(coord) == flat[coord]
        assert p.coord_at(p.index(coord)) == coord
    assert (1, 2, 4) in p and (1, 2, 5) not in p and (1, 2) not in p


def test_products_are_flattened_and_scalar_is_their_unit():
    a, b, c = Range(2), Named("x", "y"), Range(3)
    assert (a * b) * c == a * (b * c) == Product(a, b, c)
    assert (a * b * c).factors == (a, b, c)
    assert Product(a) is a
    assert SCALAR * a == a and a * SCALAR == a
    assert Product() == SCALAR
    mixed = b * a
    assert list(mixed) == [("x", 0), ("x", 1), ("y", 0), ("y", 1)]
    assert mixed.shape == (2, 2)


def test_scalar_is_the_empty_product_with_one_coordinate():
    assert SCALAR.size == 1 and len(SCALAR) == 1
    assert SCALAR.shape == ()
    assert list(SCALAR) == [()]
    assert SCALAR.index(()) == 0 and SCALAR.coord_at(0) == ()
    assert () in SCALAR and 0 not in SCALAR
    assert repr(SCALAR) == "SCALAR"


def test_equality_hash_and_repr():
    assert Range(3) == Range(3) and Range(3) != Range(4)
    assert Named("x", "y") == Named("x", "y")
    assert Named("x", "y") != Named("y", "x")  # the order is the layout
    assert Range(2) != Named(0, 1)
    assert len({Range(3), Range(3), Named("x"), Named("x"), Range(2) * Range(3)}) == 3
    assert repr(Range(3) * Named("x", "y")) == "Range(3) * Named('x', 'y')"
    assert "100 labels" in repr(Named(*range(100)))
    for s in (Range(4), Named("x", "y"), Range(2) * Named("a"), SCALAR):
        assert eval(repr(s), vars(adcore)) == s
        assert pickle.loads(pickle.dumps(s)) == s


def test_from_shape():
    from adcore.coords import from_shape

    assert from_shape((2, 3, 5)) == Range(2) * Range(3) * Range(5)
    assert from_shape(()) == SCALAR
    assert from_shape(4) == Range(4)


def test_multiplying_by_a_non_set_fails():
    with pytest.raises(TypeError):
        Range(2) * 3
    with pytest.raises(TypeError, match="not a coordinate set"):
        Product(Range(2), (3,))
