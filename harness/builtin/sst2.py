"""SST-2 (GLUE): is the movie-review phrase positive or negative? Accuracy.

Splits: train = ``train.tsv`` (67,349 phrases), validation = ``dev.tsv`` (872 sentences);
GLUE's test set is unlabelled and not used. Files: tab-separated with a header row
``sentence\\tlabel``, parsed with QUOTE_NONE as the other GLUE files are. Every sentence
ends with a space before the tab in the official file; it is stripped.
"""

from __future__ import annotations

from harness import hookimpl
from harness.base import Dataset, Example
from harness.data import Source, parse_label, read_rows, require_rows

FILES = {"train": "train.tsv", "validation": "dev.tsv"}
# GLUE's official SST-2.zip. The sha256 is the one Hugging Face's `glue` builder records in
# its download_checksums (num_bytes 7439277); DataDeps.jl registrations pin the same value.
SOURCE = Source(
    url="https://dl.fbaipublicfiles.com/glue/data/SST-2.zip",
    sha256="d67e16fb55739c1b32cdce9877596db1c127dc322d93c082281f64057c16deaa",
    strip_prefix="SST-2/",
    include=("train.tsv", "dev.tsv"),
)


class SST2(Dataset):
    name = "sst2"
    description = "GLUE SST-2: movie-review sentiment (67,349 train phrases / 872 dev sentences)"
    labels = ("0", "1")
    metrics = ("accuracy",)
    splits = ("train", "validation")

    def check(self) -> None:
        for relative in FILES.values():
            self.files.path(relative, SOURCE)

    def load(self, split: str) -> list[Example]:
        path = self.files.path(FILES[split], SOURCE)
        rows = read_rows(path, header=True, columns=2)
        return require_rows(
            [Example(text=row[0].strip(), label=parse_label(row[1], self.labels, path, line)) for line, row in rows],
            path, split,
        )


@hookimpl
def harness_register_datasets(register):
    register(SST2)
