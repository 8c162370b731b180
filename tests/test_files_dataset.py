"""`files`: a user's own CSV / TSV / JSON Lines through a suite, no code; bad data in one line."""

from __future__ import annotations

import json
import textwrap

import pytest

from helpers import tiny_sets

SMALL = {"dataset.subset.train": None, "dataset.subset.validation": None}


def _csv(rows: list[tuple[str, str]], header="review,stars") -> str:
    quoted = ['"' + t.replace('"', '""') + '"' for t, _ in rows]  # RFC 4180: a quote is doubled
    return header + "\n" + "".join(f"{q},{s}\n" for q, (_, s) in zip(quoted, rows))


TRAIN = [(f"A fine, sturdy thing number {i}", "5") for i in range(12)] + [
    (f'Broke at once, "never" again {i}', "1") for i in range(12)
]


def run_files(cli, write_suite, tmp_path, options: str, files: dict[str, str | bytes]):
    for name, content in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    suite = write_suite(
        "name: mine\ndefaults:\n  dataset:\n    name: files\n    options:\n" + textwrap.indent(textwrap.dedent(options), "      ")
    )
    out = tmp_path / "out"
    code, _, err = cli("run", suite, "--out", out, "--no-progress", *tiny_sets(**SMALL))
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()] if code == 0 else []
    return code, err, records


def test_a_users_csv_with_no_code(cli, write_suite, tmp_path):
    code, err, records = run_files(
        cli, write_suite, tmp_path,
        """
        train: data/train.csv
        validation: data/dev.csv
        text: review
        label: stars
        labels: [1, 5]
        metrics: [macro_f1, accuracy]
        """,
        {"data/train.csv": _csv(TRAIN), "data/dev.csv": _csv(TRAIN[:4] + TRAIN[-4:])},
    )
    assert code == 0, err
    (record,) = records
    assert record["status"] == "ok"
    assert set(record["metrics"]) == {"macro_f1", "accuracy"} and record["main_metric"] == "macro_f1"
    assert record["data"]["labels"] == ["1", "5"]
    assert record["data"]["train"]["examples"] == 24 and record["data"]["validation"]["examples"] == 8
    assert record["config"]["dataset"]["options"]["train"] == "data/train.csv"  # as written: a stable run id


def test_tsv_without_header_pairs_and_inferred_string_labels(tmp_path):
    from harness.builtin.files import Files, FilesOptions
    from harness.data import DataFiles

    rows = "".join(f'{"yes" if i % 2 else "no"}\tfirst "{i}"\tsecond {i}\n' for i in range(10))
    (tmp_path / "pairs.tsv").write_text(rows)
    opts = FilesOptions.model_validate(
        {"train": "pairs.tsv", "header": False, "text": 1, "text_pair": 2, "label": 0},
        context={"base_dir": str(tmp_path)},
    )
    dataset = Files(opts, DataFiles("files"))
    examples = dataset.load("train")
    assert dataset.labels == ("no", "yes") and dataset.splits == ("train",)
    assert examples[1].text == 'first "1"' and examples[1].text_pair == "second 1" and examples[1].label == 1


def test_jsonl_with_integer_labels(tmp_path):
    from harness.builtin.files import Files, FilesOptions
    from harness.data import DataFiles

    lines = [json.dumps({"q": f"q{i} \u0085 nel", "a": f"a{i}", "y": i % 3}) for i in range(9)]
    (tmp_path / "t.jsonl").write_text("\n".join(lines))  # no final newline
    opts = FilesOptions.model_validate({"train": str(tmp_path / "t.jsonl"), "text": "q", "text_pair": "a", "label": "y"})
    dataset = Files(opts, DataFiles("files"))
    examples = dataset.load("train")
    assert len(examples) == 9 and dataset.labels == ("0", "1", "2")
    assert examples[4].label == 1 and examples[4].text == "q4 \u0085 nel"


# ---------------------------------------------------------------------------- bad data

OPTS = """
train: train.csv
validation: dev.csv
text: review
label: stars
labels: [1, 5]
"""


@pytest.mark.parametrize(
    "dev,message",
    [
        ('review,stars\n"ok",5\n"too",5,many\n', r"dev\.csv:3: expected 2 columns, got 3"),
        ('review,stars\n"ok",5\n"meh",3\n', r"dev\.csv:3: label '3' is not in the label set \['1', '5'\]"),
        ("review,stars\n", r"dev\.csv:1: no data rows \(the validation split is empty\)"),
        (b'review,stars\n"ok",5\n"caf\xe9",1\n', r"dev\.csv:3: not valid UTF-8"),
        ('text,stars\n"ok",5\n', r"dev\.csv:1: no column 'review' \(columns: text, stars\)"),
        ('review,stars\n"ok",5\n"never closed,1\n"fine",5\n', r"dev\.csv:3: malformed row.*unterminated quote"),
    ],
    ids=["column-count", "label-outside", "empty", "not-utf8", "missing-column", "unterminated-quote"],
)
def test_bad_data_is_one_line_naming_file_and_line(cli, write_suite, tmp_path, dev, message):
    import re

    code, err, _ = run_files(cli, write_suite, tmp_path, OPTS, {"train.csv": _csv(TRAIN), "dev.csv": dev})
    assert code == 2
    assert re.search(message, err), err
    assert str(tmp_path / "dev.csv") in err.replace("\n", "") and "Traceback" not in err


@pytest.mark.parametrize(
    "content,message",
    [
        ('{"text": "a", "label": 1}\n{"text": "b"}\n', r"t\.jsonl:2: no key 'label'"),
        ('{"text": "a", "label": 1}\n{"text": "b", label: 0}\n', r"t\.jsonl:2: not valid JSON"),
        ('{"text": "a", "label": 1}\n\n["text"]\n', r"t\.jsonl:3: expected a JSON object"),
    ],
)
def test_bad_jsonl(tmp_path, content, message):
    from harness.builtin.files import Files, FilesOptions
    from harness.data import DataFiles
    from harness.errors import HarnessError

    (tmp_path / "t.jsonl").write_text(content)
    dataset = Files(FilesOptions(train=str(tmp_path / "t.jsonl"), labels=[0, 1]), DataFiles("files"))
    with pytest.raises(HarnessError, match=message):
        dataset.load("train")


@pytest.mark.parametrize(
    "options,message",
    [
        ("train: nowhere.csv\nvalidation: dev.csv\n", r"train file .*nowhere\.csv does not exist"),
        ("train: train.csv\nvalidation: dev.csv\nmetrics: [acc]\n", r"metrics: unknown metric 'acc'"),
        ("train: train.csv\nlabels: [a, a]\n", r"labels: .*two distinct labels"),
        ("train: train.txt\n", r"cannot tell the format"),
        ("train: train.csv\nvalidation: dev.csv\ntext: review\nlabel: stars\n", None),
    ],
)
def test_option_mistakes(cli, write_suite, tmp_path, options, message):
    import re

    files = {"train.csv": _csv(TRAIN), "dev.csv": _csv(TRAIN[:2] + TRAIN[-2:]), "train.txt": "x"}
    code, err, records = run_files(cli, write_suite, tmp_path, options, files)
    if message is None:  # labels inferred from train: ['1', '5']
        assert code == 0, err
        assert records[0]["data"]["labels"] == ["1", "5"]
    else:
        assert code == 2 and re.search(message, err), err
