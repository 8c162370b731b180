"""The start of a run, with the fork server and without: ten one-step runs, twice.

    python benchmarks/start_time.py            # both ways; --json FILE keeps the figures

A suite of ten runs of the embedded MiniLM on CoLA that differ in their seed, each one epoch
of one step (``dataset.subset.train`` equal to the batch size) and a small evaluation, is
run by ``harness run`` in a new output folder twice: with the fork server (each run's
process forked from a Python that imported torch, transformers and the loop once;
:mod:`harness.launch.forkserver`) and with ``HARNESS_FORKSERVER=0`` (each run a new ``python
-m harness.launch.worker``, as before the server). For each, the median and range of the
records' ``start_seconds`` (``harness run`` starting the run's process to that process being
ready to call fit: imports done, spec read), the first run's apart (with the server it
waits for the server's imports, which began as the suite started), the median peak memory,
the whole command's wall seconds, and how many runs were measured ``busy``. Run it alone
on the machine: every figure is wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SEEDS = list(range(1, 11))
BATCH = 16
SUITE = f"""name: start
defaults:
  model: minilm
  dataset: cola
  epochs: 1
  batch_size: {BATCH}
  max_len: 64
  warmup_batches: 0
  dataset.subset.train: {BATCH}
  dataset.subset.validation: 32
matrix:
  seed: {SEEDS}
"""
WAYS = {"fork server": {}, "HARNESS_FORKSERVER=0": {"HARNESS_FORKSERVER": "0"}}


def cpu() -> str:
    """This machine's CPU as the docs name it: model, family, cores, bf16 instructions."""
    fields: dict[str, str] = {}
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", "").split())
    bf16 = [f for f in ("avx512_bf16", "amx_bf16") if f in flags]
    family, model = fields.get("cpu family", "?"), fields.get("model", "?")
    return (f"{fields.get('model name', '?')} (family {family}, model {model}), {len(os.sched_getaffinity(0))} cores, "
            f"{', '.join(bf16) or 'no bf16 instructions'}")


def run_suite(suite: Path, out: Path, env: dict[str, str]) -> dict[str, object]:
    """One ``harness run`` of the suite; its figures."""
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "harness", "run", str(suite), "--out", str(out), "--no-progress",
                           "--no-plot"], env=dict(os.environ, **env), capture_output=True, text=True, check=False)
    wall = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"harness run failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    records.sort(key=lambda r: r["config"]["seed"])
    starts = [r["start_seconds"] for r in records]
    peaks = [r["epochs"][0]["peak_memory_bytes"] for r in records]
    return {"wall_seconds": wall, "start_seconds": starts, "median": statistics.median(starts),
            "low": min(starts), "high": max(starts), "first": starts[0],
            "median_after_first": statistics.median(starts[1:]), "peak_memory_mb": statistics.median(peaks) / 1e6,
            "busy_runs": sum(bool(r.get("busy")) for r in records),
            "warnings": [line for line in done.stderr.splitlines() if line.startswith("warning")]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", metavar="FILE", help="write the figures to FILE")
    args = parser.parse_args(argv)
    results: dict[str, object] = {"cpu": cpu()}
    with tempfile.TemporaryDirectory() as tmp:
        suite = Path(tmp) / "start.yaml"
        suite.write_text(SUITE, encoding="utf-8")
        # the libraries read from disk once, before either way is timed
        subprocess.run([sys.executable, "-c", "import harness.launch.worker as w; w.import_all()"], check=True)
        for way, env in WAYS.items():
            results[way] = run_suite(suite, Path(tmp) / way.replace(" ", "-").replace("=", "-"), env)
    print(f"CPU: {results['cpu']}")
    for way in WAYS:
        r = results[way]
        print(f"{way:22s} start_seconds median {r['median']:.2f} s (range {r['low']:.2f}-{r['high']:.2f}; first run "
              f"{r['first']:.2f}, median of the other nine {r['median_after_first']:.2f}), peak memory median "
              f"{r['peak_memory_mb']:.0f} MB, harness run {r['wall_seconds']:.1f} s, {r['busy_runs']} runs busy")
        for line in r["warnings"]:
            print(f"{'':22s} {line}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
