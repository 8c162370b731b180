"""The tutorial's protocol as a suite: the validation split carved out of train, the final
evaluation on a test split, `model: [a, b]` (the first available), the Pareto front of
epoch time and score, and the accuracy-vs-time plot."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest

from helpers import REPO, tiny_sets
from harness.data.splits import read_split
from harness.errors import HarnessError
from harness.registry import load_registry
from harness.loop.prepare import load_run_splits, make_dataset
from harness.records.summary import config_group, pareto_front, rows
from harness.config.resolve import resolve_run
from harness.config.keys import run_id
from harness.render.tradeoff import tradeoff_data
from records import record, with_fields, write_results

BUILT_INS = ("cola", "sst2", "mrpc", "imdb")


@pytest.fixture(scope="module")
def registry():
    return load_registry()


@pytest.fixture
def files_dataset(tmp_path: Path) -> dict:
    """A `files` dataset: 40 training rows (two labels), and a validation file of its own."""
    train = "text,label\n" + "".join(f"sentence {i} is {'good' if i % 3 else 'bad'},{'pos' if i % 3 else 'neg'}\n"
                                     for i in range(40))
    (tmp_path / "train.csv").write_text(train, encoding="utf-8")
    (tmp_path / "dev.csv").write_text("text,label\nnot from train,pos\nnor this,neg\n", encoding="utf-8")
    return {"name": "files", "options": {"train": str(tmp_path / "train.csv"), "validation": str(tmp_path / "dev.csv"),
                                         "labels": ["neg", "pos"]}}


def _hf_dataset(folder: Path) -> dict:
    """An `hf` dataset (a save_to_disk folder) with a train split only: the carve makes its validation split."""
    datasets = pytest.importorskip("datasets", reason="the `hf` dataset needs the `hf` extra")
    features = datasets.Features({"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])})
    train = datasets.Dataset.from_dict({"sentence": [f"sentence {i}" for i in range(40)],
                                        "label": [int(i % 3 > 0) for i in range(40)]}, features=features)
    datasets.utils.disable_progress_bars()
    datasets.DatasetDict({"train": train}).save_to_disk(str(folder))
    return {"name": "hf", "options": {"path": str(folder), "text": "sentence"}}


def _dataset(name: str, files_dataset: dict, tmp_path: Path) -> dict:
    if name == "hf":
        return _hf_dataset(tmp_path / "hf-train-only")
    return dict(files_dataset) if name == "files" else {"name": name}


def splits_of(registry, dataset: dict, subset: dict | None = None, **carve):
    ref = {**dataset, "validation_from_train": carve, **({"subset": subset} if subset else {})}
    run = resolve_run({"dataset": ref}, registry, Path.cwd())
    return run, load_run_splits(run, make_dataset(run))


def _bag(examples) -> Counter:
    return Counter((e.text, e.text_pair, e.label) for e in examples)


# ------------------------------------------------------------------------------ the carve


@pytest.mark.parametrize("name", [*BUILT_INS, "files", "hf"])
def test_the_carve_is_seeded_never_overlaps_training_and_replaces_validation(
    registry, files_dataset, name, tmp_path, monkeypatch
):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    dataset = _dataset(name, files_dataset, tmp_path)
    run, a = splits_of(registry, dataset, size=0.1, seed=7)
    _, again = splits_of(registry, dataset, size=0.1, seed=7)
    _, other = splits_of(registry, dataset, size=0.1, seed=8)
    info = a["validation"].info["validation_from_train"]
    assert a["train"].info["validation_from_train"] == info  # both sides record the same carve
    assert info["seed"] == 7 and info["by"] == "random" and info["size"] == 0.1

    # same seed: the same examples and the same hash; another seed: another split
    assert [e.text for e in again["validation"].examples] == [e.text for e in a["validation"].examples]
    assert again["validation"].info["validation_from_train"]["indices_sha256"] == info["indices_sha256"]
    assert other["validation"].info["validation_from_train"]["indices_sha256"] != info["indices_sha256"]
    assert _bag(other["validation"].examples) != _bag(a["validation"].examples)

    # train and validation are the train split cut in two: together exactly its examples, so none
    # is in both, and nothing of the dataset's own validation split
    full = read_split(make_dataset(run), "train")
    assert _bag(a["train"].examples) + _bag(a["validation"].examples) == _bag(full)
    assert info["of"] == len(full) and info["train"] + info["validation"] == len(full)
    # the tutorial's sizes: int(0.9 x N) stay in train, the rest is carved
    assert info["train"] == int(0.9 * len(full)) == len(a["train"].examples) == a["train"].info["of"]
    assert len(a["validation"].examples) == info["validation"] == a["validation"].info["examples"]


def test_a_random_carve_is_the_tutorials_random_split(registry):
    import torch
    from torch.utils.data import random_split

    run, splits = splits_of(registry, {"name": "cola"}, size=0.1, seed=42)
    full = read_split(make_dataset(run), "train")
    _, held = random_split(range(len(full)), [7695, 856], generator=torch.Generator().manual_seed(42))
    assert len(full) == 8551
    assert _bag(splits["validation"].examples) == _bag(full[i] for i in held.indices)


def test_a_count_a_stratified_carve_and_the_train_subset_drawn_from_the_rest(registry):
    run, plain = splits_of(registry, {"name": "cola"}, size=300, seed=1, by="stratified")
    full = read_split(make_dataset(run), "train")
    share = sum(e.label for e in full) / len(full)
    held = plain["validation"].examples
    assert len(held) == 300 and abs(sum(e.label for e in held) / 300 - share) < 0.01

    _, cut = splits_of(registry, {"name": "cola"}, subset={"train": 200, "seed": 3}, size=300, seed=1,
                       by="stratified")
    assert cut["validation"].info["validation_from_train"] == plain["validation"].info["validation_from_train"]
    assert len(cut["train"].examples) == 200 and cut["train"].info["of"] == len(full) - 300
    assert not _bag(cut["train"].examples) - _bag(plain["train"].examples)  # drawn from the rest
    assert not _bag(cut["train"].examples) & _bag(held)


@pytest.mark.parametrize("carve, message", [
    ({"size": 40}, "dataset.validation_from_train.size: 40 of the 40 examples of dataset 'files' train leaves none"),
    ({"size": 0.999}, "dataset.validation_from_train.size: a share of 0.999 of the 40 examples of dataset 'files' "
                      "train leaves none for training"),
    ({"size": 1, "by": "stratified"}, "dataset.validation_from_train.by: stratified: carving 1 of the 40 examples of "
                                      "dataset 'files' train leaves label 'neg' (14 examples) none in validation"),
])
def test_an_impossible_carve_is_one_line_naming_the_key(registry, files_dataset, carve, message):
    with pytest.raises(HarnessError) as caught:
        splits_of(registry, files_dataset, **carve)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_an_impossible_carve_stops_harness_run_before_any_run(cli, write_suite, tmp_path):
    suite = write_suite("name: x\ndefaults:\n  dataset: {name: cola, validation_from_train: {size: 9000}}\n")
    code, _, err = cli("run", suite, "--out", tmp_path / "out", "--no-progress", *tiny_sets())
    assert code == 2 and not (tmp_path / "out").exists()
    assert err.strip() == ("error: dataset.validation_from_train.size: 9000 of the 8,551 examples of dataset 'cola' "
                           "train leaves none for training; give fewer than 8,551 or a share between 0 and 1")


@pytest.mark.parametrize("value, expected", [
    ("0", "expected a share between 0 and 1 (exclusive) or a whole number of examples, got 0"),
    ("1.0", "expected a share between 0 and 1 (exclusive) or a whole number of examples, got 1.0"),
    ("lots", "expected a number, got 'lots'"),
])
def test_a_bad_carve_size_fails_validate_naming_the_key(cli, write_suite, value, expected):
    suite = write_suite("name: x\ndefaults:\n  dataset: {name: cola, validation_from_train: {size: 0.1}}\n")
    code, _, err = cli("validate", suite, "--set", f"dataset.validation_from_train.size={value}")
    assert code == 2
    assert f"error: --set dataset.validation_from_train.size: {expected}" in err


def test_a_run_without_the_new_keys_keeps_its_id_and_compares_with_older_records(registry):
    run = resolve_run({"model": "bert-tiny", "init": "random"}, registry, Path.cwd())
    old = run.config.model_dump(mode="json", exclude={"data_dir": True, "target": True, "launcher": {
        "rdzv_endpoint", "rdzv_backend", "rdzv_id", "timeout"}})
    del old["test_split"], old["dataset"]["validation_from_train"]  # a config from before they existed
    blob = json.dumps(old, sort_keys=True, separators=(",", ":"))
    assert run.run_id == run_id(run.config) == hashlib.sha256(blob.encode()).hexdigest()[:12]
    carved = resolve_run({"model": "bert-tiny", "init": "random", "test_split": "test"}, registry, Path.cwd())
    assert carved.run_id != run.run_id
    before = record("a")
    assert config_group(before) == config_group(with_fields(before, config={**before["config"], "test_split": None}))


# ----------------------------------------------------------------- the final test evaluation


def test_the_test_metrics_are_the_test_splits_after_the_last_epoch(cli, write_suite, tmp_path):
    # the test file holds the validation sentences with their labels flipped: the same model
    # predicts the same classes for them, so its test accuracy is 1 - its last validation accuracy
    # two thirds positive: no accuracy of 0.5, which would read the same either way
    sentences = [(f"the {w} sat on mat {i}", "pos" if i % 3 else "neg") for i, w in enumerate(["cat", "dog"] * 12)]
    flip = {"pos": "neg", "neg": "pos"}
    write = lambda name, rows: (tmp_path / name).write_text(  # noqa: E731
        "text,label\n" + "".join(f"{t},{lab}\n" for t, lab in rows), encoding="utf-8")
    write("train.csv", sentences * 2)
    write("dev.csv", sentences)
    write("test.csv", [(t, flip[lab]) for t, lab in sentences])
    suite = write_suite(
        f"""
        name: tested
        defaults:
          dataset:
            name: files
            options: {{train: {tmp_path / 'train.csv'}, validation: {tmp_path / 'dev.csv'},
                       test: {tmp_path / 'test.csv'}, labels: [neg, pos], metrics: [accuracy, mcc]}}
          test_split: test
          precision: fp32
        """
    )
    out = tmp_path / "out"
    sets = tiny_sets(**{"dataset.subset.train": None, "dataset.subset.validation": None, "epochs": 2})
    code, _, err = cli("run", suite, "--out", out, "--no-progress", *sets)
    assert code == 0, err
    (rec,) = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    last = rec["epochs"][-1]["metrics"]
    assert set(rec["test_metrics"]) == {"accuracy", "mcc"}
    assert rec["test_metrics"]["accuracy"] == pytest.approx(1 - last["accuracy"])
    assert rec["test_metrics"]["mcc"] == pytest.approx(-last["mcc"], abs=1e-9)
    assert rec["metrics"] == last  # the per-epoch metrics stay the validation split's
    low, high = rec["test_metrics_ci95"]["accuracy"]
    assert low <= rec["test_metrics"]["accuracy"] <= high
    assert rec["data"]["test"] == {"examples": 24, "of": 24} and rec["test_seconds"] > 0
    assert all("test" not in e for e in rec["epochs"])  # no epoch counts it

    code, table, err = cli("report", out, "--format", "md")
    assert code == 0, err
    header = [c.strip() for c in table.splitlines()[2].strip("|").split("|")]
    assert {"accuracy", "mcc", "test accuracy", "test mcc"} <= set(header)


def test_the_test_split_is_not_the_eval_split(cli, write_suite):
    code, _, err = cli("validate", write_suite("name: x\ndefaults: {eval_split: test, test_split: test}\n"))
    assert code == 2 and "defaults.test_split: expected a split other than the eval_split" in err


def test_a_run_on_bert_tiny_records_the_cola_test_split(cli, write_suite, tmp_path):
    out = tmp_path / "out"
    suite = write_suite("name: x\ndefaults: {dataset: {name: cola, validation_from_train: {size: 64, seed: 42}}}\n")
    code, _, err = cli("run", suite, "--out", out, "--no-progress",
                       *tiny_sets(test_split="test", **{"dataset.subset.test": 48}))
    assert code == 0, err
    (rec,) = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert set(rec["test_metrics"]) == {"mcc", "accuracy"} and set(rec["test_metrics_ci95"]) == {"mcc", "accuracy"}
    assert rec["data"]["test"]["examples"] == 48 and rec["data"]["test"]["of"] == 516  # out_of_domain_dev
    assert rec["data"]["validation"]["of"] == 64 and rec["data"]["train"]["of"] == 8551 - 64
    assert rec["data"]["train"]["validation_from_train"]["indices_sha256"]
    assert rec["config"]["test_split"] == "test"


# ---------------------------------------------------------------- model: the first available


def test_the_tutorial_suite_shows_its_protocol_and_the_model_it_picked(cli):
    code, out, err = cli("validate", REPO / "suites" / "tutorial.yaml")
    assert code == 0, err
    assert "tutorial: 2 runs" in out and "random_split" in out and "out_of_domain_dev" in out
    for key in ("dataset.validation_from_train.size=0.1", "dataset.validation_from_train.seed=42",
                "dataset.validation_from_train.by=random", "test_split=test", "batch_size=32", "epochs=4",
                "adam_eps=1e-08", "warmup_ratio=0.0", "max_grad_norm=1.0", "seed=42", "strategy.name=fixed",
                "head.name=linear"):
        assert key in out, key
    model = out.split("model=", 1)[1].split()[0]
    assert model in ("bert-base-uncased", "minilm")
    # a note says where the model came from: the CPU protocol, or the first available of the list
    assert f"on_cpu applies: model={model}" in err or f"using {model}, the first available" in err


def test_model_list_picks_the_first_this_machine_has(cli, write_suite, tmp_path):
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text("{}")
    suite = write_suite(f"name: x\ndefaults: {{model: [not-cached/anywhere, {checkpoint}, minilm]}}\n")
    code, out, err = cli("validate", suite)
    assert code == 0, err
    assert f"model={checkpoint}" in out
    assert f"defaults.model: using {checkpoint}, the first available of [not-cached/anywhere, " in err
    assert "not-cached/anywhere: not in the Hugging Face cache, and the hub cannot be reached" in err

    code, out, err = cli("validate", suite, "--set", "model=[bert-tiny, minilm]", "--set", "init=random")
    assert code == 0 and "model=bert-tiny" in out  # an architecture with init: random

    code, _, err = cli("validate", suite, "--set", "model=[not-cached/anywhere, ./no-such-dir]")
    assert code == 2
    assert "--set model: none of these models is available here: not-cached/anywhere: " in err


# ---------------------------------------------------------------- the accuracy cost of speed


def test_the_pareto_front_is_what_nothing_beats_on_both():
    points = [(1.0, 0.20), (2.0, 0.30), (3.0, 0.25), (2.0, 0.20), (1.0, 0.20), None, (4.0, 0.31)]
    assert pareto_front(points) == [True, True, False, False, True, None, True]


def _lr_strategy(test: dict[tuple[str, float], float] | None = None) -> list[dict]:
    """fixed: 19.2 s, bucketed: 4.7 s an epoch (means over seeds 1..3); MCC by lr (the same
    means), bucketed at 1e-4 lower; with ``test``, each configuration's test MCC."""
    mcc = {2e-5: 0.10, 5e-5: 0.25, 1e-4: 0.30}
    out = []
    for strategy, seconds in (("fixed", 19.0), ("bucketed", 4.5)):
        for lr, score in mcc.items():
            score = 0.20 if (strategy, lr) == ("bucketed", 1e-4) else score
            for seed in (1, 2, 3):
                extra = {"test_split": "test"} if test is not None else {}
                rec = record(f"{strategy}-{lr}-{seed}", strategy=strategy, seed=seed, seconds=seconds + 0.1 * seed,
                             mcc=score + 0.01 * (seed - 2), lr=lr, **extra)
                if test is not None:
                    rec = with_fields(rec, test_metrics={"mcc": test[(strategy, lr)], "accuracy": 0.7})
                out.append(rec)
    return out


def _front(records: list[dict]) -> set[tuple[str, float]]:
    return {(r.config["strategy.name"], r.config["lr"]) for r in rows(records).rows if r.pareto}


def test_the_table_marks_the_pareto_configurations_seeds_grouped(cli, tmp_path):
    records = _lr_strategy()
    # bucketed 5e-5 is the fastest at its MCC, fixed 1e-4 the most accurate; every other
    # configuration is as slow as one of them and less accurate
    assert _front(records) == {("bucketed", 5e-5), ("fixed", 1e-4)}
    assert all(r.pareto is not None for r in rows(records).rows)

    code, out, err = cli("report", write_results(tmp_path / "r", records), "--format", "md")
    assert code == 0, err
    lines = out.strip().splitlines()
    header = [c.strip() for c in lines[2].strip("|").split("|")]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines[4:]]
    marked = {(c[header.index("strategy")], c[header.index("lr")]) for c in cells if c[header.index("pareto")] == "★"}
    assert marked == {("bucketed", "5e-05"), ("fixed", "0.0001")}
    code, out, err = cli("report", tmp_path / "r")
    assert code == 0 and "★: on the Pareto front of epoch time and mcc" in " ".join(out.split())


def test_the_front_is_judged_on_the_test_metric_when_every_run_has_one():
    test = {("fixed", 2e-5): 0.40, ("fixed", 5e-5): 0.1, ("fixed", 1e-4): 0.1,
            ("bucketed", 2e-5): 0.1, ("bucketed", 5e-5): 0.1, ("bucketed", 1e-4): 0.1}
    records = _lr_strategy(test)
    # by test MCC fixed 2e-5 is the best and the three bucketed ones tie as the fastest
    assert _front(records) == {("fixed", 2e-5), ("bucketed", 2e-5), ("bucketed", 5e-5), ("bucketed", 1e-4)}
    data = tradeoff_data(records)
    assert (data.metric, data.split) == ("test_mcc", "test")
    # one run without a test score: the front goes back to the validation metric
    records[0] = with_fields(records[0], test_metrics=None)
    assert _front(records) == {("bucketed", 5e-5), ("fixed", 1e-4)}


def test_the_accuracy_time_plot_is_drawn_from_a_results_file(cli, tmp_path):
    records = _lr_strategy()
    results = write_results(tmp_path / "r", records)
    data = tradeoff_data(records)
    assert data.metric == "mcc" and data.seeds == 3 and len(data.points) == 6
    point = next(p for p in data.points if p.label == "fixed, lr=0.0001")
    assert point.pareto and point.score == pytest.approx(0.30) and point.score_error > 0 and point.seconds_error > 0

    code, _, err = cli("report", results, "--plot", "--x", "time")
    assert code == 0, err
    drawn = results / "tradeoff.png"
    assert drawn.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"plot: {drawn}" in err
    target = tmp_path / "mine.png"
    code, _, err = cli("report", results / "results.jsonl", "--plot", target, "--x", "time")
    assert code == 0 and target.read_bytes()[:4] == b"\x89PNG"
    code, _, err = cli("report", results, "--plot", "--x", "time", "--group", "strategy")
    assert code == 2 and "--x time draws one point per configuration" in err


def test_report_epochs_shows_each_epochs_validation_metrics_and_the_test_score_once(cli, tmp_path):
    """The tutorial's view: validation accuracy after each epoch, then the final test score."""
    first = record("a", max_len=64, mcc=0.2)
    second = dict(first["epochs"][0], epoch=2, train_seconds=1.5, train_loss=0.25, metrics={"mcc": 0.4, "accuracy": 0.81})
    run = with_fields(first, epochs=[first["epochs"][0], second], test_metrics={"mcc": 0.33, "accuracy": 0.75})
    other = record("b", max_len=128, mcc=0.1)  # no test split: no test row
    out = write_results(tmp_path / "out", [run, other])
    code, text, err = cli("report", out, "--epochs", "--format", "md")
    assert code == 0, err
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    assert lines[0] == "| max_len | epoch | train s | train loss | mcc | accuracy |"
    assert lines[1:] == [
        "| 64 | 1 | 2.00 | 0.5000 | 0.200 | 0.700 |",
        "| 64 | 2 | 1.50 | 0.2500 | 0.400 | 0.810 |",
        "| 64 | test | — | — | 0.330 | 0.750 |",
        "| 128 | 1 | 2.00 | 0.5000 | 0.100 | 0.700 |",
    ]


def test_the_on_cpu_note_names_only_what_on_cpu_still_sets_after_set(cli):
    """The full protocol on a CPU is on_cpu overridden by --set: the note must not claim
    the CPU protocol's learning rate and subset."""
    code, out, err = cli("validate", REPO / "suites" / "tutorial.yaml", "--set", "lr=2e-5",
                         "--set", "dataset.subset.train=null", "--set", "device=cpu")
    assert code == 0, err
    note = " ".join(err.split())
    assert "on_cpu applies: model=minilm, eval_batch_size=128 (--set overrides dataset.subset.train, lr)" in note
    assert "lr=2e-05" in out and "dataset.subset.train=None" in out
