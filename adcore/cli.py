"""``python -m adcore`` / ``adcore``: the seed's worked examples on the command line.

Subcommands:

* ``trace EXPR --at a=3,x=4 --wrt a``: the forward trace of an expression, each
  intermediate with its value and its non-zero derivatives, as the seed prints it;
* ``demo``: the seed's examples (that trace, and the Jacobian of [x², xy, y²]);
* ``train ...``: handed unchanged to ``adcore.nn.train.main(argv)``.

Bad input prints one line to stderr and exits with status 2; never a traceback.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib
import os
import re
import sys
import textwrap
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from . import expr as _expr
from .expr import ExpressionError, format_number

__all__ = ["main", "trace_lines", "parse_at", "parse_wrt", "demo_lines", "demo_jacobian",
           "UsageError"]

SEED_EXPRESSION = "a*x**2 + b*x*y + c*y**2"
SEED_AT = "a=3,b=1,c=-2,x=4,y=-1"
SEED_WRT = "a,b,c"

_RESERVED = re.compile(r"t\d+\Z")  # the trace's intermediates
_RESULT_NAMES = ("z", "f", "out", "result")


class UsageError(ValueError):
    """Bad command-line input; reported as one line, exit status 2."""


# ---------------------------------------------------------------- --at / --wrt

def parse_at(items: Sequence[str]) -> List[Tuple[str, float]]:
    """``["a=3,b=1", "c=-2"]`` -> ``[("a", 3.0), ("b", 1.0), ("c", -2.0)]``."""
    pairs: List[Tuple[str, float]] = []
    seen = set()
    for item in items:
        for part in item.split(","):
            part = part.strip()
            if not part:
                raise UsageError(f"--at: empty entry in {item!r} (expected name=number,...)")
            name, eq, text = part.partition("=")
            name, text = name.strip(), text.strip()
            if not eq:
                raise UsageError(f"--at: {part!r} is not of the form name=number")
            if not name.isidentifier() or name.startswith("__"):
                raise UsageError(f"--at: {name!r} is not a valid name")
            if _RESERVED.match(name):
                raise UsageError(f"--at: {name!r} is reserved for the trace's intermediates")
            if name in seen:
                raise UsageError(f"--at: {name!r} is given twice")
            try:
                value = float(text)
            except ValueError:
                raise UsageError(f"--at: the value of {name!r} is not a number: {text!r}") \
                    from None
            seen.add(name)
            pairs.append((name, value))
    return pairs


def parse_wrt(text: Optional[str], at: Sequence[Tuple[str, float]]) -> List[str]:
    """The names to differentiate with respect to; all ``--at`` names when not given."""
    names = [n for n, _ in at]
    if text is None:
        return names
    wrt: List[str] = []
    if not text.strip():
        return wrt
    for part in text.split(","):
        part = part.strip()
        if not part:
            raise UsageError(f"--wrt: empty entry in {text!r} (expected name,name,...)")
        if part not in names:
            raise UsageError(f"--wrt: {part!r} has no value (give one with --at {part}=...)")
        if part in wrt:
            raise UsageError(f"--wrt: {part!r} is given twice")
        wrt.append(part)
    return wrt


# ---------------------------------------------------------------- the trace

def _tangents(value: Any, k: int) -> List[float]:
    tangents = getattr(value, "tangents", None)
    if tangents is None:
        return [0.0] * k
    return [float(t) for t in tangents]


def _primal(value: Any) -> float:
    return float(getattr(value, "value", value))


def _seeded_inputs(at: Sequence[Tuple[str, float]], wrt: Sequence[str]) -> Dict[str, Any]:
    """Inputs as forward-mode duals, one tangent direction per ``wrt`` name."""
    if not wrt:
        return dict(at)
    from . import Dual

    k = len(wrt)
    values: Dict[str, Any] = {}
    for name, value in at:
        if name in wrt:
            seed = [0.0] * k
            seed[wrt.index(name)] = 1.0
            values[name] = Dual(value, seed)
        else:
            values[name] = value
    return values


class _Rename(ast.NodeTransformer):
    def __init__(self, names: Dict[str, str]):
        self.names = names

    def visit_Name(self, node: ast.Name) -> ast.AST:
        return ast.Name(id=self.names.get(node.id, node.id), ctx=ast.Load())

    def visit_Constant(self, node: ast.Constant) -> ast.AST:
        if isinstance(node.value, float) and node.value.is_integer():
            return ast.Constant(int(node.value))  # the seed writes 1, not 1.0
        return node


def _partial_text(rule: Any, k: int, labels: Sequence[str], result: str) -> str:
    """The rule table's partial derivative d result / d input k, in the trace's names."""
    names = dict(zip(("x", "y", "z"), labels))
    names["r"] = result
    tree = ast.parse(rule.partials[k], mode="eval")
    return ast.unparse(_Rename(names).visit(tree))


def _chain_terms(step: Any, steps: Sequence[Any], labels: Sequence[str], w: int,
                 wname: str, k: int) -> str:
    """The chain rule for d step / d wname: sum over operands of partial * d operand."""
    terms: List[str] = []
    for i, (kind, what) in enumerate(step.operands):
        if kind == "input":
            if what != wname:
                continue
            factor = ""
        elif kind == "step":
            if _tangents(steps[what].value, k)[w] == 0.0:
                continue
            factor = f"d{steps[what].name}/d{wname}"
        else:
            continue
        partial = _partial_text(step.rule, i, labels, step.name)
        if not factor:
            term = partial
        elif partial == "1":
            term = factor
        elif partial == "-1":
            term = "-" + factor
        else:
            ptree = ast.parse(partial, mode="eval").body
            if isinstance(ptree, ast.BinOp) and isinstance(ptree.op, (ast.Add, ast.Sub)):
                partial = f"({partial})"
            term = f"{partial} * {factor}"
        terms.append(term)
    text = terms[0] if terms else "0"
    for term in terms[1:]:
        text += f" - {term[1:]}" if term.startswith("-") else f" + {term}"
    return text


def trace_lines(source: str, at: Sequence[Tuple[str, float]], wrt: Sequence[str],
                chain: bool = False) -> List[str]:
    """The forward trace of ``source`` as the seed prints it, one string per line.

    Each line is ``name = operation = value`` followed by the non-zero derivatives
    with respect to ``wrt`` (``, dt1/da = 16``); with ``chain=True`` each derivative
    also shows the chain rule that produced it (``dt1/da = t0 = 16``).
    """
    names = [n for n, _ in at]
    try:
        expression = _expr.parse(source, names=names)
    except ExpressionError as e:
        msg = str(e)
        if msg.startswith("unknown name"):
            msg += " (give it a value with --at)"
        raise ExpressionError(msg) from None
    values = _seeded_inputs(at, wrt)
    trace = expression.trace(values)
    k = len(wrt)
    result_name = next((n for n in _RESULT_NAMES if n not in names), "result_")

    def derivs(name: str, value: Any, explain: Optional[Callable[[int, str], str]]) -> str:
        parts = []
        for w, (wname, t) in enumerate(zip(wrt, _tangents(value, k))):
            if t != 0.0:
                how = f"{explain(w, wname)} = " if explain else ""
                parts.append(f"d{name}/d{wname} = {how}{format_number(t)}")
        return "".join(", " + p for p in parts)

    lines = []
    for name, value in trace.inputs:
        lines.append(f"{name} = {format_number(_primal(value))}{derivs(name, value, None)}")
    steps = list(trace.steps)
    if steps:
        last = steps[-1]
        steps[-1] = dataclasses.replace(last, name=result_name)
    for step in steps:
        labels = [_label(ref, steps) for ref in step.operands]
        explain = None
        if chain:
            def explain(w: int, wname: str, step: Any = step, labels: Any = labels) -> str:
                return _chain_terms(step, steps, labels, w, wname, k)
        lines.append(f"{step.name} = {step.text} = {format_number(_primal(step.value))}"
                     f"{derivs(step.name, step.value, explain)}")
    if not steps:  # the expression is a single name or number
        kind, what = trace.result_operand
        if kind == "input":
            lines.append(f"{result_name} = {what} = {format_number(_primal(trace.result))}"
                         f"{derivs(result_name, trace.result, None)}")
        else:
            lines.append(f"{result_name} = {format_number(_primal(trace.result))}")
    return lines


def _label(ref: Tuple[str, Any], steps: Sequence[Any]) -> str:
    kind, what = ref
    if kind == "input":
        return what
    if kind == "step":
        return steps[what].name
    return format_number(what)


# ---------------------------------------------------------------- the demo

DEMO_OUTPUTS = ("x**2", "x*y", "y**2")
DEMO_POINT = (("x", 3.0), ("y", 5.0))


def demo_jacobian(point: Sequence[Tuple[str, float]] = DEMO_POINT) -> Any:
    """The Jacobian of [x**2, x*y, y**2] by ``adcore.jacfwd``: a Matrix with rows
    z0, z1, z2 and columns x, y (the functions are evaluated by adcore.expr)."""
    import adcore
    from .coords import Named
    from .vectors import Vector

    inputs = Named(*(n for n, _ in point))
    outputs = Named(*(f"z{i}" for i in range(len(DEMO_OUTPUTS))))
    programs = [_expr.parse(src, names=inputs) for src in DEMO_OUTPUTS]

    def f(v: Any) -> Any:
        values = {n: v[n] for n in inputs}
        return Vector(outputs, [p.evaluate(values) for p in programs])

    return adcore.jacfwd(f)(Vector(inputs, dict(point)))


def demo_lines() -> List[str]:
    """What ``adcore demo`` prints: the seed's trace, then its Jacobian example."""
    at = parse_at([SEED_AT])
    wrt = parse_wrt(SEED_WRT, at)
    lines = [f"The seed's forward trace of z = {SEED_EXPRESSION}",
             f"at {SEED_AT.replace(',', ', ')}, with the derivatives with respect to "
             f"{', '.join(wrt)}:", ""]
    lines += ["  " + line for line in trace_lines(SEED_EXPRESSION, at, wrt)]
    lines += ["", f"  (adcore trace \"{SEED_EXPRESSION}\" --at {SEED_AT} --wrt {SEED_WRT}"
              " --chain", "   shows how the chain rule gives each derivative)", ""]

    point = dict(DEMO_POINT)
    x, y = point["x"], point["y"]
    J = demo_jacobian(DEMO_POINT)
    analytic = [[2 * x, 0.0], [y, x], [0.0, 2 * y]]
    rows = [f"z{i}" for i in range(3)]
    cols = ["x", "y"]
    got = [[float(J[r, c]) for c in cols] for r in rows]
    cells = [format_number(v) for row in got + analytic for v in row]
    w = max(4, max(len(c) for c in cells))
    lines += [f"The Jacobian of f(x, y) = [{', '.join(DEMO_OUTPUTS)}] at x = "
              f"{format_number(x)}, y = {format_number(y)}:",
              "adcore.jacfwd beside the analytic [[2x, 0], [y, x], [0, 2y]].", ""]
    half = 2 * w + 1
    lines.append(f"      {'adcore.jacfwd':<{half}}    {'analytic':<{half}}".rstrip())
    lines.append(f"      {'x':>{w}} {'y':>{w}}    {'x':>{w}} {'y':>{w}}")
    for r, g_row, a_row in zip(rows, got, analytic):
        g = " ".join(f"{format_number(v):>{w}}" for v in g_row)
        a = " ".join(f"{format_number(v):>{w}}" for v in a_row)
        lines.append(f"  {r}  {g}    {a}")
    same = got == analytic
    lines += ["", "The two agree exactly." if same else
              "MISMATCH: adcore.jacfwd and the analytic Jacobian differ."]
    return lines


# ---------------------------------------------------------------- subcommands

def _cmd_trace(args: argparse.Namespace) -> int:
    at = parse_at(args.at or [])
    wrt = parse_wrt(args.wrt, at)
    for line in trace_lines(args.expression, at, wrt, chain=args.chain):
        print(line)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    lines = demo_lines()
    for line in lines:
        print(line)
    return 0 if not lines[-1].startswith("MISMATCH") else 1


def _cmd_train(argv: List[str]) -> int:
    try:
        train = importlib.import_module("adcore.nn.train")
    except ModuleNotFoundError as e:
        if e.name not in ("adcore.nn", "adcore.nn.train"):
            raise
        raise UsageError("adcore.nn.train is not part of this installation") from None
    status = train.main(argv)
    return 0 if status is None else int(status)


# Commands that take their arguments verbatim (name -> (summary, handler(argv))).
# A subcommand living in another module is added here.
PASSTHROUGH: Dict[str, Tuple[str, Callable[[List[str]], int]]] = {
    "train": ("train a model (arguments go to adcore.nn.train; see 'adcore train --help')",
              _cmd_train),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, no usage block
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _parser() -> argparse.ArgumentParser:
    example = f"example:\n  adcore trace \"{SEED_EXPRESSION}\" --at {SEED_AT} --wrt {SEED_WRT}"
    parser = _Parser(
        prog="adcore",
        description="adcore, a compiled automatic-differentiation core: the seed's worked\n"
                    "examples on the command line.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=example)
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    functions = textwrap.fill(", ".join(sorted(_expr.FUNCTIONS)), 76,
                              initial_indent="  ", subsequent_indent="  ")
    trace = sub.add_parser(
        "trace", help="print the forward trace of an expression with its derivatives",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Evaluate EXPR with forward-mode dual numbers and print each intermediate\n"
                    "t0, t1, ... with its value and its non-zero derivatives, as the seed's\n"
                    "forward trace does.",
        epilog="The expression is parsed, never run as Python. Allowed: numbers (floats),\n"
               "the --at names, + - * / ** and unary -, parentheses, and the rule table's\n"
               "functions:\n" + functions + "\n"
               "Order: the terms of a sum are computed first, then added left to right;\n"
               "a product b*x*y is b*(x*y); e**2 is e * e. An expression that starts\n"
               "with '-' goes after '--'.\n\n" + example)
    trace.add_argument("expression", metavar="EXPR", help="the expression, e.g. 'a*x**2 + b'")
    trace.add_argument("--at", action="append", metavar="NAME=NUMBER,...",
                       help="values of the names (may be repeated)")
    trace.add_argument("--wrt", metavar="NAME,...",
                       help="differentiate with respect to these names (default: all --at "
                            "names; '' for none)")
    trace.add_argument("--chain", action="store_true",
                       help="show how the chain rule gives each derivative "
                            "(dt1/da = t0 = 16)")
    trace.set_defaults(handler=_cmd_trace)

    demo = sub.add_parser("demo", help="show the seed's worked examples",
                          description="The seed's forward trace of a*x**2 + b*x*y + c*y**2 "
                                      "and the Jacobian of [x**2, x*y, y**2].")
    demo.set_defaults(handler=_cmd_demo)

    for name, (summary, _) in PASSTHROUGH.items():
        sub.add_parser(name, help=summary, add_help=False)
    return parser


def _version() -> str:
    from . import __version__

    return f"adcore {__version__}"


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The console script ``adcore`` and ``python -m adcore``; returns the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        if args_list and args_list[0] in PASSTHROUGH:
            try:
                return PASSTHROUGH[args_list[0]][1](args_list[1:])
            except SystemExit as e:  # the command's own --help or usage error
                if e.code is None or isinstance(e.code, int):
                    return e.code or 0
                print(e.code, file=sys.stderr)
                return 1
        parser = _parser()
        try:
            args = parser.parse_args(args_list)
        except SystemExit as e:  # --help, --version, or a usage error already printed
            return e.code if isinstance(e.code, int) else 2
        if args.command is None:
            parser.print_help()
            return 2
        return args.handler(args)
    except (UsageError, ExpressionError) as e:
        where = f"adcore {args_list[0]}" if args_list else "adcore"
        print(f"{where}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. 'adcore demo | head -1': stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
