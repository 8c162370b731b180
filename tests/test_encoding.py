"""Data files as they come: a file in Latin-1 or cp1252 reads with `encoding`, and a file
that is not in its encoding is one error naming the file, the line and the encoding."""

from __future__ import annotations

import csv
import json
import re
import textwrap

import pytest

from helpers import tiny_sets
from harness.data import parse_label, read_header, read_jsonl, read_lines, read_rows, read_text
from harness.errors import HarnessError

# A question-classification file as it comes: Latin-1, the first non-ASCII character on
# line 66, past the first 8 KiB a text stream decodes at once (so its offsets are no line
# numbers), as in the file a user tried.
ROWS = [(f"What is the name of question number {i}, asked in a rather long sentence that goes on and on and on "
         "for quite a while, to fill a line?", "DESC" if i % 2 else "ENTY") for i in range(1, 65)]
ROWS.insert(64, ("Who wrote the café scene in À bout de souffle?", "HUM"))
ROWS += [(f"How many answers does question {i} have?", "NUM") for i in range(66, 100)]


def _latin1_csv() -> bytes:
    text = "question,coarse\n" + "".join(f'"{q}",{label}\n' for q, label in ROWS)
    return text.encode("latin-1")


def _run(cli, tmp_path, options: str):
    suite = tmp_path / "suite.yaml"
    suite.write_text("name: trec\ndefaults:\n  dataset:\n    name: files\n    options:\n"
                     + textwrap.indent(textwrap.dedent(options), "      "))
    out = tmp_path / "out"
    code, _, err = cli("run", suite, "--out", out, "--no-progress", "--no-plot", "--isolation", "none",
                       *tiny_sets(**{"dataset.subset.validation": None}))
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()] if code == 0 else []
    return code, err, records


OPTIONS = """\
    train: trec.csv
    validation: trec.csv
    text: question
    label: coarse
    """


def test_a_latin1_file_fails_at_its_line_without_the_option_and_reads_with_it(cli, tmp_path):
    data = _latin1_csv()
    assert data.index("é".encode("latin-1")) > 8192
    (tmp_path / "trec.csv").write_bytes(data)

    code, err, _ = _run(cli, tmp_path, OPTIONS)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert lines[0] == (
        f"error: {tmp_path / 'trec.csv'}:66: not valid UTF-8 (invalid continuation byte); if the file is in "
        "another encoding, set dataset.options.encoding (e.g. latin-1, cp1252)"
    )

    code, err, records = _run(cli, tmp_path, OPTIONS + "encoding: latin-1\n")
    assert code == 0, err
    (record,) = records
    assert record["status"] == "ok" and record["data"]["labels"] == ["DESC", "ENTY", "HUM", "NUM"]
    assert record["config"]["dataset"]["options"]["encoding"] == "latin-1"


def test_the_decoded_text_is_the_text(tmp_path):
    from harness.builtin.files import Files, FilesOptions
    from harness.data import DataFiles

    (tmp_path / "trec.csv").write_bytes(_latin1_csv())
    options = FilesOptions.model_validate(
        {"train": "trec.csv", "text": "question", "label": "coarse", "encoding": "latin-1"},
        context={"base_dir": str(tmp_path)},
    )
    examples = Files(options, DataFiles("files")).load("train")
    assert examples[64].text == "Who wrote the café scene in À bout de souffle?" and len(examples) == len(ROWS)


def test_an_unknown_encoding_names_the_key(cli, tmp_path):
    (tmp_path / "trec.csv").write_bytes(_latin1_csv())
    code, err, _ = _run(cli, tmp_path, OPTIONS + "encoding: latin-9x\n")
    assert code == 2
    assert re.search(r"suite\.yaml:\d+: defaults\.dataset\.options\.encoding: unknown encoding .*'latin-9x'", err), err


# ------------------------------------------------------------- the readers plugins use

CP1252 = "label\ttext\npos\tWorth every €, a café classic\nneg\t“Dull”, said the critic\nmeh\tfine\n"


def test_a_plugin_reads_a_cp1252_file_and_keeps_file_line_errors(tmp_path):
    """What a plugin author writes for a file in Windows-1252: the readers decode it and
    every error still names the file and the line."""
    path = tmp_path / "reviews.tsv"
    path.write_bytes(CP1252.encode("cp1252"))
    labels = ("neg", "pos")
    rows = list(read_rows(path, header=True, columns=2, encoding="cp1252"))
    assert [line for line, _ in rows] == [2, 3, 4]
    assert rows[0][1] == ["pos", "Worth every €, a café classic"] and rows[1][1][1] == "“Dull”, said the critic"
    assert read_header(path, delimiter="\t", quoting=csv.QUOTE_NONE, encoding="cp1252") == ["label", "text"]
    with pytest.raises(HarnessError, match=re.escape(f"{path}:4: label 'meh' is not in the label set ['neg', 'pos']")):
        [parse_label(label, labels, path, line) for line, (label, _) in rows]
    assert read_text(path, encoding="cp1252").splitlines()[2].endswith("the critic")
    assert [n for n, _ in read_lines(path, encoding="cp1252")] == [1, 2, 3, 4]

    # without the encoding, the same file is an error at its line, naming UTF-8
    with pytest.raises(HarnessError, match=re.escape(f"{path}:2: not valid UTF-8 (invalid start byte)") + "$"):
        list(read_rows(path, header=True, columns=2))


def test_a_decoding_error_names_the_encoding_line_and_the_setting(tmp_path):
    path = tmp_path / "t.jsonl"
    body = "".join(json.dumps({"text": f"line {i}", "label": "a"}) + "\n" for i in range(1, 70))
    path.write_bytes(body.encode() + b'{"text": "bad \x81 byte", "label": "a"}\n')
    assert [n for n, _ in read_jsonl(path, encoding="latin-1")][-1] == 70  # every byte is Latin-1
    # 0x81 is no character in cp1252, and not UTF-8 either
    message = f"{path}:70: not valid cp1252 (character maps to <undefined>); if the file is in another encoding, " \
              "set my_dataset.encoding (e.g. latin-1, cp1252)"
    with pytest.raises(HarnessError, match=re.escape(message) + "$"):
        list(read_jsonl(path, encoding="cp1252", encoding_option="my_dataset.encoding"))
    with pytest.raises(HarnessError, match=re.escape(f"{path}:70: not valid UTF-8 (invalid start byte)") + "$"):
        list(read_lines(path))
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())  # a BOM: the same line
    with pytest.raises(HarnessError, match=re.escape(f"{path}:70: not valid UTF-8 (invalid start byte)") + "$"):
        list(read_jsonl(path))
    with pytest.raises(HarnessError, match=re.escape(f"{path}: unknown encoding 'klingon'")):
        list(read_lines(path, encoding="klingon"))


def test_utf8_drops_a_bom(tmp_path):
    path = tmp_path / "bom.tsv"
    path.write_bytes("\ufefflabel\ttext\npos\tok\n".encode())
    assert read_header(path, delimiter="\t", quoting=csv.QUOTE_NONE) == ["label", "text"]
    assert read_header(path, delimiter="\t", quoting=csv.QUOTE_NONE, encoding="UTF8") == ["label", "text"]
    assert read_text(path).startswith("label")
