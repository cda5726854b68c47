"""The tape: recording, handles, the reverse sweep, the drivers (adcore.reverse)."""

import gc
import os
import time

import numpy as np
import pytest

import adcore
from adcore import reverse
from adcore._rules import OPCODES
from adcore._tape import Tape, TapeArray, TapeValue, current_tape
from adcore.dispatch import apply


def test_seed_polynomial():
    # the seed essay's example: z = a x^2 + b x y + c y^2
    def z(a, b, c, x, y):
        return a * x * x + b * x * y + c * y * y

    value, g = adcore.value_and_grad(z, argnums=(0, 1, 2))(3.0, 1.0, -2.0, 4.0, -1.0)
    assert value == 42.0
    assert g == (16.0, -4.0, 1.0)


def test_dict_input_gives_dict_gradient():
    g = adcore.grad(lambda p: p["w"] * p["b"])({"w": 3.0, "b": 2.0})
    assert g == {"w": 2.0, "b": 3.0}
    assert isinstance(g, dict)


def test_tree_inputs_lists_tuples_and_arrays():
    def f(params, x):
        w, (b, c) = params["w"], params["bc"]
        return (w * x).sum() + b * c + c

    params = {"w": np.array([1.0, 2.0]), "bc": (3.0, 4.0)}
    g = adcore.grad(f)(params, np.array([5.0, 6.0]))
    np.testing.assert_array_equal(g["w"], [5.0, 6.0])
    assert g["bc"] == (4.0, 4.0)
    gx = adcore.grad(f, argnums=1)(params, np.array([5.0, 6.0]))
    np.testing.assert_array_equal(gx, [1.0, 2.0])


def test_integer_inputs_are_promoted():
    assert adcore.grad(lambda x: x * x)(3) == 6.0
    g = adcore.grad(lambda x: (x * x).sum())(np.array([1, 2]))
    assert g.dtype == np.float64
    np.testing.assert_array_equal(g, [2.0, 4.0])


@pytest.mark.parametrize("bad, word", [("s", "str"), (None, "None"), (1j, "complex"),
                                       (np.array([1j]), "complex")])
def test_bad_inputs_name_the_argument(bad, word):
    with pytest.raises(TypeError, match="argument 0") as info:
        adcore.grad(lambda x: x)(bad)
    assert word in str(info.value)


def test_bad_leaf_in_tree_names_its_path():
    with pytest.raises(TypeError, match=r"argument 0\['b'\]"):
        adcore.grad(lambda p: p["a"])({"a": 1.0, "b": "x"})


def test_x_plus_x_over_two_repeated_has_gradient_exactly_one():
    def f(x):
        for _ in range(10 ** 4):
            x = (x + x) / 2
        return x

    assert adcore.grad(f)(0.7) == 1.0


def _record_chain(n):
    t = Tape()
    t.start()
    x = t.input(0.5)
    for _ in range(n):
        x = (x + x) / 2.0
    t.finish()
    return t


def test_recording_grows_linearly():
    # the C arrays double: memory per op is constant and the capacity never
    # exceeds twice what is used
    small, big = _record_chain(1000), _record_chain(32000)
    assert len(small) == 2001 and len(big) == 64001
    assert small.nbytes / len(small) == big.nbytes / len(big) <= 32
    assert big.capacity < 2 * len(big) + 64


def test_tape_bytes_per_scalar_op():
    # 24 bytes per instruction: a constant operand lives inside the instruction
    t = _record_chain(1000)
    assert t.nbytes / 2000 <= 32


def test_handle_protocol():
    t = Tape()
    t.start()
    x = t.input(2.0)
    a = t.input(np.ones(3))
    assert x._ad_tag == t.tag and a._ad_tag == t.tag
    assert x._ad_rank == 0 and a._ad_rank == 1
    assert isinstance(x, TapeValue) and isinstance(a, TapeArray)
    assert a.shape == (3,) and a.ndim == 1 and a.dtype == np.float64 and len(a) == 3
    y = apply(OPCODES["mul"], (x, 3.0))
    assert isinstance(y, TapeValue) and y.value == 6.0
    assert current_tape() is t
    t.finish()
    assert current_tape() is None


def test_tags_increase_for_inner_recordings():
    t1 = Tape().start()
    t2 = Tape().start()
    assert t2.tag > t1.tag
    t2.finish()
    t1.finish()


def test_handle_after_recording_finished_raises_tape_error():
    leaked = []

    def f(x):
        leaked.append(x)
        return x * 2.0

    adcore.grad(f)(1.0)
    (x,) = leaked
    with pytest.raises(adcore.TapeError, match="after its recording finished"):
        x + 1.0
    with pytest.raises(adcore.TapeError, match="after its recording finished"):
        adcore.sin(x)
    with pytest.raises(adcore.TapeError, match="after its recording finished"):
        x * x


def test_handle_of_another_tape_raises_tape_error():
    t1 = Tape().start()
    x = t1.input(1.0)
    t1.finish()
    t2 = Tape().start()
    y = t2.input(2.0)
    with pytest.raises(adcore.TapeError, match="another tape"):
        y + x
    with pytest.raises(adcore.TapeError, match="another tape"):
        x + y
    t2.finish()


def test_reverse_inside_reverse_is_a_nesting_error():
    with pytest.raises(adcore.NestingError, match="hessian"):
        adcore.grad(lambda x: adcore.grad(lambda y: y * y)(x))(1.0)


def test_reverse_of_closure_over_outer_handle_is_a_tape_error():
    with pytest.raises(adcore.TapeError, match="hessian|another"):
        adcore.grad(lambda x: adcore.grad(lambda y: x * y)(1.0))(1.0)


def test_reverse_inside_forward_is_a_nesting_error():
    with pytest.raises(adcore.NestingError, match="hessian"):
        adcore.derivative(lambda x: adcore.grad(lambda y: y * y)(x))(1.0)


def test_tape_handles_as_nested_dual_components():
    # forward over reverse recording: NestedDual components are handles
    def f(x):
        return adcore.derivative(lambda y: adcore.sin(y) * y)(x)  # cos(x) x + sin(x)

    x = 0.8
    expected = -np.sin(x) * x + 2 * np.cos(x)
    assert adcore.grad(f)(x) == pytest.approx(expected, rel=1e-12)


def test_handle_keeps_tape_alive():
    leaked = []
    adcore.grad(lambda x: leaked.append(x * 3.0) or x)(2.0)
    gc.collect()
    h = leaked[0]
    assert h.value == 6.0
    assert len(h.tape) == 2   # the input and x * 3.0


def test_operators_and_reflections():
    def f(x):
        return (1.0 - x) + (2 / x) + 3 ** x + x ** 2 + (-x) + abs(x) + (+x) + 2 * x - x / 4

    x = 1.7
    expected = -1 - 2 / x ** 2 + np.log(3) * 3 ** x + 2 * x - 1 + 1 + 1 + 2 - 0.25
    assert adcore.grad(f)(x) == pytest.approx(expected, rel=1e-13)


def test_numpy_scalars_defer_to_handles():
    g = adcore.grad(lambda x: np.float64(2.0) * x + np.float32(1.0) * x)(1.0)
    assert g == 3.0


def test_comparison_gives_bool_and_float_reads_value():
    seen = {}

    def f(x):
        seen["lt"] = x < 0
        seen["ge"] = x >= 0
        seen["float"] = float(x)
        return x * 2

    adcore.grad(f)(1.5)
    assert seen == {"lt": False, "ge": True, "float": 1.5}


def test_gradient_of_constant_output_is_zero():
    assert adcore.grad(lambda x: 3.0)(1.0) == 0.0
    g = adcore.grad(lambda x: 3.0)(np.ones(2))
    np.testing.assert_array_equal(g, [0.0, 0.0])


def test_grad_needs_scalar_output():
    with pytest.raises(TypeError, match="scalar output"):
        adcore.grad(lambda x: x * 2)(np.ones(3))


def test_has_aux_and_argnums():
    def f(x, y):
        return x * y, {"x2": x * x}

    (v, aux), g = adcore.value_and_grad(f, argnums=(0, 1), has_aux=True)(3.0, 4.0)
    assert v == 12.0 and aux == {"x2": 9.0} and g == (4.0, 3.0)
    with pytest.raises(ValueError, match="argnums"):
        adcore.grad(f, argnums=2)(1.0, 2.0)


def test_vjp_and_jacrev_match():
    def f(x):
        return {"a": x * x, "b": adcore.sin(x).sum()}

    x = np.array([0.5, -1.0, 2.0])
    out, pullback = adcore.vjp(f, x)
    np.testing.assert_array_equal(out["a"], x * x)
    (g,) = pullback({"a": np.array([1.0, 0.0, 2.0]), "b": 3.0})
    np.testing.assert_allclose(g, [2 * 0.5, 0.0, 2 * 2 * 2.0] + 3 * np.cos(x), rtol=1e-14)
    J = reverse.jacrev(f)(x)
    np.testing.assert_allclose(J["a"], np.diag(2 * x), rtol=1e-14)
    np.testing.assert_allclose(J["b"], np.cos(x), rtol=1e-14)
    with pytest.raises(ValueError, match="shape"):
        pullback({"a": np.ones(2), "b": 1.0})


def test_jacrev_seed_example():
    # the seed's Jacobian of [x^2, xy, y^2]: [[2x, 0], [y, x], [0, 2y]]
    def f(x, y):
        return [x * x, x * y, y * y]

    J = reverse.jacrev(f, argnums=(0, 1))(3.0, -2.0)
    assert J == [(6.0, 0.0), (-2.0, 3.0), (0.0, -4.0)]


def test_array_operations_and_broadcasting():
    A = np.arange(6.0).reshape(2, 3) / 7
    b = np.array([0.3, -0.2, 0.5])

    def f(A, b):
        y = adcore.tanh(A * b + 1.0)        # (2,3) * (3,) broadcast
        z = (y @ b).sum()                    # matmul primitive
        return z + y[0].sum() * y[1:, :-1].sum() + y.T.reshape(6)[2] + len(y)

    gA, gb = adcore.grad(f, argnums=(0, 1))(A, b)
    # against central differences of the same numpy code
    def fn(A, b):
        y = np.tanh(A * b + 1.0)
        return (y @ b).sum() + y[0].sum() * y[1:, :-1].sum() + y.T.reshape(6)[2] + 2

    h = 1e-6
    for idx in np.ndindex(A.shape):
        E = np.zeros_like(A)
        E[idx] = h
        assert gA[idx] == pytest.approx((fn(A + E, b) - fn(A - E, b)) / (2 * h), rel=1e-6)
    for i in range(3):
        e = np.zeros(3)
        e[i] = h
        assert gb[i] == pytest.approx((fn(A, b + e) - fn(A, b - e)) / (2 * h), rel=1e-6)


def test_scalar_handle_with_array_sums_in_reverse():
    x = np.array([1.0, 2.0, 3.0])
    g = adcore.grad(lambda s, x: (s * x).sum(), argnums=0)(2.0, x)
    assert g == 6.0


def test_float32_stays_float32():
    x = np.array([1.0, 2.0], dtype=np.float32)
    seen = {}

    def f(x):
        y = adcore.exp(x) * 2.0
        seen["dtype"] = y.dtype
        return y.sum()

    g = adcore.grad(f)(x)
    assert seen["dtype"] == np.float32
    assert g.dtype == np.float32
    np.testing.assert_allclose(g, 2 * np.exp([1.0, 2.0]), rtol=1e-6)


def test_array_to_numpy_while_recording():
    # np.asarray gives an object array of recorded elements: the derivative survives
    g = adcore.grad(lambda x: (np.asarray(x) * np.array([2.0, 3.0])).sum())(np.ones(2))
    np.testing.assert_array_equal(g, [2.0, 3.0])
    # a float array would drop it: refused
    with pytest.raises(TypeError, match="numpy array of float64 while recording"):
        adcore.grad(lambda x: np.asarray(x, dtype=np.float64).sum())(np.ones(2))


def test_where_zero_cotangent_branch_gives_no_nan():
    # sqrt(x) for x > 0 else 0: the untaken branch has an infinite/NaN partial
    f = lambda x: adcore.where(adcore.greater(x, 0.0), adcore.sqrt(x), 0.0)
    assert adcore.grad(f)(-1.0) == 0.0
    g = adcore.grad(lambda x: f(x).sum())(np.array([-1.0, 0.0, 4.0]))
    np.testing.assert_array_equal(g, [0.0, 0.0, 0.25])


def _rss_bytes():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc (Linux)")
@pytest.mark.skipif("asan" in os.environ.get("LD_PRELOAD", ""),
                    reason="AddressSanitizer quarantines freed memory")
def test_dropping_tapes_returns_memory():
    def f(x):
        for _ in range(5 * 10 ** 4):
            x = adcore.sin(x) * 1.0001
        return x

    tape = adcore.record(f, 0.3)  # warm up allocator and imports
    assert len(tape) >= 10 ** 5
    del tape
    gc.collect()
    before = _rss_bytes()
    for _ in range(30):
        tape = adcore.record(f, 0.3)
        tape.gradient(0.4)
        del tape
    gc.collect()
    assert _rss_bytes() - before < 5 * 2 ** 20


def test_a_dropped_tape_is_freed_without_the_cycle_collector():
    # nothing the tape hands out, pools or records refers back to it in a cycle:
    # del frees it at once (gc off), after replays, gradients and Jacobians too
    def live():
        return sum(type(o) is adcore.Tape for o in gc.get_objects())

    def f(x, d):
        s = d["w"] * 0.0
        for _ in range(20):
            s = s + adcore.sin(x[0]) * x[1] * d["w"]
        return s

    gc.collect()
    start = live()
    gc.disable()
    try:
        for _ in range(5):
            tape = adcore.record(f, [1.0, 2.0], {"w": 3.0})
            tape.gradient([1.5, 2.5], {"w": 1.0})
            tape([1.5, 2.5], {"w": 1.0})
            tape.jacobian([1.5, 2.5], {"w": 1.0})
            adcore.grad(f, argnums=(0, 1))([1.0, 2.0], {"w": 3.0})
            arr = adcore.record(lambda x: adcore.sin(x).sum(), np.ones(4))
            arr.gradient(np.full(4, 0.5))
            del tape, arr
        assert live() == start
    finally:
        gc.enable()


def test_zero_dimensional_array_input_keeps_its_shape():
    x = np.array(0.5)
    g = adcore.grad(lambda x: adcore.sin(x) * x)(x)
    assert isinstance(g, np.ndarray) and g.shape == ()
    assert float(g) == pytest.approx(np.cos(0.5) * 0.5 + np.sin(0.5), rel=1e-15)
    tape = adcore.record(lambda x: adcore.sin(x) * x, x)
    assert tape.gradient(np.array(0.7)).shape == ()


def test_users_array_is_not_made_read_only():
    c = np.array([1.0, 2.0])
    adcore.grad(lambda x: (x * c).sum())(np.ones(2))
    assert c.flags.writeable


@pytest.mark.parametrize("f", [lambda x: adcore.sqrt(adcore.relu(x)),
                               lambda x: adcore.cbrt(x * 0.0)],
                         ids=["sqrt(relu)", "cbrt(x*0)"])
def test_zero_partial_behind_an_infinite_one_gives_zero(f):
    # forward mode gives 0 (a zero tangent through an infinite partial); reverse agrees
    assert adcore.grad(f)(-1.0) == 0.0
    g = adcore.grad(lambda x: f(x).sum())(np.array([-1.0, -2.0]))
    np.testing.assert_array_equal(g, [0.0, 0.0])
    assert adcore.record(f, -1.0).gradient(-3.0) == 0.0
