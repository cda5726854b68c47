"""adcore's footprint beside its peers: the wheel's size and the import time
beyond numpy's own.

    python benchmarks/footprint.py --wheel wheelhouse/adcore-*.whl [--check-size]

Import time is measured with ``python -X importtime`` in a fresh process per
repetition, numpy imported first, so the figure is what ``import X`` costs on
top of numpy (median of the repetitions).  Peers (autograd, jax, torch) are
measured where installed and skipped otherwise; for them the size is their
installed size, since their wheels are not at hand.  Run it outside the
checkout so that ``import adcore`` finds the installed package.

Targets (issue 6): wheel <= 1 MiB, import <= 60 ms beyond numpy.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import os
import statistics
import subprocess
import sys

WHEEL_TARGET = 1 << 20          # bytes
IMPORT_TARGET_MS = 60.0
PEERS = {                       # module -> distributions whose files make up its size
    "adcore": ["adcore"],
    "autograd": ["autograd"],
    "jax": ["jax", "jaxlib"],
    "torch": ["torch"],
}


def installed_size(dists: list[str]) -> int | None:
    total = 0
    for name in dists:
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            return None
        for f in dist.files or ():
            path = dist.locate_file(f)
            if os.path.isfile(path):
                total += os.path.getsize(path)
    return total


def import_ms(module: str, repeat: int) -> float:
    """Median cumulative import time of `module` (ms) with numpy already imported."""
    times = []
    for _ in range(repeat):
        proc = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", f"import numpy; import {module}"],
            capture_output=True, text=True, check=True)
        cumulative = None
        for line in proc.stderr.splitlines():
            if not line.startswith("import time:") or "|" not in line:
                continue
            _, cum, name = line.split("|")
            if name.strip() == module and not name[1:].startswith(" "):  # top level only
                cumulative = int(cum.strip())
        if cumulative is None:
            raise RuntimeError(f"no importtime line for {module}:\n{proc.stderr[-2000:]}")
        times.append(cumulative / 1000.0)
    return statistics.median(times)


def human(n: int | None) -> str:
    if n is None:
        return "-"
    if n < 1 << 20:
        return f"{n / 1024:.0f} KiB"
    return f"{n / (1 << 20):.1f} MiB"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--wheel", help="adcore wheel whose size to report")
    ap.add_argument("--repeat", type=int, default=7, help="import-time repetitions (median)")
    ap.add_argument("--check-size", action="store_true",
                    help="exit 1 if the wheel is larger than 1 MiB")
    args = ap.parse_args(argv)

    rows = []
    for module, dists in PEERS.items():
        if importlib.util.find_spec(module) is None:
            rows.append((module, None, None, None))
            continue
        wheel = os.path.getsize(args.wheel) if module == "adcore" and args.wheel else None
        rows.append((module, wheel, installed_size(dists), import_ms(module, args.repeat)))

    numpy_ms = import_ms("numpy", args.repeat)
    print(f"footprint (Python {sys.version.split()[0]}; numpy's own import {numpy_ms:.1f} ms, "
          f"median of {args.repeat})")
    print(f"  {'package':<10} {'wheel':>10} {'installed':>10} {'import beyond numpy':>20}")
    for module, wheel, inst, ms in rows:
        if ms is None:
            print(f"  {module:<10} {'not installed':>43}")
            continue
        print(f"  {module:<10} {human(wheel):>10} {human(inst):>10} {ms:>17.1f} ms")

    adcore_row = rows[0]
    status = 0
    if adcore_row[1] is not None:
        ok = adcore_row[1] <= WHEEL_TARGET
        print(f"  wheel {human(adcore_row[1])} against the 1 MiB target: {'ok' if ok else 'OVER'}")
        if args.check_size and not ok:
            status = 1
    elif args.check_size:
        print("  --check-size needs --wheel", file=sys.stderr)
        status = 2
    if adcore_row[3] is not None:
        ok = adcore_row[3] <= IMPORT_TARGET_MS
        print(f"  import {adcore_row[3]:.1f} ms beyond numpy against the 60 ms target: "
              f"{'ok' if ok else 'OVER'} (timing, not a gate)")
    return status


if __name__ == "__main__":
    sys.exit(main())
