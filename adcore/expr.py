"""A safe arithmetic expression language for the command line and the seed's traces.

The text is parsed with :mod:`ast` and walked; it is never handed to ``eval`` or
``exec``.  Accepted: numbers (read as floats), names whose values the caller gives,
``+ - * / **``, unary ``-``, parentheses, and calls by name to the rule table's public
functions (``sin(x)``, ``atan2(y, x)``, ...; see ``FUNCTIONS``), which are evaluated
with adcore's public functions so that duals and tape values flow through.  Anything
else is refused with an :class:`ExpressionError` naming the construct.

Evaluation order, chosen so that a trace reads like the seed's forward trace
(section "Automatic Differentiation"):

* the operands of every operation are evaluated left to right before it;
* a chain of ``+``/``-`` written without parentheses evaluates all its terms first and
  then adds them up left to right (the values are exactly Python's);
* a chain of ``*`` written without parentheses multiplies from the right: ``b*x*y``
  is ``b*(x*y)``, the coefficient times the monomial, as the seed computes it.
  Parentheses choose another grouping, ``(b*x)*y``;
* ``e**2`` with the literal integer exponent 2 is computed as ``e * e`` (the seed
  writes ``t0 = x * x``); every other power uses the ``pow`` rule.

So ``a*x**2 + b*x*y + c*y**2`` gives the seed's t0 = x * x, t1 = a * t0, t2 = x * y,
t3 = b * t2, t4 = y * y, t5 = c * t4, t6 = t1 + t3, z = t6 + t5.
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union

from ._rules import BY_NAME, RULES, Rule
from .errors import AdcoreError

__all__ = ["ExpressionError", "Expression", "Step", "Trace", "FUNCTIONS", "MAX_LENGTH",
           "MAX_DEPTH", "parse", "evaluate", "format_number"]

MAX_LENGTH = 4000  # characters; longer input is refused before parsing
MAX_DEPTH = 100  # nested operations (a flat chain of + or * counts once)

# The functions an expression may call: the rule table's public rows.
FUNCTIONS: Dict[str, Rule] = {rule.name: rule for rule in RULES if rule.public}

_BINARY = {ast.Add: "add", ast.Sub: "sub", ast.Mult: "mul", ast.Div: "div", ast.Pow: "pow"}
_SYMBOL = {"add": "+", "sub": "-", "mul": "*", "div": "/", "pow": "**"}

# Names for constructs that are refused, so the message says what was found.
_CONSTRUCTS = {
    ast.Attribute: "attribute access",
    ast.Subscript: "subscript",
    ast.Slice: "slice",
    ast.ListComp: "list comprehension",
    ast.SetComp: "set comprehension",
    ast.DictComp: "dict comprehension",
    ast.GeneratorExp: "generator expression",
    ast.Lambda: "lambda",
    ast.IfExp: "conditional expression (if/else)",
    ast.BoolOp: "boolean operator (and/or)",
    ast.Compare: "comparison",
    ast.List: "list display",
    ast.Tuple: "tuple",
    ast.Set: "set display",
    ast.Dict: "dict display",
    ast.JoinedStr: "f-string",
    ast.FormattedValue: "f-string",
    ast.NamedExpr: "assignment expression (:=)",
    ast.Starred: "starred argument",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.YieldFrom: "yield from",
}
_OPERATOR_NAMES = {
    ast.Mod: "%", ast.FloorDiv: "//", ast.MatMult: "@", ast.LShift: "<<", ast.RShift: ">>",
    ast.BitOr: "|", ast.BitXor: "^", ast.BitAnd: "&",
}
_UNARY_NAMES = {ast.UAdd: "unary +", ast.Not: "not", ast.Invert: "~"}
_STATEMENTS = {
    ast.Import: "import", ast.ImportFrom: "import", ast.Assign: "assignment",
    ast.AugAssign: "augmented assignment", ast.AnnAssign: "annotated assignment",
    ast.Delete: "del", ast.FunctionDef: "function definition",
    ast.AsyncFunctionDef: "function definition", ast.ClassDef: "class definition",
    ast.Global: "global", ast.Nonlocal: "nonlocal", ast.Assert: "assert",
    ast.Raise: "raise", ast.Return: "return", ast.Pass: "pass",
}


class ExpressionError(AdcoreError, ValueError):
    """An expression that is not in the accepted language, or cannot be evaluated."""


def format_number(v: float) -> str:
    """A float as the seed prints numbers: 16 rather than 16.0 when integral."""
    v = float(v)
    if v == 0.0:
        return "-0" if math.copysign(1.0, v) < 0 else "0"
    if math.isfinite(v) and v.is_integer() and abs(v) < 1e16:
        return str(int(v))
    return repr(v)


# ---------------------------------------------------------------- the parsed tree

class _Number:
    __slots__ = ("value",)

    def __init__(self, value: float):
        self.value = value


class _Name:
    __slots__ = ("id",)

    def __init__(self, id: str):
        self.id = id


class _Apply:
    """One rule applied to operands; ``square`` marks ``e**2`` computed as ``e * e``."""
    __slots__ = ("rule", "args", "form", "square")

    def __init__(self, rule: Rule, args: tuple, form: str, square: bool = False):
        self.rule, self.args, self.form, self.square = rule, args, form, square


class _Chain:
    """A flat chain of ``+``/``-`` (combined left to right) or of ``*`` (from the right)."""
    __slots__ = ("kind", "terms", "rules")

    def __init__(self, kind: str, terms: tuple, rules: tuple):
        self.kind, self.terms, self.rules = kind, terms, rules


_Node = Union[_Number, _Name, _Apply, _Chain]


def _where(node: ast.AST) -> str:
    col = getattr(node, "col_offset", None)
    return "" if col is None else f" at column {col + 1}"


def _refuse(what: str, node: Optional[ast.AST] = None) -> ExpressionError:
    where = _where(node) if node is not None else ""
    return ExpressionError(f"{what} is not allowed in an expression{where}")


def _start(node: ast.AST) -> Tuple[int, int]:
    return (node.lineno, node.col_offset)


class _Converter:
    def __init__(self, names: Optional[frozenset]):
        self.allowed = names
        self.used: List[str] = []

    def convert(self, node: ast.AST, depth: int) -> _Node:
        if depth > MAX_DEPTH:
            raise ExpressionError(
                f"expression is nested too deeply (more than {MAX_DEPTH} levels){_where(node)}")
        if isinstance(node, ast.Constant):
            return _Number(self.number(node))
        if isinstance(node, ast.Name):
            return _Name(self.name(node))
        if isinstance(node, ast.BinOp):
            kind = _BINARY.get(type(node.op))
            if kind is None:
                op = _OPERATOR_NAMES.get(type(node.op), type(node.op).__name__)
                raise _refuse(f"operator {op}", node)
            if kind in ("add", "sub"):
                return self.chain(node, "sum", (ast.Add, ast.Sub), depth)
            if kind == "mul":
                return self.chain(node, "product", (ast.Mult,), depth)
            left = self.convert(node.left, depth + 1)
            if (kind == "pow" and isinstance(node.right, ast.Constant)
                    and type(node.right.value) is int and node.right.value == 2):
                return _Apply(BY_NAME["mul"], (left, left), "infix", square=True)
            right = self.convert(node.right, depth + 1)
            return _Apply(BY_NAME[kind], (left, right), "infix")
        if isinstance(node, ast.UnaryOp):
            if not isinstance(node.op, ast.USub):
                raise _refuse(_UNARY_NAMES.get(type(node.op), type(node.op).__name__), node)
            operand = self.convert(node.operand, depth + 1)
            if isinstance(operand, _Number):  # a negative literal, not an operation
                return _Number(-operand.value)
            return _Apply(BY_NAME["neg"], (operand,), "prefix")
        if isinstance(node, ast.Call):
            return self.call(node, depth)
        what = _CONSTRUCTS.get(type(node))
        if what is None:
            what = type(node).__name__
        raise _refuse(what, node)

    def number(self, node: ast.Constant) -> float:
        value = node.value
        if isinstance(value, bool) or value is None:
            raise _refuse(repr(value), node)
        if isinstance(value, str):
            raise _refuse("string literal", node)
        if isinstance(value, bytes):
            raise _refuse("bytes literal", node)
        if isinstance(value, complex):
            raise _refuse("complex number", node)
        if not isinstance(value, (int, float)):
            raise _refuse(type(value).__name__, node)
        try:
            return float(value)
        except OverflowError:
            raise ExpressionError(f"number too large for a float{_where(node)}") from None

    def name(self, node: ast.Name) -> str:
        ident = node.id
        if self.allowed is not None and ident not in self.allowed:
            if ident in FUNCTIONS:
                raise ExpressionError(
                    f"function {ident!r} used without a call{_where(node)}")
            raise ExpressionError(f"unknown name {ident!r}{_where(node)}")
        if ident not in self.used:
            self.used.append(ident)
        return ident

    def call(self, node: ast.Call, depth: int) -> _Node:
        if not isinstance(node.func, ast.Name):
            if isinstance(node.func, ast.Call):
                raise _refuse("calling the result of a call", node)
            what = _CONSTRUCTS.get(type(node.func), type(node.func).__name__)
            raise _refuse(what, node.func)
        fname = node.func.id
        rule = FUNCTIONS.get(fname)
        if rule is None:
            raise ExpressionError(f"unknown function {fname!r}{_where(node)}; the functions"
                                  f" are {', '.join(sorted(FUNCTIONS))}")
        if node.keywords:
            kw = node.keywords[0]
            label = f"keyword argument {kw.arg}=" if kw.arg else "keyword arguments (**)"
            raise _refuse(label, kw if hasattr(kw, "col_offset") else node)
        for arg in node.args:
            if isinstance(arg, ast.Starred):
                raise _refuse("starred argument", arg)
        if len(node.args) != rule.arity:
            raise ExpressionError(
                f"{fname} takes {rule.arity} argument{'s' if rule.arity != 1 else ''},"
                f" got {len(node.args)}{_where(node)}")
        args = tuple(self.convert(a, depth + 1) for a in node.args)
        return _Apply(rule, args, "call")

    def chain(self, node: ast.BinOp, kind: str, ops: tuple, depth: int) -> _Chain:
        # Walk down the left spine while the operands continue the same unparenthesized
        # chain: a parenthesized left operand starts after the chain's first character.
        top = _start(node)
        rights: List[Tuple[str, ast.AST]] = []
        current: ast.AST = node
        while (isinstance(current, ast.BinOp) and isinstance(current.op, ops)
               and _start(current) == top):
            rights.append((_BINARY[type(current.op)], current.right))
            current = current.left
        rights.reverse()
        terms = [self.convert(current, depth + 1)]
        terms.extend(self.convert(r, depth + 1) for _, r in rights)
        return _Chain(kind, tuple(terms), tuple(BY_NAME[k] for k, _ in rights))


def _parse_tree(source: str) -> ast.AST:
    if not isinstance(source, str):
        raise ExpressionError(f"an expression must be a string, not {type(source).__name__}")
    if len(source) > MAX_LENGTH:
        raise ExpressionError(
            f"expression is too long ({len(source)} characters; the limit is {MAX_LENGTH})")
    text = source.strip()
    if not text:
        raise ExpressionError("empty expression")
    if "\0" in text:
        raise ExpressionError("expression contains a null byte")
    try:
        module = ast.parse(text, mode="exec")
    except SyntaxError as e:
        col = f" at column {e.offset}" if e.offset else ""
        raise ExpressionError(f"syntax error: {e.msg}{col}") from None
    except (ValueError, MemoryError, RecursionError):
        # the parser's own stack limits (MemoryError, RecursionError) or bad characters
        raise ExpressionError("expression is nested too deeply or malformed") from None
    if len(module.body) != 1:
        raise ExpressionError("only one expression is allowed (found several statements)")
    statement = module.body[0]
    if not isinstance(statement, ast.Expr):
        what = _STATEMENTS.get(type(statement), f"{type(statement).__name__} statement")
        raise ExpressionError(f"{what} is not allowed: give a single arithmetic expression")
    return statement.value


# ---------------------------------------------------------------- evaluation

@dataclass(frozen=True)
class Step:
    """One operation of a trace: ``name = text = value``.

    ``operands`` refer to what the operation read: ``("input", name)``, ``("step", i)``
    (an earlier step) or ``("const", value)``.
    """
    name: str
    rule: Rule
    operands: Tuple[Tuple[str, Any], ...]
    text: str
    value: Any


@dataclass(frozen=True)
class Trace:
    """The inputs, the steps in evaluation order, and the result (the last step's value,
    or the input/constant itself when the expression has no operation)."""
    inputs: Tuple[Tuple[str, Any], ...]
    steps: Tuple[Step, ...]
    result: Any
    result_operand: Tuple[str, Any]


def _call(rule: Rule, args: tuple) -> Any:
    import adcore

    fn = getattr(adcore, rule.name, None)
    if fn is None:
        raise ExpressionError(f"function {rule.name!r} is in the rule table but not exported"
                              " by adcore")
    return fn(*args)


class _Evaluator:
    def __init__(self, values: Mapping[str, Any], record: bool):
        self.values = values
        self.steps: Optional[List[Step]] = [] if record else None

    def emit(self, rule: Rule, operands: list, form: str) -> Tuple[Any, Tuple[str, Any]]:
        value = _call(rule, tuple(v for v, _ in operands))
        if self.steps is None:
            return value, ("value", None)
        labels = [self.label(ref) for _, ref in operands]
        if form == "infix":
            text = f"{labels[0]} {_SYMBOL[rule.name]} {labels[1]}"
        elif form == "prefix":
            text = f"-{labels[0]}"
        else:
            text = f"{rule.name}({', '.join(labels)})"
        index = len(self.steps)
        self.steps.append(Step(f"t{index}", rule, tuple(r for _, r in operands), text, value))
        return value, ("step", index)

    def label(self, ref: Tuple[str, Any]) -> str:
        kind, what = ref
        if kind == "input":
            return what
        if kind == "step":
            return self.steps[what].name
        return format_number(what)

    def run(self, node: _Node) -> Tuple[Any, Tuple[str, Any]]:
        if isinstance(node, _Number):
            return node.value, ("const", node.value)
        if isinstance(node, _Name):
            return self.values[node.id], ("input", node.id)
        if isinstance(node, _Apply):
            if node.square:
                operand = self.run(node.args[0])
                return self.emit(node.rule, [operand, operand], node.form)
            return self.emit(node.rule, [self.run(a) for a in node.args], node.form)
        terms = [self.run(t) for t in node.terms]
        if node.kind == "sum":
            acc = terms[0]
            for rule, term in zip(node.rules, terms[1:]):
                acc = self.emit(rule, [acc, term], "infix")
            return acc
        acc = terms[-1]
        for term in reversed(terms[:-1]):
            acc = self.emit(BY_NAME["mul"], [term, acc], "infix")
        return acc


class Expression:
    """A parsed expression: ``names`` it reads (in order of first use), ``evaluate``,
    ``trace``."""

    def __init__(self, source: str, tree: _Node, names: Tuple[str, ...]):
        self.source = source
        self._tree = tree
        self.names = names

    def __repr__(self) -> str:
        return f"Expression({self.source!r})"

    def _values(self, values: Mapping[str, Any]) -> Mapping[str, Any]:
        missing = [n for n in self.names if n not in values]
        if missing:
            raise ExpressionError(f"no value given for {', '.join(map(repr, missing))}")
        return values

    def evaluate(self, values: Optional[Mapping[str, Any]] = None) -> Any:
        """The expression's value with ``values`` for its names (floats, Duals, ...)."""
        values = self._values(values or {})
        return _Evaluator(values, record=False).run(self._tree)[0]

    def trace(self, values: Optional[Mapping[str, Any]] = None) -> Trace:
        """Evaluate and record each operation as a step t0, t1, ... in evaluation order."""
        values = self._values(values or {})
        ev = _Evaluator(values, record=True)
        result, ref = ev.run(self._tree)
        inputs = tuple((n, values[n]) for n in values)
        return Trace(inputs, tuple(ev.steps), result, ref)


def parse(source: str, names: Optional[Iterable[str]] = None) -> Expression:
    """Parse ``source``; if ``names`` is given, any other name is an error."""
    allowed = None if names is None else frozenset(names)
    converter = _Converter(allowed)
    tree = converter.convert(_parse_tree(source), 0)
    return Expression(source, tree, tuple(converter.used))


def evaluate(source: str, values: Optional[Mapping[str, Any]] = None) -> Any:
    """Parse and evaluate ``source`` with ``values`` for its names."""
    values = values or {}
    return parse(source, names=values.keys()).evaluate(values)
