"""The precision is chosen by the hardware: ``auto`` is bf16 only where it is computed natively.

The CPU's flags are faked (``harness.loop.env.cpu_flags``), so each branch is tested on any
machine: a CPU without AVX512-BF16, AMX or Arm BF16 gets fp32, one with them bf16; a GPU
as before. The record says what was chosen and why; no shipped suite forces bf16 on a CPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import harness.loop.env as measure
from helpers import tiny_sets

REPO = Path(__file__).resolve().parents[1]
SUITES = sorted((REPO / "suites").glob("*.yaml"))
ZEN3 = "fpu sse sse2 avx avx2 fma bmi2"  # AVX2 only: bf16 emulated
ZEN4 = ZEN3 + " avx512f avx512bw avx512_bf16"


@pytest.fixture
def cpu(monkeypatch: pytest.MonkeyPatch):
    """``cpu("flags ...")``: this process sees a CPU with these flags."""

    def fake(flags: str) -> None:
        monkeypatch.setattr(measure, "cpu_flags", lambda: frozenset(flags.split()))

    return fake


@pytest.mark.parametrize("flags, precision, reason", [
    (ZEN3, "fp32", "auto: CPU without native bf16"),
    (ZEN4, "bf16", "auto: CPU with native bf16 (avx512_bf16)"),
    (ZEN3 + " amx_bf16 amx_tile", "bf16", "auto: CPU with native bf16 (amx_bf16)"),
    ("fp asimd sve bf16 i8mm", "bf16", "auto: CPU with native bf16 (bf16)"),  # Arm's Features line
    ("", "fp32", "auto: CPU without native bf16"),  # /proc/cpuinfo unreadable
])
def test_auto_on_a_cpu_is_bf16_only_with_native_bf16(cpu, flags, precision, reason):
    cpu(flags)
    assert measure.choose_precision("auto", "cpu") == measure.PrecisionChoice(precision, reason)


def test_a_precision_set_explicitly_is_kept_and_bf16_without_hardware_says_emulated(cpu):
    cpu(ZEN3)
    assert measure.choose_precision("fp32", "cpu").precision == "fp32"
    choice = measure.choose_precision("bf16", "cpu")
    assert choice.precision == "bf16" and "emulated" in choice.reason
    cpu(ZEN4)
    assert measure.choose_precision("bf16", "cpu") == measure.PrecisionChoice("bf16", "set: bf16")


@pytest.mark.parametrize("supported, precision", [(True, "bf16"), (False, "fp32")])
def test_auto_on_a_gpu_follows_the_gpus_bf16_support(monkeypatch, cpu, supported, precision):
    cpu(ZEN3)  # the host CPU does not matter for a GPU run
    monkeypatch.setattr(measure.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(measure.torch.cuda, "is_bf16_supported", lambda: supported)
    monkeypatch.setattr(measure.torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    choice = measure.choose_precision("auto", "cuda")
    assert choice.precision == precision
    assert choice.reason == f"auto: GPU {'with' if supported else 'without'} bf16 (NVIDIA H100 80GB HBM3)"


def test_this_machines_flags_are_read_from_proc_cpuinfo():
    """The real reading, against the kernel's own file read a second way (grep)."""
    if not Path("/proc/cpuinfo").is_file():
        pytest.skip("no /proc/cpuinfo on this platform")
    measure.cpu_flags.cache_clear()
    line = subprocess.run(["grep", "-m1", "-E", "^(flags|Features)", "/proc/cpuinfo"], capture_output=True,
                          text=True).stdout
    assert measure.cpu_flags() == frozenset(line.partition(":")[2].split())


@pytest.mark.parametrize("flags, precision", [(ZEN3, "fp32"), (ZEN4, "bf16")])
def test_validate_the_main_job_shows_the_precision_the_hardware_picks(cli, cpu, flags, precision):
    cpu(flags)
    code, out, err = cli("validate", REPO / "suites" / "max_len.yaml", "--set", "device=cpu")
    assert code == 0, err
    assert f"precision={precision}" in out  # shared by every run: the line above the table
    other = "bf16" if precision == "fp32" else "fp32"
    assert f"precision={other}" not in out


@pytest.mark.parametrize("path", SUITES, ids=lambda p: p.name)
def test_no_shipped_suite_sets_bf16_for_the_cpu(path):
    suite = yaml.safe_load(path.read_text(encoding="utf-8"))
    for section in ("on_cpu", "defaults"):
        assert (suite.get(section) or {}).get("precision") in (None, "auto"), f"{path.name}: {section}.precision"
    for run in suite.get("runs") or []:
        assert run.get("precision") in (None, "auto"), path.name
    assert "precision" not in (suite.get("matrix") or {}), path.name


def test_the_record_says_what_was_chosen_and_why(cli, write_suite, tmp_path):
    """In the run's own process, from the reason the parent resolved (the worker's config is
    already resolved: it could not tell `auto` from a set precision)."""
    suite = write_suite("name: p\ndefaults: {dataset: cola}\n")
    code, _, err = cli("run", suite, "--out", tmp_path / "out", "--no-progress", *tiny_sets())
    assert code == 0, err
    record = json.loads((tmp_path / "out" / "results.jsonl").read_text())
    expected = measure.choose_precision("auto", "cpu")
    assert record["config"]["precision"] == expected.precision
    assert record["env"]["precision_reason"] == expected.reason
    assert record["env"]["cpu_bf16"] is measure.cpu_bf16_native()


def test_runs_that_differ_in_precision_show_it_in_the_table_and_their_lines(cli, write_suite, tmp_path):
    suite = write_suite("name: p\ndefaults: {dataset: cola}\nmatrix: {precision: [fp32, bf16]}\n")
    code, out, err = cli("run", suite, "--out", tmp_path / "out", "--no-progress", *tiny_sets())
    assert code == 0, err
    header = next(line for line in out.splitlines() if "epoch s" in line)
    assert "precision" in header
    lines = [line for line in err.splitlines() if line.startswith("[")]
    assert len(lines) == 2 and " fp32:" in lines[0] and " bf16:" in lines[1], lines
    records = [json.loads(x) for x in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert [r["env"]["precision_reason"] for r in records][0] == "set: fp32"


def test_a_suite_of_one_precision_does_not_name_it_in_its_lines(cli, write_suite, tmp_path):
    suite = write_suite("name: p\ndefaults: {dataset: cola, precision: fp32}\nmatrix: {max_len: [16, 24]}\n")
    code, _, err = cli("run", suite, "--out", tmp_path / "out", "--no-progress", *tiny_sets(max_len=None))
    assert code == 0, err
    assert not any("fp32" in line for line in err.splitlines() if line.startswith("["))


def _spin() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def test_a_machine_already_busy_is_said_before_the_first_run(cli, write_suite, tmp_path):
    suite = write_suite("name: busy\ndefaults: {dataset: cola}\n")
    hog = _spin()
    try:
        code, _, err = cli("run", suite, "--out", tmp_path / "out", "--no-progress", *tiny_sets())
    finally:
        hog.kill()
        hog.wait()
    assert code == 0, err
    lines = err.splitlines()
    warning = next(i for i, line in enumerate(lines) if "the machine is busy before the suite starts" in line)
    first_run = next(i for i, line in enumerate(lines) if line.startswith("[1/1]"))
    assert warning < first_run
    cores = float(lines[warning].split("other processes kept ")[1].split(" of")[0])
    # one spinning process: about one core (more when the machine was busy already)
    assert 0.5 <= cores <= len(os.sched_getaffinity(0)) + 0.1, lines[warning]
