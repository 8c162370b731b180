"""The example package in plugins/ is found through its `harness` entry point (without
pip-installing it: a *.dist-info folder on sys.path is all importlib.metadata needs), shows
in `harness plugins`, and runs in a suite; its own test passes too."""

from __future__ import annotations

import json
import sys
import tomllib

import pytest

from helpers import REPO

EXAMPLE = REPO / "plugins" / "harness-example-dataset"


@pytest.fixture
def example_installed(tmp_path, monkeypatch, plugin_autoload):
    """What `pip install` would leave: the package importable and its entry points declared
    (and autoload on: conftest turns it off for every other test)."""
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    dist = tmp_path / "site" / f"harness_example_dataset-{project['version']}.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    eps = "".join(f"{k} = {v}\n" for k, v in project["entry-points"]["harness"].items())
    (dist / "entry_points.txt").write_text(f"[harness]\n{eps}")
    monkeypatch.syspath_prepend(str(EXAMPLE / "src"))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    yield
    sys.modules.pop("harness_example_dataset", None)


def test_entry_point_discovery(example_installed, cli):
    from harness.registry import load_registry

    entry = load_registry().get("dataset", "reviews_example")
    assert entry.source == "entry point harness-example-dataset 0.1.0"
    assert entry.plugin == "example_reviews"
    code, out, _ = cli("plugins")
    assert code == 0 and "reviews_example" in out and "harness-example-dataset" in out


def test_blocked_entry_point_is_not_loaded(example_installed, monkeypatch):
    from harness.registry import load_registry

    monkeypatch.setenv("HARNESS_BLOCK_PLUGINS", "example_reviews")
    assert "reviews_example" not in load_registry().names("dataset")


def test_example_suite_runs(example_installed, cli, tmp_path):
    out = tmp_path / "out"
    code, _, err = cli("run", EXAMPLE / "suite.yaml", "--out", out, "--no-progress")
    assert code == 0, err
    (record,) = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert record["status"] == "ok"
    assert set(record["metrics"]) == {"accuracy", "f1"}
    assert record["data"]["train"]["examples"] == 32 and record["data"]["labels"] == ["negative", "positive"]


def test_the_example_packages_own_test(example_installed, tmp_path):
    sys.path.insert(0, str(EXAMPLE / "tests"))
    try:
        import test_reviews

        with pytest.MonkeyPatch.context() as mp:
            test_reviews.test_registered_and_loads(tmp_path, mp)
    finally:
        sys.path.remove(str(EXAMPLE / "tests"))
        sys.modules.pop("test_reviews", None)
