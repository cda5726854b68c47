"""A typed user of adcore's public API: the seed's worked examples.

CI runs ``mypy --strict`` on this file against the installed package (its
py.typed marker and the .pyi stubs of the compiled modules), then runs it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

import adcore
from adcore import Matrix, Named, Vector


def z(a: Any, b: Any, c: Any, x: Any, y: Any) -> Any:
    """The seed's polynomial; works on floats, dual numbers and tape values."""
    return a * x**2 + b * x * y + c * y**2


def forward_three_tangents() -> tuple[float, list[float]]:
    """z and dz/da, dz/db, dz/dc in one forward pass: three tangents per number."""
    a = adcore.Dual(3.0, [1.0, 0.0, 0.0])
    b = adcore.Dual(1.0, [0.0, 1.0, 0.0])
    c = adcore.Dual(-2.0, [0.0, 0.0, 1.0])
    out = z(a, b, c, 4.0, -1.0)
    return float(out.value), [float(t) for t in out.tangents]


def reverse_gradient() -> tuple[float, ...]:
    """The same three derivatives by reverse mode."""
    g = adcore.grad(z, argnums=(0, 1, 2))(3.0, 1.0, -2.0, 4.0, -1.0)
    return tuple(float(d) for d in g)


def seed_jacobian(x: float, y: float) -> Matrix:
    """The Jacobian of [x², xy, y²], rows z0, z1, z2 and columns x, y."""
    inputs = Named("x", "y")
    outputs = Named("z0", "z1", "z2")

    def f(v: Vector) -> Vector:
        return Vector(outputs, [v["x"] ** 2, v["x"] * v["y"], v["y"] ** 2])

    jac: Matrix = adcore.jacobian(f)(Vector(inputs, {"x": x, "y": y}))
    return jac


def second_derivative_of_sin(t: float) -> float:
    """derivative nests: (sin)'' = -sin, with no perturbation confusion."""
    d2 = adcore.derivative(adcore.derivative(adcore.sin))
    return float(d2(t))


def gradients_at_many_points(points: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """One recording of z in (a, b, c), its gradient replayed at every row in C."""
    tape = adcore.record(lambda abc: z(abc[0], abc[1], abc[2], 4.0, -1.0), [3.0, 1.0, -2.0])
    grads: npt.NDArray[np.float64] = tape.gradient_map(points, threads=2)
    return grads


def main() -> None:
    value, tangents = forward_three_tangents()
    assert value == 42.0 and tangents == [16.0, -4.0, 1.0], (value, tangents)
    assert reverse_gradient() == (16.0, -4.0, 1.0)

    jac = seed_jacobian(3.0, 5.0)
    assert jac["z0", "x"] == 6.0 and jac["z1", "x"] == 5.0 and jac["z2", "y"] == 10.0
    dense = np.asarray(jac)
    assert dense.shape == (3, 2)

    grads = gradients_at_many_points(np.array([[3.0, 1.0, -2.0], [0.0, 0.0, 0.0]]))
    assert grads.tolist() == [[16.0, -4.0, 1.0], [16.0, -4.0, 1.0]], grads

    assert math.isclose(second_derivative_of_sin(0.5), -math.sin(0.5), rel_tol=1e-15)
    print(f"z = {value}, (dz/da, dz/db, dz/dc) = {tuple(tangents)}; J =\n{dense}")


if __name__ == "__main__":
    main()
