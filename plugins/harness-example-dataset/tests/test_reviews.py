"""The example plugin's own test: it registers, loads both splits, and its labels parse."""

from collections import Counter

from harness.base import Example
from harness.data import DataFiles
from harness.registry import load_registry


def test_registered_and_loads(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path))
    registry = load_registry()
    entry = registry.get("dataset", "reviews_example")
    assert entry.source.startswith("entry point harness-example-dataset")
    dataset = entry.cls(entry.cls.Options(lowercase=True), DataFiles("reviews_example"))
    dataset.check()
    train, validation = dataset.load("train"), dataset.load("validation")
    assert len(train) == 32 and len(validation) == 16
    assert all(isinstance(e, Example) and e.text == e.text.lower() for e in train)
    assert Counter(e.label for e in train) == {0: 16, 1: 16}
