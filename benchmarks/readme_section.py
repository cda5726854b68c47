"""Write the README's "Performance" section from a saved run:

    python benchmarks/run.py --out benchmarks/results/latest.txt \
        --json benchmarks/results/latest.json
    python benchmarks/readme_section.py benchmarks/results/latest.json ["a note"]

Replaces only the text from "## Performance" to the next "## " heading (or
appends the section), so the rest of README.md is untouched.
"""

import json
import os
import sys

HEADING = "## Performance"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def table(run):
    """The summary table, rendered again from the saved rows."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from run import markdown
    from workloads import BY_NAME

    return markdown([(BY_NAME[r["workload"]], r) for r in run["rows"]
                     if r["workload"] in BY_NAME])


def section(run, note=""):
    lines = [
        HEADING,
        "",
        f"Measured on {run['date']} with `{run['command']}` on {run['machine']}",
        f"(a shared machine), CPython {run['python']}, one BLAS/OpenMP/XLA/torch thread;",
        f"{run['versions']}.",
        "Each figure is the median of the per-pair ratios to a baseline timed alternately",
        f"in the same process, by {run.get('clock', 'wall time')} (lower is better), after "
        "checking the result against an",
        "independent reference; jax's jit compile time is excluded. The full report,",
        "with times per call or per operation and the quartiles of the ratios, is",
        "`benchmarks/results/latest.txt`; the method is in `benchmarks/README.md`.",
        "Targets are those of issues 2-9. In the adcore column, the plain figure is the",
        "everyday API (`Dual`, `jvp`, `grad`, `jacobian`, `value_and_grad`); *replay* is",
        "a tape recorded once by `adcore.record` and differentiated at the point by",
        "`tape.gradient` (for the SGD steps: `nn.ReplayedStep`, the step `python -m adcore",
        "train` takes); *forward*/*reverse* force the Jacobian's mode.",
        "",
    ]
    if note:
        lines += [note, ""]
    lines += table(run)
    lines += [
        "",
        "```",
        "pip install -r benchmarks/requirements.txt   # the peers; each is skipped when missing",
        "python benchmarks/run.py                     # ~10 minutes; --quick for ~3",
        "```",
        "",
    ]
    return "\n".join(lines)


def main(path, note="", readme=os.path.join(ROOT, "README.md")):
    with open(path) as fh:
        run = json.load(fh)
    with open(readme) as fh:
        text = fh.read()
    new = section(run, note)
    start = text.find("\n" + HEADING + "\n")
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + new
    else:
        end = text.find("\n## ", start + 1)
        rest = text[end + 1:] if end >= 0 else ""
        text = text[:start + 1] + new + ("\n" + rest if rest else "")
    with open(readme, "w") as fh:
        fh.write(text)


if __name__ == "__main__":
    main(*sys.argv[1:])
