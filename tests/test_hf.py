"""`hf`: a Hugging Face `datasets` dataset through a suite, offline: a save_to_disk folder,
parquet files, the local Hub cache; every mistake is one line and exit code 2."""

from __future__ import annotations

import json
import shutil
import sys
import textwrap
from pathlib import Path

import pytest

from helpers import tiny_sets

datasets = pytest.importorskip("datasets", reason="the `hf` dataset needs the `hf` extra: pip install 'seqcls-harness[hf]'")

from datasets import ClassLabel, Dataset, DatasetDict, Features, Value  # noqa: E402

from harness.errors import HarnessError  # noqa: E402

GOOD = [f"A fine, sturdy thing number {i}." for i in range(12)]
BAD = [f"It broke at once, number {i}." for i in range(12)]


@pytest.fixture(autouse=True)
def _hf_cache(tmp_path, monkeypatch):
    """The datasets cache in the test's folder; offline, as every machine here is."""
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    was_on = not datasets.utils.are_progress_bars_disabled()
    datasets.utils.disable_progress_bars()  # the tests' own save_to_disk: no bars in the captured stderr
    yield
    if was_on:
        datasets.utils.enable_progress_bars()


def _classlabel_dict(n_train: int = 24, test_labels: list[int] | None = None) -> DatasetDict:
    features = Features({"sentence": Value("string"), "label": ClassLabel(names=["negative", "positive"])})

    def split(n: int, labels: list[int] | None = None) -> Dataset:
        texts = [(BAD + GOOD)[i % 24] for i in range(n)]
        return Dataset.from_dict({"sentence": texts, "label": labels or [int(t in GOOD) for t in texts]}, features=features)

    out = {"train": split(n_train), "validation": split(8)}
    if test_labels is not None:
        out["test"] = split(len(test_labels), test_labels)
    return DatasetDict(out)


def _pairs(n: int) -> Dataset:
    """String labels, text pairs: as a parquet export from pandas would have them."""
    return Dataset.from_dict({
        "premise": [(GOOD + BAD)[i % 24] for i in range(n)],
        "hypothesis": [f"Second text {i}." for i in range(n)],
        "verdict": ["keep" if i % 24 < 12 else "return" for i in range(n)],
    })


def _suite(tmp_path: Path, options: str) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text("name: hf\ndefaults:\n  dataset:\n    name: hf\n    options:\n"
                    + textwrap.indent(textwrap.dedent(options), "      "), encoding="utf-8")
    return path


def _run(cli, tmp_path: Path, options: str, *extra: str) -> tuple[int, str, list[dict]]:
    out = tmp_path / "out"
    code, _, err = cli("run", _suite(tmp_path, options), "--out", out, "--no-progress", "--no-plot",
                       "--isolation", "none", *tiny_sets(), *extra)
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()] if code == 0 else []
    return code, err, records


def _dataset(tmp_path: Path, **options):
    from harness.data import DataFiles
    from harness.registry import load_registry

    cls = load_registry().get("dataset", "hf").cls
    return cls(cls.Options.model_validate(options, context={"base_dir": str(tmp_path)}), DataFiles("hf"))


# ------------------------------------------------------------------------------ loading


def test_a_save_to_disk_folder_runs_a_suite_offline(cli, tmp_path):
    _classlabel_dict().save_to_disk(str(tmp_path / "data" / "reviews"))
    code, err, records = _run(cli, tmp_path, "path: data/reviews\ntext: sentence\n")
    assert code == 0, err
    (record,) = records
    assert record["status"] == "ok"
    assert record["data"]["labels"] == ["negative", "positive"]  # the ClassLabel's names
    assert record["data"]["train"]["examples"] == 24 and record["data"]["validation"]["examples"] == 8
    assert set(record["metrics"]) == {"accuracy", "f1", "mcc"} and record["main_metric"] == "accuracy"
    assert record["config"]["dataset"]["options"]["path"] == "data/reviews"  # as written: a stable run id


def test_parquet_files_with_string_labels_and_text_pairs_run_a_suite(cli, tmp_path):
    (tmp_path / "data").mkdir()
    _pairs(24).to_parquet(str(tmp_path / "data" / "train.parquet"))
    _pairs(8).to_parquet(str(tmp_path / "data" / "dev.parquet"))
    options = """\
        path: parquet
        data_files: {train: data/train.parquet, validation: data/dev.parquet}
        text: premise
        text_pair: hypothesis
        label: verdict
        """
    dataset = _dataset(tmp_path, path="parquet", text="premise", text_pair="hypothesis", label="verdict",
                       data_files={"train": "data/train.parquet", "validation": "data/dev.parquet"})
    examples = dataset.load("train")
    assert dataset.labels == ("keep", "return") and dataset.splits == ("train", "validation")
    assert (examples[0].text, examples[0].text_pair, examples[0].label) == (GOOD[0], "Second text 0.", 0)
    assert examples[12].label == 1

    code, err, records = _run(cli, tmp_path, options)
    assert code == 0, err
    (record,) = records
    assert record["status"] == "ok" and record["data"]["labels"] == ["keep", "return"]
    assert record["config"]["dataset"]["options"]["data_files"] == {
        "train": "data/train.parquet", "validation": "data/dev.parquet"}


def _fake_hub_cache(tmp_path: Path, repo: str, config: str) -> None:
    """Put ``repo``/``config`` into the datasets cache as a load_dataset on a machine with
    network leaves it (``<cache>/<owner>___<name>/<config>/<version>/<hash>/``), without a
    network: build it from parquet files, then move it where the Hub's copy would be."""
    cache = tmp_path / "hf-cache"
    _pairs(24).to_parquet(str(tmp_path / "hub-train.parquet"))
    datasets.load_dataset("parquet", data_files={"train": str(tmp_path / "hub-train.parquet"),
                                                 "validation": str(tmp_path / "hub-train.parquet")},
                          cache_dir=str(cache))
    (built,) = [p for p in (cache / "parquet").glob("*/*/*") if p.is_dir()]
    owner, name = repo.split("/")
    target = cache / f"{owner}___{name}" / config / built.parent.name / built.name
    shutil.copytree(built, target)
    for arrow in target.glob("parquet-*.arrow"):
        arrow.rename(target / arrow.name.replace("parquet-", f"{name}-"))
    info = json.loads((target / "dataset_info.json").read_text())
    (target / "dataset_info.json").write_text(json.dumps(info | {"config_name": config, "dataset_name": name}))


def test_a_hub_dataset_comes_from_the_local_cache_offline(tmp_path):
    _fake_hub_cache(tmp_path, "someone/reviews", "pairs")
    dataset = _dataset(tmp_path, path="someone/reviews", name="pairs", text="premise", label="verdict")
    assert dataset.splits == ("train", "validation") and dataset.labels == ("keep", "return")
    assert len(dataset.load("validation")) == 24


def test_an_unreachable_hub_is_offline_at_once(tmp_path, monkeypatch):
    """No offline switch set and no network: the Hub is probed once, not retried for 20 s."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HARNESS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens
    _fake_hub_cache(tmp_path, "someone/reviews", "pairs")
    dataset = _dataset(tmp_path, path="someone/reviews", name="pairs", text="premise", label="verdict")
    assert dataset.labels == ("keep", "return")  # from the cache
    missing = _dataset(tmp_path, path="someone/elsewhere", text="premise", label="verdict")
    with pytest.raises(HarnessError, match=r"is not in the local Hugging Face cache .* and the Hub "
                                           r"\(http://127\.0\.0\.1:9\) cannot be reached;"):
        missing.check()


def test_options_survive_the_trip_to_a_worker_process(tmp_path, monkeypatch):
    """A worker re-validates the recorded options (every default filled in) against the suite's
    folder, from another working directory: the same files, the same splits."""
    (tmp_path / "data").mkdir()
    _pairs(24).to_parquet(str(tmp_path / "data" / "train.parquet"))
    first = _dataset(tmp_path, path="parquet", data_files={"train": "data/train.parquet"}, text="premise",
                     label="verdict")
    recorded = first.options.model_dump(mode="json")
    assert recorded["data_files"] == {"train": "data/train.parquet"} and recorded["splits"]["test"] is None
    monkeypatch.chdir(tmp_path.parent)
    again = _dataset(tmp_path, **recorded)
    assert again.options == first.options and again.splits == ("train",) and len(again.load("train")) == 24


def test_split_mapping_and_the_same_labels_for_every_split(tmp_path):
    """Splits named as the dataset names them; labels inferred from train only, so a split
    missing a class keeps every class index."""
    rows = {"text": ["a", "b", "c", "d"], "label": [3, 10, 3, 10]}
    DatasetDict({"training": Dataset.from_dict(rows),
                 "heldout": Dataset.from_dict({"text": ["e"], "label": [10]})}).save_to_disk(str(tmp_path / "d"))
    dataset = _dataset(tmp_path, path="d", splits={"train": "training", "validation": "heldout"})
    assert dataset.splits == ("train", "validation")
    assert dataset.labels == ("3", "10")  # numeric order
    assert [e.label for e in dataset.load("validation")] == [1]


def test_a_rewritten_file_is_read_again(tmp_path):
    path = tmp_path / "t.parquet"
    Dataset.from_dict({"text": ["a", "b"], "label": ["x", "y"]}).to_parquet(str(path))
    assert _dataset(tmp_path, path="parquet", data_files="t.parquet").labels == ("x", "y")
    Dataset.from_dict({"text": ["a", "b", "c"], "label": ["x", "y", "z"]}).to_parquet(str(path))
    assert _dataset(tmp_path, path="parquet", data_files="t.parquet").labels == ("x", "y", "z")


# ------------------------------------------------------------------------------- errors


def _many_labels(tmp_path: Path) -> str:
    Dataset.from_dict({"text": [f"t{i}" for i in range(300)], "score": [i / 7 for i in range(300)]}).to_parquet(
        str(tmp_path / "scores.parquet"))
    return "path: parquet\ndata_files: {train: scores.parquet, validation: scores.parquet}\nlabel: score\n"


def _saved(tmp_path: Path, test_labels: list[int] | None = None) -> str:
    _classlabel_dict(test_labels=test_labels).save_to_disk(str(tmp_path / "saved"))
    return "path: saved\ntext: sentence\n"


ERRORS = {
    "not-cached": (lambda t: "path: someone/not-cached\nname: small\n", (),
                   r"dataset 'hf': 'someone/not-cached' \(config 'small'\) is not in the local Hugging Face cache "
                   r"\(.*hf-cache\) and offline mode is on \(HF_HUB_OFFLINE=1\); get it on a machine with network: "
                   r"python -c \"import datasets; datasets.load_dataset\('someone/not-cached', 'small'\)\", then copy "
                   r"its HF_HOME .* or \.save_to_disk\(folder\) .*"),
    "missing-column": (lambda t: _saved(t).replace("sentence", "sentense"), (),
                       r"dataset 'hf': .*saved split 'train' has no column 'sentense' \(dataset\.options\.text\); "
                       r"its columns: sentence, label"),
    "label-not-classes": (_many_labels, (),
                          r"dataset 'hf': parquet data_files .* split 'train' label column 'score' is neither a "
                          r"ClassLabel nor a small set of values: 300 distinct values .*dataset\.options\.labels"),
    "missing-split": (lambda t: _saved(t) + "splits: {validation: dev}\n", (),
                      r"dataset 'hf': .*saved has no split 'dev' \(dataset\.options\.splits\.validation\); "
                      r"its splits: train, validation"),
    "no-test-split": (lambda t: _saved(t), ("--set", "eval_split=test"),
                      r"dataset 'hf' has no test split \(it has train, validation\)"),
    "unlabelled-split": (lambda t: _saved(t, test_labels=[-1, -1]), ("--set", "eval_split=test"),
                         r"dataset 'hf': .*saved split 'test' row 0: label -1 is no class of the ClassLabel .*"),
    "builder-without-files": (lambda t: "path: parquet\n", (),
                              r"dataset 'hf': path 'parquet' reads data_files; give dataset\.options\.data_files"),
    "no-folder": (lambda t: "path: ./nowhere\n", (), r"dataset 'hf': .*nowhere: no such folder"),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_every_mistake_is_one_line_with_exit_code_2(cli, tmp_path, case):
    import re

    setup, extra, message = ERRORS[case]
    code, err, _ = _run(cli, tmp_path, setup(tmp_path), *extra)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    assert re.fullmatch(message, lines[0][len("error: "):]), lines[0]
    assert not (tmp_path / "out").exists()  # failed before any run


def test_without_datasets_installed_the_error_says_what_to_install(cli, tmp_path, monkeypatch):
    options = _saved(tmp_path)
    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` raises ImportError
    code, err, _ = _run(cli, tmp_path, options)
    assert code == 2
    assert err.strip() == ("error: dataset 'hf' needs the Hugging Face `datasets` package: "
                           "pip install 'seqcls-harness[hf]'")


def test_an_unknown_metric_names_the_key(cli, tmp_path):
    code, err, _ = _run(cli, tmp_path, _saved(tmp_path) + "metrics: [acuracy]\n")
    assert code == 2 and "dataset.options.metrics[0]" in err and "'accuracy'" in err, err
