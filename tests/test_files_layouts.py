"""`files` takes data as it comes: the label inside the line, one file per class, plain lines.

Each layout is built here in its distributed form (a label-first question file with a
Latin-1 byte, two sentence-polarity files in cp1252 with no splits, folders of documents),
run through a suite with no plugin, and read back against a reader written by hand.
"""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest

from helpers import tiny_sets
from harness.builtin.files import Files, FilesOptions
from harness.data import DataFiles
from harness.errors import HarnessError

COARSE = ("DESC", "HUM", "LOC", "NUM")
FINE = {"DESC": ("manner", "def"), "HUM": ("ind", "gr"), "LOC": ("city", "other"), "NUM": ("date", "count")}


def questions(n: int, offset: int = 0) -> bytes:
    """A TREC-style file: ``COARSE:fine question`` per line, Latin-1, one é in it."""
    lines = []
    for i in range(n):
        coarse = COARSE[i % len(COARSE)]
        fine = FINE[coarse][i % 2]
        lines.append(f"{coarse}:{fine} Which question number {i + offset} is this ?")
    lines[1] = "HUM:ind Who wrote the caf\xe9 scene in question 1 ?"
    return ("\n".join(lines) + "\n").encode("latin-1")


def polarity(label: str, n: int) -> bytes:
    """One sentence per line, Windows cp1252 (a curly apostrophe, an em dash)."""
    word = "wonderful" if label == "pos" else "dreadful"
    lines = [f"a {word} film \u2014 number {i}, it\u2019s {word} ." for i in range(n)]
    return ("\r\n".join(lines) + "\r\n").encode("cp1252")


def hand_read_questions(data: bytes) -> list[tuple[str, str]]:
    """(text, coarse label) per line, as a user would write it: decode, split at the first space."""
    out = []
    for line in data.decode("latin-1").splitlines():
        if line.strip():
            label, text = line.split(" ", 1)
            out.append((text.strip(), label.split(":")[0]))
    return out


def hand_read_lines(data: bytes, encoding: str) -> list[str]:
    return [line.strip() for line in data.decode(encoding).splitlines() if line.strip()]


def write(tmp_path: Path, files: dict[str, bytes | str]) -> None:
    for name, content in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))


def run_suite(cli, write_suite, tmp_path, dataset: str, extra: str = ""):
    suite = write_suite("name: layout\ndefaults:\n  dataset:\n" + textwrap.indent(textwrap.dedent(dataset), "    ")
                        + extra)
    out = tmp_path / "out"
    code, _, err = cli("run", suite, "--out", out, "--no-progress",
                       *tiny_sets(**{"dataset.subset.train": None, "dataset.subset.validation": None}))
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()] if code == 0 else []
    return code, err, records


def dataset(tmp_path: Path, **options) -> Files:
    return Files(FilesOptions.model_validate(options, context={"base_dir": str(tmp_path)}), DataFiles("files"))


# --------------------------------------------------------------------- the label in the line


def test_a_label_first_file_runs_with_no_code_and_reads_as_a_hand_written_reader(cli, write_suite, tmp_path):
    train, test = questions(32), questions(12, offset=100)
    write(tmp_path, {"trec/train_5500.label": train, "trec/TREC_10.label": test})
    code, err, records = run_suite(cli, write_suite, tmp_path, """
        name: files
        options:
          train: trec/train_5500.label
          test: trec/TREC_10.label
          label_in_line: {separator: " ", position: first}
          label_fold: ":"
          encoding: latin-1
        """, "  eval_split: test\n")
    assert code == 0, err
    (record,) = records
    assert record["status"] == "ok" and record["data"]["labels"] == list(COARSE)
    assert record["data"]["train"]["examples"] == 32 and record["data"]["test"]["examples"] == 12

    ds = dataset(tmp_path, train="trec/train_5500.label", test="trec/TREC_10.label",
                 label_in_line={"separator": " "}, label_fold=":", encoding="latin-1")
    for split, data in (("train", train), ("test", test)):
        got = [(e.text, ds.labels[e.label]) for e in ds.load(split)]
        assert got == hand_read_questions(data)
    assert ds.load("train")[1].text == "Who wrote the café scene in question 1 ?"


def test_a_pattern_a_last_label_and_a_mapping_fold_read_the_same_examples(tmp_path):
    write(tmp_path, {"q.txt": questions(16)})
    expected = hand_read_questions(questions(16))
    by_pattern = dataset(tmp_path, train="q.txt", encoding="latin-1",
                         label_in_line={"pattern": r"(?P<label>[A-Z]+):\S+ (?P<text>.+)"})
    assert [(e.text, by_pattern.labels[e.label]) for e in by_pattern.load("train")] == expected

    # `text<TAB>FINE`, folded by a mapping: labels not in it stay as they are
    last = "".join(f"{text}\t{label}:{FINE[label][0]}\n" for text, label in expected)
    write(tmp_path, {"last.tsv.txt": last})
    fold = {f"{c}:{FINE[c][0]}": c for c in ("DESC", "HUM")}
    by_last = dataset(tmp_path, train="last.tsv.txt", label_in_line={"separator": "\t", "position": "last"},
                      label_fold=fold)
    got = [(e.text, by_last.labels[e.label]) for e in by_last.load("train")]
    assert got == [(t, c if c in ("DESC", "HUM") else f"{c}:{FINE[c][0]}") for t, c in expected]


def test_plain_lines_are_a_format_of_their_own_with_no_quoting_rules(tmp_path):
    """A quote, a comma, a tab: text, as written (a CSV reader would have split or joined them)."""
    write(tmp_path, {"odd.txt": 'POS "unclosed, quote\tand a tab\nNEG said "no" twice "no"\n'})
    ds = dataset(tmp_path, train="odd.txt", format="lines", label_in_line={})
    assert [(e.text, ds.labels[e.label]) for e in ds.load("train")] == [
        ('"unclosed, quote\tand a tab', "POS"), ('said "no" twice "no"', "NEG")]


# ------------------------------------------------------------------------- one file per class


def test_two_class_files_in_cp1252_with_no_splits_run_and_read_as_a_hand_written_reader(cli, write_suite, tmp_path):
    pos, neg = polarity("pos", 20), polarity("neg", 20)
    write(tmp_path, {"rt-polaritydata/rt-polarity.pos": pos, "rt-polaritydata/rt-polarity.neg": neg})
    code, err, records = run_suite(cli, write_suite, tmp_path, """
        name: files
        validation_from_train: {size: 0.25, seed: 1, by: stratified}
        options:
          classes: {pos: rt-polaritydata/rt-polarity.pos, neg: rt-polaritydata/rt-polarity.neg}
          encoding: cp1252
        """)
    assert code == 0, err
    (record,) = records
    assert record["status"] == "ok" and record["data"]["labels"] == ["pos", "neg"]  # the mapping's order
    carve = record["data"]["validation"]["validation_from_train"]
    assert (carve["of"], carve["train"], carve["validation"]) == (40, 30, 10)

    ds = dataset(tmp_path, classes={"pos": "rt-polaritydata/rt-polarity.pos", "neg": "rt-polaritydata/rt-polarity.neg"},
                 encoding="cp1252")
    expected = [(t, "pos") for t in hand_read_lines(pos, "cp1252")] + [(t, "neg") for t in hand_read_lines(neg, "cp1252")]
    assert [(e.text, ds.labels[e.label]) for e in ds.load("train")] == expected
    assert ds.splits == ("train",) and "\u2019" in ds.load("train")[0].text

    # the folder alone: the file names differ only in their suffix, so the suffixes are the classes
    folder = dataset(tmp_path, classes="rt-polaritydata", encoding="cp1252")
    assert folder.labels == ("neg", "pos")  # sorted, as scikit-learn's load_files
    assert sorted((e.text, folder.labels[e.label]) for e in folder.load("train")) == sorted(expected)


def test_class_folders_per_split_one_document_per_file(cli, write_suite, tmp_path):
    """aclImdb's layout: train/pos/0_9.txt ..., one review per file, a split per folder."""
    files = {}
    for split, n in (("train", 8), ("test", 4)):
        for label in ("neg", "pos"):
            for i in range(n):
                files[f"reviews/{split}/{label}/{i}_{label}.txt"] = f"A {label} review, {i}.\nIt goes on a second line."
    write(tmp_path, files)
    code, err, records = run_suite(cli, write_suite, tmp_path, """
        name: files
        options: {train: reviews/train, test: reviews/test, format: text}
        """, "  eval_split: test\n")
    assert code == 0, err
    assert records[0]["data"]["test"]["examples"] == 8 and records[0]["data"]["labels"] == ["neg", "pos"]
    ds = dataset(tmp_path, train="reviews/train", format="text")
    texts = [(e.text, ds.labels[e.label]) for e in ds.load("train")]
    assert texts[0] == ("A neg review, 0.\nIt goes on a second line.", "neg") and len(texts) == 16


def test_a_class_file_may_be_a_table(tmp_path):
    write(tmp_path, {"a.csv": "review\nfine thing\n\"quoted, fine\"\n", "b.csv": "review\nbad thing\nworse\n"})
    ds = dataset(tmp_path, classes={"good": "a.csv", "bad": "b.csv"}, text="review")
    assert [(e.text, ds.labels[e.label]) for e in ds.load("train")] == [
        ("fine thing", "good"), ("quoted, fine", "good"), ("bad thing", "bad"), ("worse", "bad")]


# ------------------------------------------------------------------------- analyze, errors


def test_analyze_reads_every_layout_the_same_way(cli, tmp_path, monkeypatch):
    write(tmp_path, {"q.label": questions(24), "p.pos": polarity("pos", 10), "p.neg": polarity("neg", 10)})
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("analyze", "files", "--option", "train=q.label", "--option", "label_in_line={}",
                         "--option", "label_fold=':'", "--option", "encoding=latin-1", "--max-len", "16,32")
    assert code == 0, err
    assert "train: 24 examples" in " ".join(out.split())
    code, out, err = cli("analyze", "files", "--option", "classes={pos: p.pos, neg: p.neg}",
                         "--option", "encoding=cp1252", "--max-len", "16,32")
    assert code == 0, err
    assert "train: 20 examples" in " ".join(out.split())


@pytest.mark.parametrize("options, files, message", [
    ({"train": "q.label", "label_in_line": {"pattern": r"(?P<label>[A-Z]+):\S+ (?P<text>.+)"}},
     {"q.label": "DESC:def What is it ?\nno label here\n"},
     r"q\.label:2: the line does not match dataset\.options\.label_in_line \(pattern .*\): 'no label here'$"),
    ({"classes": {"pos": "p.pos", "neg": "p.neg"}}, {"p.pos": "fine\n"},
     r"dataset\.options\.classes\.neg: .*p\.neg: no such file or folder \(the files of class 'neg'\)$"),
    ({"classes": {"pos": "p.pos", "neg": "p.neg"}}, {"p.pos": "fine\n", "p.neg": "\n\n"},
     r"p\.neg:1: class 'neg' has no examples \(an empty file\)$"),
    ({"train": "plain.txt", "format": "lines"}, {"plain.txt": "a line\n"},
     r"plain lines carry no label column; say where the label is \(dataset\.options\.label_in_line\)"),
])
def test_layout_mistakes_are_one_line_naming_the_file(tmp_path, options, files, message):
    write(tmp_path, files)
    ds = dataset(tmp_path, **options)
    with pytest.raises(HarnessError) as info:
        ds.check()
        ds.load("train")
    assert re.search(message, str(info.value)), str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("options, message", [
    ({"train": "a.txt", "classes": {"a": "a.txt", "b": "b.txt"}}, "give it or train/validation/test, not both"),
    ({"validation": "a.csv"}, "give `train`"),
    ({"train": "a.csv", "format": "csv", "label_in_line": {}}, "label_in_line reads plain lines"),
    ({"train": "a.txt", "label_in_line": {"pattern": "(?P<label>x)"}}, r"named group\(s\) \(\?P<text>\.\.\.\)"),
    ({"classes": {"only": "a.txt"}}, "at least two classes"),
])
def test_option_mistakes_name_the_option(cli, write_suite, tmp_path, options, message):
    suite = write_suite("name: bad\ndefaults:\n  dataset:\n    name: files\n    options: " + json.dumps(options) + "\n")
    code, _, err = cli("validate", suite)
    assert code == 2 and re.search(message, err), err
    assert "defaults.dataset.options" in err and "Traceback" not in err
