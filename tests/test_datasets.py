"""The built-in datasets read ../shared/data as each SOURCE.md describes it."""

from __future__ import annotations

import csv
import json
import shutil
from collections import Counter

import numpy as np
import pytest

from helpers import tiny_sets
from harness.data import DataFiles
from harness.errors import HarnessError
from harness.registry import load_registry
from harness.data.splits import stratified_subset


def make(name: str, data_dir=None, **options):
    cls = load_registry().get("dataset", name).cls
    return cls(cls.Options(**options), DataFiles(name, data_dir))


# rows and label counts per split, as counted in each SOURCE.md
COUNTS = {
    ("cola", "train"): (8551, 2528, 6023),
    ("cola", "validation"): (527, 162, 365),
    ("cola", "test"): (516, 162, 354),  # out_of_domain_dev.tsv: no final newline
    ("sst2", "train"): (67349, 29780, 37569),
    ("sst2", "validation"): (872, 428, 444),
    ("mrpc", "train"): (3668, 1194, 2474),
    ("mrpc", "validation"): (408, 129, 279),
    ("mrpc", "test"): (1725, 578, 1147),
    ("imdb", "train"): (2500, 1250, 1250),
    ("imdb", "test"): (2500, 1250, 1250),
}


@pytest.mark.parametrize("name,split", list(COUNTS))
def test_rows_and_labels_match_source_md(name, split):
    rows, zeros, ones = COUNTS[(name, split)]
    examples = make(name).load(split)
    assert len(examples) == rows
    assert Counter(e.label for e in examples) == {0: zeros, 1: ones}
    assert all(e.text for e in examples)


def test_mrpc_pairs_match_the_glue_files(data_dir):
    """Train/dev derived from the original files equal GLUE's train.tsv and dev.tsv row for row."""
    for split, name in (("train", "train.tsv"), ("validation", "dev.tsv")):
        with open(data_dir / "mrpc" / name, encoding="utf-8-sig", newline="") as f:
            glue = [r for r in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)][1:]
        ours = make("mrpc").load(split)
        assert [(int(r[0]), r[3], r[4]) for r in glue] == [(e.label, e.text, e.text_pair) for e in ours]
    assert any('"' in e.text for e in ours)  # bare quotes survive QUOTE_NONE


def test_sst2_strips_the_trailing_space_and_cola_keeps_quotes():
    assert not any(e.text.endswith(" ") for e in make("sst2").load("validation"))
    assert sum('"' in e.text for e in make("cola").load("train")) == 2


def test_imdb_options_br_nel_and_holdout():
    default = make("imdb").load("train")
    raw = make("imdb", replace_br=False).load("train")
    assert sum("<br />" in e.text for e in raw) == 1449  # SOURCE.md
    assert not any("<br" in e.text for e in default)
    assert any("\x85" in e.text for e in default)  # U+0085 stays inside its review: still 2,500 rows
    assert [e.text for e in make("imdb").load("validation")] == [e.text for e in make("imdb").load("test")]

    train, held = make("imdb", validation="holdout", holdout_size=300).load("train"), None
    held = make("imdb", validation="holdout", holdout_size=300).load("validation")
    assert len(train) == 2200 and len(held) == 300
    assert Counter(e.label for e in held) == {0: 150, 1: 150}
    assert not {e.text for e in train} & {e.text for e in held}
    with pytest.raises(HarnessError, match="holdout_size 2500 leaves no training reviews"):
        make("imdb", validation="holdout", holdout_size=2500).load("train")


def test_imdb_reads_the_official_aclimdb_layout(tmp_path):
    root = tmp_path / "imdb" / "aclImdb"
    texts = {}
    for split in ("train", "test"):
        for folder, n in (("neg", 2), ("pos", 3)):
            (root / split / folder).mkdir(parents=True)
            for i in range(n):
                text = f"{split} {folder} review {i}.<br /><br />Second line\x85 with NEL."
                (root / split / folder / f"{i}_{8 if folder == 'pos' else 2}.txt").write_text(text, encoding="utf-8")
                texts[(split, folder, i)] = text
    dataset = make("imdb", data_dir=tmp_path)
    dataset.check()
    train = dataset.load("train")
    assert [e.label for e in train] == [0, 0, 1, 1, 1]
    assert train[0].text == "train neg review 0.  Second line\x85 with NEL."
    assert len(dataset.load("validation")) == 5
    (root / "test" / "pos" / "9_10.txt").write_bytes(b"caf\xe9")
    with pytest.raises(HarnessError, match=r"9_10\.txt:1: not valid UTF-8"):
        dataset.load("test")


def test_imdb_layout_csv_is_an_error_when_the_subset_is_missing(tmp_path):
    (tmp_path / "imdb").mkdir()
    with pytest.raises(HarnessError, match="missing train.csv"):
        make("imdb", data_dir=tmp_path, layout="csv").check()


# ----------------------------------------------------------------- runs, end to end

EXPECTED_METRICS = {"cola": {"mcc", "accuracy"}, "sst2": {"accuracy"}, "mrpc": {"f1", "accuracy"}, "imdb": {"accuracy"}}


def test_each_builtin_runs_with_the_embedded_model(cli, write_suite, tmp_path):
    suite = write_suite(f"name: builtins\nmatrix: {{dataset: {list(EXPECTED_METRICS)}}}\n")
    out = tmp_path / "out"
    # the real model, on as little as shows it works: one step of 16 examples of 16 tokens
    sets = tiny_sets(
        model="minilm", init="pretrained", max_len=16, warmup_batches=0,
        **{"dataset.subset.train": 16, "dataset.subset.validation": 16},
    )
    code, stdout, err = cli("run", suite, "--out", out, "--no-progress", *sets)
    assert code == 0, err
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["config"]["dataset"]["name"] for r in records] == list(EXPECTED_METRICS)
    for record in records:
        name = record["config"]["dataset"]["name"]
        assert record["status"] == "ok"
        assert set(record["metrics"]) == EXPECTED_METRICS[name]
        assert record["main_metric"] == {"cola": "mcc", "mrpc": "f1"}.get(name, "accuracy")
        assert record["data"]["validation"]["examples"] == 16


# --------------------------------------------------------------------- subsets


def test_subset_is_seeded_stratified_and_recorded(cli, write_suite, tmp_path):
    labels = np.asarray([e.label for e in make("cola").load("train")])
    idx = stratified_subset(labels, 100, seed=3)
    assert len(idx) == len(set(idx.tolist())) == 100
    assert Counter(labels[idx].tolist()) == {0: 30, 1: 70}  # 2528/8551 = 29.6% unacceptable
    assert np.array_equal(idx, stratified_subset(labels, 100, seed=3))
    assert not np.array_equal(idx, stratified_subset(labels, 100, seed=4))

    suite = write_suite(
        """
        name: subset
        defaults:
          dataset: {name: cola, subset: {train: 64, validation: 32, seed: 3}}
        """
    )
    out = tmp_path / "out"
    code, _, err = cli("run", suite, "--out", out, "--no-progress", *tiny_sets(**{"dataset.subset.train": None, "dataset.subset.validation": None}))
    assert code == 0, err
    (record,) = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    train = record["data"]["train"]
    assert train["examples"] == 64 and train["of"] == 8551 and train["seed"] == 3 and train["stratified"] is True
    assert record["data"]["validation"]["examples"] == 32 and record["data"]["validation"]["of"] == 527
    assert record["config"]["dataset"]["subset"] == {"train": 64, "validation": 32, "test": None, "seed": 3}


# --------------------------------------------------------- bad data in a built-in


@pytest.fixture
def cola_copy(tmp_path, data_dir):
    """A writable copy of CoLA's files in a data directory of its own."""
    shutil.copytree(data_dir / "cola" / "raw", tmp_path / "data" / "cola" / "raw")
    return tmp_path / "data"


def _edit(path, line_no, new):
    lines = path.read_bytes().split(b"\n")
    lines[line_no - 1] = new
    path.write_bytes(b"\n".join(lines))


@pytest.mark.parametrize(
    "line,content,message",
    [
        (5, b"gj04\t1\t\tonly\textra\tcolumns", r"in_domain_dev\.tsv:5: expected 4 columns, got 6"),
        (7, b"gj04\t2\t\tA sentence.", r"in_domain_dev\.tsv:7: label '2' is not in the label set \['0', '1'\]"),
        (9, b"gj04\t1\t\tcaf\xe9 au lait", r"in_domain_dev\.tsv:9: not valid UTF-8"),
    ],
)
def test_bad_rows_in_a_builtin_name_file_and_line(cola_copy, line, content, message):
    _edit(cola_copy / "cola" / "raw" / "in_domain_dev.tsv", line, content)
    with pytest.raises(HarnessError, match=message):
        make("cola", data_dir=cola_copy).load("validation")


def test_an_empty_split_in_a_builtin_names_the_file(cola_copy, cli, write_suite, tmp_path):
    (cola_copy / "cola" / "raw" / "in_domain_dev.tsv").write_text("")
    suite = write_suite(f"name: empty\ndefaults: {{dataset: cola, data_dir: {cola_copy}}}\n")
    code, _, err = cli("run", suite, "--out", tmp_path / "out", "--no-progress", *tiny_sets())
    assert code == 2
    assert "in_domain_dev.tsv:1: no data rows (the validation split is empty)" in err
