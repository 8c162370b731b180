"""``--format json`` on every command, each document valid against its schema in docs/schemas/,
alone on stdout; ``<out>/environment.json``, written once per results directory; and
``harness compare`` naming the environment's differences before its verdicts."""

from __future__ import annotations

import hashlib
import json
import shutil
from importlib import metadata
from pathlib import Path

import jsonschema
import pytest

from harness.records.environment import variables
from helpers import SHARED_DATA, tiny_sets
from records import record, write_results

REPO = Path(__file__).resolve().parents[1]
SCHEMAS = REPO / "docs" / "schemas"
SUITE = "name: js\nmatrix: {max_len: [16, 24]}\n"


def assert_valid(kind: str, document: dict) -> None:
    schema = json.loads((SCHEMAS / f"{kind}.schema.json").read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    errors = [f"{'/'.join(map(str, e.absolute_path)) or '(document)'}: {e.message}"
              for e in jsonschema.Draft202012Validator(schema).iter_errors(document)]
    assert not errors, f"not valid against docs/schemas/{kind}.schema.json:\n" + "\n".join(errors)


def one_document(out: str) -> dict:
    """stdout holds one JSON document and nothing else (json.loads refuses anything around it)."""
    return json.loads(out)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Two results directories of the same tiny suite, B's made with OMP_NUM_THREADS=1."""
    from harness.cli import main

    root = tmp_path_factory.mktemp("json")
    suite = root / "suite.yaml"
    suite.write_text(SUITE, encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        # as tests/conftest.py's _isolated_env has it (a module fixture runs before it)
        for name, value in {"HARNESS_DATA_DIR": str(SHARED_DATA), "HARNESS_CACHE_DIR": str(root / "cache"), "HF_HUB_OFFLINE": "1", "HARNESS_OFFLINE": "1",
                            "HARNESS_DISABLE_PLUGIN_AUTOLOAD": "1"}.items():
            mp.setenv(name, value)
        mp.delenv("OMP_NUM_THREADS", raising=False)
        assert main(["run", str(suite), "--out", str(root / "a"), "--no-progress", "--no-plot",
                     *tiny_sets(max_len=None)]) == 0
        mp.setenv("OMP_NUM_THREADS", "1")
        assert main(["run", str(suite), "--out", str(root / "b"), "--no-progress", "--no-plot",
                     *tiny_sets(max_len=None)]) == 0
    return suite, root / "a", root / "b"


# ------------------------------------------------------------------- the environment file


def test_the_environment_file_is_written_once_and_lists_the_packages(results, cli, monkeypatch):
    suite, a, _ = results
    path = a / "environment.json"
    env = json.loads(path.read_text(encoding="utf-8"))
    for package in ("torch", "transformers"):
        assert env["packages"][package] == metadata.version(package)
    assert env["suite"]["sha256"] == hashlib.sha256(suite.read_bytes()).hexdigest()
    recorded = {json.loads(line)["run_id"] for line in (a / "results.jsonl").read_text().splitlines()}
    assert {r["run_id"] for r in env["runs"]} == recorded
    assert {r["config"]["max_len"] for r in env["runs"]} == {16, 24}
    assert env["command"][:3] == ["harness", "run", str(suite)]
    assert env["torch"]["build"] in ("cpu", "cuda", "rocm") and env["torch"]["version"] == metadata.version("torch")
    assert isinstance(env["cpu"]["model"], str) and isinstance(env["cpu"]["flags"], list)
    assert "OMP_NUM_THREADS" not in env["variables"]
    before = path.read_bytes()
    # a resume into the directory (every run done), in the same environment, leaves it byte for byte
    for name in variables():
        monkeypatch.delenv(name)
    for name, value in env["variables"].items():
        monkeypatch.setenv(name, value)
    code, _, err = cli("run", suite, "--out", a, "--no-progress", "--no-plot", *tiny_sets(max_len=None))
    assert code == 0 and "environment differs" not in err
    assert path.read_bytes() == before
    # a resume in another environment: kept as it was, and a warning naming what differs
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    code, _, err = cli("run", suite, "--out", a, "--no-progress", "--no-plot", *tiny_sets(max_len=None))
    assert code == 0
    [warning] = [line for line in err.splitlines() if "environment differs" in line]
    assert "OMP_NUM_THREADS unset there, 3 now" in warning
    assert path.read_bytes() == before


def test_the_variables_recorded_are_those_that_change_performance_and_no_secret():
    found = variables({"OMP_NUM_THREADS": "4", "TORCH_COMPILE_DEBUG": "1", "HF_HUB_OFFLINE": "1",
                       "HARNESS_FORKSERVER": "0", "HF_TOKEN": "hf_x", "HARNESS_API_KEY": "k", "HOME": "/root",
                       "CUDA_VISIBLE_DEVICES": "0"})
    assert found == {"CUDA_VISIBLE_DEVICES": "0", "HARNESS_FORKSERVER": "0", "HF_HUB_OFFLINE": "1",
                     "OMP_NUM_THREADS": "4", "TORCH_COMPILE_DEBUG": "1"}


# ------------------------------------------------------------- compare and the environment


def test_compare_names_the_environment_difference_first(results, cli):
    _, a, b = results
    code, out, err = cli("compare", a, b)
    assert code == 0, err
    first = err.splitlines()[0]
    assert first == "note: environment differs: OMP_NUM_THREADS: BASE unset, NEW 1"
    code, out, err = cli("compare", a, b, "--format", "json")
    document = one_document(out)
    assert_valid("compare", document)
    assert document["environment"]["differences"][0] == {"entry": "OMP_NUM_THREADS", "base": None, "new": "1"}
    assert document["exit"]["code"] == code == 0
    assert {c["verdict"] for c in document["configurations"]} <= {"ok", "within the noise"}


def test_a_side_without_an_environment_file_is_compared_by_its_records(results, cli, tmp_path):
    _, a, b = results
    bare = tmp_path / "bare"
    shutil.copytree(b, bare)
    (bare / "environment.json").unlink()
    code, out, _ = cli("compare", a, bare, "--format", "json")
    document = one_document(out)
    assert document["environment"]["from_files"] == {"base": True, "new": False}
    # the records know no OMP_NUM_THREADS; what they know (torch, the CPU, python) is the same
    assert document["environment"]["differences"] == []


def test_compare_json_carries_the_exit_verdict_of_a_regression(cli, tmp_path):
    base = write_results(tmp_path / "base", [record("aaa", max_len=64, seconds=2.0)])
    new = write_results(tmp_path / "new", [record("aaa", max_len=64, seconds=3.0)])
    code, out, _ = cli("compare", base, new, "--max-slowdown", "10%", "--format", "json")
    document = one_document(out)
    assert_valid("compare", document)
    assert code == document["exit"]["code"] == 1
    assert "regressed" in document["exit"]["reason"]
    [configuration] = document["configurations"]
    assert configuration["verdict"] == "regression" and configuration["time"]["ratio"] == pytest.approx(1.5)
    assert cli("compare", base, new, "--max-slowdown", "10%")[0] == code  # the table's exit code is the same


# ------------------------------------------------------------------- every other command


def test_report_json_is_the_table_rows(results, cli):
    _, a, _ = results
    code, out, _ = cli("report", a, "--format", "json")
    document = one_document(out)
    assert code == 0
    assert_valid("report", document)
    assert [r["config"]["max_len"] for r in document["rows"]] == [16, 24]
    records = [json.loads(line) for line in (a / "results.jsonl").read_text().splitlines()]
    for row, rec in zip(document["rows"], records):
        assert row["figures"]["mcc"]["mean"] == rec["metrics"]["mcc"]
    for args in (["--epochs"], ["--vs", "max_len=16"]):
        code, out, _ = cli("report", a, "--format", "json", *args)
        assert code == 0
        assert_valid("report", one_document(out))


def test_validate_json_lists_the_expanded_runs(results, cli):
    suite, a, _ = results
    code, out, _ = cli("validate", suite, *tiny_sets(max_len=None), "--format", "json")
    document = one_document(out)
    assert code == 0
    assert_valid("validate", document)
    recorded = {json.loads(line)["run_id"] for line in (a / "results.jsonl").read_text().splitlines()}
    assert {r["run_id"] for r in document["runs"]} == recorded
    assert [r["flat"]["max_len"] for r in document["runs"]] == [16, 24]


def test_plugins_json_lists_each_family(cli):
    code, out, _ = cli("plugins", "--format", "json")
    document = one_document(out)
    assert code == 0
    assert_valid("plugins", document)
    assert "cola" in {p["name"] for p in document["families"]["dataset"]}
    assert "fixed" in {p["name"] for p in document["families"]["strategy"]}


def test_analyze_json(cli):
    code, out, _ = cli("analyze", "cola", "--max-len", "32,64", "--format", "json")
    document = one_document(out)
    assert code == 0
    assert_valid("analyze", document)
    assert document["dataset"] == "cola" and sorted(document["truncated"]) == ["32", "64"]


def test_estimate_json(results, cli):
    suite, _, _ = results
    code, out, err = cli("estimate", suite, *tiny_sets(max_len=None), "--format", "json")
    assert code == 0, err
    document = one_document(out)
    assert_valid("estimate", document)
    assert len(document["runs"]) == 2
    assert document["total_seconds"] == pytest.approx(sum(r["run_seconds"] for r in document["runs"]))
