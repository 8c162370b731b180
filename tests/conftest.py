"""Shared fixtures: real data from ../shared/data, a tiny random BERT, the CLI in-process.

The datasets are read from ``HARNESS_DATA_DIR`` (what ``make test DATA=...`` sets, as
``make run DATA=...`` does for the main job; ``HARNESS_TEST_DATA_DIR`` is an older alias),
else from the ``shared/data`` folder beside the repository; they are never copied into
the project.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from harness.cli import main
from helpers import SHARED_DATA


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"test data not found at {SHARED_DATA}; point HARNESS_DATA_DIR (make test DATA=...) at the folder "
                    "holding cola/, sst2/, mrpc/ and imdb/")
    monkeypatch.setenv("HARNESS_DATA_DIR", str(SHARED_DATA))
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # no test reaches the internet: a missing data file is an error, not a download
    # (the download tests point HARNESS_DATA_MIRROR at a server on 127.0.0.1)
    monkeypatch.setenv("HARNESS_OFFLINE", "1")
    monkeypatch.delenv("HARNESS_DATA_MIRROR", raising=False)
    # built-ins only: a package installed in the environment must not change what a test
    # sees; a test about entry points turns autoload back on (the plugin_autoload fixture)
    monkeypatch.setenv("HARNESS_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.delenv("HARNESS_BLOCK_PLUGINS", raising=False)
    monkeypatch.delenv("HARNESS_TRACE_PLUGINS", raising=False)


@pytest.fixture
def plugin_autoload(monkeypatch: pytest.MonkeyPatch) -> None:
    """Load the ``harness`` entry points of installed packages (off by default in tests)."""
    monkeypatch.delenv("HARNESS_DISABLE_PLUGIN_AUTOLOAD", raising=False)


@pytest.fixture
def data_dir() -> Path:
    return SHARED_DATA


@pytest.fixture
def write_suite(tmp_path: Path):
    """Write a suite file from YAML text (dedented) and return its path."""

    def write(text: str, name: str = "suite.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return write


@pytest.fixture
def cli(capsys: pytest.CaptureFixture):
    """Run the CLI in-process: ``code, out, err = cli("run", "suite.yaml", ...)``."""

    def run(*args: str) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run
