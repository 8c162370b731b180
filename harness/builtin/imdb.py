"""IMDB (Maas et al., 2011): is the full movie review positive or negative? Accuracy.

Reads either layout, whichever it finds first (option ``layout``):

- the CSV subset (``train.csv``, ``test.csv``: header ``id,rating,label,text``, standard
  CSV quoting; 2,500 reviews each), or
- the official ``aclImdb/`` folder (``aclImdb/{train,test}/{pos,neg}/*.txt``, 25,000
  reviews each), which is also what a download of the official ``aclImdb_v1.tar.gz``
  gives (the CSV subset has no official URL, so it cannot be downloaded).

There is no official dev split, but the loop evaluates ``validation`` after each epoch.
Option ``validation``: ``test`` (the default) evaluates on the test file, as most IMDB
fine-tuning scripts do, and keeps the whole training file for training, so epoch times
compare with other runs on the same file; ``holdout`` carves a seeded, label-stratified
``holdout_size`` reviews out of train instead, and leaves test untouched. Texts keep the
original ``<br />`` tags unless ``replace_br`` (on by default) turns them into spaces.
Texts hold U+0085 (NEL) and other C1 characters: files are split by the csv module only.
"""

from __future__ import annotations

import csv
import re
from typing import Literal

import numpy as np
from pydantic import Field, PositiveInt

from harness import hookimpl
from harness.base import Dataset, Example, Options
from harness.data import Source, parse_label, read_header, read_rows, read_text, require_rows
from harness.errors import HarnessError

CSV_FILES = {"train": "train.csv", "test": "test.csv"}
FOLDER = "aclImdb"
# The sha256 of the official archive as recorded by independent loaders (DataDeps.jl's
# IMDB registration, MLDatasets.jl, and others pin this value for this URL).
SOURCE = Source(
    url="https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz",
    sha256="c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe",
    include=tuple(f"aclImdb/{s}/{c}/" for s in ("train", "test") for c in ("neg", "pos")) + ("aclImdb/README",),
)
_BR = re.compile(r"<br\s*/?>", re.IGNORECASE)


class ImdbOptions(Options):
    layout: Literal["auto", "csv", "aclImdb"] = Field(
        "auto", description="auto: the CSV subset when present, else the aclImdb/ folder (downloaded if missing)"
    )
    validation: Literal["test", "holdout"] = Field(
        "test", description="test: evaluate on the test file; holdout: a seeded, stratified part of train"
    )
    holdout_size: PositiveInt = Field(500, description="reviews held out of train when validation=holdout")
    holdout_seed: int = Field(0, description="seed of the holdout draw")
    replace_br: bool = Field(True, description="replace the HTML line breaks <br /> by a space")


class IMDB(Dataset):
    name = "imdb"
    Options = ImdbOptions
    description = "IMDB movie reviews, long documents (CSV subset 2,500 / 2,500, or aclImdb 25,000 / 25,000)"
    labels = ("0", "1")
    metrics = ("accuracy",)

    def _layout(self) -> str:
        if self.options.layout != "auto":
            return self.options.layout
        # the CSV subset when it is here; else the official folder (found, or downloaded)
        return "csv" if self.files.find(CSV_FILES["train"]) is not None else "aclImdb"

    def check(self) -> None:
        if self._layout() == "csv":
            for relative in CSV_FILES.values():
                self.files.path(relative)
        else:
            self.files.path(FOLDER, SOURCE, directory=True)

    def load(self, split: str) -> list[Example]:
        opts = self.options
        source_split = "test" if split == "validation" and opts.validation == "test" else split
        if split == "validation" and opts.validation == "holdout":
            source_split = "train"
        examples = self._read(source_split)
        if opts.validation == "holdout" and source_split == "train" and split in ("train", "validation"):
            from harness.data.splits import stratified_subset

            labels = np.asarray([e.label for e in examples])
            if opts.holdout_size >= len(examples):
                raise HarnessError(
                    f"dataset 'imdb': holdout_size {opts.holdout_size} leaves no training reviews "
                    f"(train has {len(examples)})"
                )
            held = set(stratified_subset(labels, opts.holdout_size, opts.holdout_seed).tolist())
            keep = (lambda i: i in held) if split == "validation" else (lambda i: i not in held)
            examples = [e for i, e in enumerate(examples) if keep(i)]
        return examples

    def _clean(self, text: str) -> str:
        return _BR.sub(" ", text) if self.options.replace_br else text

    def _read(self, split: str) -> list[Example]:
        if self._layout() == "csv":
            path = self.files.path(CSV_FILES[split])
            header = read_header(path, delimiter=",", quoting=csv.QUOTE_MINIMAL)
            missing = [c for c in ("label", "text") if c not in header]
            if missing:
                raise HarnessError(f"{path}:1: no column {missing[0]!r} (columns: {', '.join(header)})")
            li, ti = header.index("label"), header.index("text")
            rows = read_rows(path, delimiter=",", quoting=csv.QUOTE_MINIMAL, header=True, columns=len(header))
            return require_rows(
                [Example(self._clean(r[ti]), parse_label(r[li], self.labels, path, line)) for line, r in rows],
                path, split,
            )
        root = self.files.path(FOLDER, SOURCE, directory=True)
        out = []
        for label, folder in enumerate(("neg", "pos")):
            where = root / split / folder
            if not where.is_dir():
                raise HarnessError(f"{where}: missing folder (the aclImdb layout is aclImdb/{{train,test}}/{{neg,pos}}/*.txt)")
            for path in sorted(where.glob("*.txt")):
                out.append(Example(self._clean(read_text(path)), label))
        return require_rows(out, root / split, split)


@hookimpl
def harness_register_datasets(register):
    register(IMDB)
