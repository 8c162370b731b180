"""Numbers that belong to their run: a process per run, its own peak memory, a run that dies
fails alone, the step-time spread, time to target, and a busy machine said, not hidden.

Each figure is checked against an independent reading where one exists: the kernel's
account of the child process (``getrusage(RUSAGE_CHILDREN)`` read by a second process),
the epoch's own clock for the step times, the record's own counts for the rates.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import tiny_sets
from harness.loop.measure import BUSY_CORES, LoadProbe
from harness.records.store import read_records

REPO = Path(__file__).resolve().parents[1]


def _records(out: Path) -> list[dict]:
    return read_records(out)


# ---------------------------------------------------------------- memory is the run's own


MEMORY_SUITE = """
name: memory
defaults: {{dataset: cola, strategy: fixed, batch_size: 32, epochs: 1, warmup_batches: 0}}
runs:
  - {{model: bert-tiny, max_len: 32, seed: 1}}
  - {{model: {big}, max_len: 256, seed: 1}}
  - {{model: bert-tiny, max_len: 32, seed: 2}}
"""


def test_the_same_configuration_first_and_last_has_the_same_peak_memory(cli, write_suite, tmp_path):
    """In one process the peak could only grow along the suite; each run's own process
    gives the first and the last run (same configuration, another seed) the same figure,
    though a run between them took far more memory."""
    suite = write_suite(MEMORY_SUITE.format(big="minilm"))
    out = tmp_path / "out"
    code, _, err = cli("run", suite, "--out", out, "--no-progress",
                       *tiny_sets(model=None, max_len=None, batch_size=None, **{"dataset.subset.train": 96}))
    assert code == 0, err
    first, big, last = _records(out)
    peaks = [r["epochs"][0]["peak_memory_bytes"] for r in (first, big, last)]
    assert all(r["epochs"][0]["peak_memory_kind"] == "rss" for r in (first, big, last))
    assert all(r["isolation"] == "process" for r in (first, big, last))
    assert peaks[1] > 1.3 * peaks[0], f"the run between should take much more memory: {peaks}"
    assert abs(peaks[2] - peaks[0]) <= 0.10 * peaks[0], f"first and last differ by more than 10%: {peaks}"


def test_peak_memory_agrees_with_the_kernels_account_of_the_runs_process(write_suite, tmp_path, data_dir):
    """A second process runs the suite and reads getrusage(RUSAGE_CHILDREN): the peak resident
    set of its only child, the run's process. The record's per-epoch peak is at most that
    (the process's whole life) and close to it (a tiny model's epoch is most of its life)."""
    suite = write_suite("name: one\ndefaults: {dataset: cola}\n")
    out = tmp_path / "out"
    script = (
        "import json, resource, sys\n"
        "from harness.cli import main\n"
        "code = main(sys.argv[1:])\n"
        "print(json.dumps({'code': code, 'maxrss_kib': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))\n"
    )
    argv = ["run", str(suite), "--out", str(out), "--no-progress", "--no-plot", *tiny_sets()]
    proc = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, HARNESS_DATA_DIR=str(data_dir)), check=False)
    assert proc.returncode == 0, proc.stderr
    reading = json.loads(proc.stdout.strip().splitlines()[-1])
    assert reading["code"] == 0
    (record,) = _records(out)
    peak = record["epochs"][0]["peak_memory_bytes"]
    child = reading["maxrss_kib"] * 1024
    assert peak <= child * 1.001, (peak, child)
    assert peak >= 0.7 * child, (peak, child)


# ------------------------------------------------------------------ a run that dies, alone

DYING_HEADS = """
import ctypes
import os
import signal
from typing import Literal

from harness import hookimpl
from harness.base import HeadOptions
from harness.builtin.mean import Mean


class DyingOptions(HeadOptions):
    death: Literal["none", "sigkill", "abort"] = "none"


class Dying(Mean):
    name = "dying"
    Options = DyingOptions

    def forward(self, hidden_states, pooled, attention_mask):
        if self.training and self.options.death == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's OOM killer would
        if self.training and self.options.death == "abort":
            ctypes.CDLL(None).abort()  # a native library giving up: SIGABRT, no Python error
        return super().forward(hidden_states, pooled, attention_mask)


@hookimpl
def harness_register_heads(register):
    register(Dying)
"""


def test_a_run_whose_process_dies_is_failed_with_its_signal_and_the_suite_goes_on(cli, write_suite, tmp_path):
    (tmp_path / "dying.py").write_text(DYING_HEADS)
    suite = write_suite(
        """
        name: deaths
        plugins: [dying.py]
        defaults: {dataset: cola, head: dying}
        matrix:
          head.options.death: [sigkill, abort, none]
        """
    )
    out = tmp_path / "out"
    code, stdout, stderr = cli("run", suite, "--out", out, "--no-progress", *tiny_sets())
    assert code == 1, stderr  # runs failed: exit 1, and the suite went on
    assert "Traceback" not in stdout + stderr
    by_death = {r["config"]["head"]["options"]["death"]: r for r in _records(out)}
    killed, aborted, ok = by_death["sigkill"], by_death["abort"], by_death["none"]
    assert killed["status"] == aborted["status"] == "failed"
    assert "was killed by SIGKILL" in killed["error"]
    assert "was killed by SIGABRT" in aborted["error"]
    assert Path(killed["log"]).is_file() and Path(aborted["log"]).is_file()
    assert ok["status"] == "ok" and ok["metrics"]
    assert "was killed by SIGKILL" in stdout  # the table says why


# ------------------------------------------------------------------ what a record measures


def test_step_times_rates_and_time_to_target(cli, write_suite, tmp_path):
    suite = write_suite(
        """
        name: figures
        defaults: {dataset: cola, epochs: 2}
        runs:  # another seed: `target` is not part of the run id, so it alone makes no new run
          - {seed: 1, target: {accuracy: 0.0}}
          - {seed: 2, target: {accuracy: 0.0, mcc: 2.0}}
        """
    )
    out = tmp_path / "out"
    code, _, err = cli("run", suite, "--out", out, "--no-progress", *tiny_sets(epochs=None))
    assert code == 0, err
    reached, never = _records(out)
    for r in (reached, never):
        seconds = sum(e["train_seconds"] for e in r["epochs"])
        for e in r["epochs"]:
            spread = e["step_seconds"]
            assert 0 < spread["p50"] <= spread["p90"] <= spread["p99"] <= spread["max"]
            # the steps are most of the epoch's clock (batches are collated before it starts)
            assert spread["mean"] * e["steps"] <= e["train_seconds"] * 1.001
            assert spread["mean"] * e["steps"] >= 0.5 * e["train_seconds"]
            assert e["samples"] == 64  # the training subset, once per epoch
        assert r["train_samples_per_second"] == pytest.approx(128 / seconds)
        assert r["train_steps_per_second"] == pytest.approx(sum(e["steps"] for e in r["epochs"]) / seconds)
        assert r["total_flos"] == pytest.approx(sum(e["train_flops"] for e in r["epochs"]))
        low, high = r["metrics_ci95"][r["main_metric"]]
        assert low <= r["metrics"][r["main_metric"]] <= high
    first = reached["epochs"][0]
    assert reached["target"] == {"thresholds": {"accuracy": 0.0}, "reached": True, "epoch": 1,
                                 "train_seconds": first["train_seconds"]}
    assert never["target"]["reached"] is False and never["target"]["epoch"] is None


def test_a_target_naming_a_metric_the_dataset_lacks_is_refused(cli, write_suite, tmp_path):
    suite = write_suite("name: t\ndefaults: {dataset: cola, target: {f1: 0.5}}\n")
    code, _, err = cli("run", suite, "--out", tmp_path / "out", "--no-progress", *tiny_sets())
    assert code == 2
    assert "defaults.target: dataset 'cola' reports no metric 'f1' (it reports mcc, accuracy)" in err


# ---------------------------------------------------------------- a busy machine is said


def _burn(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def test_a_run_on_a_busy_machine_is_flagged_and_a_quiet_one_is_not(cli, write_suite, tmp_path, monkeypatch):
    suite = write_suite("name: load\ndefaults: {dataset: cola}\n")
    # long enough to judge (a second of training or more), on one thread: beside a process
    # that spins on another core, a run's threads would only wait for each other
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    sets = tiny_sets(**{"dataset.subset.train": 4096})
    hogs = _burn(1)  # one CPU-bound process: a core of other work
    try:
        code, stdout, err = cli("run", suite, "--out", tmp_path / "busy", "--no-progress", *sets)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    assert code == 0, err
    (busy,) = _records(tmp_path / "busy")
    assert busy["busy"] is True, busy["load"]
    assert busy["load"]["other_cores"] >= 0.25
    assert "(busy)" in stdout and "busy" in err  # the table and the run's line say so

    # the quiet half needs a quiet machine: measure the quiet there is (another job beside
    # the tests makes every run busy), and say so rather than fail
    probe = LoadProbe()
    probe.start()
    load = probe.other_cores(at_least=1.0)
    if load is not None and load[0] >= BUSY_CORES:
        pytest.skip(f"the machine is busy without the test's own load: other processes kept {load[0]:.1f} cores "
                    "busy, so no run here can be quiet")
    code, stdout, err = cli("run", suite, "--out", tmp_path / "quiet", "--no-progress", *sets)
    assert code == 0, err
    (quiet,) = _records(tmp_path / "quiet")
    assert quiet["busy"] is False, quiet["load"]
    assert "(busy)" not in stdout


# ---------------------------------------------------------------- output that says what happened


def test_each_finished_run_is_a_line_as_it_finishes_and_a_rerun_says_what_it_skipped(cli, write_suite, tmp_path):
    suite = write_suite("name: lines\ndefaults: {dataset: cola}\nmatrix: {max_len: [16, 24]}\n")
    out = tmp_path / "out"
    code, _, err = cli("run", suite, "--out", out, "--no-progress", *tiny_sets(max_len=None))
    assert code == 0, err
    lines = [line for line in err.splitlines() if line.startswith("[")]
    assert len(lines) == 2
    assert lines[0].startswith("[1/2] cola fixed linear L=16 seed=42: ok in ") and "epoch " in lines[0]
    assert lines[1].startswith("[2/2] cola fixed linear L=24 seed=42: ok in ") and "mcc " in lines[1]

    code, _, err = cli("run", suite, "--out", out, "--no-progress", *tiny_sets(max_len=None))
    assert code == 0
    assert f"2 of 2 runs already done in {out}: skipped (--rerun runs them again)" in err


def test_the_in_process_mode_records_where_it_ran(cli, write_suite, tmp_path):
    suite = write_suite("name: debug\ndefaults: {dataset: cola}\n")
    code, _, err = cli("run", suite, "--out", tmp_path / "out", "--no-progress", "--isolation", "none", *tiny_sets())
    assert code == 0, err
    (record,) = _records(tmp_path / "out")
    assert record["isolation"] == "none" and record["status"] == "ok"


# ---------------------------------------------------------------- the GPU's device-level peak


def test_the_device_memory_sampler_keeps_nvmls_peak(monkeypatch):
    """No GPU here: a stand-in for nvidia-ml-py's module reports a rising and falling
    device memory; the sampler keeps the peak, on the GPU CUDA_VISIBLE_DEVICES names."""
    import threading
    import types

    import torch

    from harness.loop.measure import DeviceMemorySampler

    used = iter([100, 700, 300] + [200] * 10_000)
    seen = threading.Event()
    asked = []

    def memory_info(handle):
        value = next(used)
        if value == 300:
            seen.set()
        return types.SimpleNamespace(used=value)

    fake = types.SimpleNamespace(
        nvmlInit=lambda: None,
        nvmlDeviceGetHandleByIndex=lambda index: asked.append(index) or f"gpu{index}",
        nvmlDeviceGetMemoryInfo=memory_info,
    )
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    sampler = DeviceMemorySampler(torch.device("cuda", 1), interval=0.001)
    sampler.start()
    assert seen.wait(10)
    assert sampler.stop() == 700
    assert asked == [5]  # torch's cuda:1 is the machine's GPU 5
    assert DeviceMemorySampler(torch.device("cpu")).stop() is None  # a CPU: nothing to sample


def test_a_gpu_shared_with_another_process_makes_the_run_busy(monkeypatch):
    import types

    import torch

    from harness.loop.measure import gpu_other_processes
    from harness.loop.train import load_figures
    from harness.records.record import EpochRecord

    procs = [types.SimpleNamespace(pid=os.getpid()), types.SimpleNamespace(pid=4242)]
    fake = types.SimpleNamespace(
        nvmlInit=lambda: None, nvmlDeviceGetHandleByIndex=lambda index: "gpu",
        nvmlDeviceGetComputeRunningProcesses=lambda handle: procs,
    )
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert gpu_other_processes(torch.device("cuda", 0)) == 1  # 4242, not this process
    assert gpu_other_processes(torch.device("cuda", 0), ours={os.getpid(), 4242}) == 0
    assert gpu_other_processes(torch.device("cpu")) is None

    def epoch(**fields):
        return EpochRecord(epoch=1, eval_seconds=0.1, train_loss=0.5, steps=1, real_tokens=1, padded_tokens=1,
                           peak_memory_bytes=1, **fields)

    quiet = {"train_seconds": 10.0, "other_cpu_seconds": 0.1}
    assert load_figures([epoch(**quiet)], None, None)["busy"] is False
    shared = load_figures([epoch(**quiet, gpu_other_processes=1)], None, None)
    assert shared["busy"] is True and shared["load"].gpu_other_processes == 1
    assert load_figures([epoch(train_seconds=0.2, other_cpu_seconds=0.0)], None, None)["busy"] is None  # too short


ONE_CLASS_HEAD = """
import torch

from harness import hookimpl
from harness.builtin.linear import Linear


class Stuck(Linear):
    name = "stuck"

    def forward(self, hidden_states, pooled, attention_mask):
        # a head so sure of class 0 that no epoch moves it: what an undertrained model does
        return super().forward(hidden_states, pooled, attention_mask) + torch.tensor([50.0, -50.0])


@hookimpl
def harness_register_heads(register):
    register(Stuck)
"""


def test_a_run_that_predicts_one_class_is_marked(cli, write_suite, tmp_path):
    (tmp_path / "stuck.py").write_text(ONE_CLASS_HEAD)
    suite = write_suite("name: stuck\nplugins: [stuck.py]\ndefaults: {dataset: cola}\nmatrix: {head: [stuck, linear]}\n")
    out = tmp_path / "out"
    code, stdout, err = cli("run", suite, "--out", out, "--no-progress", *tiny_sets(lr=1.0e-6))
    assert code == 0, err
    stuck, linear = _records(out)
    assert stuck["epochs"][-1]["predicted_classes"] == 1 and stuck["one_class"] is True
    assert stuck["metrics"]["mcc"] == 0.0
    assert linear["one_class"] == (linear["epochs"][-1]["predicted_classes"] == 1)
    row = next(line for line in stdout.splitlines() if "│ stuck" in line)
    assert "ok (one class)" in row
    assert "it predicts one class for every example" in err


BRACKETED_HEAD = """
from harness import hookimpl
from harness.builtin.linear import Linear


class Bracketed(Linear):
    name = "bracketed"

    def forward(self, hidden_states, pooled, attention_mask):
        raise RuntimeError("[/__w/pytorch/third_party/gloo/pair.cc:553] Connection closed by peer")


@hookimpl
def harness_register_heads(register):
    register(Bracketed)
"""


def test_a_failed_runs_line_shows_its_error_as_written(cli, write_suite, tmp_path):
    """An error holding brackets (gloo's file:line) is text in the run's line, not rich markup."""
    (tmp_path / "bracketed.py").write_text(BRACKETED_HEAD)
    suite = write_suite("name: b\nplugins: [bracketed.py]\ndefaults: {dataset: cola, head: bracketed}\n")
    code, _, err = cli("run", suite, "--out", tmp_path / "out", "--no-progress", "--isolation", "none", *tiny_sets())
    assert code == 1, err
    assert "[1/1] cola fixed bracketed L=32 seed=42: failed in " in err
    assert "RuntimeError: [/__w/pytorch/third_party/gloo/pair.cc:553] Connection closed by peer" in err
