"""An example harness dataset plugin: short product reviews, negative or positive.

The whole contract is here: a :class:`harness.base.Dataset` subclass with a ``name``,
its ``labels`` and ``metrics``, an ``Options`` schema, ``load(split)`` returning
:class:`harness.base.Example` objects, and a ``harness_register_datasets`` hook that
registers it. ``pyproject.toml`` points the ``harness`` entry-point group at this module.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from pydantic import Field

from harness import hookimpl
from harness.base import Dataset, Example, Options
from harness.data import parse_label, read_rows, require_rows

FILES = {"train": "train.tsv", "validation": "validation.tsv"}


class ReviewOptions(Options):
    lowercase: bool = Field(False, description="lowercase every review before tokenizing")


class Reviews(Dataset):
    name = "reviews_example"
    Options = ReviewOptions
    description = "example plugin: 48 short product reviews, negative/positive (ships its data)"
    labels = ("negative", "positive")
    metrics = ("accuracy", "f1")
    splits = ("train", "validation")

    def _path(self, split: str) -> Path:
        # the data ships inside the package; a plugin for a large dataset would call
        # self.files.path("train.tsv", SOURCE) instead (data directory, cache, download)
        return Path(str(resources.files(__package__) / "data" / FILES[split]))

    def check(self) -> None:
        for split in self.splits:
            self._path(split)

    def load(self, split: str) -> list[Example]:
        path = self._path(split)
        out = []
        # header row `label<TAB>text`; QUOTE_NONE (the default): a bare " is text
        for line, (label, text) in read_rows(path, header=True, columns=2):
            text = text.lower() if self.options.lowercase else text
            out.append(Example(text=text, label=parse_label(label, self.labels, path, line)))
        return require_rows(out, path, split)


@hookimpl
def harness_register_datasets(register):
    register(Reviews)
