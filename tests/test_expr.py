"""adcore.expr: the safe expression language of the command line."""

import ast
import builtins
import math

import pytest

import adcore
from adcore import expr
from adcore._rules import RULES
from adcore.errors import AdcoreError
from adcore.expr import ExpressionError, format_number, parse

SEED = "a*x**2 + b*x*y + c*y**2"
SEED_AT = dict(a=3.0, b=1.0, c=-2.0, x=4.0, y=-1.0)


# ---------------------------------------------------------------- refusals

UNSAFE = [
    ("__import__('os').system('ls')", "attribute access"),
    ("os.system('ls')", "attribute access"),
    ("x.real", "attribute access"),
    ("x[0]", "subscript"),
    ("import os", "import"),
    ("from os import system", "import"),
    ("[x for x in y]", "list comprehension"),
    ("{x for x in y}", "set comprehension"),
    ("{x: 1 for x in y}", "dict comprehension"),
    ("sum(x for x in y)", "unknown function 'sum'"),
    ("(x for x in y)", "generator expression"),
    ("lambda: 1", "lambda"),
    ("(lambda q: q)(x)", "lambda"),
    ("sin(x=1)", "keyword argument x="),
    ("sin(**x)", "keyword arguments"),
    ("sin(*x)", "starred argument"),
    ("'ls'", "string literal"),
    ("b'ls'", "bytes literal"),
    ("f'{x}'", "f-string"),
    ("eval('1')", "unknown function 'eval'"),
    ("exec('1')", "unknown function 'exec'"),
    ("open(x)", "unknown function 'open'"),
    ("q", "unknown name 'q'"),
    ("__builtins__", "unknown name '__builtins__'"),
    ("sin", "function 'sin' used without a call"),
    ("sin(x)(y)", "calling the result of a call"),
    ("x if y else z", "conditional expression"),
    ("x and y", "boolean operator"),
    ("not x", "not"),
    ("~x", "~"),
    ("+x", "unary +"),
    ("x < y", "comparison"),
    ("x % y", "operator %"),
    ("x // y", "operator //"),
    ("x @ y", "operator @"),
    ("x ^ y", "operator ^"),
    ("[x, y]", "list display"),
    ("(x, y)", "tuple"),
    ("{x: y}", "dict display"),
    ("(x := 3)", "assignment expression"),
    ("x = 3", "assignment"),
    ("x += 3", "augmented assignment"),
    ("del x", "del"),
    ("def f(): pass", "function definition"),
    ("class C: pass", "class definition"),
    ("x; y", "several statements"),
    ("True", "True"),
    ("None", "None"),
    ("1j", "complex number"),
    ("...", "ellipsis"),
    ("sin(x, y)", "sin takes 1 argument, got 2"),
    ("atan2(x)", "atan2 takes 2 arguments, got 1"),
    ("", "empty expression"),
    ("x +", "syntax error"),
    ("x\0", "null byte"),
    ("1" + "0" * 400, "number too large"),
    ("-" * 150 + "x", "nested too deeply"),
    ("(" * 300 + "x" + ")" * 300, "nested"),
    ("sin(" * 120 + "x" + ")" * 120, "nested too deeply"),
    ("x" * (expr.MAX_LENGTH + 1), "too long"),
]


@pytest.mark.parametrize("source, named", UNSAFE)
def test_unsafe_constructs_are_refused_by_name(source, named):
    with pytest.raises(ExpressionError) as info:
        parse(source, names=("x", "y", "z"))
    assert named in str(info.value)
    assert "\n" not in str(info.value)


def test_expression_error_is_a_value_error_and_an_adcore_error():
    assert issubclass(ExpressionError, ValueError)
    assert issubclass(ExpressionError, AdcoreError)


def test_not_a_string():
    with pytest.raises(ExpressionError, match="must be a string"):
        parse(b"x")


def test_names_are_free_without_a_list_and_checked_with_one():
    assert parse("b*x + y*b").names == ("b", "x", "y")
    with pytest.raises(ExpressionError, match="unknown name 'y'"):
        parse("x + y", names=["x"])


def test_parse_and_evaluate_never_call_eval_or_exec(monkeypatch):
    real_compile = builtins.compile

    def forbidden(*args, **kwargs):
        raise AssertionError("eval/exec called")

    def ast_only(source, filename, mode, flags=0, *args, **kwargs):
        # ast.parse compiles to a syntax tree only; anything else would make code
        if not flags & ast.PyCF_ONLY_AST:
            raise AssertionError("compile called to make code")
        return real_compile(source, filename, mode, flags, *args, **kwargs)

    monkeypatch.setattr(builtins, "eval", forbidden)
    monkeypatch.setattr(builtins, "exec", forbidden)
    monkeypatch.setattr(builtins, "compile", ast_only)
    value = expr.evaluate("x * 2 + sin(y)", {"x": 1.5, "y": 0.0})
    trace = parse("x * 2 + sin(y)").trace({"x": 1.5, "y": 0.0})
    monkeypatch.undo()
    assert value == 3.0 and trace.result == 3.0


def test_long_flat_sums_and_products_are_not_too_deep():
    n = 400
    assert expr.evaluate(" + ".join(["x"] * n), {"x": 1.0}) == float(n)
    assert expr.evaluate(" * ".join(["x"] * n), {"x": 1.0}) == 1.0


# ---------------------------------------------------------------- values

@pytest.mark.parametrize("source, expected", [
    ("1 + 2*3", 7.0),
    ("2**3**2", 2.0 ** 9),
    ("-2**2", -4.0),
    ("(-2)**2", 4.0),
    ("7 / 2", 3.5),
    ("1 - 2 - 3", -4.0),
    ("2 * -x", -3.0),
    ("x - -x", 3.0),
    ("x**2", 2.25),
    ("x**3", 3.375),
    ("x**0.5", math.sqrt(1.5)),
    ("sin(x)**2 + cos(x)**2", 1.0),
    ("atan2(x, 1) * 4 / x", 4 * math.atan2(1.5, 1.0) / 1.5),
    ("exp(log(x))", 1.5),
    ("hypot(3, 4)", 5.0),
    ("maximum(x, 2) + minimum(x, 2)", 3.5),
    ("where(less(x, 2), 10, 20)", 10.0),
])
def test_values(source, expected):
    assert expr.evaluate(source, {"x": 1.5}) == pytest.approx(expected, rel=1e-15)


def test_numbers_are_floats():
    value = expr.evaluate("7 / 2 + 3")
    assert type(value) is float and value == 6.5
    assert type(expr.evaluate("4")) is float


def test_constant_arithmetic_follows_ieee_not_python():
    # Python floats raise on these; the rule table's kernels give inf/nan.
    assert expr.evaluate("1 / 0") == math.inf
    assert expr.evaluate("-1 / 0") == -math.inf
    assert math.isnan(expr.evaluate("0 / 0"))
    assert expr.evaluate("10.0 ** 400") == math.inf
    assert math.isnan(expr.evaluate("(-8) ** (1/3)"))


@pytest.mark.parametrize("rule", [r for r in RULES if r.public], ids=lambda r: r.name)
def test_every_public_rule_is_callable_and_agrees_with_adcore(rule):
    point = [lo + 0.37 * (hi - lo) for lo, hi in rule.domain]
    names = ["p%d" % i for i in range(rule.arity)]
    got = expr.evaluate(f"{rule.name}({', '.join(names)})", dict(zip(names, point)))
    want = getattr(adcore, rule.name)(*point)
    assert float(got) == pytest.approx(float(want), rel=1e-15, abs=0.0)


def test_missing_value():
    with pytest.raises(ExpressionError, match="no value given for 'y'"):
        parse("x + y").evaluate({"x": 1.0})


# ---------------------------------------------------------------- the trace

def _texts(source, values):
    return [(s.name, s.text, s.value) for s in parse(source).trace(values).steps]


def test_seed_trace_steps_in_the_seeds_order():
    assert _texts(SEED, SEED_AT) == [
        ("t0", "x * x", 16.0), ("t1", "a * t0", 48.0),
        ("t2", "x * y", -4.0), ("t3", "b * t2", -4.0),
        ("t4", "y * y", 1.0), ("t5", "c * t4", -2.0),
        ("t6", "t1 + t3", 44.0), ("t7", "t6 + t5", 42.0),
    ]


def test_trace_records_operands():
    steps = parse(SEED).trace(SEED_AT).steps
    assert steps[0].operands == (("input", "x"), ("input", "x"))
    assert steps[1].operands == (("input", "a"), ("step", 0))
    assert steps[6].operands == (("step", 1), ("step", 3))
    assert [s.rule.name for s in steps] == ["mul"] * 6 + ["add"] * 2


def test_parentheses_choose_the_grouping():
    assert _texts("(b*x)*y", SEED_AT) == [("t0", "b * x", 4.0), ("t1", "t0 * y", -4.0)]
    assert _texts("b*(x*y)", SEED_AT) == [("t0", "x * y", -4.0), ("t1", "b * t0", -4.0)]
    assert _texts("a + (b + c)", SEED_AT) == [("t0", "b + c", -1.0), ("t1", "a + t0", 2.0)]
    assert _texts("(a) + b + c", SEED_AT) == [("t0", "a + b", 4.0), ("t1", "t0 + c", 2.0)]


def test_sum_terms_first_then_left_to_right():
    assert _texts("x*y - a/b + c", SEED_AT) == [
        ("t0", "x * y", -4.0), ("t1", "a / b", 3.0),
        ("t2", "t0 - t1", -7.0), ("t3", "t2 + c", -9.0)]


def test_square_is_a_product_other_powers_are_pow():
    assert _texts("(x + y)**2", SEED_AT) == [("t0", "x + y", 3.0), ("t1", "t0 * t0", 9.0)]
    steps = parse("x**3 + x**2.0 + x**-1").trace(SEED_AT).steps
    assert [s.text for s in steps[:3]] == ["x ** 3", "x ** 2", "x ** -1"]
    assert {s.rule.name for s in steps[:3]} == {"pow"}


def test_unary_minus_and_calls_in_the_trace():
    assert _texts("-sin(x) + atan2(y, 2)", {"x": 0.0, "y": 0.0}) == [
        ("t0", "sin(x)", 0.0), ("t1", "-t0", -0.0), ("t2", "atan2(y, 2)", 0.0),
        ("t3", "t1 + t2", 0.0)]


def test_trace_without_operations():
    trace = parse("x").trace({"x": 2.0})
    assert trace.steps == () and trace.result == 2.0
    assert trace.result_operand == ("input", "x")
    assert parse("-3").trace({}).result_operand == ("const", -3.0)


def test_trace_carries_dual_derivatives():
    k = 3
    values = dict(SEED_AT)
    for i, n in enumerate("abc"):
        seed = [0.0] * k
        seed[i] = 1.0
        values[n] = adcore.Dual(SEED_AT[n], seed)
    trace = parse(SEED).trace(values)
    assert trace.result.value == 42.0
    assert list(trace.result.tangents) == [16.0, -4.0, 1.0]
    assert list(trace.steps[1].value.tangents) == [16.0, 0.0, 0.0]


def test_derivatives_through_functions_match_the_analytic_ones():
    x = adcore.Dual(0.7, [1.0])
    got = expr.evaluate("sin(x) * exp(x) / (1 + x**2)", {"x": x})
    v = 0.7
    f = math.sin(v) * math.exp(v) / (1 + v * v)
    df = ((math.cos(v) * math.exp(v) + math.sin(v) * math.exp(v)) / (1 + v * v)
          - math.sin(v) * math.exp(v) * 2 * v / (1 + v * v) ** 2)
    assert got.value == pytest.approx(f, rel=1e-14)
    assert got.tangents[0] == pytest.approx(df, rel=1e-13)


# ---------------------------------------------------------------- numbers

@pytest.mark.parametrize("value, text", [
    (16.0, "16"), (-4.0, "-4"), (0.0, "0"), (-0.0, "-0"), (0.5, "0.5"), (1e20, "1e+20"),
    (0.1 + 0.2, "0.30000000000000004"), (math.inf, "inf"), (math.nan, "nan"), (3, "3"),
])
def test_format_number(value, text):
    assert format_number(value) == text


def test_expressions_work_with_every_engine():
    p = parse("x*sin(x) + y**2", names=["x", "y"])
    gx, gy = adcore.grad(lambda x, y: p.evaluate({"x": x, "y": y}), argnums=(0, 1))(1.0, 2.0)
    assert gx == pytest.approx(math.sin(1.0) + math.cos(1.0), rel=1e-15)
    assert gy == 4.0
    d2 = adcore.derivative(adcore.derivative(lambda x: p.evaluate({"x": x, "y": 0.0})))(1.0)
    assert d2 == pytest.approx(2 * math.cos(1.0) - math.sin(1.0), rel=1e-14)
