"""The seed's forward-differentiation example, line by line:
z = a x^2 + b x y + c y^2 at a=3, b=1, c=-2, x=4, y=-1 carrying d/da, d/db, d/dc."""

import numpy as np

import adcore
from adcore import Dual


def trace():
    a = Dual(3, [1, 0, 0])
    b = Dual(1, [0, 1, 0])
    c = Dual(-2, [0, 0, 1])
    x = 4
    y = -1
    t0 = x * x
    t1 = a * t0
    t2 = x * y
    t3 = b * t2
    t4 = y * y
    t5 = c * t4
    t6 = t1 + t3
    z = t6 + t5
    return dict(a=a, b=b, c=c, t0=t0, t1=t1, t2=t2, t3=t3, t4=t4, t5=t5, t6=t6, z=z)


# the seed's table: value and (d/da, d/db, d/dc) of every line
SEED = {
    "a": (3, (1, 0, 0)),
    "b": (1, (0, 1, 0)),
    "c": (-2, (0, 0, 1)),
    "t0": (16, (0, 0, 0)),
    "t1": (48, (16, 0, 0)),
    "t2": (-4, (0, 0, 0)),
    "t3": (-4, (0, -4, 0)),
    "t4": (1, (0, 0, 0)),
    "t5": (-2, (0, 0, 1)),
    "t6": (44, (16, -4, 0)),
    "z": (42, (16, -4, 1)),
}


def test_every_line_of_the_seed_trace():
    lines = trace()
    for name, (value, derivs) in SEED.items():
        got = lines[name]
        if isinstance(got, Dual):
            assert got.value == value, name
            assert list(got.tangents) == list(derivs), name
        else:  # lines without a, b, c are plain numbers: all derivatives 0
            assert got == value and derivs == (0, 0, 0), name


def test_z_and_its_derivatives():
    z = trace()["z"]
    assert float(z) == 42.0
    assert list(z.tangents) == [16.0, -4.0, 1.0]
    assert repr(z) == "Dual(42.0, [16.0, -4.0, 1.0])"


def test_the_same_with_the_drivers():
    def f(a, b, c):
        x, y = 4.0, -1.0
        return a * x ** 2 + b * x * y + c * y ** 2

    jac = adcore.jacfwd(f, argnums=(0, 1, 2))(3.0, 1.0, -2.0)
    assert jac == (16.0, -4.0, 1.0)
    value, tangent = adcore.jvp(f, (3.0, 1.0, -2.0), (1.0, 0.0, 0.0))
    assert (value, tangent) == (42.0, 16.0)
    grad = adcore.jacfwd(lambda v: f(v[0], v[1], v[2]))(np.array([3.0, 1.0, -2.0]))
    assert list(grad) == [16.0, -4.0, 1.0]


def test_seed_jacobian_of_squares_and_product():
    # the Jacobian of [x^2, xy, y^2] is [[2x, 0], [y, x], [0, 2y]]
    x, y = 3.0, -2.0
    jac = adcore.jacfwd(lambda v: adcore.stack([v[0] ** 2, v[0] * v[1], v[1] ** 2]))(
        np.array([x, y]))
    assert isinstance(jac, np.ndarray) and jac.shape == (3, 2)
    assert jac.tolist() == [[2 * x, 0.0], [y, x], [0.0, 2 * y]]
    rows = adcore.jacfwd(lambda x, y: [x ** 2, x * y, y ** 2], argnums=(0, 1))(x, y)
    assert rows == [(2 * x, 0.0), (y, x), (0.0, 2 * y)]
