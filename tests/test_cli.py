"""python -m adcore: the seed's worked examples on the command line."""

import re
import subprocess
import sys
import types

import pytest

from adcore import cli

SEED_ARGS = ["trace", "a*x**2 + b*x*y + c*y**2", "--at", "a=3,b=1,c=-2,x=4,y=-1",
             "--wrt", "a,b,c"]

# The seed's forward trace (section "Automatic Differentiation"), values only.
SEED_TRACE = """\
a = 3, da/da = 1
b = 1, db/db = 1
c = -2, dc/dc = 1
x = 4
y = -1
t0 = x * x = 16
t1 = a * t0 = 48, dt1/da = 16
t2 = x * y = -4
t3 = b * t2 = -4, dt3/db = -4
t4 = y * y = 1
t5 = c * t4 = -2, dt5/dc = 1
t6 = t1 + t3 = 44, dt6/da = 16, dt6/db = -4
z = t6 + t5 = 42, dz/da = 16, dz/db = -4, dz/dc = 1
""".splitlines()

# The seed's table verbatim, with its chain-rule forms ("dt1/da = t0 = 16").
SEED_TABLE_VERBATIM = """\
a = 3, da/da = 1
b = 1, db/db = 1
c = -2, dc/dc = 1
x = 4
y = -1
t0 = x * x = 16
t1 = a * t0 = 48, dt1/da = t0 = 16
t2 = x * y = -4
t3 = b * t2 = -4, dt3/db = t2 = -4
t4 = y * y = 1
t5 = c * t4 = -2, dt5/dc = t4 = 1
t6 = t1 + t3 = 44 dt6/da = dt1/da  = 16, dt6/db = dt3/db = -4
z = t6 + t5 = 42 dz/da = dt6/da = 16, dz/db = dt6/db = -4, dz/dc = dt5/dc = 1
""".splitlines()


def _seed_normalized(line):
    # The seed sometimes omits the comma before the first derivative and doubles a space.
    line = re.sub(r" +", " ", line)
    return re.sub(r"^(\S+ = [^,]*?[^,\s]) (d\S+/d)", r"\1, \2", line)


def run(*args):
    return subprocess.run([sys.executable, "-m", "adcore", *args], capture_output=True,
                          text=True, timeout=120)


def run_main(capsys, *args):
    status = cli.main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


# ---------------------------------------------------------------- trace

def test_seed_trace_line_by_line_in_a_subprocess():
    proc = run(*SEED_ARGS)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    got = proc.stdout.splitlines()
    assert len(got) == len(SEED_TRACE)
    for g, want in zip(got, SEED_TRACE):
        assert g == want


def test_seed_table_verbatim_with_the_chain_rule(capsys):
    status, out, _ = run_main(capsys, *SEED_ARGS, "--chain")
    assert status == 0
    assert out.splitlines() == [_seed_normalized(line) for line in SEED_TABLE_VERBATIM]


def test_seed_normalization_only_touches_commas_and_spaces():
    assert _seed_normalized("t6 = t1 + t3 = 44 dt6/da = dt1/da  = 16, dt6/db = dt3/db = -4") \
        == "t6 = t1 + t3 = 44, dt6/da = dt1/da = 16, dt6/db = dt3/db = -4"
    assert _seed_normalized("t0 = x * x = 16") == "t0 = x * x = 16"
    assert _seed_normalized("a = 3, da/da = 1") == "a = 3, da/da = 1"


def test_trace_lines_in_process():
    at = cli.parse_at(["a=3,b=1,c=-2,x=4,y=-1"])
    assert cli.trace_lines("a*x**2 + b*x*y + c*y**2", at, ["a", "b", "c"]) == SEED_TRACE


def test_default_wrt_is_every_at_name(capsys):
    status, out, _ = run_main(capsys, "trace", "x*y", "--at", "x=4", "--at", "y=-1")
    assert status == 0
    assert out.splitlines() == ["x = 4, dx/dx = 1", "y = -1, dy/dy = 1",
                                "z = x * y = -4, dz/dx = -1, dz/dy = 4"]


def test_empty_wrt_gives_values_only(capsys):
    status, out, _ = run_main(capsys, "trace", "x*y + 1", "--at", "x=4,y=-1", "--wrt", "")
    assert status == 0
    assert out.splitlines() == ["x = 4", "y = -1", "t0 = x * y = -4", "z = t0 + 1 = -3"]


def test_only_non_zero_derivatives_are_listed(capsys):
    status, out, _ = run_main(capsys, "trace", "x - x + y", "--at", "x=2,y=5")
    assert out.splitlines()[-2:] == ["t0 = x - x = 0", "z = t0 + y = 5, dz/dy = 1"]


def test_functions_and_non_integral_numbers(capsys):
    status, out, _ = run_main(capsys, "trace", "sin(x) / 2", "--at", "x=0", "--chain")
    assert status == 0
    assert out.splitlines() == ["x = 0, dx/dx = 1", "t0 = sin(x) = 0, dt0/dx = cos(x) = 1",
                                "z = t0 / 2 = 0, dz/dx = 1 / 2 * dt0/dx = 0.5"]


def test_chain_rule_with_both_operands_active(capsys):
    status, out, _ = run_main(capsys, "trace", "x*x*y", "--at", "x=3,y=2", "--chain")
    assert out.splitlines()[2:] == [
        "t0 = x * y = 6, dt0/dx = y = 2, dt0/dy = x = 3",
        "z = x * t0 = 18, dz/dx = t0 + x * dt0/dx = 12, dz/dy = x * dt0/dy = 9"]


def test_result_name_avoids_the_inputs(capsys):
    status, out, _ = run_main(capsys, "trace", "z + 1", "--at", "z=2")
    assert out.splitlines() == ["z = 2, dz/dz = 1", "f = z + 1 = 3, df/dz = 1"]


def test_expression_without_operations(capsys):
    assert run_main(capsys, "trace", "x", "--at", "x=4")[1].splitlines() == [
        "x = 4, dx/dx = 1", "z = x = 4, dz/dx = 1"]
    assert run_main(capsys, "trace", "-2.5")[1].splitlines() == ["z = -2.5"]


def test_expression_starting_with_minus_after_double_dash(capsys):
    status, out, _ = run_main(capsys, "trace", "--at", "x=4", "--", "-x")
    assert status == 0
    assert out.splitlines()[-1] == "z = -x = -4, dz/dx = -1"


# ---------------------------------------------------------------- refusals

UNSAFE = [
    "__import__('os').system('echo hi')",
    "x.__class__",
    "x[0]",
    "import os",
    "[x for x in y]",
    "lambda: x",
    "open('/etc/passwd')",
    "sin(x=1)",
    "sin(*x)",
    "'text'",
    "q + x",
    "x < 1",
    "x % 2",
    "x = 1",
    "-" * 200 + "x",
    "x" * 5000,
]


@pytest.mark.parametrize("source", UNSAFE)
def test_unsafe_expressions_in_process(capsys, source):
    status, out, err = run_main(capsys, "trace", "--at", "x=1,y=2", "--", source)
    assert status == 2
    assert out == ""
    assert len(err.splitlines()) == 1 and err.startswith("adcore trace: error: ")
    assert "Traceback" not in err


@pytest.mark.parametrize("source, named", [
    ("__import__('os').system('echo hi')", "attribute access"),
    ("[x for x in y]", "list comprehension"),
    ("lambda: x", "lambda"),
    ("import os", "import"),
    ("q + x", "unknown name 'q'"),
])
def test_unsafe_expressions_in_a_subprocess(source, named):
    proc = run("trace", source, "--at", "x=1,y=2")
    assert proc.returncode != 0
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and named in lines[0], proc.stderr


@pytest.mark.parametrize("at, message", [
    ("a=3,b", "'b' is not of the form name=number"),
    ("a=3,,b=1", "empty entry"),
    ("a=three", "the value of 'a' is not a number: 'three'"),
    ("a=1,a=2", "'a' is given twice"),
    ("1a=2", "'1a' is not a valid name"),
    ("__x=2", "'__x' is not a valid name"),
    ("t3=1", "'t3' is reserved"),
])
def test_malformed_at(capsys, at, message):
    status, out, err = run_main(capsys, "trace", "a", "--at", at)
    assert status == 2 and out == ""
    assert message in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("wrt, message", [
    ("q", "'q' has no value"),
    ("a,,b", "empty entry"),
    ("a,a", "'a' is given twice"),
])
def test_malformed_wrt(capsys, wrt, message):
    status, out, err = run_main(capsys, "trace", "a*b", "--at", "a=1,b=2", "--wrt", wrt)
    assert status == 2 and message in err and len(err.splitlines()) == 1


def test_usage_errors_are_one_line(capsys):
    for args in (["trace"], ["nonsense"], ["trace", "x", "--bogus"]):
        status, out, err = run_main(capsys, *args)
        assert status == 2
        assert len(err.splitlines()) == 1 and "error" in err


def test_malformed_at_in_a_subprocess():
    proc = run("trace", "a", "--at", "a=")
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "adcore trace: error: --at: the value of 'a' is not a number: ''"]


# ---------------------------------------------------------------- demo

def _demo_jacobian(text):
    """The rows z0, z1, z2 of the demo's table: (adcore's [x, y], analytic [x, y])."""
    rows = {}
    for line in text.splitlines():
        m = re.match(r"\s*(z[012])\s+(.*)$", line)
        if m:
            numbers = [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?", m.group(2))]
            rows[m.group(1)] = numbers
    return rows


def test_demo_prints_the_trace_and_the_jacobian():
    proc = run("demo")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    out = proc.stdout
    stripped = [line.strip() for line in out.splitlines()]
    start = stripped.index(SEED_TRACE[0])
    assert stripped[start:start + len(SEED_TRACE)] == SEED_TRACE
    rows = _demo_jacobian(out)
    x, y = 3.0, 5.0
    assert rows == {"z0": [2 * x, 0.0, 2 * x, 0.0], "z1": [y, x, y, x],
                    "z2": [0.0, 2 * y, 0.0, 2 * y]}
    assert "agree" in out


def test_demo_jacobian_comes_from_jacfwd(monkeypatch, capsys):
    import adcore

    real = adcore.jacfwd
    calls = []

    def spy(f, *args, **kwargs):
        calls.append(f)
        return real(f, *args, **kwargs)

    monkeypatch.setattr(adcore, "jacfwd", spy)
    status, out, _ = run_main(capsys, "demo")
    assert status == 0 and calls


# ---------------------------------------------------------------- help, train, entry point

def test_help_lists_the_subcommands():
    proc = run("--help")
    assert proc.returncode == 0
    for command in ("trace", "demo", "train"):
        assert re.search(rf"^\s+{command}\s", proc.stdout, re.M), proc.stdout


def test_no_command_prints_help_and_fails(capsys):
    status, out, _ = run_main(capsys)
    assert status == 2 and "trace" in out


def test_trace_help_lists_the_functions(capsys):
    status, out, _ = run_main(capsys, "trace", "--help")
    assert status == 0 and "atan2" in out and "--wrt" in out


def test_train_passes_its_arguments_through(monkeypatch, capsys):
    seen = []
    fake = types.ModuleType("adcore.nn.train")
    fake.main = lambda argv: seen.append(list(argv)) or 3
    monkeypatch.setitem(sys.modules, "adcore.nn.train", fake)
    assert cli.main(["train", "--epochs", "2", "-h"]) == 3
    assert seen == [["--epochs", "2", "-h"]]


def test_console_script_entry_point():
    from importlib import metadata

    try:
        dist = metadata.distribution("adcore")
    except metadata.PackageNotFoundError:
        pytest.skip("adcore is not installed (running from the source tree)")
    scripts = {ep.name: ep.value for ep in dist.entry_points if ep.group == "console_scripts"}
    assert scripts.get("adcore") == "adcore.cli:main"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX pipe semantics")
def test_a_closed_pipe_ends_the_output_quietly():
    # ~76 kB of trace, more than a pipe holds: the reader closes after one byte
    source = "+".join(["x"] * 1900)
    proc = subprocess.Popen([sys.executable, "-m", "adcore", "trace", source, "--at", "x=1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.read(1) == b"x"
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=120) == 0
    assert "Traceback" not in err and "BrokenPipe" not in err
