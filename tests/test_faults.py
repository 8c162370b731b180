"""Faults during a suite: out of memory, NaN loss, SIGINT/SIGTERM, kill -9 at random points.

The signal and kill tests run the real CLI (``harness.cli.main``) in child processes. To
keep ten kills within the time budget on two shared CPU cores, the children are forked
from a "zygote": one Python process that imported torch, transformers and the harness
once (and never ran a torch op, so forking it is safe). Each child is a whole
``harness run`` that is then signalled or killed with SIGKILL from here; its runs' processes
are forked by its own fork server (harness.launch.forkserver), and in one signal test
started as new pythons instead (``HARNESS_FORKSERVER=0``).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from helpers import SHARED_DATA, TINY, wait_for
from harness.records.store import read_records

REPO = Path(__file__).resolve().parents[1]
#: smaller than TINY: these tests run many suites
SMALL = {**TINY, "max_len": 16, "batch_size": 8, "warmup_batches": 0,
         "dataset.subset.train": 16, "dataset.subset.validation": 8}


def small_sets() -> list[str]:
    return [arg for key, value in SMALL.items() for arg in ("--set", f"{key}={value}")]

# ----------------------------------------------------------------- OOM and NaN in one suite

FAULTY_HEAD = '''
import torch
from typing import Literal
from torch import nn

from harness import hookimpl
from harness.base import Head, HeadOptions


class FaultyOptions(HeadOptions):
    fault: Literal["none", "oom", "nan"] = "none"


class Faulty(Head):
    """Mean pooling + linear that can fail on purpose: out of memory, or NaN logits."""

    name = "faulty"
    Options = FaultyOptions

    def __init__(self, options, config, num_labels):
        super().__init__(options, config, num_labels)
        self.classifier = nn.Linear(config.hidden_size, num_labels)

    def forward(self, hidden_states, pooled, attention_mask):
        if self.options.fault == "oom":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        mask = attention_mask.unsqueeze(-1).to(hidden_states.dtype)
        logits = self.classifier((hidden_states * mask).sum(1) / mask.sum(1))
        return logits * float("nan") if self.options.fault == "nan" else logits


@hookimpl
def harness_register_heads(register):
    register(Faulty)
'''


def test_oom_and_nan_are_recorded_and_the_suite_goes_on(cli, write_suite, tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # the table on one line per run
    (tmp_path / "faulty.py").write_text(FAULTY_HEAD, encoding="utf-8")
    suite = write_suite(
        """
        name: faults
        plugins: [faulty.py]
        defaults: {dataset: cola, strategy: fixed, head: faulty}
        matrix:
          head.options.fault: [oom, none, nan]
        """
    )
    out = tmp_path / "out"
    code, stdout, stderr = cli("run", suite, "--out", out, "--no-progress", *small_sets())

    assert code == 1, stderr  # a run failed: exit 1, not 2 (not a user mistake) and no traceback
    assert "Traceback" not in stdout + stderr
    records = {r["config"]["head"]["options"]["fault"]: r for r in read_records(out)}
    assert set(records) == {"oom", "none", "nan"}
    oom, ok, nan = records["oom"], records["none"], records["nan"]
    assert ok["status"] == "ok" and ok["metrics"] and ok["epochs"]
    assert oom["status"] == "failed"
    assert oom["error"] == "out of memory: CUDA out of memory. Tried to allocate 20.00 GiB"
    assert "OutOfMemoryError" in Path(oom["log"]).read_text()  # the traceback is kept for a bug report
    assert nan["status"] == "diverged"
    assert nan["error"] == "train loss became nan in epoch 1"
    assert nan["metrics"] == {}  # a diverged run has no final score
    # the table shows both faults with their reasons
    rows = {line.split("│")[1].strip(): line for line in stdout.splitlines() if line.count("│") > 3}
    assert "failed: out of memory: CUDA out of memory. Tried to allocate 20.00 GiB" in rows["oom"]
    assert "diverged: train loss became nan in epoch 1" in rows["nan"]
    assert "ok" in rows["none"].split("│")[2]

    # resume: the failed run is tried again, the finished ones (ok, diverged) are not
    code, _, _ = cli("run", suite, "--out", out, "--no-progress", *small_sets())
    again = {r["config"]["head"]["options"]["fault"]: r for r in read_records(out)}
    assert code == 1 and len(read_records(out)) == 3
    assert again["none"] == ok and again["nan"] == nan
    assert again["oom"]["started_at"] >= oom["started_at"] and again["oom"]["status"] == "failed"


# ------------------------------------------------------------------------------ the zygote

ZYGOTE = textwrap.dedent(
    """
    import json, os, sys, traceback
    from harness.cli import main
    import harness.launch.runner  # torch, transformers, the loop: imported once, before any fork
    from harness.loop.checkpoints import load_tokenizer
    from harness.registry import load_registry
    load_tokenizer("bert-tiny", "random", None)  # read once; forks share it
    load_registry()
    try:
        import torch.utils.tensorboard  # the exporter of the kill test, imported once too
    except ImportError:
        pass
    print(json.dumps({"ready": os.getpid()}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "run":
            # the log exists before the child does: a kill at once still leaves one to read
            fd = os.open(cmd["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            pid = os.fork()
            if pid == 0:
                os.environ.update(cmd["env"])
                os.dup2(fd, 1)
                os.dup2(fd, 2)
                code = 99
                try:
                    code = main(cmd["argv"])
                except BaseException:
                    traceback.print_exc()
                finally:
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os._exit(code)
            os.close(fd)
            print(json.dumps({"pid": pid}), flush=True)
        elif cmd["op"] == "wait":
            _, status = os.waitpid(cmd["pid"], 0)
            print(json.dumps({"signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
                              "code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None}), flush=True)
    """
)


class Zygote:
    def __init__(self, cwd: Path, env: dict[str, str]):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", ZYGOTE], cwd=cwd, env=env, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )
        self.logs = cwd
        self.count = 0
        assert "ready" in self._reply(), "the zygote did not start"

    def _reply(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the zygote exited with {self.proc.wait()}")
        return json.loads(line)

    def start(self, *argv: object, env: dict[str, str] | None = None) -> tuple[int, Path]:
        """Fork a child running ``harness <argv>`` (``env`` added to its environment); its pid
        and its log (stdout + stderr)."""
        self.count += 1
        log = self.logs / f"child-{self.count}.log"
        command = {"op": "run", "argv": [str(a) for a in argv], "log": str(log), "env": env or {}}
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        return self._reply()["pid"], log

    def wait(self, pid: int) -> dict:
        self.proc.stdin.write(json.dumps({"op": "wait", "pid": pid}) + "\n")
        self.proc.stdin.flush()
        return self._reply()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def zygote(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("zygote")
    env = dict(os.environ, HARNESS_DATA_DIR=str(SHARED_DATA), HARNESS_CACHE_DIR=str(cwd / "cache"), HF_HUB_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    z = Zygote(cwd, env)
    yield z
    z.close()


SEEDS = [1, 2, 3, 4]


def _suite(tmp_path: Path, seeds: list[int] = SEEDS) -> Path:
    path = tmp_path / "suite.yaml"
    defaults = ", ".join(f"{k}: {v}" for k, v in SMALL.items())
    path.write_text(f"name: faults\ndefaults: {{{defaults}}}\nmatrix:\n  seed: {seeds}\n", encoding="utf-8")
    return path


def _check_file(path: Path) -> list[dict]:
    """What any reader must always see: whole lines, each a JSON run record, no run twice."""
    if not path.exists():
        return []
    raw = path.read_bytes()
    assert raw == b"" or raw.endswith(b"\n"), "a partial last line"
    records = [json.loads(line) for line in raw.decode("utf-8").splitlines()]
    assert records == read_records(path)
    ids = [r["run_id"] for r in records]
    assert len(ids) == len(set(ids)), "a run recorded twice"
    return records


# ------------------------------------------------------------------------ SIGINT / SIGTERM


@pytest.mark.parametrize(("sig", "env"), [(signal.SIGINT, {}), (signal.SIGTERM, {}),
                                         (signal.SIGTERM, {"HARNESS_FORKSERVER": "0"})],
                         ids=["SIGINT", "SIGTERM", "SIGTERM-without-the-fork-server"])
def test_signal_stops_cleanly_keeps_finished_runs_and_says_how_to_resume(zygote, tmp_path, sig, env):
    """Each run's process forked by the fork server (harness.launch.forkserver), and once
    started as a new python instead."""
    suite, out = _suite(tmp_path), tmp_path / "out"
    results = out / "results.jsonl"
    pid, log = zygote.start("run", suite, "--out", out, "--no-progress", env=env)
    assert wait_for(lambda: len(_check_file(results)) >= 1, timeout=120), log.read_text()
    os.kill(pid, sig)
    status = zygote.wait(pid)

    text = log.read_text()
    assert status == {"signal": None, "code": 130}, text
    assert "Traceback" not in text
    kept = _check_file(results)
    assert 1 <= len(kept) < len(SEEDS)
    n = len(kept)
    assert f"interrupted: {n} finished run{'s' if n != 1 else ''} kept in {results}" in text
    assert f"To resume: harness run {suite} --out {out}" in text

    pid, log = zygote.start("run", suite, "--out", out, "--no-progress", env=env)
    assert zygote.wait(pid) == {"signal": None, "code": 0}, log.read_text()
    final = _check_file(results)
    assert sorted(r["config"]["seed"] for r in final) == SEEDS
    assert all(r["status"] == "ok" for r in final)
    by_id = {r["run_id"]: r for r in final}
    assert all(by_id[r["run_id"]] == r for r in kept), "a finished run was run again"


# ------------------------------------------------------- kill -9 and SIGTERM at seeded points

#: how many seeded kill points (HARNESS_KILL_POINTS=50 for the deep run docs/errors.md reports)
KILL_POINTS = int(os.environ.get("HARNESS_KILL_POINTS", "10"))
#: where a kill lands: a random moment after the start, just after the store changed (the
#: atomic replace, then the exporter's call that follows each store write), just after the
#: first plot.png appeared (the plot is drawn after the table)
PHASES = ("any moment", "store write and exporter", "plot")


def test_kill_9_and_sigterm_at_seeded_points_never_corrupt_results_and_resume_completes(zygote, tmp_path):
    """KILL_POINTS kills, each SIGKILL or SIGTERM, across the phases of a suite with an
    exporter and a plot (a MAX_LEN sweep). After each, the file parses whole and holds no
    run twice; resuming ends with every run recorded exactly once. The seed is printed."""
    pytest.importorskip("tensorboard", reason="the kill test exports each record to TensorBoard (the dev extra)")
    kill_seed = int(os.environ.get("HARNESS_KILL_SEED", time.time_ns() % 2**32))
    print(f"kill points: {KILL_POINTS}, HARNESS_KILL_SEED={kill_seed}")
    try:
        _kill_then_resume(zygote, tmp_path, random.Random(kill_seed), KILL_POINTS)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n(reproduce the kill times with HARNESS_KILL_SEED={kill_seed})") from None


def _kill_then_resume(zygote: Zygote, tmp_path: Path, rng: random.Random, points: int) -> None:
    seeds, lens = [1, 2, 3], [16, 20]  # six runs
    suite, out = _suite(tmp_path, seeds), tmp_path / "out"
    suite.write_text(suite.read_text(encoding="utf-8").replace("matrix:\n", f"matrix:\n  max_len: {lens}\n"),
                     encoding="utf-8")
    results, plot = out / "results.jsonl", out / "plot.png"
    argv = ("run", suite, "--out", out, "--no-progress", "--export", "tensorboard")
    landed = {phase: 0 for phase in PHASES}
    for kill in range(points):
        records = _check_file(results)
        if len(records) == len(seeds) * len(lens):  # all done: start again from nothing
            shutil.rmtree(out)
            records = []
        phase = PHASES[kill % len(PHASES)] if records or kill % len(PHASES) != 2 else PHASES[0]
        sig = rng.choice([signal.SIGKILL, signal.SIGKILL, signal.SIGTERM])
        before = results.stat().st_mtime_ns if results.exists() else None
        pid, log = zygote.start(*argv)
        if phase == "any moment":
            time.sleep(rng.uniform(0.0, 2.5))
        elif phase == "store write and exporter":
            wait_for(lambda: results.exists() and results.stat().st_mtime_ns != before, timeout=30)
            time.sleep(rng.uniform(0.0, 0.05))
        else:  # the plot: let the suite finish (the resume runs what is missing), kill as plot.png appears
            if plot.exists():
                plot.unlink()
            wait_for(plot.exists, timeout=120)
            time.sleep(rng.uniform(0.0, 0.02))
        landed[phase] += 1
        os.kill(pid, sig)
        status = zygote.wait(pid)
        text = log.read_text()
        # killed (SIGTERM too, outside the runs: loading, the plot), stopped by SIGTERM (130), or done before it
        assert status in ({"signal": sig, "code": None}, {"signal": None, "code": 130},
                          {"signal": None, "code": 0}), text
        assert "Traceback" not in text, text
        assert all(r["status"] == "ok" for r in _check_file(results))

    kept = _check_file(results)
    pid, log = zygote.start(*argv)
    assert zygote.wait(pid) == {"signal": None, "code": 0}, log.read_text()
    final = _check_file(results)
    by_id = {r["run_id"]: r for r in final}
    assert all(by_id[r["run_id"]] == r for r in kept), "a finished run was trained again"
    assert sorted((r["config"]["seed"], r["config"]["max_len"]) for r in final) == sorted(
        (s, n) for s in seeds for n in lens)
    assert all(r["status"] == "ok" for r in final)
    # the temporary files of writes that a kill interrupted were cleaned up by the resume
    assert not list(out.glob(".results-*.tmp"))
    print(f"kill points by phase: {landed}")


def test_ctrl_c_before_any_run_is_a_short_note_not_a_traceback(cli, write_suite, monkeypatch):
    import harness.config.suite

    def interrupted(path):
        raise KeyboardInterrupt

    monkeypatch.setattr(harness.config.suite, "load_suite", interrupted)
    code, out, err = cli("validate", write_suite("name: ok\n"))
    assert code == 130
    assert err.strip() == "interrupted" and "Traceback" not in out + err


# ------------------------------------------------------------------- two writers at once


def test_two_runs_into_one_out_at_once_train_each_run_once(zygote, tmp_path):
    """Ten times, two `harness run` of one suite started at the same moment into one --out:
    one owns the directory and trains; the other is refused at once in one line naming the
    owner (or, had the first already ended, finds every run done). Each time the store
    parses and holds every run exactly once."""
    seeds = [1, 2]
    suite = _suite(tmp_path, seeds)
    refusals = 0
    for attempt in range(10):
        out = tmp_path / f"out-{attempt}"
        argv = ("run", suite, "--out", out, "--no-progress", "--no-plot", "--isolation", "none")
        children = [zygote.start(*argv), zygote.start(*argv)]
        ends = [(zygote.wait(pid), log.read_text()) for pid, log in children]
        records = _check_file(out / "results.jsonl")
        assert sorted(r["config"]["seed"] for r in records) == seeds, ends
        assert all(r["status"] == "ok" for r in records)
        refused = [text for status, text in ends if status == {"signal": None, "code": 2}]
        assert all(status["code"] in (0, 2) for status, _ in ends), ends
        assert len(refused) <= 1, ends
        for text in refused:
            errors = [line for line in text.splitlines() if line.startswith("error:")]
            assert len(errors) == 1 and "Traceback" not in text, text
            assert re.fullmatch(rf"error: --out {re.escape(str(out))}: another `harness run` owns this directory "
                                r"\(pid \d+ on .+, since .+\); wait for it to end \(`flock .+\.run\.lock true` "
                                r"waits\) or pick another --out", errors[0]), errors[0]
        if not refused:  # the second started after the first had ended: it trained nothing
            assert any("2 of 2 runs already done" in text for _, text in ends), ends
        refusals += len(refused)
    print(f"two writers: the second command refused {refusals} times of 10")
