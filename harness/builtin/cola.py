"""CoLA (GLUE): is the sentence grammatically acceptable? Matthews correlation.

Splits as the tutorial uses them: train = ``in_domain_train.tsv``, validation =
``in_domain_dev.tsv``, test = ``out_of_domain_dev.tsv``. Files: tab-separated, no
header, four columns (source, label, original mark, sentence), parsed with QUOTE_NONE
(two train sentences hold a bare ``"``); the out-of-domain file has no final newline.
"""

from __future__ import annotations

from harness import hookimpl
from harness.base import Dataset, Example
from harness.data import Source, parse_label, read_rows, require_rows

FILES = {
    "train": "raw/in_domain_train.tsv",
    "validation": "raw/in_domain_dev.tsv",
    "test": "raw/out_of_domain_dev.tsv",
}
SOURCE = Source(
    url="https://nyu-mll.github.io/CoLA/cola_public_1.1.zip",
    sha256="2cf856f46df11c143d38e0cf2f9f34ff2fdb088c521cd859f5c4b9581683278b",
    strip_prefix="cola_public/",
)


class CoLA(Dataset):
    name = "cola"
    description = "GLUE CoLA: grammatical acceptability (8,551 train / 527 dev / 516 out-of-domain)"
    labels = ("0", "1")
    metrics = ("mcc", "accuracy")

    def check(self) -> None:
        for relative in FILES.values():
            self.files.path(relative, SOURCE)

    def load(self, split: str) -> list[Example]:
        path = self.files.path(FILES[split], SOURCE)
        return require_rows(
            [Example(text=row[3], label=parse_label(row[1], self.labels, path, line)) for line, row in read_rows(path, columns=4)],
            path, split,
        )


@hookimpl
def harness_register_datasets(register):
    register(CoLA)
