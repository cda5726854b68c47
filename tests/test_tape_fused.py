"""Fused element-wise groups in the tape's replay and reverse sweep.

A run of element-wise float64 instructions of one shape replays as one block
loop (Tape._fused_groups lists the groups); values read only inside the group
are never stored.  The fused sweeps must give bitwise the numbers of the
unfused ones (Tape._fusion = False, a test hook), including the signs of zeros,
infinities and NaNs: every element's sums are taken in the same order.
"""

import numpy as np
import pytest

import adcore
from adcore.errors import TapeError

UNARY = [adcore.sin, adcore.exp, adcore.log, adcore.tanh, adcore.sqrt, adcore.abs,
         adcore.neg, adcore.relu, adcore.sigmoid, adcore.cbrt, adcore.atan]
BINARY = [adcore.add, adcore.sub, adcore.mul, adcore.div, adcore.pow, adcore.maximum,
          adcore.hypot, adcore.atan2]
SPECIAL = [np.nan, np.inf, -np.inf, -0.0, 0.0, 1e-300, -1e308]


def _bits(a):
    a = np.ascontiguousarray(np.asarray(a, dtype=np.float64))
    return a.view(np.int64).copy()


def _same(a, b):
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return np.array_equal(_bits(a), _bits(b))


def _program(rng, nops, nsums):
    """A random element-wise program of x (array), y (array) and s (scalar):
    repeated operands (a * a), constants on either side, where, pow, and sums
    of some intermediates (values read outside the group)."""
    steps = []
    for i in range(nops):
        kind = rng.integers(0, 6)
        if kind == 0:
            steps.append(("u", int(rng.integers(len(UNARY)))))
        elif kind in (1, 2):
            steps.append(("b", int(rng.integers(len(BINARY))), int(rng.integers(0, 4)),
                          float(rng.choice([2.0, -1.5, 0.5, 3.0, 0.0]))))
        elif kind == 3:
            steps.append(("w",))
        elif kind == 4:
            steps.append(("sq",))          # v ** 2 (the x * x kernel)
        else:
            steps.append(("s", int(rng.integers(0, 2))))   # the scalar input
    picks = [int(rng.integers(0, 1 << 30)) for _ in range(nops)]
    sums = sorted(set(int(k) for k in rng.integers(0, nops, nsums)))

    def f(x, y, s):
        vals = [x, y]
        for i, st in enumerate(steps):
            a = vals[picks[i] % len(vals)]
            b = vals[(picks[i] // 7) % len(vals)]
            if st[0] == "u":
                v = UNARY[st[1]](a)
            elif st[0] == "b":
                op, side, c = BINARY[st[1]], st[2], st[3]
                if side == 0:
                    v = op(a, b)
                elif side == 1:
                    v = op(a, a)
                elif side == 2:
                    v = op(a, c)
                else:
                    v = op(c, a)
            elif st[0] == "w":
                v = adcore.where(a > b, a, b * 0.5)
            elif st[0] == "sq":
                v = a ** 2
            else:
                v = a * s if st[1] else s - a
            vals.append(v)
        out = vals[-1].sum()
        for k in sums:
            out = out + 0.25 * vals[2 + k].sum()
        return out
    return f


def _inputs(rng, n, special):
    x = rng.normal(size=n) * 2
    y = rng.normal(size=n)
    if special:
        for a in (x, y):
            idx = rng.integers(0, n, max(1, n // 5))
            a[idx] = rng.choice(SPECIAL, len(idx))
    return x, y, float(rng.normal())


def _both(tape, call):
    """call(tape) fused and unfused."""
    tape._fusion = True
    fused = call(tape)
    tape._fusion = False
    try:
        plain = call(tape)
    finally:
        tape._fusion = True
    return fused, plain


@pytest.mark.parametrize("seed", range(60))
def test_random_programs_bitwise(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.choice([1, 5, 255, 256, 257, 1000, 5000]))
    f = _program(rng, int(rng.integers(2, 12)), int(rng.integers(0, 3)))
    x, y, s = _inputs(rng, n, special=False)
    with np.errstate(all="ignore"):
        tape = adcore.record(f, x, y, s)
        assert tape._fused_groups()          # the runs of element-wise steps fuse
        for special in (False, True, True):
            x2, y2, s2 = _inputs(rng, n, special)
            vf, vp = _both(tape, lambda t: t(x2, y2, s2))
            assert _same(vf, vp)
            g_all, gp = _both(tape, lambda t: t.gradient(x2, y2, s2))
            assert _same(g_all, gp), (seed, special)
            for argnums in (0, (1, 2), 2):
                gf, gp = _both(tape, lambda t: t.gradient(x2, y2, s2, argnums=argnums))
                assert _same(gf, gp), (seed, special, argnums)
            # a fused sweep after other sweeps on the pooled workspace: the same again
            assert _same(tape.gradient(x2, y2, s2), g_all)


@pytest.mark.parametrize("seed", range(30))
def test_random_float32_programs_bitwise(seed):
    rng = np.random.default_rng(1000 + seed)
    n = int(rng.choice([1, 7, 256, 300, 5000]))
    f = _program(rng, int(rng.integers(2, 10)), int(rng.integers(0, 3)))
    x, y, s = _inputs(rng, n, special=False)
    x, y = x.astype(np.float32), y.astype(np.float32)
    with np.errstate(all="ignore"):
        tape = adcore.record(f, x, y, s)
        for special in (False, True):
            x2, y2, s2 = _inputs(rng, n, special)
            x2, y2 = x2.astype(np.float32), y2.astype(np.float32)
            vf, vp = _both(tape, lambda t: t(x2, y2, s2))
            assert _same(vf, vp)
            gf, gp = _both(tape, lambda t: t.gradient(x2, y2, s2))
            assert _same(gf, gp), (seed, special)
            assert gf[0].dtype == np.float32 and gf[1].dtype == np.float32
            gf, gp = _both(tape, lambda t: t.gradient(x2, y2, s2, argnums=1))
            assert _same(gf, gp), (seed, special)


def test_float32_groups_found():
    def f(x):
        h = adcore.relu(x * 2.0 - 1.0)
        return (h * h).sum()
    x = np.linspace(-1, 1, 3000).astype(np.float32)
    tape = adcore.record(f, x)
    (first, nm, inputs, outputs, sums), = tape._fused_groups()
    assert nm == 4 and outputs == (False, False, False, True) and sums[-1] >= 0
    y = np.cos(np.arange(3000.0)).astype(np.float32)
    gf, gp = _both(tape, lambda t: t.gradient(y))
    assert _same(gf, gp) and gf.dtype == np.float32
    h = np.maximum(y * np.float32(2.0) - np.float32(1.0), 0)
    np.testing.assert_allclose(gf, 4.0 * h * (h > 0), rtol=1e-6)


def test_groups_found_for_rosenbrock():
    def rosen(x):
        a = x[:-1]
        return (100 * (x[1:] - a * a) ** 2 + (1 - a) ** 2).sum()
    x = np.linspace(-1.0, 2.0, 3000)
    tape = adcore.record(rosen, x)
    groups = tape._fused_groups()
    assert len(groups) == 1
    first, nm, inputs, outputs, sums = groups[0]
    assert nm == 7 and len(inputs) == 2
    assert outputs == (False,) * 6 + (True,)       # only the summed value is stored
    assert sums == (-1,) * 6 + (first + 7,)         # and the sum's reverse is the group's
    y = np.random.default_rng(3).normal(size=3000)
    g = tape.gradient(y)
    a, b = y[:-1], y[1:]
    want = np.zeros_like(y)
    want[:-1] = -400 * a * (b - a * a) - 2 * (1 - a)
    want[1:] += 200 * (b - a * a)
    np.testing.assert_allclose(g, want, rtol=1e-12, atol=1e-9)
    gf, gp = _both(tape, lambda t: t.gradient(y))
    assert _same(gf, gp)


def test_internal_values_are_not_kept():
    def f(x):
        return (adcore.sin(x) * 2.0 + 1.0).sum()
    x = np.linspace(0.0, 1.0, 50)
    tape = adcore.record(f, x)
    (first, nm, inputs, outputs, sums), = tape._fused_groups()
    assert nm == 3 and outputs == (False, False, True)
    rp = tape._replay_pooled([x + 1.0], True)
    try:
        with pytest.raises(TapeError, match="fused group"):
            tape.value_at(first, rp)
        np.testing.assert_array_equal(tape.value_at(first + 2, rp), np.sin(x + 1.0) * 2.0 + 1.0)
    finally:
        tape._release(rp)
    # an unfused replay (tape.jacobian, the batched maps) still has every value
    rp = tape._replay_pooled([x + 1.0])
    try:
        np.testing.assert_array_equal(tape.value_at(first, rp), np.sin(x + 1.0))
    finally:
        tape._release(rp)
    assert _same(tape.gradient(x + 1.0), 2.0 * np.cos(x + 1.0))


def test_value_read_outside_is_an_output_and_seeded():
    # u is read by sums after the group: stored; its adjoint starts from outside
    # (the sum's cotangent given to the group, or the adjoint array of two readers)
    def f(x):
        u = x * x
        v = adcore.exp(u) - u
        return v.sum() + 3.0 * u.sum()

    def f2(x):
        u = x * x
        v = adcore.exp(u) - u
        return v.sum() + 3.0 * u.sum() + adcore.max(u)
    x = np.linspace(-1.0, 1.0, 700)
    y = x[::-1].copy()
    y[0] = 1.5
    for fn, absorbed in ((f, True), (f2, False)):
        tape = adcore.record(fn, x)
        (first, nm, inputs, outputs, sums), = tape._fused_groups()
        assert outputs[0] is True and (sums[0] >= 0) == absorbed
        gf, gp = _both(tape, lambda t: t.gradient(y))
        assert _same(gf, gp)
        want = 2 * y * (np.exp(y * y) - 1.0) + 6.0 * y
        if fn is f2:
            want[0] += 2 * y[0]
        np.testing.assert_allclose(gf, want, rtol=1e-13)


def test_branch_checked_value_is_not_fused():
    def f(x):
        u = x * 2.0
        if u.sum() > 0:                 # a checked comparison, outside the group
            return (u * u + 1.0).sum()
        return (u - 1.0).sum()
    x = np.linspace(0.0, 1.0, 10)
    tape = adcore.record(f, x)
    gf, gp = _both(tape, lambda t: t.gradient(x + 0.5))
    assert _same(gf, gp)
    with pytest.raises(adcore.BranchChangedError):
        tape.gradient(x - 5.0)


def test_float32_and_mixed_shapes_stay_correct():
    def f(x, m):
        u = adcore.tanh(x) * x          # float32
        w = m * 2.0 + 1.0               # (3, 4) float64
        return u.sum() + (w * w).sum()
    x = np.linspace(-1, 1, 300).astype(np.float32)
    m = np.arange(12.0).reshape(3, 4)
    tape = adcore.record(f, x, m)
    assert all(g[1] >= 2 for g in tape._fused_groups())
    gf, gp = _both(tape, lambda t: t.gradient(x * 0.5, m - 1.0))
    assert _same(gf, gp)
    assert gf[0].dtype == np.float32


def test_threads_share_a_fused_tape():
    import threading

    def rosen(x):
        a = x[:-1]
        return (100 * (x[1:] - a * a) ** 2 + (1 - a) ** 2).sum()
    tape = adcore.record(rosen, np.zeros(9000))
    pts = [np.random.default_rng(k).normal(size=9000) for k in range(6)]
    want = []
    tape._fusion = False
    for p in pts:
        want.append(tape.gradient(p))
    tape._fusion = True
    got = [None] * len(pts)

    def work(k):
        for _ in range(3):
            got[k] = tape.gradient(pts[k])
    ts = [threading.Thread(target=work, args=(k,)) for k in range(len(pts))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert all(_same(g, w) for g, w in zip(got, want))


@pytest.mark.parametrize("seed", range(12))
def test_slices_and_sums_bitwise(seed):
    # getitem of a leading-axis slice adds its cotangent into that slice of x's
    # adjoint, and a sum read only by its group starts the group's sweep: both
    # exactly as the vjp's arrays would (signs of zeros included)
    rng = np.random.default_rng(100 + seed)
    shape = [(9,), (300,), (6, 4), (1,)][seed % 4]
    n0 = shape[0]
    cuts = [(int(rng.integers(0, n0 + 1)), int(rng.integers(0, n0 + 1))) for _ in range(3)]

    def f(x, s):
        out = 0.0
        for a, b in cuts:
            v = x[a:b] if a <= b else x[b:a]
            u = adcore.relu(v) * s - v * v
            out = out + u.sum() + 0.5 * x[a:].sum()
        w = x[:-1] if n0 > 1 else x
        return out + (adcore.sin(w) * w).sum()
    x = rng.normal(size=shape)
    with np.errstate(all="ignore"):
        tape = adcore.record(f, x, 0.0)
        for special in (False, True):
            x2 = rng.normal(size=shape)
            if special:
                x2.reshape(-1)[::3] = -0.0
                x2.reshape(-1)[1::5] = np.inf
            for s in (0.0, -0.0, 1.5):
                gf, gp = _both(tape, lambda t: t.gradient(x2, s))
                assert _same(gf, gp), (seed, special, s)
                gf, gp = _both(tape, lambda t: t.gradient(x2, s, argnums=0))
                assert _same(gf, gp), (seed, special, s)


def test_rosenbrock_many_points_bitwise():
    def rosen(x):
        a = x[:-1]
        return (100 * (x[1:] - a * a) ** 2 + (1 - a) ** 2).sum()
    rng = np.random.default_rng(7)
    for n in (2, 3, 10, 257, 4097):
        tape = adcore.record(rosen, np.zeros(n))
        for _ in range(4):
            y = rng.normal(size=n)
            y[rng.integers(0, n, 2)] = rng.choice(SPECIAL, 2)
            with np.errstate(all="ignore"):
                gf, gp = _both(tape, lambda t: t.gradient(y))
                vf, vp = _both(tape, lambda t: t(y))
            assert _same(gf, gp) and _same(vf, vp), n


def test_loaded_tape_fuses_the_same():
    def f(x, s):
        a = x[:-1]
        return (adcore.exp(a * s) * (x[1:] - a) ** 2).sum()
    x = np.linspace(-1.0, 1.0, 600)
    tape = adcore.record(f, x, 0.5)
    back = adcore.Tape.from_bytes(tape.to_bytes())
    assert [g[:4] for g in back._fused_groups()] == [g[:4] for g in tape._fused_groups()]
    y = np.cos(np.arange(600.0))
    g1 = tape.gradient(y, -0.25)
    gf, gp = _both(back, lambda t: t.gradient(y, -0.25))
    assert _same(gf, gp) and _same(gf, g1)


def test_wrt_skips_and_seeds_inside_a_group():
    # backward seeded on a member directly, with and without a lead set
    tape = adcore.Tape()
    tape.start()
    x = tape.input(np.linspace(0.1, 2.0, 1000))
    y = tape.input(np.linspace(-1.0, 1.0, 1000))
    u = adcore.log(x) * y
    v = adcore.sqrt(u * u + 1.0)
    tape.finish()
    seeds = {u.slot: np.full(1000, -0.5), v.slot: np.ones(1000)}
    for wrt in (None, [x.slot], [y.slot]):
        tape._fusion = True
        assert tape._fused_groups()
        a = tape.backward(seeds, wrt=wrt)
        tape._fusion = False
        b = tape.backward(seeds, wrt=wrt)
        tape._fusion = True
        for slot in (x.slot, y.slot):
            if wrt is None or slot in wrt:
                assert _same(a.array(slot, (1000,)), b.array(slot, (1000,)))


@pytest.mark.parametrize("seed", range(20))
def test_groups_among_other_instructions(seed):
    # members read by slices, broadcasts, reductions and as outputs of a
    # multi-output tape: those are stored, the rest of each group is not
    rng = np.random.default_rng(500 + seed)
    n = int(rng.choice([4, 300, 3000]))
    cut = int(rng.integers(1, n))

    def f(x, b):
        u = adcore.sin(x) * x + 1.0
        v = u * u - x
        w = adcore.tanh(v[:cut]) * 3.0            # a slice of a member, then a group
        c = b + u[:1] * 2.0                       # a broadcast against a member
        z = adcore.exp(-v) * u
        return (w.sum() + adcore.max(z) * 0.5 + c.sum(), z * 2.0)

    def g(x, b):
        out, _ = f(x, b)
        return out
    x = rng.normal(size=n)
    b = rng.normal(size=(3, 1))
    with np.errstate(all="ignore"):
        tape = adcore.record(f, x, b)
        gtape = adcore.record(g, x, b)
        assert len(gtape._fused_groups()) >= 2
        for special in (False, True):
            x2 = rng.normal(size=n)
            if special:
                x2[rng.integers(0, n, 2)] = rng.choice(SPECIAL, 2)
            b2 = rng.normal(size=(3, 1))
            vf, vp = _both(tape, lambda t: t(x2, b2))
            assert _same(vf, vp)
            gf, gp = _both(gtape, lambda t: t.gradient(x2, b2))
            assert _same(gf, gp), (seed, special)
            gf, gp = _both(gtape, lambda t: t.gradient(x2, b2, argnums=1))
            assert _same(gf, gp), (seed, special)
            if n <= 300:        # the Jacobian path replays every slot, unfused
                jf, jp = _both(tape, lambda t: t.jacobian(x2, b2))
                assert _same(jf[0], jp[0])


_SPECIAL_G = [0.0, -0.0, 1.0, -2.0, np.inf, -np.inf, np.nan, 1e-310, -1e-310, 1e300, 3.5]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("c", [3.0, -2.5, 1.0, 0.5, -1e-300, 1e300])
@pytest.mark.parametrize("form", ["x+c", "c+x", "x-c", "c-x", "x*c", "c*x", "x/c", "-x",
                                  "x+y", "x-y", "y-x"])
def test_constant_partials_keep_the_select_bits(dtype, c, form):
    """A reverse rule whose partial is a constant (add, sub, neg, mul or div by a
    scalar) adds g * t + 0.0 where |t| >= 1 and the select 0 if g == 0 else g * t
    elsewhere: the same bits either way, signed zeros, inf, NaN and subnormal
    cotangents included (each element is one cotangent of the sum's weights)."""
    n = 3 * len(_SPECIAL_G)
    with np.errstate(over="ignore"):             # 1e300 is inf in float32
        wv = np.array(_SPECIAL_G * 3, dtype)
        cc = dtype(c)
    x = np.linspace(-2.0, 2.0, n).astype(dtype)
    y = np.linspace(1.0, 3.0, n).astype(dtype)
    ops = {"x+c": lambda x, y: x + cc, "c+x": lambda x, y: cc + x, "x-c": lambda x, y: x - cc,
           "c-x": lambda x, y: cc - x, "x*c": lambda x, y: x * cc, "c*x": lambda x, y: cc * x,
           "x/c": lambda x, y: x / cc, "-x": lambda x, y: -x, "x+y": lambda x, y: x + y,
           "x-y": lambda x, y: x - y, "y-x": lambda x, y: y - x}
    cf = float(cc)              # the constant as recorded (float32: rounded, maybe 0 or inf)
    with np.errstate(all="ignore"):
        t = {"x+c": 1.0, "c+x": 1.0, "x-c": 1.0, "c-x": -1.0, "x*c": cf, "c*x": cf,
             "x/c": np.float64(1.0) / cf, "-x": -1.0, "x+y": 1.0, "x-y": 1.0, "y-x": -1.0}[form]
    tape = adcore.record(lambda x, y, w: adcore.sum(ops[form](x, y) * w), x, y, wv)
    for fused in (True, False):
        tape._fusion = fused
        with np.errstate(all="ignore"):
            gx = tape.gradient(x, y, wv)[0]
            g = np.where(wv == 0, 0.0, wv.astype(np.float64))     # the cotangent reaching op
            want = np.zeros(n, dtype) + np.where((g == 0) | (t == 0), 0.0, g * t).astype(dtype)
        assert gx.dtype == dtype
        np.testing.assert_array_equal(gx.view(np.uint32 if dtype == np.float32 else np.uint64),
                                      want.view(np.uint32 if dtype == np.float32 else np.uint64))
