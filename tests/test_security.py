"""Untrusted files never execute code; results survive crashes and concurrent writers.

The bad-input catalogue (test_bad_inputs.py) already shows a python YAML tag, a pickled
checkpoint and a config asking for custom code refused in-process; here the same through
the installed command, the positive side (real checkpoints still load), and a scan of the
source for the constructs that would run code or a shell.
"""

from __future__ import annotations

import ast
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers import wait_for
from harness.records.store import ResultsStore, read_records

REPO = Path(__file__).resolve().parents[1]
SOURCES = sorted([*(REPO / "harness").rglob("*.py"), *(REPO / "plugins").rglob("*.py")])


def test_yaml_python_tag_is_refused_by_the_command_and_nothing_runs(tmp_path):
    marker = tmp_path / "PWNED"
    suite = tmp_path / "evil.yaml"
    suite.write_text(f"name: evil\ndefaults:\n  seed: !!python/object/apply:os.system ['touch {marker}']\n")
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "validate", str(suite)],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert lines[0] == (
        f"error: {suite}:3: refused YAML tag 'tag:yaml.org,2002:python/object/apply:os.system': "
        "suites are plain data, read with the safe loader (no python objects)"
    )
    assert not marker.exists()


def test_python_tag_in_set_is_plain_text(cli, write_suite, tmp_path):
    marker = tmp_path / "PWNED"
    suite = write_suite("name: ok\n")
    code, _, err = cli("validate", suite, "--set", f"seed=!!python/object/apply:os.system ['touch {marker}']")
    assert code == 2
    assert err.strip().startswith('error: --set seed: expected an integer, got "!!python/object/apply:os.system')
    assert not marker.exists()


@pytest.mark.parametrize("fmt", ["safetensors", "torch"])
def test_real_checkpoints_still_load(tmp_path, fmt):
    """safetensors, and a torch checkpoint of plain tensors (loaded with weights_only=True)."""
    from transformers import BertConfig, BertModel

    from harness.loop.checkpoints import check_weights
    from harness.loop.classifier import load_backbone

    config = BertConfig(num_hidden_layers=1, hidden_size=32, num_attention_heads=2, intermediate_size=64)
    original = BertModel(config)
    if fmt == "safetensors":
        original.save_pretrained(tmp_path)
    else:  # transformers 5 writes only safetensors; a torch checkpoint as older tools wrote it
        config.save_pretrained(tmp_path)
        torch.save(original.state_dict(), tmp_path / "pytorch_model.bin")
    weights = "model.safetensors" if fmt == "safetensors" else "pytorch_model.bin"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", weights]
    check_weights(str(tmp_path), "pretrained")
    loaded = load_backbone(str(tmp_path), "pretrained", "sdpa", with_pooler=True)
    assert torch.equal(loaded.embeddings.word_embeddings.weight, original.embeddings.word_embeddings.weight)


# ------------------------------------------------------------------------- source scan


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func)


@pytest.mark.parametrize("path", SOURCES, ids=[str(p.relative_to(REPO)) for p in SOURCES])
def test_source_runs_no_shell_and_loads_nothing_unsafely(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    where = path.relative_to(REPO)
    for call, name in _calls(tree):
        line = f"{where}:{call.lineno}"
        keywords = {k.arg: ast.unparse(k.value) for k in call.keywords}
        assert name not in ("os.system", "os.popen", "eval", "exec", "pickle.load", "pickle.loads"), line
        assert keywords.get("shell") in (None, "False"), f"{line}: shell=True"
        assert not name.startswith(("yaml.unsafe_load", "yaml.full_load")), line
        if name in ("yaml.load", "yaml.load_all", "yaml.compose"):
            assert keywords.get("Loader") in ("yaml.SafeLoader", "yaml.CSafeLoader"), f"{line}: not the safe loader"
        if name.endswith("torch.load"):
            assert keywords.get("weights_only") == "True", f"{line}: torch.load without weights_only=True"
        if name.endswith("from_pretrained"):
            assert keywords.get("trust_remote_code") in (None, "False"), f"{line}: trust_remote_code"


def test_model_loading_refuses_remote_code_explicitly():
    """transformers asks on a terminal (and may run the code) unless told False: we tell it."""
    loads = [(path.name, call, name) for path in (REPO / "harness" / "loop").glob("*.py")
             for call, name in _calls(ast.parse(path.read_text(encoding="utf-8"))) if name.endswith("from_pretrained")]
    assert loads
    for file, call, name in loads:
        keywords = {k.arg: ast.unparse(k.value) for k in call.keywords}
        assert keywords.get("trust_remote_code") == "False", f"{file}:{call.lineno}: {name}"


# --------------------------------------------------------------------- the results store

WRITER = """
import sys, time
from harness.records.store import ResultsStore
store = ResultsStore(sys.argv[1])
prefix, n, size = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
pad = "x" * size  # large records: a write takes long enough to be killed in the middle
for i in range(n):
    store.add({"run_id": f"{prefix}{i % 50}", "status": "ok", "n": i, "pad": pad})
    print(i, flush=True)  # one line per whole write: the test counts them
print("done", flush=True)
"""


def _writer(out: Path, prefix: str, n: int, size: int = 100) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(out), prefix, str(n), str(size)], stdout=subprocess.PIPE, text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )


def test_kill_9_during_writes_never_leaves_a_partial_file(tmp_path):
    """30 SIGKILLs of a process rewriting a large results file as fast as it can. Each kill
    comes after a random number of whole writes, then either in the middle of the next write
    (once its temporary file is there) or at once, wherever the writer is. The choices come
    from a seeded generator: set HARNESS_KILL_SEED to the printed seed to replay them."""
    kill_seed = int(os.environ.get("HARNESS_KILL_SEED", time.time_ns() % 2**32))
    print(f"kill points from HARNESS_KILL_SEED={kill_seed}")
    try:
        _kill_30_times(tmp_path, random.Random(kill_seed))
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n(reproduce the kill points with HARNESS_KILL_SEED={kill_seed})") from None


def _kill_30_times(tmp_path: Path, rng: random.Random) -> None:
    results = tmp_path / "results.jsonl"
    mid_write = 0
    for _ in range(30):
        left_before = set(tmp_path.glob(".results-*.tmp"))  # by earlier kills; the writer removes them
        proc = _writer(tmp_path, "run", 10_000, size=200_000)
        for _ in range(rng.randint(0, 3)):
            assert proc.stdout.readline().strip().isdigit(), "the writer stopped before its writes"
        if rng.random() < 0.5:  # in the middle of a write: its temporary file is there
            started = wait_for(lambda: set(tmp_path.glob(".results-*.tmp")) - left_before or proc.poll() is not None, poll=0.002)
            assert started and proc.poll() is None, "the writer ended or hung before a write"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        mid_write += bool(list(tmp_path.glob(".results-*.tmp")))
        if results.exists():
            raw = results.read_bytes()
            assert raw.endswith(b"\n")
            records = [json.loads(line) for line in raw.splitlines()]
            assert len({r["run_id"] for r in records}) == len(records)
    assert mid_write > 0, "no kill landed in the middle of a write: the test proved nothing"
    # a later writer cleans the temporary files the killed ones left behind
    proc = _writer(tmp_path, "run", 1)
    assert proc.wait() == 0
    assert not list(tmp_path.glob(".results-*.tmp"))


def test_two_processes_sharing_an_output_directory_lose_no_record(tmp_path):
    a, b = _writer(tmp_path, "a", 40), _writer(tmp_path, "b", 40)
    assert a.wait() == 0 and b.wait() == 0
    ids = sorted(r["run_id"] for r in read_records(tmp_path))
    assert ids == sorted([f"a{i}" for i in range(40)] + [f"b{i}" for i in range(40)])


def test_a_rerun_replaces_its_record_in_place(tmp_path):
    store = ResultsStore(tmp_path)
    store.add({"run_id": "x", "status": "failed"})
    store.add({"run_id": "y", "status": "ok"})
    ResultsStore(tmp_path).add({"run_id": "x", "status": "ok"})
    assert [(r["run_id"], r["status"]) for r in read_records(tmp_path)] == [("x", "ok"), ("y", "ok")]


def test_a_failed_write_is_one_clear_error_and_keeps_the_file(tmp_path, monkeypatch):
    from harness.errors import HarnessError

    store = ResultsStore(tmp_path)
    store.add({"run_id": "x", "status": "ok"})
    before = (tmp_path / "results.jsonl").read_bytes()

    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(HarnessError, match=r"results.jsonl: cannot write the results \(No space left on device\); "
                                           r"the runs recorded before are intact"):
        store.add({"run_id": "y", "status": "ok"})
    assert (tmp_path / "results.jsonl").read_bytes() == before
    assert not list(tmp_path.glob(".results-*.tmp"))
