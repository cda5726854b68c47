"""The long run of the property-based differential tests.

    python tools/long_property_run.py                 # 10**4 programs, seeds 0..9999
    python tools/long_property_run.py --count 500 --start 20000 --show 3

Each seed gives one random program over the rule table (up to 8 operations,
scalars and small broadcasting arrays; for odd seeds array primitives too, for
seeds 2 and 3 mod 4 Python ``if``s on the program's values) and a point;
``check_program`` of tests/test_properties.py differentiates it by forward mode
(jacfwd in three chunk sizes, jvp, jacobian(mode="forward")), reverse mode
(jacrev and grad: one sweep per output row; Tape.jacobian_rows and
jacobian(mode="reverse"): all rows in one stacked sweep), a replayed tape (at
the point, nearby, after to_bytes/from_bytes) and central finite differences.
It also replays the tape at a batch of points (the point, nearby, -x, random
points, one across an ``if`` where it finds one) by tape.map, jacobian_map and
gradient_map with 1 and 2 threads: each row must equal a single replay bitwise,
and exactly the rows that take another branch are NaN and flagged ("mask") or
listed in BranchChangedError.rows ("raise").  Any disagreement (or an
unexpected exception) is a mismatch.  Prints "N programs, M mismatches" and a
line of counts; exits 1 on a mismatch.  Uses the installed adcore (or
PYTHONPATH).
"""

from __future__ import annotations

import argparse
import collections
import pathlib
import random
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))

import test_properties as props  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=10 ** 4, help="programs to check")
    ap.add_argument("--start", type=int, default=0, help="first seed")
    ap.add_argument("--show", type=int, default=5, help="mismatches to print in full")
    args = ap.parse_args(argv)

    counts: collections.Counter = collections.Counter()
    mismatches = []
    t0 = time.perf_counter()
    for seed in range(args.start, args.start + args.count):
        rnd = random.Random(seed)
        # odd seeds: array primitives (sum, matmul, getitem, ...) among the steps too;
        # seeds 2, 3 mod 4: Python ifs (recorded branches) too
        prog = props.random_program(rnd, primitives=bool(seed % 2),
                                    control_flow=bool(seed // 2 % 2))
        xs = props.random_inputs(rnd, prog)
        try:
            result = props.check_program(prog, xs, rnd)
        except Exception as exc:  # a wrong number or an engine error: both count
            mismatches.append((seed, prog, xs, exc))
            continue
        counts.update(result)
        counts["scalar programs" if all(s is None for s in prog.shapes)
               else "array programs"] += 1
    elapsed = time.perf_counter() - t0

    for seed, prog, xs, exc in mismatches[:args.show]:
        print(f"--- seed {seed}: {type(exc).__name__}: {exc}")
        print(prog)
        print("at", xs)
    print(f"{args.count} programs, {len(mismatches)} mismatches")
    print(f"({counts['scalar programs']} scalar and {counts['array programs']} array "
          f"programs; {counts['fd_entries']} Jacobian columns checked by finite differences; "
          f"{counts['replayed_near']} tapes replayed at a nearby point; {counts['singular']} "
          f"points at cbrt(0), checked entry by entry only; {counts['batched_rows']} batched "
          f"rows, {counts['batched_branch_rows']} of them across an if; {elapsed:.0f} s)")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
