"""Jacobians over coordinate sets, the chain rule, and exact second derivatives.

``jacobian(f)(x)`` is the derivative Df(x) as a :class:`~adcore.linear.Matrix`
in V(C1 x C0), indexed by (output coordinate, input coordinate):

* a Vector over C0 gives C0 itself; a number gives SCALAR; a numpy array of shape
  s gives the product of ranges of s (so ``numpy.asarray(J).shape`` is
  ``out.shape + in.shape``, JAX's convention); a dict (or list, tuple, ...) of
  numbers gives the coordinate set of its keys, and of arrays the tuples
  ``(key, *index)``.  The output's coordinate set is found the same way.
* ``mode="forward"`` pushes all |C0| basis directions through one forward pass
  (tangents in chunks); ``mode="reverse"`` records one tape and sweeps all |C1|
  output rows back through it at once (``Tape.jacobian_rows``: one reverse sweep
  carrying a stack of cotangents, in blocks when large).  Both seed the identity;
  matmul keeps its one-non-zero-per-row structure (``array_ops.rows_matmul``), so
  neither multiplies W by a dense |C0| x |C0| seed.
  ``mode="auto"`` (the default) evaluates f once at x to learn |C1|, then takes
  forward mode when |C0| <= |C1| and reverse mode otherwise: each mode costs a
  small multiple of f per direction it pushes (forward: |C0| of them, reverse:
  |C1|), so the smaller side wins.

The chain rule, D(g o f)(x) = Dg(f(x)) Df(x), is Matrix composition:
``jacobian(g)(f(x)) @ jacobian(f)(x)``; ``compose(g, f)`` evaluates a composition
and assembles its derivative that way, and ``chain(Jg, Jf)`` multiplies
Jacobians with their coordinate sets checked.

``hessian(f)(x)`` and ``hvp(f, x, v)`` are exact (no finite differences):
reverse over forward.  ``hvp`` is the gradient of x -> Df(x) v, one forward
pass carrying recorded values (adcore.nested.NestedDual) and one reverse sweep;
``hessian`` records (x, v) -> Df(x) v once, with v a tape input as well, and
replays that tape at v = 1_i for row i: one C replay and one reverse sweep per
row, no re-recording.

``jacfwd`` and ``jacrev`` here are the engines' (forward.py, reverse.py) made
aware of coordinate sets: a function of a Vector, or returning one, gets a
Matrix; numbers, arrays and trees of them get the engine's own result (JAX's
conventions) unchanged.

The mathematics, with adcore (mirrored by the README section of that name)
---------------------------------------------------------------------------

The seed builds its calculus from one idea: a vector is a function from a set
of coordinates to the reals, V(C) = {v : C → R}. adcore follows it literally.
(Every example below runs as a test: `tests/test_readme_math.py` checks them
against the doctests in `adcore/drivers.py`, which it runs.)

**Coordinate sets.** The von Neumann integer n = {0, …, n-1}, any set of
labels, and products of sets; a numpy shape (2, 3, 5) is the product
2 × 3 × 5, and the scalars are V of the empty product, which has one
coordinate, the empty tuple.

>>> import numpy as np
>>> import adcore
>>> from adcore import Matrix, Named, Range, SCALAR, Vector
>>> list(Range(5))
[0, 1, 2, 3, 4]
>>> C = Range(2) * Range(3) * Range(5)
>>> C.size, C.shape, C.index((1, 2, 3)), C.coord_at(28)
(30, (2, 3, 5), 28, (1, 2, 3))
>>> list(SCALAR), SCALAR.shape
([()], ())

**Vectors.** Arithmetic and every function of the rule table act element-wise,
with scalars broadcast; `basis(C, i)` is 1_i; the inner product, the length and
the distance are `dot`, `norm` and `distance`.

>>> C0 = Named("x", "y")
>>> v = Vector(C0, {"x": 3.0, "y": 4.0})
>>> v["y"], v.norm()
(4.0, 5.0)
>>> 2 * v + 1
Vector(Named('x', 'y'), {'x': 7.0, 'y': 9.0})
>>> adcore.maximum(v, 3.5)
Vector(Named('x', 'y'), {'x': 3.5, 'y': 4.0})
>>> e = adcore.basis(C0, "y")
>>> e, v.dot(e), adcore.distance(v, e)
(Vector(Named('x', 'y'), {'x': 0.0, 'y': 1.0}), 4.0, 4.242640687119285)
>>> v + Vector(Range(2), [1.0, 2.0])
Traceback (most recent call last):
  ...
adcore.errors.CoordinateError: cannot combine a Vector over Named('x', 'y') with a Vector over Range(2)

**Linear functions are matrices.** A linear f : V(C0) → V(C1) is the matrix
F ∈ V(C1 × C0) with F[i, j] = f(1_j)[i], and f(v) = Fv. Composition is the
matrix product, contracting the shared coordinate set.

>>> C1 = Named("z0", "z1", "z2")
>>> f = lambda v: Vector(C1, [2 * v["x"], v["x"] - v["y"], 3 * v["y"]])
>>> F = adcore.matrix_of(f, C0)
>>> F
Matrix(Named('z0', 'z1', 'z2'), Named('x', 'y'), [[2.0, 0.0], [1.0, -1.0], [0.0, 3.0]])
>>> F @ v == f(v)
True
>>> G = adcore.matrix_of(lambda u: Vector(Named("s"), [u["z0"] + u["z2"]]), C1)
>>> G @ F
Matrix(Named('s'), Named('x', 'y'), [[2.0, 3.0]])
>>> F @ G
Traceback (most recent call last):
  ...
adcore.errors.CoordinateError: cannot compose: the left matrix takes Named('x', 'y') but the right one gives Named('s')
>>> adcore.matrix_of(lambda v: v * v, C0)
Traceback (most recent call last):
  ...
ValueError: matrix_of: f is not linear: ...

**The derivative** Df(x) ∈ V(C1 × C0), Df(x)[i, j] = ∂f_i/∂x_j. The seed's
example, [z0, z1, z2] = [x², xy, y²], whose derivative is
[[2x, 0], [y, x], [0, 2y]]:

>>> f = lambda v: Vector(C1, [v["x"] ** 2, v["x"] * v["y"], v["y"] ** 2])
>>> x = Vector(C0, {"x": 3.0, "y": 5.0})
>>> J = adcore.jacobian(f)(x)
>>> J
Matrix(Named('z0', 'z1', 'z2'), Named('x', 'y'), [[6.0, 0.0], [5.0, 3.0], [0.0, 10.0]])
>>> J["z1", "x"]
5.0

`mode="auto"` pushes the |C0| input directions forward when |C0| ≤ |C1| and
sweeps the |C1| output rows back on one recorded tape otherwise; `"forward"`
and `"reverse"` force a mode. Functions of numpy arrays get a Jacobian of
shape `out.shape + in.shape`, functions of dicts one indexed by the keys, as
with the seed's z = ax² + bxy + cy², differentiated with respect to a, b, c:

>>> adcore.jacobian(f, mode="reverse")(x) == J
True
>>> np.asarray(adcore.jacobian(adcore.sin)(np.zeros((2, 3)))).shape
(2, 3, 2, 3)
>>> z = lambda p: p["a"] * p["x"] ** 2 + p["b"] * p["x"] * p["y"] + p["c"] * p["y"] ** 2
>>> Dz = adcore.jacobian(z)({"a": 3.0, "b": 1.0, "c": -2.0, "x": 4.0, "y": -1.0})
>>> Dz["a"], Dz["b"], Dz["c"]
(16.0, -4.0, 1.0)

**The chain rule.** The derivative of a composition is the composition of the
derivatives, D(g ∘ f)(x) = Dg(f(x)) Df(x): a Matrix product. `adcore.compose`
evaluates a composition and assembles its derivative this way.

>>> g = lambda u: Vector(Named("s"), [u["z0"] + u["z1"] * u["z2"]])
>>> adcore.jacobian(lambda v: g(f(v)))(x)
Matrix(Named('s'), Named('x', 'y'), [[131.0, 225.0]])
>>> adcore.jacobian(g)(f(x)) @ adcore.jacobian(f)(x)
Matrix(Named('s'), Named('x', 'y'), [[131.0, 225.0]])
>>> value, D = adcore.compose(g, f)(x)
>>> value["s"], D["s", "y"]
(384.0, 225.0)

**Second derivatives**, exact: `hessian(f)(x)` and `hvp(f, x, v)` (reverse
mode over forward mode, no finite differences).

>>> h = lambda v: v["x"] ** 2 * v["y"]
>>> adcore.hessian(h)(x)
Matrix(Named('x', 'y'), Named('x', 'y'), [[10.0, 6.0], [6.0, 0.0]])
>>> adcore.hvp(h, x, adcore.basis(C0, "x"))
Vector(Named('x', 'y'), {'x': 10.0, 'y': 6.0})
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import forward, reverse, trees
from ._dual import Dual, DualArray
from ._tape import Tape, TapeArray, TapeValue
from .nested import NestedDual
from .coords import CoordinateSet, Named, Range, from_shape
from .errors import CoordinateError, NestingError
from .linear import Matrix
from .vectors import Vector, _is_active

__all__ = ["jacobian", "jacfwd", "jacrev", "value_and_jacobian", "hessian", "hvp",
           "compose", "chain", "coordinates_of"]

_MODES = ("auto", "forward", "reverse")


# ---------------------------------------------------------------- layouts

def _leaf_shape(x: Any, where: str) -> Tuple[int, ...]:
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "biuf":
            raise TypeError(f"{where}: an array of dtype {x.dtype} is not differentiable "
                            f"(real numbers only)")
        return tuple(x.shape)
    if isinstance(x, (float, int, np.floating, np.integer, np.bool_)):  # bool is an int
        return ()
    if _is_active(x):
        return tuple(getattr(x, "shape", ()))
    if isinstance(x, complex):
        raise TypeError(f"{where}: complex numbers are not supported")
    raise TypeError(f"{where}: cannot differentiate with respect to a {type(x).__name__}")


class _Layout:
    """How a structured value maps onto a coordinate set and a flat buffer.

    kind "vector": a Vector (its own set); "leaf": one number or array (the
    product of ranges of its shape); "tree": dicts/lists/tuples/dataclasses of
    those (labels ``path + index``, a bare key for a number under one key).
    """

    def __init__(self, example: Any, where: str) -> None:
        self.where = where
        if isinstance(example, Vector):
            self.kind = "vector"
            self.coords = example.coords
            return
        if isinstance(example, (float, np.ndarray)) or _is_active(example):
            leaves, treedef = [example], trees.TreeDef("leaf")  # the common case, quickly
        else:
            leaves, treedef = trees.flatten(example)
        if treedef.kind == "leaf":
            self.kind = "leaf"
            self.shape = _leaf_shape(example, where)
            self.coords = from_shape(self.shape)
            return
        self.kind = "tree"
        self.treedef = treedef
        self.leaf_info: List[Tuple[str, Any, int]] = []  # (kind, shape or coords, size)
        labels: List[Any] = []
        for (path, node_coords), leaf in zip(_leaf_roles(treedef, ()), leaves):
            if node_coords is not None:  # the buffer of a Vector that trees opened up
                self.leaf_info.append(("buffer", node_coords, node_coords.size))
                labels.extend(path + (c,) for c in node_coords)
            elif isinstance(leaf, Vector):
                self.leaf_info.append(("vector", leaf.coords, leaf.size))
                labels.extend(path + (c,) for c in leaf.coords)
            else:
                shape = _leaf_shape(leaf, where)
                self.leaf_info.append(("leaf", shape, int(np.prod(shape, dtype=np.int64))))
                labels.extend(path + idx for idx in np.ndindex(*shape))
        labels = [lab[0] if len(lab) == 1 else lab for lab in labels]
        if labels == list(range(len(labels))):
            self.coords = Range(len(labels))
        else:
            self.coords = Named(*labels)

    @property
    def size(self) -> int:
        return self.coords.size

    # -- structure -> flat
    def pieces(self, x: Any) -> List[Any]:
        """x's values, checked against this layout, one piece per leaf in order: a
        Vector's buffer (float64, object or adcore array) or the leaf itself."""
        if self.kind == "vector":
            if not isinstance(x, Vector) or x.coords != self.coords:
                raise CoordinateError(f"{self.where}: expected a Vector over {self.coords!r}, "
                                      f"got {_describe(x)}")
            return [x._data]
        if self.kind == "leaf":
            t = type(x)
            if (t is TapeArray or t is DualArray or (t is np.ndarray and x.dtype.kind in "fiub")) \
                    and x.shape == self.shape:
                return [x]  # the common case, quickly
            shape = _leaf_shape(x, self.where)
            if shape != self.shape:
                raise ValueError(f"{self.where}: expected shape {self.shape}, got {shape}")
            return [x]
        leaves, treedef = trees.flatten(x)
        if treedef != self.treedef:
            raise ValueError(f"{self.where}: the structure changed from {self.treedef!r} "
                             f"to {treedef!r}")
        out = []
        for (kind, meta, _), leaf in zip(self.leaf_info, leaves):
            if kind == "vector":
                if not isinstance(leaf, Vector) or leaf.coords != meta:
                    raise CoordinateError(f"{self.where}: expected a Vector over {meta!r}, "
                                          f"got {_describe(leaf)}")
                out.append(leaf._data)
            elif kind == "buffer":
                out.append(leaf)  # the tree structure (checked above) fixes its set
            else:
                if _leaf_shape(leaf, self.where) != meta:
                    raise ValueError(f"{self.where}: expected shape {meta}, got "
                                     f"{_leaf_shape(leaf, self.where)}")
                out.append(leaf)
        return out

    def flatten(self, x: Any) -> Any:
        """A 1-D buffer of x's values: float64 when plain, else an adcore array."""
        if (self.kind == "leaf" and type(x) is np.ndarray and x.dtype == np.float64
                and x.shape == self.shape):
            return x.reshape(-1)
        return _concat([_as_buffer(p) for p in self.pieces(x)])

    @property
    def scalar_leaves(self) -> bool:
        """No array leaves: the value can travel as a list of scalars."""
        if self.kind == "vector":
            return True
        if self.kind == "leaf":
            return self.shape == ()
        return all(kind in ("vector", "buffer") or meta == () for kind, meta, _ in self.leaf_info)

    def unflatten_scalars(self, items: Sequence[Any]) -> Any:
        """The structure from a list of scalars (requires ``scalar_leaves``)."""
        if self.kind == "vector":
            return Vector._wrap(self.coords, _object_buffer(items))
        if self.kind == "leaf":
            return items[0]
        out = []
        start = 0
        for kind, meta, size in self.leaf_info:
            if kind == "vector":
                out.append(Vector._wrap(meta, _object_buffer(items[start:start + size])))
            elif kind == "buffer":
                out.append(_object_buffer(items[start:start + size]))
            else:
                out.append(items[start])
            start += size
        return trees.unflatten(self.treedef, out)

    # -- flat -> structure
    def unflatten(self, buf: Any) -> Any:
        if self.kind == "vector":
            return Vector._wrap(self.coords, buf)
        if self.kind == "leaf":
            return _shape_as(buf, self.shape)
        out = []
        start = 0
        for kind, meta, size in self.leaf_info:
            part = buf[start:start + size]
            if kind == "vector":
                out.append(Vector._wrap(meta, part))
            elif kind == "buffer":
                out.append(part)  # trees rebuilds the Vector around it
            else:
                out.append(_shape_as(part, meta))
            start += size
        return trees.unflatten(self.treedef, out)


def _leaf_roles(td: Any, path: Tuple[Any, ...]) -> Any:
    """Per leaf of the tree structure td: its path (as trees.leaf_paths gives it)
    and, for the buffer of a Vector that trees treats as a node, the Vector's
    coordinate set (else None)."""
    kind = td.kind
    if kind == "leaf":
        yield path, None
    elif kind == "dict":
        for key, child in zip(td.meta, td.children):
            yield from _leaf_roles(child, path + (key,))
    elif kind in ("namedtuple", "dataclass"):
        for name, child in zip(td.meta[1], td.children):
            yield from _leaf_roles(child, path + (name,))
    elif (kind == "custom" and isinstance(td.meta[0], type) and issubclass(td.meta[0], Vector)
          and len(td.children) == 1 and td.children[0].kind == "leaf"):
        yield path, td.meta[1]
    else:  # list, tuple, other nodes: positions
        for i, child in enumerate(td.children):
            yield from _leaf_roles(child, path + (i,))


def _describe(x: Any) -> str:
    if isinstance(x, Vector):
        return f"a Vector over {x.coords!r}"
    return f"a {type(x).__name__}"


def _object_buffer(items: Sequence[Any]) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    for i, x in enumerate(items):
        out[i] = x
    return out


def _as_buffer(piece: Any) -> Any:
    if isinstance(piece, np.ndarray) and piece.dtype == object:
        return _stack_scalars(list(piece.reshape(-1)))
    return _ravel(piece)


_LEAF_TYPES = (np.ndarray, DualArray, TapeArray)
# layouts of single array leaves by (where, shape): the same for every call
_LEAF_LAYOUTS: Dict[Tuple[str, Tuple[int, ...]], _Layout] = {}


def _layout(example: Any, where: str) -> _Layout:
    """_Layout(example, where), shared for array leaves of one shape (a layout is
    never changed once made; repeated Jacobians skip rebuilding coordinate sets)."""
    t = type(example)
    if t in _LEAF_TYPES and (t is not np.ndarray or example.dtype.kind in "biuf"):
        key = (where, tuple(example.shape))
        lay = _LEAF_LAYOUTS.get(key)
        if lay is None:
            if len(_LEAF_LAYOUTS) > 256:
                _LEAF_LAYOUTS.clear()
            lay = _LEAF_LAYOUTS[key] = _Layout(example, where)
        return lay
    return _Layout(example, where)


def _stack_scalars(items: List[Any]) -> Any:
    if not any(_is_active(x) for x in items):
        return np.array([float(x) for x in items], dtype=np.float64)
    from .array_ops import stack

    return stack(items)


def _ravel(x: Any) -> Any:
    if _is_active(x):
        shape = tuple(getattr(x, "shape", ()))
        if shape == ():
            return _stack_scalars([x])
        if len(shape) == 1:
            return x
        from .array_ops import reshape

        return reshape(x, (int(np.prod(shape)),))
    return np.asarray(x, dtype=np.float64).reshape(-1)


def _concat(pieces: List[Any]) -> Any:
    if len(pieces) == 1:
        return pieces[0]
    if not any(_is_active(p) for p in pieces):
        return np.concatenate(pieces) if pieces else np.zeros(0)
    from .array_ops import concatenate

    return concatenate(pieces)


def _shape_as(buf: Any, shape: Tuple[int, ...]) -> Any:
    if shape == ():
        x = buf[0]
        return float(x) if isinstance(buf, np.ndarray) else x
    if tuple(getattr(buf, "shape", ())) == shape:
        return buf
    if isinstance(buf, np.ndarray):
        return buf.reshape(shape)
    from .array_ops import reshape

    return reshape(buf, shape)


def coordinates_of(x: Any) -> CoordinateSet:
    """The coordinate set the drivers give a value: a Vector's own, a number's
    SCALAR, an array's product of ranges, a tree's labels."""
    return _Layout(x, "coordinates_of").coords


# ---------------------------------------------------------------- engines

def _check_mode(mode: str) -> str:
    if mode not in _MODES:
        raise ValueError(f"jacobian: mode must be one of {_MODES}, not {mode!r}")
    return mode


# intermediate tangent blocks of forward mode stay under this many doubles (32 MiB)
_FORWARD_BLOCK = 1 << 22
# inputs up to this size may travel as separate scalars (see _scalar_mode)
_SCALAR_MAX = 256


def _scalar_mode(lin: _Layout) -> bool:
    """Whether x's coordinates travel as separate scalars (Duals / tape scalars)
    rather than as one flat array.  Numbers and named coordinates are read one at
    a time (``v["x"]``), which scalars do without an indexing operation each;
    ranges are tensors, whose element-wise arithmetic one array does at once."""
    if not lin.scalar_leaves or lin.size > _SCALAR_MAX:
        return False
    if lin.kind != "vector":
        return True
    return lin.size <= 8 or any(isinstance(c, Named) for c in lin.coords.factors)


def _tangents_of(y: Any, tag: int, k: int) -> np.ndarray:
    """The (k, size) tangents of an output piece y for differentiation tag."""
    ytag = getattr(y, "_ad_tag", None)
    if ytag is None or ytag < tag:  # does not depend on the input
        return np.zeros((k, int(np.size(y if ytag is None else np.asarray(y)))))
    if type(y) is DualArray and ytag == tag:
        return np.asarray(y.tangents, dtype=np.float64).reshape(k, -1)
    if type(y) is Dual and ytag == tag:
        return np.asarray(y.tangents, dtype=np.float64).reshape(k, 1)
    if ytag == tag:
        raise NestingError(f"jacobian: the function mixes in values of an outer "
                           f"differentiation (it returned a {type(y).__name__}); a Jacobian "
                           f"inside another differentiation is not supported: use "
                           f"adcore.hessian or adcore.hvp for second derivatives")
    raise NestingError(f"jacobian: the function returned a {type(y).__name__} of "
                       f"differentiation {ytag}, not of this one ({tag}): a perturbation "
                       f"escaped its differentiation")


def _forward_rows(pieces: List[Any], tag: int, k: int) -> np.ndarray:
    """The (m, k) block of the Jacobian that k directions give, from f's pieces."""
    rows = []
    for p in pieces:
        if isinstance(p, np.ndarray) and p.dtype == object:
            block = np.zeros((p.size, k))
            for i, e in enumerate(p.reshape(-1)):
                if type(e) is Dual and e.tag == tag:
                    block[i] = e.tangents
                elif type(e) is not float:
                    block[i] = _tangents_of(e, tag, k)[:, 0]
            rows.append(block)
        else:
            rows.append(_tangents_of(p, tag, k).T)
    if not rows:
        return np.zeros((0, k))
    return rows[0] if len(rows) == 1 else np.concatenate(rows, axis=0)


_IDENTITIES: Dict[int, np.ndarray] = {}


def _identity(n: int) -> np.ndarray:
    """np.eye(n), read-only and kept for small n (the forward seed of every call;
    nothing writes into tangents, and a read-only array says so loudly)."""
    if n > 512:
        return np.eye(n)
    eye = _IDENTITIES.get(n)
    if eye is None:
        if len(_IDENTITIES) >= 8:
            _IDENTITIES.clear()
        eye = np.eye(n)
        eye.flags.writeable = False
        _IDENTITIES[n] = eye
    return eye


def _forward_matrix(lin: _Layout, call: Callable[[Any], List[Any]], xf: np.ndarray,
                    m_hint: int) -> np.ndarray:
    """The (m, n) Jacobian by forward mode: the identity's rows as tangents -- of
    n scalar Duals, or of one DualArray (in chunks when large) -- and the
    output's tangents read straight off as columns."""
    n = xf.shape[0]
    # each pass is a forward differentiation registered as running (forward.py),
    # so differentiations nested inside f accept its values
    if _scalar_mode(lin):
        with forward._Differentiation() as tag:
            eye = np.eye(n)
            items = [Dual(float(xf[i]), eye[i], tag) for i in range(n)]
            return _forward_rows(call(lin.unflatten_scalars(items)), tag, n)
    chunk = max(1, min(n, _FORWARD_BLOCK // max(n, m_hint, 1)))
    blocks = []
    for start in range(0, n, chunk):
        k = min(chunk, n - start)
        if k == n:
            seed = _identity(n)
        else:
            seed = np.zeros((k, n))
            seed[np.arange(k), start + np.arange(k)] = 1.0
        with forward._Differentiation() as tag:
            blocks.append(_forward_rows(call(lin.unflatten(DualArray(xf, seed, tag))), tag, k))
    J = blocks[0] if len(blocks) == 1 else np.concatenate(blocks, axis=1)
    # f may hand the seed itself back (f(x) = x): the Jacobian owns its numbers
    return J if J.flags.writeable else J.copy()


def _out_leaf(tape: Tape, leaf: Any, i: int) -> Any:
    """reverse._out_leaf, naming the output element only when it is refused (the
    name is a string per element and call otherwise)."""
    if type(leaf) is TapeArray or type(leaf) is TapeValue:
        if leaf.tape is tape:
            return ("a", leaf.slot) if type(leaf) is TapeArray else ("s", leaf.slot)
    return reverse._out_leaf(tape, leaf, f"jacobian: output element {i}")


def _reverse_matrix(lin: _Layout, call: Callable[[Any], List[Any]], xf: np.ndarray
                    ) -> np.ndarray:
    """The (m, n) Jacobian by reverse mode: one recording, then all m rows in one
    reverse sweep carrying a stack of cotangents (``Tape.jacobian_rows``; in blocks
    when large), with x as n tape scalars or as one recorded array."""
    n = xf.shape[0]
    scalars = _scalar_mode(lin)

    def leaves_of(inp: Any) -> List[Any]:
        x = lin.unflatten_scalars(inp) if scalars else lin.unflatten(inp)
        leaves: List[Any] = []
        for p in call(x):
            if isinstance(p, np.ndarray) and p.dtype == object:
                leaves.extend(p.reshape(-1).tolist())
            else:
                leaves.append(p)
        return leaves

    # one recording (inputs and outputs are flat already: no tree walks)
    tape = Tape()
    tape.start()
    try:
        if scalars:
            handles: Any = [tape.input(float(t)) for t in xf]
            in_leaves = [(h.slot, None, "<f8") for h in handles]
        else:
            handles = tape.input(xf)
            in_leaves = [(handles.slot, handles.shape, handles.dtype.str)]
        out_leaves = [_out_leaf(tape, leaf, i) for i, leaf in enumerate(leaves_of(handles))]
    finally:
        tape.finish()
    J = tape.jacobian_rows(out_leaves, in_leaves)
    if J.shape[1] != n:
        raise AssertionError(f"jacobian: {J.shape[1]} input columns for {n} coordinates")
    return J


Argnums = Union[int, Tuple[int, ...]]


def _check_argnums(args: Sequence[Any], argnums: Any, where: str) -> None:
    nums = argnums if isinstance(argnums, tuple) else (argnums,)
    if not nums:
        raise ValueError(f"{where}: argnums is an empty tuple")
    for i in nums:
        if not isinstance(i, int) or isinstance(i, bool):
            raise TypeError(f"{where}: argnums must be an int or a tuple of ints, "
                            f"not {argnums!r}")
        if not -len(args) <= i < len(args):
            raise ValueError(f"{where}: argnums={argnums} but f was given {len(args)} "
                             f"argument(s)")


def _selected(args: Sequence[Any], argnums: Argnums) -> Any:
    """The differentiated argument; a tuple of them for a tuple of argnums."""
    if isinstance(argnums, tuple):
        return tuple(args[i] for i in argnums)
    return args[argnums]


def _substituted(args: Sequence[Any], argnums: Argnums, x: Any) -> List[Any]:
    call = list(args)
    if isinstance(argnums, tuple):
        for i, xi in zip(argnums, x):
            call[i] = xi
    else:
        call[argnums] = x
    return call


def _input_layout(args: Sequence[Any], argnums: Argnums, where: str) -> _Layout:
    _check_argnums(args, argnums, where)
    return _layout(_selected(args, argnums), f"{where} (input)")


def _flat_problem(f: Callable[..., Any], args: Sequence[Any], argnums: Argnums,
                  where: str, lin: Optional[_Layout] = None
                  ) -> Tuple[_Layout, Any, Callable[[Any], List[Any]], List[_Layout]]:
    """x's layout, x as a flat float array, and g: f of x (in x's structure) as
    a list of output pieces; g records the output layout on its first call into
    the returned list."""
    if lin is None:
        lin = _input_layout(args, argnums, where)
    x = _selected(args, argnums)
    xf = lin.flatten(x)
    if _is_active(xf):
        raise NestingError(f"{where}: x holds values of an outer differentiation "
                           f"({type(xf).__name__}); a Jacobian inside another "
                           f"differentiation is not supported: use adcore.hessian or "
                           f"adcore.hvp for second derivatives")
    if not (isinstance(xf, np.ndarray) and xf.dtype == np.float64):
        xf = np.asarray(xf, dtype=np.float64)
    out_layout: List[_Layout] = []

    def g(x_struct: Any) -> List[Any]:
        """f's output pieces at x rebuilt in its structure (f's other args fixed)."""
        y = f(*_substituted(args, argnums, x_struct))
        if not out_layout:
            out_layout.append(_layout(y, f"{where} (output)"))
        pieces: List[Any] = out_layout[0].pieces(y)
        return pieces

    return lin, xf, g, out_layout


def _choose(mode: str, n: int, m: int) -> str:
    if mode != "auto":
        return mode
    return "forward" if n <= m else "reverse"


def _matrix(f: Callable[..., Any], args: Sequence[Any], argnums: Argnums, mode: str,
            m_hint: int, probe: Any = None, lin: Optional[_Layout] = None) -> Matrix:
    """The Jacobian Matrix; ``probe`` is f's value at x when already known."""
    lin, xf, g, out_layout = _flat_problem(f, args, argnums, "jacobian", lin)
    if probe is not None:
        out_layout.append(_layout(probe, "jacobian (output)"))
    n = lin.size
    if n == 0:
        if not out_layout:
            out_layout.append(_Layout(f(*args), "jacobian (output)"))
        lout = out_layout[0]
        return Matrix._wrap(lout.coords, lin.coords, np.zeros((lout.size, 0)))
    J = _forward_matrix(lin, g, xf, m_hint) if mode == "forward" else _reverse_matrix(lin, g, xf)
    lout = out_layout[0]
    return Matrix._wrap(lout.coords, lin.coords, J.reshape(lout.size, n))


def value_and_jacobian(f: Callable[..., Any], mode: str = "auto",
                       argnums: Argnums = 0) -> Callable[..., Tuple[Any, Matrix]]:
    """``(f(x), Df(x))`` with Df(x) a Matrix over (output, input) coordinates."""
    _check_mode(mode)

    def run(*args: Any) -> Tuple[Any, Matrix]:
        lin = _input_layout(args, argnums, "jacobian")  # validates before f runs
        y = f(*args)
        m = _layout(y, "jacobian (output)").size
        return y, _matrix(f, args, argnums, _choose(mode, lin.size, m), m, probe=y, lin=lin)

    return run


def jacobian(f: Callable[..., Any], mode: str = "auto",
             argnums: Argnums = 0) -> Callable[..., Matrix]:
    """The derivative Df(x) in V(C1 x C0), as a Matrix (see the module docs).

    ``mode="auto"`` picks forward mode when |C0| <= |C1| and reverse otherwise;
    ``"forward"`` / ``"reverse"`` force one.  To learn |C1|, auto evaluates f
    once at the first point with a given input set and remembers the size.
    """
    _check_mode(mode)
    out_sizes: Dict[CoordinateSet, int] = {}  # input coordinate set -> |C1| seen (auto's choice)

    def run(*args: Any) -> Matrix:
        lin = _input_layout(args, argnums, "jacobian")
        if mode != "auto":
            return _matrix(f, args, argnums, mode, 0, lin=lin)
        if lin.size <= 1:
            return _matrix(f, args, argnums, "forward", 0, lin=lin)  # cannot lose at |C0| <= 1
        m = out_sizes.get(lin.coords)
        if m is None:
            y = f(*args)
            m = _layout(y, "jacobian (output)").size
            J = _matrix(f, args, argnums, _choose("auto", lin.size, m), m, probe=y, lin=lin)
        else:
            J = _matrix(f, args, argnums, _choose("auto", lin.size, m), m, lin=lin)
        out_sizes[lin.coords] = J.out_coords.size
        return J

    return run


def _involves_vectors(x: Any) -> bool:
    if isinstance(x, Vector):
        return True
    leaves, _ = trees.flatten(x)
    return any(isinstance(leaf, Vector) for leaf in leaves)


def _aware(engine_name: str, mode: str) -> Callable[..., Callable[..., Any]]:
    def wrapper(f: Callable[..., Any], argnums: Argnums = 0, **kwargs: Any) -> Callable[..., Any]:
        returns_vectors: List[bool] = []  # remembered: f returned Vectors before

        def run(*args: Any) -> Any:
            try:
                _check_argnums(args, argnums, engine_name)
                x = _selected(args, argnums)
            except (TypeError, ValueError):
                x = None  # the engine reports bad argnums in its own words
            if returns_vectors or (x is not None and _involves_vectors(x)):
                return jacobian(f, mode=mode, argnums=argnums)(*args)
            seen: List[bool] = []

            def watch(*a: Any) -> Any:
                y = f(*a)
                if not seen:
                    seen.append(_involves_vectors(y))
                if seen[0]:
                    raise _VectorOutput()
                return y

            engine = forward.jacfwd if engine_name == "jacfwd" else reverse.jacrev
            try:
                return engine(watch, argnums=argnums, **kwargs)(*args)
            except _VectorOutput:
                returns_vectors.append(True)
                return jacobian(f, mode=mode, argnums=argnums)(*args)

        run.__name__ = f"{engine_name}({getattr(f, '__name__', 'f')})"
        return run

    wrapper.__name__ = engine_name
    return wrapper


class _VectorOutput(Exception):
    """f returns Vectors: redo the Jacobian with coordinate sets (internal)."""


jacfwd = _aware("jacfwd", "forward")
jacfwd.__doc__ = """Forward-mode Jacobian: Vector-aware ``adcore.forward.jacfwd``.

A function of a Vector (or returning one) gets a Matrix over (output, input)
coordinates; other functions get the engine's result (JAX's convention)."""
jacrev = _aware("jacrev", "reverse")
jacrev.__doc__ = """Reverse-mode Jacobian: Vector-aware ``adcore.reverse.jacrev``.

A function of a Vector (or returning one) gets a Matrix over (output, input)
coordinates; other functions get the engine's result (JAX's convention)."""


# ---------------------------------------------------------------- the chain rule

def chain(*jacobians: Matrix) -> Matrix:
    """The chain rule: the product J_k ... J_1 of the Jacobians of a composition,
    outermost first (``chain(Jg, Jf)`` is D(g o f)); mismatched coordinate sets
    raise CoordinateError naming both."""
    if not jacobians:
        raise TypeError("chain: needs at least one Jacobian")
    for J in jacobians:
        if not isinstance(J, Matrix):
            raise TypeError(f"chain: {type(J).__name__} is not a Matrix")
    out = jacobians[-1]
    for J in reversed(jacobians[:-1]):
        out = J @ out
    return out


def compose(*fs: Callable[[Any], Any], mode: str = "auto") -> Callable[[Any], Tuple[Any, Matrix]]:
    """The composition ``fs[0] o fs[1] o ... o fs[-1]`` (outermost first, as in
    g o f), returning ``(value, derivative)`` at x: each function's Jacobian at
    the point it is applied, multiplied by the chain rule."""
    if not fs:
        raise TypeError("compose: needs at least one function")
    _check_mode(mode)

    def run(x: Any) -> Tuple[Any, Matrix]:
        value = x
        J: Optional[Matrix] = None
        for f in reversed(fs):
            value, Jf = value_and_jacobian(f, mode)(value)
            J = Jf if J is None else Jf @ J
        assert J is not None
        return value, J

    return run


# ---------------------------------------------------------------- second derivatives

def _scalar_problem(f: Callable[..., Any], args: Sequence[Any], argnums: Argnums,
                    where: str) -> Tuple[_Layout, Any, Callable[[Any], Any]]:
    """x's layout, x flat, and s = scalar f of flat x.

    Vectors, numbers and trees of numbers travel as a list of scalars (each
    coordinate its own nested dual); arrays as one flat array."""
    lin, xf, _, _ = _flat_problem(f, args, argnums, where)
    scalars = lin.scalar_leaves
    if scalars:
        xf = [float(t) for t in xf]

    def s(buf: Any) -> Any:
        x_struct = lin.unflatten_scalars(buf) if scalars else lin.unflatten(buf)
        y = f(*_substituted(args, argnums, x_struct))
        if isinstance(y, Vector):
            if y.size != 1:
                raise ValueError(f"{where}: f must return a scalar, got a Vector over "
                                 f"{y.coords!r}")
            y = y[y.coords.coord_at(0)]
        shape = tuple(getattr(y, "shape", ()))
        if shape not in ((), (1,)):
            raise ValueError(f"{where}: f must return a scalar, got shape {shape}")
        if shape == (1,):
            y = y[0]
        return y

    return lin, xf, s


def _directional_part(y: Any, tag: int) -> Any:
    """The tangent of f's scalar output y for the forward differentiation tag."""
    ytag = getattr(y, "_ad_tag", None)
    if ytag is None or ytag < tag:
        return 0.0  # f does not depend on x
    if type(y) is NestedDual and ytag == tag:
        return y.tangents[0]
    if type(y) in (Dual, DualArray) and ytag == tag:
        return float(np.asarray(y.tangents).reshape(-1)[0])
    raise NestingError(f"hessian: f returned a {type(y).__name__} of another "
                       f"differentiation (tag {ytag})")


def hessian(f: Callable[..., Any], argnums: Argnums = 0) -> Callable[..., Matrix]:
    """The Hessian of a scalar f as a Matrix over C0 x C0, exact: reverse over
    forward.  The directional derivative (x, v) -> Df(x) v is recorded once on a
    tape, with both x and v as inputs (a forward pass whose tangents are recorded
    values); row i is the gradient in x of that tape replayed at v = 1_i: one C
    replay and one reverse sweep per row, no re-recording."""

    def run(*args: Any) -> Matrix:
        lin, xf, s = _scalar_problem(f, args, argnums, "hessian")
        n = lin.size
        if n == 0:
            return Matrix._wrap(lin.coords, lin.coords, np.zeros((0, 0)))
        scalars = isinstance(xf, list)

        def directional(x: Any, v: Any) -> Any:
            with forward._Differentiation() as tag:
                if scalars:
                    seeded: Any = [NestedDual(xi, [vi], tag) for xi, vi in zip(x, v)]
                else:
                    seeded = NestedDual(x, [v], tag)
                return _directional_part(s(seeded), tag)

        eye = np.eye(n)
        basis_of = (lambda i: [float(t) for t in eye[i]]) if scalars else (lambda i: eye[i])
        tape = reverse.record(directional, xf, basis_of(0))
        H = np.zeros((n, n))
        kind, ref = tape.out_leaves[0]
        if kind != "c":  # else f is linear in x or constant: H = 0
            # replay at the input leaves directly (x's leaves, then v's), one sweep per row
            leaves_x = len(xf) if scalars else 1
            x_slots = [slot for slot, _, _ in tape.in_leaves[:leaves_x]]
            seed = {ref: 1.0 if kind == "s" else np.ones(())}
            for i in range(n):
                v_leaves = basis_of(i) if scalars else [eye[i]]
                adj = tape.backward(seed, _work=tape.replay(list(xf if scalars else [xf])
                                                             + v_leaves))
                if scalars:
                    H[i] = [adj[slot] for slot in x_slots]
                else:
                    H[i] = np.asarray(adj.array(x_slots[0], (n,)), dtype=np.float64)
        # exactly symmetric in exact arithmetic; rounding may differ in the last bit
        H = 0.5 * (H + H.T)
        return Matrix._wrap(lin.coords, lin.coords, H)

    return run


def hvp(f: Callable[..., Any], x: Any, v: Any) -> Any:
    """The Hessian-vector product H(x) v of a scalar f, exact, in x's structure:
    the gradient of x -> Df(x) v (reverse over forward: one forward pass with
    recorded values, one reverse sweep; 2.5x-3x a gradient for the vectorized
    Rosenbrock function at n = 100, benchmarks row hvp_100)."""
    lin, xf, s = _scalar_problem(f, (x,), 0, "hvp")
    if isinstance(x, Vector) and not (isinstance(v, Vector) and v.coords == x.coords):
        raise CoordinateError(f"hvp: x is a Vector over {x.coords!r} but v is "
                              f"{_describe(v)}")
    vf = np.asarray(lin.flatten(v), dtype=np.float64)
    if isinstance(xf, list):
        return lin.unflatten(_hvp_sweep(s, xf, [float(t) for t in vf]))
    if lin.kind == "leaf" and lin.shape != xf.shape:
        # an array of any shape travels in its own shape (f then needs no reshape)
        xf, vf = xf.reshape(lin.shape), vf.reshape(lin.shape)
    return lin.unflatten(_hvp_sweep(s, xf, vf).reshape(lin.size))


def _hvp_sweep(s: Callable[[Any], Any], xf: Any, vt: Any) -> np.ndarray:
    """grad(lambda b: jvp(s, (b,), (vt,))[1])(xf), as one recording and one sweep
    without the two drivers' layers: xf (a list of floats or an array) becomes the
    tape's inputs, each a NestedDual with its direction in vt."""
    scalars = isinstance(xf, list)
    tape = Tape()
    tape.start()
    try:
        # the tape copies an array input: f may write x while it is recorded
        handles: Any = [tape.input(t) for t in xf] if scalars else tape.input(xf)
        with forward._Differentiation() as tag:
            if scalars:
                seeded: Any = [NestedDual(h, [t], tag) for h, t in zip(handles, vt)]
            else:
                seeded = NestedDual(handles, [vt], tag)
            d = forward._split(s(seeded), tag, 1)[1][0]  # Df(x) v, checked as jvp does
    finally:
        tape.finish()
    slot = reverse._scalar_slot(tape, d, "hvp")[0]
    if slot is None:  # Df(x) v does not depend on x
        return np.zeros(len(xf) if scalars else xf.shape)
    adj = tape.backward({slot: 1.0})
    if scalars:
        return np.array([adj[h.slot] for h in handles], dtype=np.float64)
    return np.asarray(adj.array(handles.slot, xf.shape), dtype=np.float64)
