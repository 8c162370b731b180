"""Property-based fuzzing (hypothesis) of every user input the harness parses: suites,
``--set`` strings, data files, ``results.jsonl`` and the side files it reads back.

One invariant for each kind: the input parses (and validates), or it stops with one
:class:`~harness.errors.HarnessError`, whose message is one line (the CLI prints it as one
``error:`` line and exits 2); never another exception, and nothing already stored changes.
The parsing entry points are called in-process (the functions ``harness validate``,
preflight and ``harness report`` call), so an example takes milliseconds.

A bounded number of examples per kind by default; ``HARNESS_FUZZ_EXAMPLES=10000`` (or any
number) for the deep run docs/errors.md reports the figures of.
"""

from __future__ import annotations

import copy
import json
import math
import os
import string
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

hypothesis = pytest.importorskip("hypothesis", reason="the fuzz tests need hypothesis (the dev extra)")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from harness.errors import HarnessError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SUITES = sorted((REPO / "suites").glob("*.yaml"))
EXAMPLES = int(os.environ.get("HARNESS_FUZZ_EXAMPLES", "40"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=EXAMPLES <= 100,
                suppress_health_check=list(HealthCheck))
#: examples each kind tried in this session (the deep run's figures), printed at the end
TRIED: dict[str, int] = {}


def expect_parse_or_one_line(kind: str, call, *args: Any) -> Any:
    """``call(*args)``: its result, or None after a one-line HarnessError; any other exception fails."""
    TRIED[kind] = TRIED.get(kind, 0) + 1
    try:
        return call(*args)
    except HarnessError as exc:
        message = str(exc)
        assert message.strip() and "\n" not in message and "\r" not in message, f"not one line: {message!r}"
        assert "Traceback" not in message, message
        return None


@pytest.fixture(scope="module", autouse=True)
def _figures():
    yield
    print("\nfuzz examples tried: " + ", ".join(f"{k} {v}" for k, v in sorted(TRIED.items())))


# ----------------------------------------------------------------------- values and YAML

weird_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.just(math.nan), st.just(10**400),
    st.text(max_size=30), st.text(alphabet=st.characters(codec="utf-8"), max_size=10),
    st.sampled_from(["", "auto", "fixed", "cola", "bert-tiny", "random", "-1", "1e999", ".nan", "~", "0x10",
                     "yes", "no", "null", "[", "{", "*a", "&a", "!!python/object:os.system", "\x00", "\ufeff"]),
)
values = st.recursive(weird_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                             st.dictionaries(st.text(max_size=12), inner, max_size=4)),
                      max_leaves=12)
KEYS = ["name", "description", "defaults", "matrix", "runs", "plugins", "export", "on_cpu", "slurm", "model", "init",
        "dataset", "strategy", "head", "max_len", "batch_size", "epochs", "lr", "seed", "precision", "device",
        "warmup_batches", "subset", "options", "train", "validation", "launcher", "nproc", "target"]


def misspell(key: str, data: st.DataObject) -> str:
    """A key with one character changed, dropped or added."""
    if not key:
        return "x"
    i = data.draw(st.integers(0, len(key) - 1))
    how = data.draw(st.sampled_from(["swap", "drop", "add", "case"]))
    c = data.draw(st.sampled_from(string.ascii_lowercase + "_-. "))
    return {"swap": key[:i] + c + key[i + 1:], "drop": key[:i] + key[i + 1:], "add": key[:i] + c + key[i:],
            "case": key.upper()}[how]


def mutate(doc: Any, data: st.DataObject, depth: int = 0) -> Any:
    """One random change somewhere in a parsed suite: a value replaced (wrong type, huge,
    negative, NaN, unicode), a key removed, added, or misspelt, a list emptied or made huge."""
    if isinstance(doc, dict) and doc and depth < 6 and data.draw(st.booleans()):
        key = data.draw(st.sampled_from(sorted(doc, key=str)))
        doc[key] = mutate(doc[key], data, depth + 1)
        return doc
    if isinstance(doc, list) and doc and depth < 6 and data.draw(st.booleans()):
        i = data.draw(st.integers(0, len(doc) - 1))
        doc[i] = mutate(doc[i], data, depth + 1)
        return doc
    how = data.draw(st.sampled_from(["replace", "drop", "add", "misspell", "empty", "huge", "nest"]))
    if how == "replace" or not isinstance(doc, (dict, list)):
        return data.draw(values) if how != "nest" else _nested(data.draw(st.integers(1, 60)))
    if isinstance(doc, dict):
        if how == "drop" and doc:
            doc.pop(data.draw(st.sampled_from(sorted(doc, key=str))))
        elif how == "add":
            doc[data.draw(st.sampled_from(KEYS) | st.text(max_size=8))] = data.draw(values)
        elif how == "misspell" and doc:
            key = data.draw(st.sampled_from(sorted(doc, key=str)))
            doc[misspell(str(key), data)] = doc.pop(key)
        elif how == "empty":
            doc.clear()
        elif how == "huge":
            doc[data.draw(st.sampled_from(["seed", "max_len", "lr"]))] = list(range(data.draw(st.integers(0, 300))))
        else:
            doc[data.draw(st.sampled_from(KEYS))] = _nested(data.draw(st.integers(1, 60)))
        return doc
    if how == "empty":
        return []
    if how == "huge":
        return doc * data.draw(st.integers(2, 50))
    return doc + [data.draw(values)]


def _nested(depth: int) -> Any:
    value: Any = 1
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


#: YAML-level oddities a dumped document cannot hold: anchors and aliases, duplicate keys,
#: tags, deep flow nesting, tabs, BOMs, document markers
yaml_snippets = st.sampled_from([
    "a: &x {max_len: 64}\nb: *x\n", "defaults: &d {seed: 1}\nmatrix: *d\n", "name: a\nname: b\n",
    "matrix: {seed: [1, 2]}\nmatrix: {seed: [3]}\n", "!!python/object/apply:os.system ['true']\n",
    "x: !!binary aGVsbG8=\n", "x: !!set {a, b}\n", "x: !!timestamp 2001-12-14\n", "[" * 200 + "]" * 200 + "\n",
    "{" * 50 + "}" * 50 + "\n", "\tname: tab\n", "\ufeffname: bom\n", "---\nname: a\n---\nname: b\n", "...\n",
    "name: *undefined\n", "<<: {name: merged}\n", "defaults: {<<: [{seed: 1}, {seed: 2}]}\n", "? [a, b]\n: c\n",
    "name: \"\\x00\"\n", "name: '\u202e'\n", "x: " + "9" * 5000 + "\n", "a: &a [*a]\n",
])


@st.composite
def suite_texts(draw) -> str:
    """A random YAML document: generated data dumped, raw snippets, or arbitrary text."""
    how = draw(st.sampled_from(["data", "snippets", "text", "suite-like"]))
    if how == "data":
        return yaml.safe_dump(draw(values), allow_unicode=draw(st.booleans()))
    if how == "snippets":
        return "".join(draw(st.lists(yaml_snippets, min_size=1, max_size=4)))
    if how == "text":
        return draw(st.text(max_size=200))
    doc = {"name": draw(weird_scalars), draw(st.sampled_from(KEYS)): draw(values)}
    return yaml.safe_dump(doc, allow_unicode=True) + draw(yaml_snippets)


# ------------------------------------------------------------------------------ validate


@pytest.fixture(scope="module")
def registry():
    from harness.registry import load_registry

    return load_registry()


def validate(path: Path, overrides: list[str], registry) -> Any:
    """What ``harness validate`` does with a suite and its ``--set`` strings (harness.cli._load
    and cmd_validate), the plugin registry loaded once unless the suite names plugins or exporters."""
    from harness.config.resolve import resolve
    from harness.config.suite import load_suite, parse_set
    from harness.launch.slurm import settings as slurm_settings
    from harness.records.export import switch_on
    from harness.registry import load_registry

    suite = load_suite(path)
    sets = parse_set(overrides)
    if suite.plugins or suite.export:
        registry = load_registry(suite.plugins, base_dir=path.parent)
        switch_on(registry.pm, suite, [])
    runs = resolve(suite, registry, sets)
    if suite.slurm:
        slurm_settings(suite.slurm, suite.where, {})
    return [r.record_config() | {"run_id": r.run_id} for r in runs]


def _write(tmp: Path, name: str, content: str | bytes) -> Path:
    path = tmp / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8", "surrogatepass"))
    return path


@FUZZ
@given(text=suite_texts())
def test_random_yaml_suites_validate_or_stop_in_one_line(text, tmp_path_factory, registry):
    tmp = tmp_path_factory.mktemp("suite")
    expect_parse_or_one_line("suites: random YAML", validate, _write(tmp, "suite.yaml", text), [], registry)


SHIPPED = {p.name: yaml.safe_load(p.read_text(encoding="utf-8")) for p in SUITES}


@FUZZ
@given(name=st.sampled_from(sorted(SHIPPED)), data=st.data())
def test_mutated_shipped_suites_validate_or_stop_in_one_line(name, data, tmp_path_factory, registry):
    doc = mutate(copy.deepcopy(SHIPPED[name]), data)
    text = yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)
    if data.draw(st.booleans()):  # and a YAML oddity on top: a duplicate key, an alias, a tag
        text += data.draw(yaml_snippets)
    tmp = tmp_path_factory.mktemp("suite")
    expect_parse_or_one_line("suites: mutated shipped suites", validate, _write(tmp, name, text), [], registry)


set_keys = st.one_of(st.sampled_from(["max_len", "batch_size", "lr", "seed", "epochs", "precision", "device", "model",
                                      "init", "strategy", "head", "dataset", "dataset.subset.train", "launcher.nproc",
                                      "head.options.dropout", "strategy.options.truncation", "target.mcc",
                                      "dataset.options.x", "max_len.x", "matrix.seed", ".", "..", "a..b"]),
                     st.text(max_size=20))
set_values = st.one_of(st.text(max_size=30), st.sampled_from(["64", "-1", "0", "1e400", "nan", ".inf", "[1, 2]",
                                                              "{a: 1}", "null", "~", "&a x", "*a", "!!binary x",
                                                              "[" * 100, "9" * 400, "fixed", "bf16", "yes"]))
set_strings = st.one_of(st.builds(lambda k, sep, v: f"{k}{sep}{v}", set_keys, st.sampled_from(["=", "==", " = ", ""]),
                                  set_values), st.text(max_size=40))


@FUZZ
@given(sets=st.lists(set_strings, min_size=1, max_size=4))
def test_set_strings_validate_or_stop_in_one_line(sets, tmp_path_factory, registry):
    tmp = tmp_path_factory.mktemp("set")
    suite = _write(tmp, "suite.yaml", "name: fuzz\ndefaults: {dataset: cola, strategy: fixed}\n")
    expect_parse_or_one_line("--set strings", validate, suite, sets, registry)


# ---------------------------------------------------------------------------- data files

cells = st.one_of(st.text(max_size=20), st.sampled_from(["0", "1", "2", "-1", "5", "yes", "", '"', '""', "a,b",
                                                         "\x00", "\ufeff", "\r", "\u0085", "x" * 5000]))


@st.composite
def data_files(draw) -> tuple[str, bytes]:
    """A table file: rows of random cells joined as CSV, TSV or JSON Lines, in random
    encodings, with BOMs, ragged rows, NULs, huge fields; or random bytes."""
    fmt = draw(st.sampled_from(["csv", "tsv", "jsonl"]))
    if draw(st.integers(0, 4)) == 0:
        return fmt, draw(st.binary(max_size=300))
    header = ["text", "label"] if draw(st.integers(0, 3)) else draw(st.lists(cells, max_size=3))
    rows = draw(st.lists(st.lists(cells, min_size=0, max_size=4), max_size=8))
    if fmt == "jsonl":
        lines = [json.dumps(dict(zip(header, row))) if draw(st.integers(0, 5)) else draw(st.text(max_size=20))
                 for row in rows]
        if draw(st.booleans()):
            lines.append(json.dumps({"text": draw(cells), "label": draw(weird_scalars)}, default=str))
        text = "\n".join(lines)
    else:
        sep = "," if fmt == "csv" else "\t"
        text = "\n".join(sep.join(row) for row in [header, *rows])
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8-sig", "latin-1", "utf-16", "cp1252"]))
    data = text.encode(encoding, errors="replace")
    if draw(st.integers(0, 5)) == 0:  # mixed: another encoding's bytes in the middle
        data += "caf\xe9\n".encode("latin-1") + text.encode("utf-8", errors="replace")
    return fmt, data


@FUZZ
@given(train=data_files(), dev=data_files(), labels=st.sampled_from([None, [0, 1], ["a", "b"], [1, 5]]),
       header=st.booleans())
def test_data_files_load_or_stop_in_one_line(train, dev, labels, header, tmp_path_factory):
    from harness.builtin.files import Files, FilesOptions
    from harness.data import DataFiles

    tmp = tmp_path_factory.mktemp("data")
    options = {"train": str(_write(tmp, f"train.{train[0]}", train[1])),
               "validation": str(_write(tmp, f"dev.{dev[0]}", dev[1])), "header": header}
    if labels is not None:
        options["labels"] = labels

    def load() -> None:
        try:
            opts = FilesOptions.model_validate(options)
        except ValueError as exc:  # pydantic: the suite's loader turns it into one line naming the key
            raise HarnessError(f"dataset.options: {exc.errors()[0]['msg']}") from None
        dataset = Files(opts, DataFiles("files"))
        dataset.check()
        for split in dataset.splits:
            examples = dataset.load(split)
            assert all(0 <= e.label < len(dataset.labels) for e in examples), "a label out of range"

    expect_parse_or_one_line("data files (CSV/TSV/JSONL)", load)


# -------------------------------------------------------------- results and side files

FIXTURE_RECORDS = [json.loads(line) for line in (REPO / "tests/fixtures/max_len-1.2.jsonl").read_text().splitlines()]


@st.composite
def results_files(draw) -> bytes:
    """A results.jsonl: real records (some mutated), duplicated run ids, unknown schema
    versions, garbage lines, a truncated last line, random bytes."""
    lines = []
    for _ in range(draw(st.integers(0, 5))):
        how = draw(st.sampled_from(["record", "mutated", "duplicate", "version", "garbage", "bytes"]))
        record = copy.deepcopy(draw(st.sampled_from(FIXTURE_RECORDS)))
        if how == "mutated":  # a field replaced, dropped, added or misspelt (the fields of its epochs too)
            data = draw(st.data())
            key = data.draw(st.sampled_from([*record, "epochs"]))
            if key == "epochs" and record.get("epochs") and data.draw(st.booleans()):
                record["epochs"][0] = mutate(record["epochs"][0], data, depth=5)
            else:
                record[key] = mutate(record.get(key), data, depth=5) if data.draw(st.booleans()) else data.draw(values)
        elif how == "duplicate" and lines:
            lines.append(lines[-1])
            continue
        elif how == "version":
            record["schema_version"] = draw(st.sampled_from(["2.0", "1.99", "0.1", "v1", "1", 1.0, None, "1.x"])
                                            | st.text(max_size=5))
        if how == "garbage":
            lines.append(draw(st.text(max_size=40)).encode("utf-8", "surrogatepass") + b"\n")
        elif how == "bytes":
            lines.append(draw(st.binary(max_size=40)) + b"\n")
        else:
            lines.append((json.dumps(record, default=str) + "\n").encode())
    data = b"".join(lines)
    if data and draw(st.booleans()):  # a crash mid-write: cut anywhere
        data = data[: draw(st.integers(0, len(data)))]
    return data


def _snapshot(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}


@FUZZ
@given(content=results_files(), fmt=st.sampled_from(["table", "md", "csv"]), epochs=st.booleans())
def test_results_files_report_or_stop_in_one_line_and_change_nothing(content, fmt, epochs, tmp_path_factory,
                                                                      capsys):
    from harness.cli import main

    tmp = tmp_path_factory.mktemp("results")
    _write(tmp, "results.jsonl", content)
    before = _snapshot(tmp)

    def report() -> None:
        code = main(["report", str(tmp), "--format", fmt, *(["--epochs"] if epochs else [])])
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err
        if code != 0:
            errors = [line for line in err.splitlines() if line.strip()]
            assert code == 2 and len(errors) == 1 and errors[0].startswith("error: "), (code, err)

    expect_parse_or_one_line("results.jsonl (harness report)", report)
    assert _snapshot(tmp) == before, "harness report changed a file"


@pytest.fixture(scope="module")
def side_bytes(tmp_path_factory) -> dict[str, bytes]:
    """A real predictions file and a real steps file, as a run writes them."""
    from harness.base import Example
    from harness.records.sidefiles import SplitPredictions, StepSamples, split_sha256, write_side_files

    folder = tmp_path_factory.mktemp("side")
    examples = [Example(t, i % 2) for i, t in enumerate("abcdef")]
    labels = np.array([e.label for e in examples])
    preds = SplitPredictions("validation", split_sha256(examples), labels, labels, np.eye(2)[labels])
    side = write_side_files(folder, "r1", [preds], StepSamples())
    return {kind: (folder / name).read_bytes() for kind, name in side.items()}


@FUZZ
@given(kind=st.sampled_from(["predictions", "steps"]), data=st.data())
def test_side_files_read_or_stop_in_one_line(kind, data, side_bytes, tmp_path_factory):
    from harness.records.sidefiles import read_predictions, read_steps

    real = side_bytes[kind]
    how = data.draw(st.sampled_from(["truncated", "flipped", "random", "empty", "real"]))
    if how == "truncated":
        content = real[: data.draw(st.integers(0, len(real)))]
    elif how == "flipped":
        content = bytearray(real)
        for _ in range(data.draw(st.integers(1, 8))):
            content[data.draw(st.integers(0, len(content) - 1))] ^= data.draw(st.integers(1, 255))
        content = bytes(content)
    elif how == "random":
        content = data.draw(st.binary(max_size=500))
    else:
        content = b"" if how == "empty" else real
    path = _write(tmp_path_factory.mktemp("side"), f"{kind}.npz", content)
    expect_parse_or_one_line("side files (predictions, steps)", read_predictions if kind == "predictions"
                             else read_steps, path)
