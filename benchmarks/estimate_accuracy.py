"""How good ``harness estimate`` is: its predictions held against the runs they predict.

    python benchmarks/estimate_accuracy.py suites/max_len.yaml --out /tmp/est     # calibrating from nothing
    python benchmarks/estimate_accuracy.py suites/mrpc.yaml --out /tmp/mrpc --calibration /tmp/est/calibration.json

1. ``harness estimate SUITE`` with a calibration file (a fresh one in ``--out`` unless
   ``--calibration`` names one, which is then used without probing), timed as a user sees it;
2. ``harness run SUITE --estimate`` with that calibration (no probe), timed likewise, each
   record keeping what was predicted for it before it trained;
3. a table of predicted and measured mean epoch time and peak memory per run, with the
   error (predicted / measured - 1), the median and largest absolute errors, and the time
   the estimate took against the suite's, with the CPU it ran on.

Run it alone on the machine: another process beside it changes both halves.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


def cpu() -> str:
    """``AMD EPYC (family 26, model 2), 2 cores, avx512_bf16``: the CPU's name, family and
    model, cores and bf16 flags."""
    name, flags, ids = "unknown CPU", set(), {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and name == "unknown CPU":
                name = value.strip()
            if key.strip() == "flags" and not flags:
                flags = set(value.split())
            if key.strip() in ("cpu family", "model") and key.strip() not in ids:
                ids[key.strip()] = value.strip()
    except OSError:
        pass
    bf16 = [f for f in ("avx512_bf16", "amx_bf16") if f in flags] or ["no native bf16"]
    family = f" (family {ids['cpu family']}, model {ids.get('model', '?')})" if "cpu family" in ids else ""
    return f"{name}{family}, {os.cpu_count()} cores, {', '.join(bf16)}"


def timed(cmd: list[str]) -> float:
    print("$", " ".join(cmd), flush=True)
    started = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite")
    parser.add_argument("--out", required=True, help="a folder for the calibration, the estimate and the results")
    parser.add_argument("--calibration", help="use this calibration file (no probe) instead of a fresh one")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    harness = [sys.executable, "-m", "harness"]
    sets = [a for s in args.overrides for a in ("--set", s)]
    calibration = Path(args.calibration) if args.calibration else out / "calibration.json"
    if not args.calibration:
        calibration.unlink(missing_ok=True)
    probe = ["--no-probe"] if args.calibration else []
    estimate_s = timed([*harness, "estimate", args.suite, *sets, "--calibration", str(calibration), *probe,
                        "--format", "csv", "--output", str(out / "estimate.csv")])
    results = out / "results"
    suite_s = timed([*harness, "run", args.suite, *sets, "--out", str(results), "--rerun", "--no-progress",
                     "--estimate", "--calibration", str(calibration), "--no-probe"])
    report(results, estimate_s, suite_s, out / "accuracy.md")
    return 0


def report(results: Path, estimate_s: float, suite_s: float, path: Path) -> None:
    records = [json.loads(line) for line in (results / "results.jsonl").read_text().splitlines() if line.strip()]
    lines = ["| run | dataset | strategy | max_len | predicted epoch s | measured epoch s | error | predicted peak MB | "
             "measured peak MB | error |", "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    time_errors, memory_errors = [], []
    for r in records:
        epochs, predicted = r.get("epochs") or [], r.get("estimate") or {}
        if not epochs or not predicted:
            continue
        measured = statistics.fmean(e["train_seconds"] for e in epochs)
        err = predicted["epoch_seconds"] / measured - 1
        time_errors.append(err)
        peak = max(e["peak_memory_bytes"] for e in epochs)
        mem = predicted.get("peak_memory_bytes")
        mem_err = mem / peak - 1 if mem else None
        if mem_err is not None:
            memory_errors.append(mem_err)
        cfg = r["config"]
        lines.append(f"| {r['run_id']} | {cfg['dataset']['name']} | {cfg['strategy']['name']} | {cfg['max_len']} | "
                     f"{predicted['epoch_seconds']:.2f} | {measured:.2f} | {err:+.1%} | "
                     f"{(mem or 0) / 1e6:.0f} | {peak / 1e6:.0f} | "
                     f"{'' if mem_err is None else f'{mem_err:+.1%}'} |")
    if not time_errors:
        raise SystemExit(f"{results}: no run with a prediction")
    summary = [
        "",
        f"epoch time: median |error| {statistics.median(abs(e) for e in time_errors):.1%}, "
        f"largest {max(abs(e) for e in time_errors):.1%} over {len(time_errors)} runs",
        f"peak memory: median |error| {statistics.median(abs(e) for e in memory_errors):.1%}, "
        f"largest {max(abs(e) for e in memory_errors):.1%}" if memory_errors else "peak memory: not predicted",
        f"harness estimate took {estimate_s:.1f} s, the suite {suite_s:.1f} s: {estimate_s / suite_s:.1%} of it",
        f"busy runs: {sum(1 for r in records if r.get('busy'))} of {len(records)}",
        f"on {cpu()}; torch {records[0]['env'].get('torch')}, {records[0]['config']['precision']}",
    ]
    text = "\n".join(lines + summary) + "\n"
    path.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    sys.exit(main())
