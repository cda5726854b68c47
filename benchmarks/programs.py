"""The functions the benchmarks differentiate, written once and run by every
library: each takes the library's elementary functions as arguments (``sin``,
``exp``, ...), so plain floats, adcore and the peers execute the same program.

Also an independent reference for the checks: ``RefDual``, forward mode in pure
Python (a value and a tuple of partials), slow but obviously right.
"""

import math
import random

# ----------------------------------------------------------------- the seed polynomial

SEED_POINT = {"a": 3.0, "b": 1.0, "c": -2.0, "x": 4.0, "y": -1.0}
SEED_ANSWER = (42.0, (16.0, -4.0, 1.0))      # z and dz/da, dz/db, dz/dc (the seed's table)


def seed_poly(a, b, c, x, y):
    return a * x ** 2 + b * x * y + c * y ** 2


# ----------------------------------------------------------------- a long scalar program

PROGRAM_INPUTS = (0.7, -0.3, 1.1, 0.4)
PROGRAM_INPUTS2 = (0.705, -0.297, 1.096, 0.403)      # the replay point
PROGRAM_DIRECTION = (1.0, 0.5, -0.25, 2.0)           # the forward-mode tangent


def program_source(n_ops, seed=0):
    """Source of ``program(x0, x1, x2, x3, sin, exp)``: ``n_ops`` lines, each one
    operation of ``* + / sin exp`` on earlier results, inputs and constants.

    The operations are drawn at random, then steered with the values at
    PROGRAM_INPUTS so that every value stays within [0.05, 4] in magnitude and
    each step is roughly contractive: no overflow, no division by ~0, and
    derivatives of moderate size at nearby points as well.
    """
    rng = random.Random(seed)
    names = ["x0", "x1", "x2", "x3"]
    vals = list(PROGRAM_INPUTS)
    lines = []
    prev = 3
    for k in range(n_ops):
        a = prev if rng.random() < 0.75 else rng.randrange(max(0, len(vals) - 16), len(vals))
        # the other operand: an input (keeps every input in the gradient), a
        # constant, or a recent result
        if rng.random() < 0.5:
            j = rng.randrange(4)
            bname, bval = names[j], vals[j]
        elif rng.random() < 0.5:
            bval = round(rng.uniform(0.3, 1.2), 3)
            bname = repr(bval)
        else:
            j = rng.randrange(max(0, len(vals) - 16), len(vals))
            bname, bval = names[j], vals[j]
        av = vals[a]
        order = ["*", "+", "/", "sin", "exp"]
        rng.shuffle(order)
        for op in order:
            if op == "*":
                r = av * bval
                ok = abs(bval) <= 1.2
            elif op == "+":
                r = av + bval
                ok = True
            elif op == "/":
                r = av / bval if abs(bval) >= 0.8 else 0.0
                ok = abs(bval) >= 0.8
            elif op == "sin":
                r = math.sin(av)
                ok = True
            else:
                r = math.exp(av) if av < 1.0 else 0.0
                ok = av < 1.0
            if ok and 0.05 <= abs(r) <= 4.0:
                break
        else:
            op, r = "sin", math.sin(av)
            if abs(r) < 0.05:
                op, r = "+", av + 0.5
        an = names[a]
        if op in ("sin", "exp"):
            lines.append(f"    v{k} = {op}({an})")
        else:
            lines.append(f"    v{k} = {an} {op} {bname}")
        names.append(f"v{k}")
        vals.append(r)
        prev = len(vals) - 1
    body = "\n".join(lines)
    return (f"def program(x0, x1, x2, x3, sin, exp):\n{body}\n"
            f"    return {names[-1]}\n")


_programs = {}


def make_program(n_ops=10_000):
    """The compiled ``program(x0, x1, x2, x3, sin, exp)`` of ``n_ops`` operations."""
    if n_ops not in _programs:
        ns = {}
        exec(compile(program_source(n_ops), f"<program {n_ops}>", "exec"), ns)
        _programs[n_ops] = ns["program"]
    return _programs[n_ops]


# ----------------------------------------------------------------- Rosenbrock

def rosen_loop(xs):
    """scipy.optimize.rosen written as a scalar loop: 8 operations per term."""
    s = 0.0
    for i in range(len(xs) - 1):
        a = xs[i]
        s = s + 100.0 * (xs[i + 1] - a * a) ** 2 + (1.0 - a) ** 2
    return s


def rosen_loop_ops(n):
    return 8 * (n - 1)


def rosen_vec(x, total):
    """scipy.optimize.rosen on arrays; ``total`` is the library's sum."""
    a = x[:-1]
    return total(100.0 * (x[1:] - a * a) ** 2 + (1.0 - a) ** 2)


def rosen_point(n, seed=1):
    import numpy as np

    return np.random.default_rng(seed).uniform(-1.2, 1.2, n)


# ----------------------------------------------------------------- element-wise jvp

def elementwise(x, sin, exp):
    """Five element-wise operations: sin, *, exp, /, +."""
    return exp(sin(x) * x) + x / 3.0


def elementwise_jvp_numpy(x, v):
    """The hand-derived jvp, to check results."""
    import numpy as np

    s = np.sin(x)
    e = np.exp(s * x)
    return e + x / 3.0, e * (np.cos(x) * x + s) * v + v / 3.0


# ----------------------------------------------------------------- a Jacobian

def jacobian_problem(n, m, seed=2):
    """W (m x n) and x (n,) for f(x) = tanh(W sin x) + 0.1 W sin x."""
    import numpy as np

    rng = np.random.default_rng(seed)
    w = rng.standard_normal((m, n)) / math.sqrt(n)
    x = rng.uniform(-2.0, 2.0, n)
    return w, x


def tanh_layer(x, w, sin, tanh, matmul):
    u = matmul(w, sin(x))
    return tanh(u) + 0.1 * u


def tanh_layer_jacobian(x, w):
    """The analytic Jacobian, hand-written in numpy:
    J = diag(1 - tanh(u)^2 + 0.1) W diag(cos x), u = W sin x."""
    import numpy as np

    t = np.tanh(w @ np.sin(x))
    return ((1.1 - t * t)[:, None] * w) * np.cos(x)


# ----------------------------------------------------------------- a reference

class RefDual:
    """Forward mode in pure Python for the checks: ``v`` and the tuple ``g`` of
    partials with respect to every input."""

    __slots__ = ("v", "g")

    def __init__(self, v, g):
        self.v, self.g = v, g

    @staticmethod
    def inputs(values):
        n = len(values)
        return [RefDual(float(v), tuple(1.0 if j == i else 0.0 for j in range(n)))
                for i, v in enumerate(values)]

    @staticmethod
    def _lift(o, like):
        if isinstance(o, RefDual):
            return o
        return RefDual(float(o), (0.0,) * len(like.g))

    def __add__(self, o):
        o = self._lift(o, self)
        return RefDual(self.v + o.v, tuple(p + q for p, q in zip(self.g, o.g)))

    __radd__ = __add__

    def __sub__(self, o):
        o = self._lift(o, self)
        return RefDual(self.v - o.v, tuple(p - q for p, q in zip(self.g, o.g)))

    def __rsub__(self, o):
        return self._lift(o, self) - self

    def __mul__(self, o):
        o = self._lift(o, self)
        return RefDual(self.v * o.v, tuple(p * o.v + self.v * q for p, q in zip(self.g, o.g)))

    __rmul__ = __mul__

    def __truediv__(self, o):
        o = self._lift(o, self)
        r = self.v / o.v
        return RefDual(r, tuple((p - r * q) / o.v for p, q in zip(self.g, o.g)))

    def __rtruediv__(self, o):
        return self._lift(o, self) / self

    def __pow__(self, k):
        if isinstance(k, RefDual):
            raise TypeError("RefDual: constant exponents only")
        d = k * self.v ** (k - 1)
        return RefDual(self.v ** k, tuple(d * p for p in self.g))

    @staticmethod
    def sin(x):
        c = math.cos(x.v)
        return RefDual(math.sin(x.v), tuple(c * p for p in x.g))

    @staticmethod
    def exp(x):
        e = math.exp(x.v)
        return RefDual(e, tuple(e * p for p in x.g))
