"""The start of a run: each single-process run's process forked by the fork server
(:mod:`harness.launch.forkserver`) with the isolation of a new python, and ``start_seconds``.

A run forked from the server gives the record a new ``python -m harness.launch.worker``
gives (``HARNESS_FORKSERVER=0``); its process sees what that one sees (its own session, its
cores, its thread counts, its environment, its log as stdout); a run whose process dies is
``failed`` with the cause on both paths; a run past ``launcher.timeout`` is stopped;
``kill -9`` of ``harness run`` leaves neither the server nor a run's process alive; the
server is single-threaded when it forks, started only for single-process runs that
``harness run`` trains in processes of their own, and a server that fails is one warning
line, the runs starting as before.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from helpers import TINY, wait_for
from harness.launch import forkserver
from harness.records.store import read_records

pytestmark = pytest.mark.skipif(not forkserver.enabled(), reason="the fork server needs Linux")

REPO = Path(__file__).resolve().parents[1]
SMALL = {**TINY, "max_len": 16, "batch_size": 8, "warmup_batches": 0,
         "dataset.subset.train": 16, "dataset.subset.validation": 8}
EXEC = {forkserver.ENV: "0"}

#: heads that tell what their process is, die, or sleep, on their first training step
HEADS = '''
import ctypes, json, os, signal, sys, time
from typing import Literal

import torch

from harness import hookimpl
from harness.base import HeadOptions
from harness.builtin.mean import Mean


def blas_threads():
    out = {}
    for path in sorted({line.split()[-1] for line in open("/proc/self/maps") if "openblas" in line and ".so" in line}):
        lib = ctypes.CDLL(path)
        for name in ("scipy_openblas_get_num_threads64_", "scipy_openblas_get_num_threads", "openblas_get_num_threads"):
            if hasattr(lib, name):
                out[os.path.basename(path)] = getattr(lib, name)()
                break
    return out


class ProbeOptions(HeadOptions):
    act: Literal["tell", "exit", "sigkill", "sleep", "none"] = "none"


class Probe(Mean):
    name = "probe"
    Options = ProbeOptions

    def forward(self, hidden_states, pooled, attention_mask):
        act = self.options.act if self.training else "none"
        if act == "tell" and not os.path.exists(os.path.join(os.environ["FACTS_DIR"], f"{os.getpid()}.json")):
            facts = {
                "pid": os.getpid(), "ppid": os.getppid(), "sid": os.getsid(0), "pgid": os.getpgid(0),
                "cpus": sorted(os.sched_getaffinity(0)), "torch_threads": torch.get_num_threads(),
                "interop_threads": torch.get_num_interop_threads(), "blas_threads": blas_threads(),
                "env": dict(os.environ), "cwd": os.getcwd(), "stdout": os.readlink("/proc/self/fd/1"),
                "stderr": os.readlink("/proc/self/fd/2"), "cuda": torch.cuda.is_initialized(),
            }
            with open(os.path.join(os.environ["FACTS_DIR"], f"{os.getpid()}.json"), "w") as f:
                json.dump(facts, f)
        if act == "exit":
            os._exit(3)  # no Python error, no record
        if act == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's OOM killer would
        if act == "sleep":
            time.sleep(120)
        return super().forward(hidden_states, pooled, attention_mask)


@hookimpl
def harness_register_heads(register):
    register(Probe)
'''


def _suite(tmp_path: Path, acts: list[str], seeds: list[int] = [1]) -> Path:
    (tmp_path / "probe.py").write_text(HEADS, encoding="utf-8")
    defaults = ", ".join(f"{k}: {v}" for k, v in SMALL.items())
    path = tmp_path / "suite.yaml"
    path.write_text(f"name: start\nplugins: [probe.py]\ndefaults: {{{defaults}, head: probe, dataset: cola}}\n"
                    f"matrix:\n  head.options.act: {acts}\n  seed: {seeds}\n", encoding="utf-8")
    return path


def _run(cli, monkeypatch, tmp_path: Path, out: str, acts: list[str], *args: str, env: dict | None = None,
         seeds: list[int] = [1]):
    with monkeypatch.context() as patch:
        for key, value in (env or {}).items():
            patch.setenv(key, value)
        code, stdout, stderr = cli("run", _suite(tmp_path, acts, seeds), "--out", tmp_path / out, "--no-progress",
                                   "--no-plot", *args)
    return code, stdout + stderr, read_records(tmp_path / out) if (tmp_path / out / "results.jsonl").exists() else []


# ------------------------------------------------------------------ the same record, sooner


def test_a_forked_run_gives_the_record_of_a_new_python_and_starts_sooner(cli, monkeypatch, tmp_path):
    code, text, forked = _run(cli, monkeypatch, tmp_path, "forked", ["none"], seeds=[1, 2, 3])
    assert code == 0, text
    code, text, started = _run(cli, monkeypatch, tmp_path, "exec", ["none"], env=EXEC, seeds=[1, 2, 3])
    assert code == 0, text
    assert "fork server" not in text
    for a, b in zip(forked, started):
        assert a["run_id"] == b["run_id"] and a["status"] == b["status"] == "ok"
        assert a["isolation"] == b["isolation"] == "process"
        assert a["metrics"] == b["metrics"]
        assert [e["train_loss"] for e in a["epochs"]] == [e["train_loss"] for e in b["epochs"]]
        assert a["env"]["torch_threads"] == b["env"]["torch_threads"]
        assert a["start_seconds"] > 0 and b["start_seconds"] > 0
    # the first forked run may wait for the server's imports; the later ones do not import
    assert max(r["start_seconds"] for r in forked[1:]) < min(r["start_seconds"] for r in started), (
        [r["start_seconds"] for r in forked], [r["start_seconds"] for r in started])


def test_in_process_runs_start_no_server_and_have_no_start_seconds(cli, monkeypatch, tmp_path):
    started = []
    monkeypatch.setattr(forkserver, "ForkServer", lambda: started.append(1))
    code, text, records = _run(cli, monkeypatch, tmp_path, "out", ["none"], "--isolation", "none")
    assert code == 0, text
    assert started == []
    assert records[0]["isolation"] == "none" and "start_seconds" not in records[0]  # absent: no process was started


def test_the_server_is_started_only_for_single_process_runs_and_when_not_off(monkeypatch):
    started = []
    monkeypatch.setattr(forkserver, "ForkServer", lambda: started.append(1))
    one, two = (SimpleNamespace(config=SimpleNamespace(world_size=n)) for n in (1, 2))
    forkserver.start([two])  # torchrun's: a new python each
    monkeypatch.setenv(forkserver.ENV, "0")
    forkserver.start([one])
    assert started == [] and forkserver._server is None
    monkeypatch.delenv(forkserver.ENV)
    try:
        forkserver.start([two, one])
        assert started == [1]
    finally:
        forkserver._server = None


# -------------------------------------------------------------- what the run's process sees


def _facts(cli, monkeypatch, tmp_path: Path, name: str, *args: str, env: dict | None = None) -> tuple[dict, dict]:
    facts_dir = tmp_path / f"facts-{name}"
    facts_dir.mkdir()
    monkeypatch.setenv("FACTS_DIR", str(facts_dir))
    code, text, (record,) = _run(cli, monkeypatch, tmp_path, name, ["tell"], *args, env=env)
    assert code == 0 and record["status"] == "ok", text
    (path,) = facts_dir.iterdir()
    return json.loads(path.read_text()), record


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_forked_process_sees_what_a_new_python_sees(cli, monkeypatch, tmp_path, jobs):
    """Its own session, its cores and thread counts (``--jobs 2``: one core, one thread; torch's
    and OpenBLAS's), its environment, working directory and log: those of the new python."""
    forked, record = _facts(cli, monkeypatch, tmp_path, "forked", "--jobs", jobs)
    started, _ = _facts(cli, monkeypatch, tmp_path, "exec", "--jobs", jobs, env=EXEC)
    for facts in (forked, started):
        assert facts["sid"] == facts["pgid"] == facts["pid"]  # a session of its own: Ctrl-C is harness run's
        assert facts["env"]["HARNESS_PARENT_PID"] == str(os.getpid())
        assert facts["stdout"] == facts["stderr"] and facts["stdout"].endswith("/run.log")
        assert not facts["cuda"]
    assert started["ppid"] == os.getpid() and forked["ppid"] != os.getpid()  # forked: the server's child
    if jobs == "2":
        assert forked["cpus"] == record["parallel"]["cpus"] and len(forked["cpus"]) == 1
        assert forked["torch_threads"] == record["parallel"]["threads"] == 1
        assert forked["env"]["OMP_NUM_THREADS"] == "1"
        assert set(forked["blas_threads"].values()) == {1}
    assert forked["blas_threads"]  # numpy's OpenBLAS at least; each as a new python counts its threads
    for key in ("cpus", "torch_threads", "interop_threads", "blas_threads", "cwd"):
        assert forked[key] == started[key], key
    keys = forked["env"].keys() | started["env"].keys()
    unlike = {k for k in keys if forked["env"].get(k) != started["env"].get(k)}
    assert unlike <= {forkserver.ENV, "FACTS_DIR"}, unlike  # what the two runs were given apart


# ------------------------------------------------------------------------- a run that dies


@pytest.mark.parametrize("env", [{}, EXEC], ids=["forked", "new-python"])
def test_a_run_whose_process_dies_is_failed_with_the_cause(cli, monkeypatch, tmp_path, env):
    code, text, records = _run(cli, monkeypatch, tmp_path, "out", ["exit", "sigkill", "none"], env=env)
    assert code == 1, text
    by_act = {r["config"]["head"]["options"]["act"]: r for r in records}
    assert by_act["exit"]["status"] == by_act["sigkill"]["status"] == "failed"
    assert by_act["exit"]["error"] == "the run's process exited with code 3 (no Python error)"
    assert by_act["sigkill"]["error"] == "the run's process was killed by SIGKILL (no Python error)"
    assert Path(by_act["sigkill"]["log"]).is_file()
    assert by_act["none"]["status"] == "ok" and by_act["none"]["start_seconds"] > 0
    assert "start_seconds" not in by_act["exit"]  # absent from a failed run


def test_a_forked_run_past_its_timeout_is_stopped(cli, monkeypatch, tmp_path):
    code, text, (record,) = _run(cli, monkeypatch, tmp_path, "out", ["sleep"], "--set", "launcher.timeout=4")
    assert code == 1, text
    assert record["status"] == "failed"
    assert record["error"] == "the run's process was still running after 4 s (launcher.timeout); stopped"


# ----------------------------------------------------------------------------- the server


def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def test_the_server_has_one_thread_when_it_forks():
    server = forkserver.ForkServer()
    try:
        assert server.wait_ready(), server.problem
        assert _threads(server.proc.pid) == 1
    finally:
        server.close()
    assert server.proc.returncode is not None


def test_a_server_that_fails_is_one_warning_and_the_runs_start_as_before(cli, monkeypatch, tmp_path):
    monkeypatch.setattr(forkserver, "READY_SECONDS", 0.0)  # the first run gives up waiting for its imports
    code, text, records = _run(cli, monkeypatch, tmp_path, "out", ["none"], seeds=[1, 2])
    assert code == 0, text
    assert text.count("warning: the fork server was not ready after 0 s") == 1, text
    assert [r["status"] for r in records] == ["ok", "ok"] and all(r["start_seconds"] > 0 for r in records)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _stdout(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/fd/1")
    except OSError:
        return ""


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    return out


def test_kill_9_of_harness_run_leaves_no_server_and_no_run_process(tmp_path):
    suite, out = _suite(tmp_path, ["sleep"]), tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(REPO), TOKENIZERS_PARALLELISM="false")
    with open(tmp_path / "log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "harness", "run", str(suite), "--out", str(out),
                                 "--no-progress"], stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        def forked() -> list[int]:
            servers = [p for p in _children(proc.pid) if b"harness.launch.forkserver" in
                       Path(f"/proc/{p}/cmdline").read_bytes()]
            return servers + [c for s in servers for c in _children(s)] if servers else []

        def training() -> bool:  # the run's process, its log as stdout (the server's file until its dup2)
            pids = forked()
            return len(pids) == 2 and _stdout(pids[1]).endswith("/run.log")

        assert wait_for(training, timeout=120), (tmp_path / "log").read_text()
        server, run = forked()
    finally:
        proc.kill()
        proc.wait()
    assert wait_for(lambda: not _alive(server) and not _alive(run), timeout=30), (_alive(server), _alive(run))
