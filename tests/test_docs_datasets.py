"""docs/datasets.md is part of the contract: its plugin example runs as written, from a
suite as a local module, and every built-in dataset is documented."""

from __future__ import annotations

import json
import re

import pytest

from helpers import REPO, tiny_sets
from harness.registry import load_registry

DOC = (REPO / "docs" / "datasets.md").read_text(encoding="utf-8")


def _block(lang: str, first_line: str) -> str:
    for block in re.findall(rf"```{lang}\n(.*?)```", DOC, flags=re.S):
        if block.startswith(first_line):
            return block
    raise AssertionError(f"no ```{lang} block starting with {first_line!r} in docs/datasets.md")


BUILTIN = sorted(n for n, e in load_registry().entries["dataset"].items() if e.source == "built-in")


@pytest.mark.parametrize("name", BUILTIN)
def test_every_builtin_dataset_is_documented(name):
    assert f"| `{name}` |" in DOC


def test_the_documented_plugin_runs_from_a_suite(cli, tmp_path):
    (tmp_path / "my_dataset.py").write_text(_block("python", "# my_dataset.py"))
    data = tmp_path / "data" / "my_reviews"
    data.mkdir(parents=True)
    rows = "".join(f"{'pos' if i % 2 else 'neg'}\tReview number {i} is {'good' if i % 2 else 'bad'}.\n" for i in range(24))
    (data / "train.tsv").write_text("label\ttext\n" + rows)
    (data / "dev.tsv").write_text("label\ttext\n" + rows[: len(rows) // 2])
    (tmp_path / "suite.yaml").write_text(_block("yaml", "# suite.yaml, next to my_dataset.py"))
    out = tmp_path / "out"
    sets = tiny_sets(**{"dataset.subset.train": None, "dataset.subset.validation": None})
    code, _, err = cli("run", tmp_path / "suite.yaml", "--out", out, "--no-progress", *sets)
    assert code == 0, err
    (record,) = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert record["status"] == "ok" and set(record["metrics"]) == {"accuracy", "f1"}
    assert record["data"]["train"]["examples"] == 24 and record["config"]["dataset"]["options"] == {"lowercase": True}

    code, out_text, _ = cli("plugins", "--plugin", tmp_path / "my_dataset.py")
    assert code == 0 and "my_reviews" in out_text and "local module" in out_text
