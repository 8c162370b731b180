"""Data-parallel runs through torchrun (gloo on the CPU): the same result as one process,
one record per run written by rank 0, a dying worker fails only its run.

The end-to-end tests start torchrun (three Python processes per run); every run is
bounded by ``launcher.timeout`` so a hang fails the test instead of stalling it.
"""

from __future__ import annotations

import json
import types
from pathlib import Path

import numpy as np
import pytest

from helpers import SHARED_DATA, tiny_sets
from harness.base import Encoded, StrategyOptions
from harness.builtin.fixed import Fixed
from harness.config.keys import RunConfig, run_id
from harness.launch.events import EventProgress, replay
from harness.launch.failures import process_reason
from harness.launch.process import Child, torchrun_args
from harness.records.record import EpochRecord

#: every run is stopped (and failed) after this many seconds: a hang cannot stall the tests
BOUND = "launcher.timeout=150"


DYING_HEAD = """
import os

from harness import hookimpl
from harness.builtin.linear import Linear


class Dying(Linear):
    name = "dying"
    steps = 0

    def forward(self, hidden_states, pooled, attention_mask):
        if self.training and os.environ.get("RANK") == "1":
            Dying.steps += 1
            if Dying.steps > 2:  # mid-epoch, after the warm-up step and one training step
                os._exit(1)
        return super().forward(hidden_states, pooled, attention_mask)


@hookimpl
def harness_register_heads(register):
    register(Dying)
"""

SUITE = """
name: ddp
plugins: [dying.py]
defaults:
  model: {model}
  tokenizer: minilm
  head: {{name: linear, options: {{dropout: 0.0}}}}
  lr: 1.0e-3
runs:
  - {{launcher: {{nproc: 1}}}}
  - {{launcher: {{nproc: 2}}, head: dying}}
  - {{launcher: {{nproc: 2}}}}
"""


@pytest.fixture(scope="module")
def suite_run(tmp_path_factory) -> tuple[int, list[dict], Path]:
    """One suite, run once for the tests below (each torchrun start costs seconds): one
    process; two processes whose rank 1 dies mid-epoch; two processes on the same data."""
    import torch
    from transformers import BertConfig, BertModel

    from harness.cli import main
    from harness.loop.checkpoints import ARCHITECTURES

    tmp = tmp_path_factory.mktemp("ddp")
    # a tiny random BERT without dropout: one process and two take the very same steps
    torch.manual_seed(0)
    config = BertConfig(**ARCHITECTURES["bert-tiny"], hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    BertModel(config).save_pretrained(tmp / "tiny-bert")
    (tmp / "dying.py").write_text(DYING_HEAD)
    (tmp / "suite.yaml").write_text(SUITE.format(model=tmp / "tiny-bert"))
    out = tmp / "out"
    with pytest.MonkeyPatch.context() as mp:  # what conftest's autouse fixture does per test
        mp.setenv("HARNESS_DATA_DIR", str(SHARED_DATA))
        mp.setenv("HARNESS_CACHE_DIR", str(tmp / "cache"))
        mp.setenv("HF_HUB_OFFLINE", "1")
        # 64 training examples, global batch 16: four steps, the same four batches either way
        args = ["run", str(tmp / "suite.yaml"), "--out", str(out), "--no-progress", "--set", BOUND]
        code = main([*args, *tiny_sets(model=None, init=None)])
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    return code, records, out


def test_two_processes_match_one(suite_run):
    _, records, _ = suite_run
    one, two = records[0], records[2]
    assert one["status"] == two["status"] == "ok", two.get("error")
    assert two["config"]["batch_size"] == one["config"]["batch_size"] == 16  # the global batch is recorded
    e1, e2 = one["epochs"][0], two["epochs"][0]
    assert e2["train_loss"] == pytest.approx(e1["train_loss"], rel=1e-5, abs=1e-6)
    assert e1["train_loss"] != pytest.approx(0.6931, abs=1e-4)  # it trained: not the uniform loss
    assert two["metrics"] == one["metrics"]
    assert set(two["metrics"]) == {"mcc", "accuracy"}
    # tokens summed over the ranks; steps per rank are the single process's steps
    assert (e2["real_tokens"], e2["padded_tokens"], e2["steps"]) == (e1["real_tokens"], e1["padded_tokens"], e1["steps"])
    assert e2["train_seconds"] > 0 and e2["eval_seconds"] > 0


def test_rank_0_writes_one_record_per_run(suite_run):
    _, records, out = suite_run
    assert len(records) == 3, "rank 1 must not write records of its own"
    assert len({r["run_id"] for r in records}) == 3
    assert [r["world_size"] for r in records] == [1, 2, 2]
    assert [r["config"]["launcher"]["nproc"] for r in records] == [1, 2, 2]
    assert not list(out.glob(".launch-*")), "the work directories of the workers are removed"


def test_a_dying_worker_fails_its_run_and_the_suite_goes_on(suite_run):
    code, records, _ = suite_run
    assert code == 1  # a run failed
    dead, after = records[1], records[2]
    assert dead["config"]["head"]["name"] == "dying" and dead["status"] == "failed"
    assert dead["error"] == (
        "worker died: rank 1 exited with code 1 without a Python error; the other ranks were stopped"
    )
    assert "ChildFailedError" in Path(dead["log"]).read_text()  # torchrun's own account is kept
    assert after["status"] == "ok"


FILES_SUITE = """
name: files_ddp
defaults:
  dataset:
    name: files
    options: {train: data/train.csv, validation: data/dev.csv, labels: [neg, pos]}
runs:
  - {launcher: {nproc: 1}}
  - {launcher: {nproc: 2}}
"""


def test_a_files_dataset_relative_to_its_suite_runs_under_nproc_2_from_another_folder(cli, tmp_path, monkeypatch):
    """Relative paths are resolved once, against the suite's folder, and the workers resolve
    the run again against the same folder: not the working directory."""
    suite_dir, elsewhere = tmp_path / "suite", tmp_path / "elsewhere"
    (suite_dir / "data").mkdir(parents=True)
    elsewhere.mkdir()
    for name, n in (("train.csv", 64), ("dev.csv", 16)):
        rows = "".join(f"{'pos' if i % 2 else 'neg'},sentence number {i} is {'good' if i % 2 else 'bad'}\n" for i in range(n))
        (suite_dir / "data" / name).write_text("label,text\n" + rows)
    (suite_dir / "suite.yaml").write_text(FILES_SUITE)
    monkeypatch.chdir(elsewhere)
    out = tmp_path / "out"
    code, _, err = cli("run", suite_dir / "suite.yaml", "--out", out, "--no-progress", "--set", BOUND,
                       *tiny_sets(**{"dataset.subset.train": None, "dataset.subset.validation": None}))
    assert code == 0, err
    one, two = (json.loads(line) for line in (out / "results.jsonl").read_text().splitlines())
    assert one["status"] == two["status"] == "ok"
    assert two["world_size"] == 2
    # the same config but for the number of processes; the paths recorded as written
    strip = lambda config: {k: v for k, v in config.items() if k != "launcher"}  # noqa: E731
    assert strip(one["config"]) == strip(two["config"])
    assert two["config"]["dataset"]["options"]["train"] == "data/train.csv"
    assert one["data"] == two["data"] and two["data"]["train"]["examples"] == 64


# ----------------------------------------------------------------- mistakes, caught up front


@pytest.mark.parametrize(
    ("sets", "expected"),
    [
        (["batch_size=30", "launcher.nproc=4"], "batch_size 30 is the global batch and must divide evenly among the 4 processes"),
        (["launcher.nproc=0"], "launcher.nproc: must be > 0, got 0"),
        (["launcher.nprocs=2"], "unknown key 'nprocs'. Did you mean 'nproc'?"),
        (["launcher.nproc=2", "launcher.nnodes=2"], "nnodes 2 needs rdzv_endpoint"),
        (["launcher.nproc=2", "device=cuda:1"], "device 'cuda:1' with 2 processes"),
        (["launcher.timeout=0"], "launcher.timeout: must be > 0"),
    ],
)
def test_bad_launcher_settings_fail_before_any_run(cli, write_suite, tmp_path, sets, expected):
    suite = write_suite("name: bad\ndefaults: {dataset: cola}\n")
    out = tmp_path / "out"
    args = [a for s in sets for a in ("--set", s)]
    code, _, stderr = cli("run", suite, "--out", out, "--no-progress", *tiny_sets(batch_size=None), *args)
    assert code == 2
    assert expected in stderr.replace("\n", "")
    assert not (out / "results.jsonl").exists()


def test_nproc_option_sets_the_launcher_and_rejects_non_numbers(cli, write_suite):
    suite = write_suite("name: n\ndefaults: {dataset: cola}\n")
    code, stdout, stderr = cli("validate", suite, "--nproc", "2", "--set", "launcher.nproc=3")
    assert code == 0, stderr
    assert "launcher.nproc=2" in stdout  # --nproc is the strongest layer, above --set
    for bad in ("0", "two"):
        with pytest.raises(SystemExit) as exc:
            cli("run", suite, "--nproc", bad)
        assert exc.value.code == 2


def test_rendezvous_settings_do_not_change_the_run_id_but_the_process_count_does():
    base = run_id(RunConfig())
    assert run_id(RunConfig(launcher={"rdzv_endpoint": "node0:29400", "rdzv_id": "job7", "timeout": 60})) == base
    assert run_id(RunConfig(launcher={"nproc": 2})) != base


def test_torchrun_arguments_single_node_and_cluster():
    one = RunConfig(launcher={"nproc": 4}).launcher
    assert torchrun_args(one, "abc") == ["--standalone", "--nproc-per-node", "4", "--max-restarts", "0"]
    cluster = RunConfig(launcher={"nproc": 8, "nnodes": 2, "rdzv_endpoint": "node0:29400", "rdzv_id": "job7"}).launcher
    args = torchrun_args(cluster, "abc")
    assert "--standalone" not in args
    pairs = dict(zip(args[::2], args[1::2]))
    assert pairs["--nnodes"] == "2" and pairs["--nproc-per-node"] == "8"
    assert pairs["--rdzv-endpoint"] == "node0:29400" and pairs["--rdzv-backend"] == "c10d"
    assert pairs["--rdzv-id"] == "job7-abc"  # one rendezvous per run


# ------------------------------------------------------------------- sharding the batches


def _encoded(lengths: list[int]) -> Encoded:
    return Encoded(
        [[1] * n for n in lengths], [[0] * n for n in lengths],
        np.zeros(len(lengths), dtype=np.int64), np.asarray(lengths, dtype=np.int64), np.asarray(lengths, dtype=np.int64),
    )


@pytest.fixture
def fixed() -> Fixed:
    return Fixed(StrategyOptions(), types.SimpleNamespace(pad_token_id=0), max_len=16)


@pytest.mark.parametrize("n", [64, 61])
def test_ranks_share_each_global_batch_of_one_process(fixed, n):
    enc = _encoded([2 + i % 14 for i in range(n)])
    single = fixed.batches(enc, 16, seed=3, epoch=1)
    ranks = [fixed.batches(enc, 8, seed=3, epoch=1, rank=r, world_size=2) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == len(single) == fixed.num_batches(n, 8, 2)
    for k, batch in enumerate(single):
        parts = [ranks[r][k].index.numpy() for r in range(2)]
        assert len(parts[0]) == len(parts[1])  # equal per-rank batches: DDP's mean is the global mean
        assert set(np.concatenate(parts)) == set(batch.index.numpy())
    if n % 16:  # the short last batch (13 examples) is padded by repetition to 7 + 7
        assert [len(ranks[r][-1].index) for r in range(2)] == [7, 7]


def test_evaluation_shards_cover_the_split_once(fixed):
    enc = _encoded([3] * 21)
    seen = np.concatenate(
        [b.index.numpy() for r in range(4) for b in fixed.batches(enc, 4, seed=None, rank=r, world_size=4)]
    )
    assert sorted(seen) == list(range(21))


# ------------------------------------------------------------------- the reason of a failure

TORCHRUN_SUMMARY = """
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
Root Cause (first observed failure):
[0]:
  time      : 2026-01-01_00:00:00
  host      : node0
  rank      : {rank} (local_rank: {rank})
  exitcode  : {code} (pid: 123)
"""


def _error_file(workdir: Path, rank: int, message: str, usage: bool = False, at: float = 0.0) -> None:
    data = {"rank": rank, "usage": usage, "message": message, "time": at}
    (workdir / f"error-rank{rank}.json").write_text(json.dumps(data))


def test_failure_reason_names_the_first_rank_that_failed(tmp_path):
    killed = TORCHRUN_SUMMARY.format(rank=3, code=-9)
    assert process_reason(tmp_path, killed, 1) == (
        False, "worker died: rank 3 was killed by SIGKILL without a Python error; the other ranks were stopped"
    )
    # the root cause's own error wins over the errors it caused on the other ranks
    _error_file(tmp_path, 0, "RuntimeError: Connection closed by peer", at=2.0)
    _error_file(tmp_path, 1, "out of memory: CUDA out of memory", at=1.0)
    assert process_reason(tmp_path, TORCHRUN_SUMMARY.format(rank=1, code=1), 1) == (
        False, "worker failed: rank 1: out of memory: CUDA out of memory"
    )
    # without torchrun's summary: the earliest error
    assert process_reason(tmp_path, "", 1) == (False, "worker failed: rank 1: out of memory: CUDA out of memory")


OTHER_FAILURE = """Other Failures:
[1]:
  time      : 2026-01-01_00:00:00
  host      : node0
  rank      : {rank} (local_rank: {rank})
  exitcode  : {code} (pid: 124)
"""


def test_a_rank_that_lost_its_peer_is_not_named_the_cause(tmp_path):
    """torchrun may name rank 0, whose gloo call failed because rank 1 died in the same look:
    the rank that died without a Python error is the cause."""
    _error_file(tmp_path, 0, "RuntimeError: [/gloo/transport/tcp/pair.cc:553] Connection closed by peer")
    log = TORCHRUN_SUMMARY.format(rank=0, code=1) + OTHER_FAILURE.format(rank=1, code=1)
    assert process_reason(tmp_path, log, 1) == (
        False, "worker died: rank 1 exited with code 1 without a Python error; the other ranks were stopped"
    )


def test_failure_reason_keeps_a_user_mistake_a_user_mistake(tmp_path):
    _error_file(tmp_path, 0, "dataset 'cola' has no test split", usage=True)
    assert process_reason(tmp_path, TORCHRUN_SUMMARY.format(rank=0, code=1), 1) == (
        True, "dataset 'cola' has no test split"
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    assert process_reason(empty, "garbage", 7) == (False, "worker failed: torchrun exited with code 7 (see its log)")


# ----------------------------------------------------------------- the parent's supervision


def test_workers_past_the_timeout_are_stopped(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    with open(tmp_path / "log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], stdout=log, env={},
                                start_new_session=True)
        child = Child(proc, tmp_path / "events", None, timeout=0.5)
        while (code := child.poll()) is None:
            time.sleep(0.05)
        timed_out = child.timed_out
    assert timed_out and code != 0
    # stopped by the parent's SIGTERM (not its own end after 120 s), waited for, and gone
    assert code == proc.returncode == -signal.SIGTERM
    with pytest.raises(ProcessLookupError):
        os.kill(proc.pid, 0)


def test_rank_0_progress_reaches_the_parent_progress_bars(tmp_path):
    class Recorder:
        def __init__(self):
            self.calls = []

        def __getattr__(self, name):
            return lambda *args: self.calls.append((name, *args))

    events = tmp_path / "events.jsonl"
    worker = EventProgress(events)
    worker.start_epoch(1, 2, 4)
    for _ in range(4):
        worker.advance()
    epoch = EpochRecord(epoch=1, train_seconds=1.5, eval_seconds=0.1, train_loss=0.7, steps=4, real_tokens=10,
                        padded_tokens=20, peak_memory_bytes=1, metrics={"mcc": 0.1})
    worker.end_epoch(epoch)
    parent = Recorder()
    offset = replay(events, 0, parent)
    worker.close()
    assert parent.calls[0] == ("start_epoch", 1, 2, 4)
    assert sum(c[1] for c in parent.calls if c[0] == "advance") == 4  # batched, none lost
    assert parent.calls[-1] == ("end_epoch", epoch)
    assert replay(events, offset, parent) == offset  # nothing replayed twice
