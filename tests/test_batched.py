"""Batched replay (tape.map / gradient_map / jacobian_map): each row equals the
single-point replay bitwise, for every thread count; branch changes are reported
per row; bad stacked inputs get specific errors."""

import numpy as np
import pytest

import adcore
import adcore.batched
from adcore.primitives import Primitive
from adcore.trees import flatten, unflatten

RNG = np.random.default_rng(7)


def stacked(rows):
    """Per-row results (trees) stacked leaf by leaf on a new leading axis."""
    flat = [flatten(r) for r in rows]
    td = flat[0][1]
    leaves = [np.stack([np.asarray(f[0][k]) for f in flat]) for k in range(len(flat[0][0]))]
    return unflatten(td, leaves)


def same(a, b):
    la, ta = flatten(a)
    lb, tb = flatten(b)
    assert ta == tb, (ta, tb)
    for x, y in zip(la, lb):
        x, y = np.asarray(x), np.asarray(y)
        assert x.shape == y.shape, (x.shape, y.shape)
        assert x.dtype == y.dtype, (x.dtype, y.dtype)
        assert np.array_equal(x, y, equal_nan=True), (x, y)


def rosen_loop(xs):
    s = 0.0
    for i in range(len(xs) - 1):
        a = xs[i]
        s = s + 100.0 * (xs[i + 1] - a * a) ** 2 + (1.0 - a) ** 2
    return s


def three(x, y, z):
    return x * y + adcore.sin(z) * x / (1.0 + y * y) - adcore.exp(0.1 * z) * 2.0


def vec_out(x, y):
    return {"u": x * y, "v": (adcore.tanh(x), 3.0, y / x)}


# ----------------------------------------------------------------- the C path

@pytest.mark.parametrize("threads", [1, 2, 3])
def test_scalar_program_of_several_args(threads):
    t = adcore.record(three, 0.5, 1.5, -0.3)
    X = [RNG.uniform(-2, 2, 41) for _ in range(3)]
    rows = list(zip(*X))
    same(t.map(*X, threads=threads), np.array([t(*r) for r in rows]))
    same(t.gradient_map(*X, threads=threads), stacked([t.gradient(*r) for r in rows]))
    same(t.jacobian_map(*X, threads=threads), stacked([t.jacobian(*r) for r in rows]))


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_rosen_loop_on_a_list_of_20_floats(threads):
    t = adcore.record(rosen_loop, list(RNG.uniform(-1, 1, 20)))
    X = RNG.uniform(-1.5, 1.5, (57, 20))
    G = t.gradient_map(X, threads=threads)
    assert isinstance(G, np.ndarray) and G.shape == (57, 20)
    same(G, np.array([t.gradient(list(x)) for x in X]))
    same(t.map(X, threads=threads), np.array([t(list(x)) for x in X]))
    J = t.jacobian_map(X, threads=threads)
    same(J, np.array([t.jacobian(list(x)) for x in X]))
    # the same points as a list of 20 columns: the gradient is a list of columns
    cols = [X[:, k].copy() for k in range(20)]
    Gl = t.gradient_map(cols, threads=threads)
    assert isinstance(Gl, list) and len(Gl) == 20
    same(Gl, [G[:, k] for k in range(20)])


def test_threads_give_identical_results():
    t = adcore.record(rosen_loop, [0.0] * 12)
    X = RNG.uniform(-2, 2, (101, 12))
    ref = t.gradient_map(X, threads=1)
    for k in (2, 3, 7, None):
        assert np.array_equal(t.gradient_map(X, threads=k), ref)
        assert np.array_equal(t.map(X, threads=k), t.map(X, threads=1))


def test_default_threads_follow_the_work():
    import os
    assert adcore.batched._threads(None, 10, 50) == 1        # too little to share
    assert adcore.batched._threads(None, 10**6, 1000) == (os.cpu_count() or 1)
    assert adcore.batched._threads(None, 1, 10**9) == 1      # at most one per row
    assert adcore.batched._threads(5, 3, 1) == 3
    t = adcore.record(rosen_loop, [0.0] * 20)
    X = RNG.uniform(-2, 2, (3000, 20))       # enough work for every core
    assert np.array_equal(t.gradient_map(X), t.gradient_map(X, threads=1))


def test_module_functions_are_the_methods():
    t = adcore.record(three, 0.5, 1.5, -0.3)
    X = [RNG.uniform(-2, 2, 9) for _ in range(3)]
    same(adcore.batched.map(t, *X), t.map(*X))
    same(adcore.batched.gradient_map(t, *X, threads=2), t.gradient_map(*X))
    same(adcore.batched.jacobian_map(t, *X), t.jacobian_map(*X))


def test_dict_inputs_and_structured_outputs():
    def f(p, q):
        return {"s": p["a"] * p["b"][0] + q ** 2, "t": (p["b"][1] * q, 2.5)}

    t = adcore.record(f, {"a": 1.0, "b": [2.0, 3.0]}, 0.5)
    N = 13
    a, b, q = RNG.normal(size=N), RNG.normal(size=(N, 2)), RNG.normal(size=N)
    rows = [({"a": a[i], "b": [b[i, 0], b[i, 1]]}, q[i]) for i in range(N)]
    same(t.map({"a": a, "b": b}, q), stacked([t(*r) for r in rows]))
    # b as a list of columns: the Jacobian blocks keep the list
    Xl = {"a": a, "b": [b[:, 0].copy(), b[:, 1].copy()]}
    same(t.jacobian_map(Xl, q), stacked([t.jacobian(*r) for r in rows]))
    # b as one (N, 2) array: its blocks are (N, 2) arrays
    J = t.jacobian_map({"b": b, "a": a}, q, threads=2)
    Jl = t.jacobian_map(Xl, q)
    assert J["s"][0]["b"].shape == (N, 2)
    same(J["s"][0]["b"], np.stack(Jl["s"][0]["b"], axis=-1))
    same(J["t"][1][0]["a"], np.zeros(N))

    def g(p):
        return p["a"] * adcore.cos(p["b"][1])

    tg = adcore.record(g, {"a": 1.0, "b": (2.0, 3.0)})
    G = tg.gradient_map({"a": a, "b": b})
    ref = stacked([tg.gradient({"a": a[i], "b": (b[i, 0], b[i, 1])}) for i in range(N)])
    same(G["a"], ref["a"])
    same(G["b"], np.stack(ref["b"], axis=-1))


def test_constant_and_repeated_outputs():
    t = adcore.record(vec_out, 1.0, 2.0)
    x, y = RNG.uniform(0.5, 2, 8), RNG.uniform(0.5, 2, 8)
    rows = list(zip(x, y))
    same(t.map(x, y), stacked([t(*r) for r in rows]))
    same(t.jacobian_map(x, y), stacked([t.jacobian(*r) for r in rows]))

    tc = adcore.record(lambda x: 4.0, 1.0)
    same(tc.map(x), np.full(8, 4.0))
    same(tc.gradient_map(x), np.zeros(8))
    ti = adcore.record(lambda x: x, 1.0)
    same(ti.gradient_map(x), np.ones(8))


@pytest.mark.parametrize("N", [0, 1])
def test_zero_and_one_point(N):
    t = adcore.record(rosen_loop, [0.0] * 5)
    X = RNG.normal(size=(N, 5))
    same(t.gradient_map(X), np.array([t.gradient(list(x)) for x in X]).reshape(N, 5))
    same(t.map(X, threads=3), np.array([t(list(x)) for x in X]).reshape(N))
    assert t.jacobian_map(X).shape == (N, 5)
    ta = adcore.record(lambda w: (w * w).sum(), np.ones(3))
    W = RNG.normal(size=(N, 3))
    same(ta.gradient_map(W), np.array([ta.gradient(w) for w in W]).reshape(N, 3))
    assert ta.map(W).shape == (N,)
    vals, ok = t.map(X, on_branch_change="mask")
    assert vals.shape == (N,) and ok.shape == (N,) and ok.dtype == bool


def test_gradient_map_needs_one_scalar_output():
    t = adcore.record(vec_out, 1.0, 2.0)
    with pytest.raises(TypeError, match="one scalar output"):
        t.gradient_map(np.ones(3), np.ones(3))
    ta = adcore.record(lambda x: x * 2.0, np.ones(2))
    with pytest.raises(TypeError, match="scalar output"):
        ta.gradient_map(np.ones((3, 2)))


# -------------------------------------------------------------- branch changes

def absish(x, y):
    if x < 0.0:
        return -x * y
    return x * y + 1.0


@pytest.mark.parametrize("threads", [1, 2])
def test_branch_change_lists_exactly_the_rows(threads):
    t = adcore.record(absish, 1.0, 2.0)
    x = np.array([0.5, -1.0, 2.0, -0.1, 0.0, 3.0, -7.0])
    y = np.linspace(1, 2, 7)
    for call in (t.map, t.gradient_map, t.jacobian_map):
        with pytest.raises(adcore.BranchChangedError) as info:
            call(x, y, threads=threads)
        assert list(info.value.rows) == [1, 3, 6]
        msg = str(info.value)
        assert "rows [1, 3, 6]" in msg and "3 of 7" in msg
        assert "the comparison" in msg      # the single-point message of row 1
        with pytest.raises(adcore.BranchChangedError) as one:
            t.gradient(x[1], y[1])
        assert str(one.value) in msg


def test_branch_change_message_counts_many_rows():
    t = adcore.record(absish, 1.0, 2.0)
    x = -np.arange(1.0, 31.0)
    with pytest.raises(adcore.BranchChangedError, match=r"rows \[0, 1, 2, 3, 4, 5, 6, 7, 8, 9\] and more \(all 30 in") as info:
        t.map(x, np.ones(30))
    assert np.array_equal(info.value.rows, np.arange(30))


@pytest.mark.parametrize("threads", [1, 3])
def test_mask_mode_gives_nan_rows(threads):
    t = adcore.record(absish, 1.0, 2.0)
    x = np.array([0.5, -1.0, 2.0, -0.1])
    y = np.array([1.0, 2.0, 3.0, 4.0])
    good = [0, 2]
    for call, single in ((t.map, t), (t.gradient_map, t.gradient),
                         (t.jacobian_map, t.jacobian)):
        res, ok = call(x, y, threads=threads, on_branch_change="mask")
        assert ok.tolist() == [True, False, True, False]
        for leaf in flatten(res)[0]:
            assert np.isnan(leaf[[1, 3]]).all()
        ref = stacked([single(x[i], y[i]) for i in good])
        same([leaf[good] for leaf in flatten(res)[0]], flatten(ref)[0])
    # constant output columns are NaN in failed rows too
    tc = adcore.record(lambda x: (x, 2.0) if x > 0.0 else (x, 3.0), 1.0)
    (v, c), ok = tc.map(np.array([1.0, -1.0]), on_branch_change="mask")
    assert ok.tolist() == [True, False]
    assert c[0] == 2.0 and np.isnan(c[1]) and np.isnan(v[1])


def test_bad_on_branch_change():
    t = adcore.record(absish, 1.0, 2.0)
    with pytest.raises(ValueError, match="on_branch_change"):
        t.map(np.ones(2), np.ones(2), on_branch_change="ignore")


def test_where_replays_across_the_switch():
    def f(x):
        return adcore.where(adcore.less(x, 0.0), -x * x, adcore.sin(x))

    t = adcore.record(f, 1.0)
    x = np.linspace(-2, 2, 21)
    same(t.map(x), np.array([t(v) for v in x]))
    same(t.gradient_map(x, threads=2), np.array([t.gradient(v) for v in x]))


def test_value_read_by_python_is_checked():
    def f(x):
        k = int(x)           # Python reads the value: the replay must reproduce it
        return x * float(k + 1)

    t = adcore.record(f, 1.5)
    with pytest.raises(adcore.BranchChangedError) as info:
        t.map(np.array([1.5, 2.5, 1.5]))
    assert list(info.value.rows) == [1]
    assert "read by Python" in str(info.value)


# ---------------------------------------------------------- the row-by-row path

def arrays_program(w, b, s):
    h = adcore.tanh(w * s + b)
    return (h * h).sum() + adcore.sin(s) * b[0]


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_array_tape_row_by_row(threads):
    t = adcore.record(arrays_program, np.ones(4), np.zeros(4), 0.5)
    N = 11
    W, B, S = RNG.normal(size=(N, 4)), RNG.normal(size=(N, 4)), RNG.normal(size=N)
    rows = [(W[i], B[i], S[i]) for i in range(N)]
    same(t.map(W, B, S, threads=threads), np.array([t(*r) for r in rows]))
    same(t.gradient_map(W, B, S, threads=threads), stacked([t.gradient(*r) for r in rows]))
    same(t.jacobian_map(W, B, S, threads=threads), stacked([t.jacobian(*r) for r in rows]))


def test_array_output_jacobian_row_by_row():
    def f(x):
        return {"y": adcore.sin(x) * x[0], "z": x.sum()}

    t = adcore.record(f, np.ones((2, 3)))
    X = RNG.normal(size=(6, 2, 3))
    same(t.map(X, threads=2), stacked([t(x) for x in X]))
    J = t.jacobian_map(X, threads=2)
    assert J["y"].shape == (6, 2, 3, 2, 3)
    same(J, stacked([t.jacobian(x) for x in X]))


@pytest.mark.parametrize("threads", [1, 2])
def test_float32_inputs_row_by_row(threads):
    def f(x):
        return (adcore.exp(x) * x).sum()

    x0 = np.ones(5, np.float32)
    t = adcore.record(f, x0)
    X = RNG.normal(size=(9, 5)).astype(np.float32)
    G = t.gradient_map(X, threads=threads)
    assert G.dtype == np.float32
    same(G, np.array([t.gradient(x) for x in X]))
    same(t.map(X, threads=threads), np.array([t(x) for x in X]))
    # float64 points are cast to the recorded float32, as a single replay does
    same(t.gradient_map(X.astype(np.float64)), G)


def test_branch_change_row_by_row():
    def f(x):
        if x.sum() > 0.0:
            return (x * x).sum()
        return x.sum()

    t = adcore.record(f, np.ones(3))
    X = np.array([[1.0, 1, 1], [-1, -1, -1], [2, 0, 0], [0, -5, 1]])
    with pytest.raises(adcore.BranchChangedError) as info:
        t.gradient_map(X, threads=2)
    assert list(info.value.rows) == [1, 3]
    G, ok = t.gradient_map(X, on_branch_change="mask", threads=2)
    assert ok.tolist() == [True, False, True, False]
    same(G[[0, 2]], np.array([t.gradient(X[0]), t.gradient(X[2])]))
    assert np.isnan(G[[1, 3]]).all()


class _Fragile(Primitive):
    """Doubles its input; refuses points with a large first entry."""
    name = "test_batched_fragile"

    def value(self, x):
        if x[0] > 100.0:
            raise RuntimeError("fragile: a point with a large first entry")
        return x * 2.0

    def jvp(self, xs, dxs, out):
        return dxs[0] * 2.0

    def vjp(self, g, xs, out, needs):
        return (g * 2.0,)


def test_an_exception_in_a_worker_thread_reaches_the_caller():
    fragile = _Fragile()
    t = adcore.record(lambda x: fragile(x).sum(), np.ones(2))
    X = np.ones((10, 2))
    X[9, 0] = 1000.0      # in the last chunk: a worker thread, not the caller's
    with pytest.raises(RuntimeError, match="fragile"):
        t.gradient_map(X, threads=2)
    same(t.gradient_map(X[:9], threads=2), np.full((9, 2), 2.0))


# ------------------------------------------------------------- saved tapes

def test_a_loaded_tape_batch_replays_identically():
    t = adcore.record(rosen_loop, list(RNG.uniform(-1, 1, 10)))
    u = adcore.Tape.from_bytes(t.to_bytes())
    X = RNG.normal(size=(17, 10))
    same(u.gradient_map(X, threads=2), t.gradient_map(X))
    same(u.map(X), t.map(X))
    ta = adcore.record(arrays_program, np.ones(4), np.zeros(4), 0.5)
    ua = adcore.Tape.from_bytes(ta.to_bytes())
    W, B, S = RNG.normal(size=(5, 4)), RNG.normal(size=(5, 4)), RNG.normal(size=5)
    same(ua.gradient_map(W, B, S), ta.gradient_map(W, B, S))


def test_public_slot_lists_are_checked_before_C_reads_them():
    t = adcore.record(rosen_loop, [0.0] * 4)
    X = np.ones((3, 4))
    slot, shape, dt = t.in_leaves[0]
    t.in_leaves[0] = (len(t) + 5, shape, dt)
    with pytest.raises(adcore.TapeError, match="not a scalar input"):
        t.gradient_map(X)
    t.in_leaves[0] = (slot, shape, dt)
    t.out_leaves[0] = ("s", -7)
    with pytest.raises(adcore.TapeError, match="out of range"):
        t.map(X)


# --------------------------------------------------------------- bad inputs

def test_bad_stacked_inputs():
    t = adcore.record(three, 0.5, 1.5, -0.3)
    x = np.ones(4)
    with pytest.raises(ValueError, match=r"argument 2 has 5 points .* argument 0 has 4"):
        t.map(x, x, np.ones(5))
    with pytest.raises(ValueError, match=r"argument 1: the tape was recorded with shape \(\)"):
        t.map(x, np.ones((4, 2)), x)
    with pytest.raises(ValueError, match="argument 0: a single number"):
        t.map(1.0, x, x)
    with pytest.raises(TypeError, match="argument 1: cannot replay at a str"):
        t.map(x, "abc", x)
    with pytest.raises(TypeError, match="argument 1: cannot replay at an array of dtype <U"):
        t.map(x, np.array(["a", "b", "c", "d"]), x)
    with pytest.raises(TypeError, match="argument 2: .*complex"):
        t.gradient_map(x, x, x + 1j)
    with pytest.raises(TypeError, match="3 positional argument"):
        t.map(x, x)
    with pytest.raises(TypeError, match="3 positional argument"):
        t.map(x, x, x, x)
    # integers and bools are promoted to float64, as in a single replay
    same(t.map(np.arange(4), x, x), t.map(np.arange(4.0), x, x))


def test_bad_structured_inputs():
    t = adcore.record(rosen_loop, [0.0] * 5)
    with pytest.raises(ValueError, match=r"argument 0: .*list of 5 numbers.*\(N, 5\).*\(7, 4\)"):
        t.gradient_map(np.ones((7, 4)))
    with pytest.raises(TypeError, match=r"argument 0: .*list of 5 here, got a list of 4"):
        t.gradient_map([np.ones(3)] * 4)
    with pytest.raises(ValueError, match=r"argument 0\[3\] has 2 points"):
        t.gradient_map([np.ones(3)] * 3 + [np.ones(2), np.ones(3)])
    td = adcore.record(lambda p: p["a"] * p["b"], {"a": 1.0, "b": 2.0})
    with pytest.raises(TypeError, match=r"argument 0: .*dict with keys \['a', 'b'\]"):
        td.map({"a": np.ones(2), "c": np.ones(2)})
    with pytest.raises(ValueError, match=r"argument 0\['b'\]: .*shape \(\)"):
        td.map({"a": np.ones(2), "b": np.ones((2, 2))})
    ta = adcore.record(lambda w: (w * w).sum(), np.ones(3))
    with pytest.raises(ValueError, match=r"recorded with shape \(3,\).*\(N, \*\(3,\)\)"):
        ta.map(np.ones((4, 2)))
    t0 = adcore.record(lambda: 1.0)
    with pytest.raises(ValueError, match="no input leaf"):
        t0.map()


@pytest.mark.parametrize("bad, exc", [(0, ValueError), (-1, ValueError), ("2", TypeError),
                                      (2.0, TypeError), (True, TypeError)])
def test_bad_threads(bad, exc):
    t = adcore.record(three, 0.5, 1.5, -0.3)
    x = np.ones(3)
    with pytest.raises(exc, match="threads"):
        t.map(x, x, x, threads=bad)
    ta = adcore.record(arrays_program, np.ones(4), np.zeros(4), 0.5)
    with pytest.raises(exc, match="threads"):
        ta.gradient_map(np.ones((2, 4)), np.ones((2, 4)), np.ones(2), threads=bad)


def test_module_docstring_examples_run():
    import doctest
    result = doctest.testmod(adcore.batched, optionflags=doctest.NORMALIZE_WHITESPACE,
                             verbose=False)
    assert result.failed == 0 and result.attempted >= 10


def _readme_section(title):
    import importlib.metadata
    import pathlib
    beside = pathlib.Path(adcore.__file__).resolve().parent.parent / "README.md"
    text = beside.read_text(encoding="utf-8") if beside.is_file() else ""
    if title not in text:
        meta = importlib.metadata.metadata("adcore")
        text = meta.get_payload() or meta.get("Description") or ""
    start = text.index(title)
    # up to the next section or subsection (the Dask subsection has examples of its own)
    ends = [e for e in (text.find("\n## ", start + len(title)),
                        text.find("\n### ", start + len(title))) if e >= 0]
    return text[start:min(ends)] if ends else text[start:]


def test_readme_shows_the_module_examples():
    import doctest
    import re
    blocks = re.findall(r"```pycon\n(.*?)```", _readme_section("## Many points at once"), re.S)
    assert blocks, "the README section has no pycon block"
    parser = doctest.DocTestParser()
    readme = [(e.source, e.want) for e in parser.get_examples("\n".join(blocks))]
    module = [(e.source, e.want) for e in parser.get_examples(adcore.batched.__doc__)]
    assert readme == module
