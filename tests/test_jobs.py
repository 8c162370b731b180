"""Several runs at once on this machine (``harness run --jobs N``): the same records as one
at a time, the parallelism recorded, every active run on the progress display, Ctrl-C and
``kill -9`` of the parent mid-suite (no finished run lost, none run twice, no run left
training for nobody)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from helpers import TINY, wait_for
from harness.records.store import read_records

REPO = Path(__file__).resolve().parents[1]
#: four quick runs, the seeds their only difference
SMALL = {**TINY, "max_len": 16, "batch_size": 8, "warmup_batches": 0,
         "dataset.subset.train": 32, "dataset.subset.validation": 16}
SEEDS = [1, 2, 3, 4]


def _suite(tmp_path: Path) -> Path:
    path = tmp_path / "suite.yaml"
    defaults = ", ".join(f"{k}: {v}" for k, v in SMALL.items())
    path.write_text(f"name: jobs\ndefaults: {{{defaults}}}\nmatrix:\n  seed: {SEEDS}\n", encoding="utf-8")
    return path


def _by_seed(out: Path) -> dict[int, dict]:
    return {r["config"]["seed"]: r for r in read_records(out)}


def test_two_jobs_give_the_records_of_one_job_and_record_the_parallelism(cli, tmp_path, monkeypatch):
    suite = _suite(tmp_path)
    # one at a time, in this process, on one thread: the reference
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code, _, err = cli("run", suite, "--out", tmp_path / "one", "--no-progress", "--isolation", "none")
    finally:
        torch.set_num_threads(threads)
    assert code == 0, err
    # two at a time on the two cores, one thread each
    code, _, err = cli("run", suite, "--out", tmp_path / "two", "--no-progress", "--jobs", "2")
    assert code == 0, err
    assert err.count(": ok in ") == len(SEEDS)  # one line per finished run

    one, two = _by_seed(tmp_path / "one"), _by_seed(tmp_path / "two")
    assert sorted(one) == sorted(two) == SEEDS
    for seed in SEEDS:
        a, b = one[seed], two[seed]
        assert a["run_id"] == b["run_id"] and a["status"] == b["status"] == "ok"
        assert a["metrics"] == b["metrics"]
        assert [e["train_loss"] for e in a["epochs"]] == [e["train_loss"] for e in b["epochs"]]
        assert a["parallel"] == {"executor": "here", "jobs": 1, "beside": 0, "threads": 1, "cpus": None, "gpus": None}
        par = b["parallel"]
        assert (par["executor"], par["jobs"], par["threads"], b["env"]["torch_threads"]) == ("here", 2, 1, 1)
        assert len(par["cpus"]) == 1 and par["gpus"] is None
        assert par["beside"] in (0, 1)
    # the first two runs started together, each on a core of its own
    assert two[1]["parallel"]["beside"] == two[2]["parallel"]["beside"] == 1
    assert two[1]["parallel"]["cpus"] != two[2]["parallel"]["cpus"]


def _run(device: str = "cpu", nproc: int = 1) -> SimpleNamespace:
    return SimpleNamespace(config=SimpleNamespace(device=device, launcher=SimpleNamespace(nproc=nproc)),
                           where=lambda key: f"suite.yaml:2: {key}")


def test_the_cores_are_split_between_the_jobs_and_given_back():
    from harness.launch.executors import Devices

    devices = Devices(2, cores=[0, 1, 2, 3])
    a, b = devices.take(_run()), devices.take(_run(nproc=2))
    assert (a.cpus, a.threads) == ([0, 1], 2)
    assert (b.cpus, b.threads) == ([2, 3], 1)  # a thread per rank of a data-parallel run
    assert devices.take(_run()) is None  # both slots taken: the next run waits
    devices.give_back(a)
    assert devices.take(_run()).cpus == [0, 1]
    assert Devices(1).take(_run()).cpus is None  # --jobs 1: the run sees the machine as it is
    crowded = Devices(3, cores=[0, 1])  # more jobs than cores: they share cores, a thread each
    assert [crowded.take(_run()).cpus for _ in range(3)] == [[0], [1], [0]]


def test_gpus_go_one_run_per_gpu_or_nproc_per_data_parallel_run():
    from harness.errors import HarnessError
    from harness.launch.executors import Devices

    devices = Devices(4, gpus=[0, 1, 2, 3])
    one, two = devices.take(_run("cuda")), devices.take(_run("cuda", nproc=2))
    assert (one.gpus, two.gpus) == ([0], [1, 2])
    assert devices.take(_run("cuda", nproc=2)) is None  # one GPU left: it waits
    named = devices.take(_run("cuda:3"))
    assert named.gpus is None and devices.take(_run("cuda")) is None
    devices.give_back(two)
    assert devices.take(_run("cuda", nproc=2)).gpus == [1, 2]
    with pytest.raises(HarnessError, match="suite.yaml:2: device: the run needs cuda x8 and this machine has 4 GPU"):
        devices.take(_run("cuda", nproc=8))


def test_jobs_with_isolation_none_is_refused(cli, tmp_path):
    code, _, err = cli("run", _suite(tmp_path), "--out", tmp_path / "out", "--jobs", "2", "--isolation", "none")
    assert code == 2
    assert "--jobs runs each run in a process of its own; --isolation none" in err
    assert not (tmp_path / "out").exists()


def test_the_progress_display_shows_every_active_run(monkeypatch):
    from rich.console import Console

    from harness.render import progress as progress_module

    screen = io.StringIO()
    terminal = Console(file=screen, force_terminal=True, width=160)
    monkeypatch.setattr(progress_module, "consoles", SimpleNamespace(err=terminal))
    with progress_module.RichProgress(3, jobs=2) as display:
        first, second = display.start_run("cola seed=1"), display.start_run("cola seed=2")
        first.start_epoch(1, 2, 10)
        first.advance(4)
        second.start_epoch(1, 2, 10)
        display.progress.refresh()
        shown = screen.getvalue()
        assert "cola seed=1" in shown and "cola seed=2" in shown and "2 running" in shown
        assert "4/10" in shown and "0/10" in shown and "epoch 1/2" in shown
        display.end_run(first, None)
        assert [b.label for b in display.active] == ["cola seed=2"]


# ------------------------------------------------------------- signals and kill -9 of the parent


def _start(suite: Path, out: Path, log: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO), TOKENIZERS_PARALLELISM="false")
    with open(log, "wb") as f:
        return subprocess.Popen([sys.executable, "-m", "harness", "run", str(suite), "--out", str(out), "--jobs", "2",
                                 "--no-progress"], stdout=f, stderr=subprocess.STDOUT, env=env)


def _workers(out: Path) -> list[int]:
    """The pids of run processes working in ``out``: their stdout is a ``run.log`` of a work
    directory there (``python -m harness.launch.worker <out>/.launch-...``, or a child of the
    fork server, whose command line is the server's)."""
    pids, prefix = [], os.path.realpath(out) + "/.launch-"
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stdout = os.readlink(entry / "fd" / "1")
        except OSError:
            continue
        if stdout.startswith(prefix) and stdout.endswith("/run.log"):
            pids.append(int(entry.name))
    return pids


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc for the run processes")
def test_sigterm_stops_every_run_and_keeps_what_finished(tmp_path):
    suite, out = _suite(tmp_path), tmp_path / "out"
    proc = _start(suite, out, tmp_path / "log")
    assert wait_for(lambda: len(_workers(out)) == 2, timeout=300), (tmp_path / "log").read_text()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 130
    text = (tmp_path / "log").read_text()
    assert "the runs in progress were abandoned" in text and "--jobs 2" in text and "Traceback" not in text
    assert _workers(out) == [], "a run's process outlived the interrupted harness run"
    assert not list(out.glob(".launch-*")), "the interrupted runs' work directories are removed"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc for the run processes")
def test_kill_9_of_the_parent_loses_no_finished_run_and_runs_none_twice(cli, tmp_path):
    suite, out = _suite(tmp_path), tmp_path / "out"
    proc = _start(suite, out, tmp_path / "log")
    results = out / "results.jsonl"
    assert wait_for(lambda: results.exists() and len(read_records(results)) >= 1, timeout=180), \
        (tmp_path / "log").read_text()
    proc.kill()
    proc.wait()
    # its run processes die with it (PR_SET_PDEATHSIG): none trains on for nobody
    assert wait_for(lambda: not _workers(out), timeout=30), _workers(out)
    kept = {r["run_id"]: r for r in read_records(results)}
    # a run that finished after the kill but before its record was stored: the next run stores it
    orphaned = {json.loads(p.read_text())["run_id"] for p in out.glob(".launch-*/record.json")}

    code, _, err = cli("run", suite, "--out", out, "--no-progress", "--jobs", "2")
    assert code == 0, err
    final = read_records(results)
    assert sorted(r["config"]["seed"] for r in final) == SEEDS  # every run once
    assert all(r["status"] == "ok" for r in final)
    by_id = {r["run_id"]: r for r in final}
    assert all(by_id[i] == r for i, r in kept.items()), "a run stored before the kill was run again"
    # the second command trained only what was neither stored nor orphaned
    assert err.count(": ok in ") == len(SEEDS) - len(kept) - len(orphaned - set(kept)), err
    for run_id in orphaned - set(kept):
        assert by_id[run_id]["parallel"]["beside"] is None  # how many ran beside it died with the parent
    assert not list(out.glob(".launch-*"))
