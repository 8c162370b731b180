"""Runs as submitit jobs (``harness run --executor slurm|local``): every job stores its
record in the one results file through the store's lock, a resubmission skips finished
runs, a job that dies (``scancel``, a killed job process) leaves a ``failed`` record that
the next submission runs again.

The SLURM test starts a real single-node SLURM (``scripts/slurm/start.sh``: Debian's
slurm-wlm and munge; root and apt needed) and is skipped, saying why, where it cannot; the
same submitit path is always tested through submitit's local executor.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import TINY, wait_for
from harness.records.store import read_records
from harness.launch.slurm import minutes

pytest.importorskip("submitit", reason="the slurm extra (submitit) is not installed")

REPO = Path(__file__).resolve().parents[1]
START = REPO / "scripts" / "slurm" / "start.sh"
SMALL = {**TINY, "max_len": 16, "batch_size": 8, "warmup_batches": 0,
         "dataset.subset.train": 32, "dataset.subset.validation": 16}

#: a head that, the first time (until its marker file exists), kills the process that
#: trains it from (the job's process, the parent of the run's own): a job that dies
#: without storing anything, as one the OOM killer or a node failure takes
KILLER = '''
import os
import signal
from pathlib import Path

from torch import nn

from harness import hookimpl
from harness.base import Head, HeadOptions


class KillerOptions(HeadOptions):
    marker: str = ""


class KillsItsJob(Head):
    name = "kills_its_job"
    Options = KillerOptions

    def __init__(self, options, config, num_labels):
        super().__init__(options, config, num_labels)
        self.classifier = nn.Linear(config.hidden_size, num_labels)

    def forward(self, hidden_states, pooled, attention_mask):
        marker = Path(self.options.marker)
        # only in a run's process, whose parent is the job's (never the harness run itself)
        if self.options.marker and not marker.exists() and os.environ.get("SUBMITIT_EXECUTOR"):
            marker.touch()
            os.kill(os.getppid(), signal.SIGKILL)
        mask = attention_mask.unsqueeze(-1).to(hidden_states.dtype)
        return self.classifier((hidden_states * mask).sum(1) / mask.sum(1))


@hookimpl
def harness_register_heads(register):
    register(KillsItsJob)
'''


def _suite(tmp_path: Path, runs: list[dict]) -> Path:
    (tmp_path / "killer.py").write_text(KILLER, encoding="utf-8")
    defaults = ", ".join(f"{k}: {v}" for k, v in SMALL.items())
    lines = "\n".join(f"  - {json.dumps(r)}" for r in runs)
    path = tmp_path / "suite.yaml"
    path.write_text(f"name: sweep\nplugins: [killer.py]\ndefaults: {{{defaults}, head: kills_its_job}}\n"
                    f"runs:\n{lines}\n", encoding="utf-8")
    return path


def _by_seed(out: Path) -> dict[int, dict]:
    return {r["config"]["seed"]: r for r in read_records(out)}


# ------------------------------------------------------------------------- settings


@pytest.mark.parametrize("value, expected", [(90, 90), ("90", 90), ("1:30:00", 90), ("2-00:00:00", 2880),
                                             ("10:30", 11), ("1-2", 1560)])
def test_slurm_times_are_read_as_minutes(value, expected):
    assert minutes(value) == expected


@pytest.mark.parametrize(
    "section, args, expected",
    [
        ("slurm: {partition: gpu, gpus: 1}\n", [], "suite.yaml:3: slurm.gpus: unknown key 'gpus'"),
        ("slurm: {time: soon}\n", [], "suite.yaml:3: slurm.time: expected minutes or [D-]HH:MM:SS, got 'soon'"),
        ("", ["--slurm", "cpus_per_run=0"], "--slurm cpus_per_run: must be > 0, got 0"),
        ("", ["--slurm", "partition"], "--slurm partition: expected key=value, e.g. --slurm partition=gpu"),
    ],
)
def test_bad_job_settings_are_one_line_naming_the_key(cli, tmp_path, section, args, expected):
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"name: s\ndefaults: {{model: bert-tiny, init: random}}\n{section}", encoding="utf-8")
    code, _, err = cli("run", suite, "--out", tmp_path / "out", "--executor", "local", *args)
    assert code == 2, err
    assert expected in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--slurm", "time=5"], "--slurm goes with --executor slurm"),
        (["--executor", "local", "--jobs", "2"], "--jobs is for runs that `harness run` starts itself"),
        (["--executor", "local", "--no-wait"], "--no-wait goes with --executor slurm"),
    ],
)
def test_options_that_do_not_go_together_are_refused(cli, tmp_path, args, expected):
    suite = tmp_path / "suite.yaml"
    suite.write_text("name: s\ndefaults: {model: bert-tiny, init: random}\n", encoding="utf-8")
    code, _, err = cli("run", suite, "--out", tmp_path / "out", *args)
    assert code == 2 and expected in err, err


def test_without_slurm_commands_the_slurm_executor_says_where_to_run(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    suite = tmp_path / "suite.yaml"
    suite.write_text("name: s\ndefaults: {model: bert-tiny, init: random}\n", encoding="utf-8")
    code, _, err = cli("run", suite, "--out", tmp_path / "out", "--executor", "slurm")
    assert code == 2
    assert "--executor slurm: sbatch is not on the PATH" in err and "scripts/slurm/start.sh" in err


# ------------------------------------------------------------ submitit's local executor


def test_local_jobs_store_their_records_and_a_job_that_died_is_failed_then_rerun(cli, tmp_path):
    marker = tmp_path / "killed-once"
    suite = _suite(tmp_path, [{"seed": 1}, {"seed": 2, "head": {"name": "kills_its_job",
                                                                 "options": {"marker": str(marker)}}}])
    out = tmp_path / "out"
    code, _, err = cli("run", suite, "--out", out, "--executor", "local", "--no-progress", "--export", "tensorboard")
    assert code == 1, err  # a run failed
    assert "submitted 2 local jobs" in err
    first = _by_seed(out)
    ok, died = first[1], first[2]
    assert ok["status"] == "ok" and ok["suite"] == "sweep"
    assert (out / "tensorboard" / ok["run_id"]).is_dir()  # the exporters were switched on in the job too
    assert ok["parallel"]["executor"] == "local" and ok["parallel"]["job_id"] and ok["parallel"]["beside"] is None
    assert died["status"] == "failed" and marker.exists()
    assert died["error"].startswith("local job ") and died["error"].endswith("before the run finished"), died
    ledger = json.loads((out / "slurm" / "jobs.json").read_text())
    assert {e["executor"] for e in ledger.values()} == {"local"} and set(ledger) == {ok["run_id"], died["run_id"]}

    # the same command: the finished run is skipped, the failed one runs again (and now finishes)
    code, _, err = cli("run", suite, "--out", out, "--executor", "local", "--no-progress")
    assert code == 0, err
    assert "1 of 2 runs already done" in err and "submitted 1 local job" in err
    again = _by_seed(out)
    assert again[1] == ok
    assert again[2]["status"] == "ok" and again[2]["parallel"]["job_id"] != ok["parallel"]["job_id"]
    assert len(read_records(out)) == 2
    # the directory is an ordinary results directory
    assert cli("report", out)[0] == 0


# --------------------------------------------------------------- a real single-node SLURM


@pytest.fixture(scope="module")
def slurm() -> None:
    """SLURM on this machine (scripts/slurm/start.sh), or the test skipped with the reason."""
    if shutil.which("bash") is None:
        pytest.skip("no bash to run scripts/slurm/start.sh")
    try:
        started = subprocess.run(["bash", str(START)], capture_output=True, text=True, timeout=1300)
    except subprocess.TimeoutExpired:
        pytest.skip("scripts/slurm/start.sh did not finish in 20 minutes")
    if started.returncode != 0:
        lines = started.stderr.strip().splitlines()
        pytest.skip(f"no SLURM here: {lines[-1] if lines else 'scripts/slurm/start.sh failed'}")


def _squeue_state(job_id: str) -> str:
    out = subprocess.run(["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T"], capture_output=True, text=True)
    return out.stdout.strip()


def test_a_suite_on_slurm_lands_in_one_results_file_and_scancel_leaves_a_failed_run_rerun_next_time(
    slurm, cli, tmp_path
):
    marker = tmp_path / "killed-once"
    suite = _suite(tmp_path, [{"seed": 1}, {"seed": 2},
                              {"seed": 3, "head": {"name": "kills_its_job", "options": {"marker": str(marker)}}}])
    out = tmp_path / "out"
    args = ["run", str(suite), "--out", str(out), "--executor", "slurm", "--no-progress",
            "--slurm", "cpus_per_run=1", "--slurm", "time=10"]
    log = tmp_path / "submit.log"
    with open(log, "wb") as f:
        submitter = subprocess.Popen([sys.executable, "-m", "harness", *args], stdout=f, stderr=subprocess.STDOUT,
                                     env=dict(os.environ, PYTHONPATH=str(REPO)))
    # the array's first task is the suite's first run (seed 1): cancel it while it trains
    ledger = out / "slurm" / "jobs.json"
    assert wait_for(ledger.exists, timeout=120), log.read_text()
    first = next(e["job_id"] for e in json.loads(ledger.read_text()).values() if e["job_id"].endswith("_0"))
    events = out / "slurm" / first / "events.jsonl"
    assert wait_for(lambda: events.exists() and _squeue_state(first) == "RUNNING", timeout=180), log.read_text()
    subprocess.run(["scancel", first], check=True)
    assert submitter.wait(timeout=300) == 1, log.read_text()  # it waited for every job; two runs failed

    records = read_records(out)
    assert len(records) == 3  # one file, every run once
    runs = _by_seed(out)
    cancelled, ok, died = runs[1], runs[2], runs[3]
    assert ok["status"] == "ok" and ok["parallel"]["executor"] == "slurm" and ok["parallel"]["threads"] == 1
    assert cancelled["status"] == "failed" and cancelled["error"].startswith(f"SLURM job {first} "), cancelled
    assert "was cancelled (scancel" in cancelled["error"] or "was stopped (SIGTERM" in cancelled["error"]
    assert died["status"] == "failed" and died["error"].startswith("SLURM job ") and marker.exists(), died
    assert cli("report", out)[0] == 0

    # the same command: the finished run is skipped, the failed ones run again
    code, _, err = cli(*args)
    assert code == 0, err
    assert "1 of 3 runs already done" in err and "submitted 2 slurm jobs" in err
    again = _by_seed(out)
    assert again[2] == ok
    assert again[1]["status"] == again[3]["status"] == "ok"
    assert again[1]["parallel"]["job_id"] != first
    assert len(read_records(out)) == 3


def test_the_start_script_is_idempotent(slurm):
    again = subprocess.run(["bash", str(START)], capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "slurm: up" in again.stderr, again.stderr
