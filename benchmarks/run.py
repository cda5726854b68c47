#!/usr/bin/env python
"""adcore's benchmarks: each workload of issues 2-5, 7 and 9 timed in adcore and in the
peer libraries that are installed, as a ratio to a baseline measured in the
same process (plain Python floats, numpy, scipy's hand-written derivatives, or
hand-written numpy backprop).

    python benchmarks/run.py                  # everything (~10 minutes)
    python benchmarks/run.py --quick          # fewer, shorter repetitions
    python benchmarks/run.py --only sgd       # workloads whose name contains "sgd"
    python benchmarks/run.py --impl adcore    # only the adcore rows
    python benchmarks/run.py --list           # the workloads and implementations

Method (DESIGN.md, "Benchmarking on these machines"): one thread for BLAS,
OpenMP, XLA and torch; each (workload, implementation) runs in its own
process; ~16 MiB is allocated and freed before timing; the candidate and the
baseline are timed alternately in batches and the figure is the median of the
per-pair ratios.  A result is checked against an independent reference before
it is timed.  Peers that are not installed are skipped with the reason.
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from _timing import one_thread_env  # noqa: E402  (no numpy yet: the child sets threads first)

RESULT = "@@result "
PEERS = {"jax jit": "jax", "torch": "torch", "autograd": "autograd", "ad": "ad",
         "uncertainties": "uncertainties"}
SETTINGS = {
    # pairs of (candidate batch, baseline batch), seconds per batch, cap per case
    # short batches keep the two halves of a pair close in time; many pairs let
    # the median skip the ones a burst of load on the shared machine hit
    "quick": {"pairs": 15, "batch_s": 0.002, "budget_s": 1.5, "timeout": 240},
    "full": {"pairs": 61, "batch_s": 0.005, "budget_s": 8.0, "timeout": 600},
}


# ------------------------------------------------------------------ one case (child)

def run_case(name, label, mode, clock):
    os.environ.update(one_thread_env())
    res = {"workload": name, "impl": label}
    try:
        import traceback

        from _timing import compare, limit_threads, use_clock, warm_allocator

        use_clock(clock)
        from workloads import BY_NAME, CheckFailed, Skip

        w = BY_NAME[name]
        if w.clock:                     # thread rows: CPU time would add up the threads
            use_clock(w.clock)
        factory = dict(w.impls)[label]
        res["threads"] = limit_threads()
        warm_allocator()
        try:
            ctx = w.setup()
            case = factory(ctx)
            limit_threads()                     # pools a peer library brought in
            out = case.probe()
            res["note"] = case.note
            if w.kind == "value":
                res.update(status="ok", value=float(out))
                return res
            if w.check is not None:
                w.check(ctx, out)
            base = case.baseline or w.baseline(ctx)
            s = SETTINGS[mode]
            res.update(compare(case.fn, base, s["pairs"], s["batch_s"], s["budget_s"]))
            res["baseline_label"] = case.baseline_label or w.baseline_label
            res["status"] = "ok"
        except Skip as e:
            res.update(status="skipped", reason=str(e))
        except CheckFailed as e:
            res.update(status="wrong", reason=str(e))
        except Exception as e:                              # an API that exists but fails
            tb = traceback.extract_tb(e.__traceback__)[-1]
            where = f"{os.path.basename(tb.filename)}:{tb.lineno}"
            msg = str(e).splitlines()[0] if str(e) else ""
            res.update(status="error", reason=f"{type(e).__name__}: {msg} ({where})")
    except Exception as e:
        res.update(status="error", reason=f"harness: {type(e).__name__}: {e}")
    return res


# ------------------------------------------------------------------ the report (parent)

def fmt_time(t, ops=None):
    if ops:
        return f"{t / ops * 1e9:.1f} ns/op"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6), ("ns", 1e-9)):
        if t >= scale or unit == "ns":
            v = t / scale
            return f"{v:.3g} {unit}" if v < 100 else f"{v:.0f} {unit}"


def verdict(w, r):
    if w.target_max is None or not r["impl"].startswith("adcore"):
        return ""
    x = r["value"] if w.kind == "value" else r["ratio"]
    return "meets" if x <= w.target_max else "MISSES"


def row_text(w, r):
    head = f"    {r['impl']:<26}"
    if r["status"] != "ok":
        word = {"skipped": "skipped", "wrong": "WRONG RESULT", "error": "failed"}[r["status"]]
        return f"{head}{word}: {r['reason']}"
    note = f"   {r['note']}" if r.get("note") else ""
    if w.kind == "value":
        return f"{head}{r['value']:>10.1f} {w.unit:<6}{'':56}{verdict(w, r):<7}{note}"
    spread = f"[{r['ratio_q1']:.3g}-{r['ratio_q3']:.3g}]"
    return (f"{head}{fmt_time(r['t_cand'], w.ops):>13}  vs {r['baseline_label']:<18}"
            f"{fmt_time(r['t_base'], w.ops):>13} {r['ratio']:>9.2f}x {spread:<15} "
            f"{verdict(w, r):<7}{note}")


def markdown(results):
    """One line per workload: the baseline, adcore's ratios, the target, the peers'."""
    rows = {}
    for w, r in results:
        rows.setdefault(w.name, (w, []))[1].append(r)
    out = ["| workload | baseline | adcore | target | peers |", "|---|---|---|---|---|"]
    for w, rs in rows.values():
        ok = [r for r in rs if r["status"] == "ok"]
        base = next((f"{r['baseline_label']}, {fmt_time(r['t_base'], w.ops)}"
                     for r in ok if "t_base" in r and r["impl"].startswith("adcore")),
                    w.baseline_label)

        def cell(r, name):
            if r["status"] != "ok":
                word = {"wrong": "WRONG", "error": "failed"}.get(r["status"], r["status"])
                return f"{name or 'adcore'} {word}"
            x = f"{r['value']:.1f} {w.unit}" if w.kind == "value" else f"{r['ratio']:.2f}x"
            return f"{name} {x}".strip()
        ad = [cell(r, r["impl"][len("adcore"):].strip(" ()")) for r in rs
              if r["impl"].startswith("adcore")]
        peers = [cell(r, r["impl"]) for r in rs if not r["impl"].startswith("adcore")
                 and r["status"] == "ok"]
        out.append(f"| {w.title} | {base} | {'; '.join(ad) or '-'} | {w.target or '-'} | "
                   f"{'; '.join(peers) or '-'} |")
    return out


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{platform.node()}: {cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def versions():
    from importlib import metadata
    out = []
    for dist in ("numpy", "scipy", "autograd", "jax", "torch", "ad", "uncertainties",
                 "threadpoolctl"):
        try:
            out.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            out.append(f"{dist} -")
    return ", ".join(out)


def adcore_where(env):
    code = ("import adcore, os; print(adcore.__version__, "
            "os.path.dirname(os.path.abspath(adcore.__file__)))")
    # from this folder, as the rows import it (not from a checkout in the cwd)
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       cwd=HERE)
    if p.returncode:
        tail = (p.stderr.strip().splitlines() or ["?"])[-1]
        return f"not importable ({tail})"
    return p.stdout.strip()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer, shorter repetitions")
    ap.add_argument("--only", action="append", default=[],
                    help="workloads whose name contains NAME (repeatable, or comma-separated)")
    ap.add_argument("--impl", action="append", default=[],
                    help="implementations whose label (or its first word) is LABEL: "
                         "adcore, torch, jax, autograd, ad, uncertainties")
    ap.add_argument("--markdown", help="also write the summary as a markdown table here")
    ap.add_argument("--json", help="also write every row's raw figures here (JSON)")
    ap.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                    help="time by the process's CPU time (default: robust to other jobs "
                         "on a shared machine) or by wall time")
    ap.add_argument("--out", help="also write the report to this file")
    ap.add_argument("--list", action="store_true", help="list workloads and implementations")
    ap.add_argument("--case", nargs=2, metavar=("WORKLOAD", "IMPL"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    mode = "quick" if args.quick else "full"

    if args.case:
        print(RESULT + json.dumps(run_case(args.case[0], args.case[1], mode, args.clock)),
              flush=True)
        return 0

    from workloads import WORKLOADS

    only = [s for o in args.only for s in o.split(",") if s]
    impls = [s for o in args.impl for s in o.split(",") if s]
    chosen = [w for w in WORKLOADS if not only or any(s in w.name for s in only)]
    if not chosen:
        ap.error(f"no workload matches {only}; see --list")
    if args.list:
        for w in WORKLOADS:
            print(f"{w.name:<18} {w.title}  [{', '.join(l for l, _ in w.impls)}]")
        return 0

    env = one_thread_env()
    lines = []
    out = open(args.out, "w") if args.out else None

    def emit(s=""):
        print(s, flush=True)
        lines.append(s)
        if out:
            out.write(s + "\n")
            out.flush()

    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cmd = " ".join(["python", "benchmarks/run.py"] + (argv if argv is not None else sys.argv[1:]))
    emit(f"adcore benchmarks, {now}")
    emit(f"command:  {cmd}")
    emit(f"machine:  {machine()}")
    emit(f"python:   {platform.python_version()} ({sys.executable})")
    where = adcore_where(env)
    emit(f"adcore:   {where}")
    emit(f"peers:    {versions()}")
    clock = {"cpu": "process CPU time", "wall": "wall time"}[args.clock]
    emit("method:   one thread (BLAS/OpenMP/XLA/torch); each row in its own process; 16 MiB "
         f"allocated+freed first; clock: {clock};")
    emit(f"          candidate and baseline timed alternately, {SETTINGS[mode]['pairs']} pairs "
         f"of ~{SETTINGS[mode]['batch_s'] * 1e3:.0f} ms batches (fewer for slow rows), "
         "median per-call times, ratio = median of per-pair ratios [quartiles];")
    emit("          every result checked against an independent reference before timing.")
    t_start = time.time()
    results = []
    issue = None
    for w in chosen:
        if w.issue != issue:
            issue = w.issue
            emit()
            emit(f"== {issue} ==")
        tgt = f" (target {w.target})" if w.target else ""
        emit(f"  {w.name}: {w.title}{tgt}")
        for label, _ in w.impls:
            if impls and not any(label == s or label.split()[0] == s for s in impls):
                continue
            try:
                p = subprocess.run([sys.executable, os.path.abspath(__file__), "--case",
                                    w.name, label, "--clock", args.clock]
                                   + (["--quick"] if args.quick else []),
                                   env=env, capture_output=True, text=True,
                                   timeout=SETTINGS[mode]["timeout"])
                found = [ln for ln in p.stdout.splitlines() if ln.startswith(RESULT)]
                if found:
                    r = json.loads(found[-1][len(RESULT):])
                else:
                    tail = (p.stderr.strip().splitlines() or ["no output"])[-1]
                    r = {"workload": w.name, "impl": label, "status": "error",
                         "reason": f"process exited {p.returncode}: {tail}"}
            except subprocess.TimeoutExpired:
                r = {"workload": w.name, "impl": label, "status": "error",
                     "reason": f"timed out after {SETTINGS[mode]['timeout']} s"}
            results.append((w, r))
            emit(row_text(w, r))

    emit()
    emit("Summary (adcore rows with a target):")
    emit(f"  {'workload':<18} {'implementation':<26} {'ratio':>10}  {'target':<12} verdict")
    for w, r in results:
        if r["impl"].startswith("adcore") and w.target:
            if r["status"] != "ok":
                emit(f"  {w.name:<18} {r['impl']:<26} {'-':>10}  {w.target:<12} {r['status']}")
                continue
            x = (f"{r['value']:.1f} {w.unit}" if w.kind == "value" else f"{r['ratio']:.2f}x")
            emit(f"  {w.name:<18} {r['impl']:<26} {x:>10}  {w.target:<12} {verdict(w, r)}")
    md = markdown(results)
    emit()
    emit("Summary as a table (ratio to the baseline; lower is better):")
    emit()
    for line in md:
        emit(line)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"date": now, "command": cmd, "machine": machine(), "mode": mode,
                       "clock": clock,
                       "python": platform.python_version(), "adcore": where,
                       "versions": versions(), "markdown": md,
                       "rows": [r for _, r in results]}, fh, indent=1)
    if args.markdown:
        with open(args.markdown, "w") as fh:
            fh.write("\n".join(md) + "\n")
    emit(f"\n{len(results)} rows in {time.time() - t_start:.0f} s")
    if out:
        out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
