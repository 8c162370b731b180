"""MRPC (GLUE): are the two news sentences paraphrases? F1 (of class 1) and accuracy.

Built from Microsoft's original files the way GLUE's ``format_mrpc`` builds them:
``msr_paraphrase_train.txt`` is split into train (3,668 pairs) and validation (408)
by the ID pairs listed in ``dev_ids.tsv``; test is ``msr_paraphrase_test.txt`` (1,725
pairs, labelled). This avoids the 3,667-row ``train.tsv`` some GLUE copies carry. Files:
tab-separated, header row, a UTF-8 BOM, bare ``"`` in the text (QUOTE_NONE is required).
"""

from __future__ import annotations

from harness import hookimpl
from harness.base import Dataset, Example
from harness.data import Source, parse_label, read_rows, require_rows

# The sha256 values are the ones Hugging Face's `glue`/`mrpc` builder records in its
# download_checksums for these URLs (SentEval's copies of Microsoft's files, GLUE's dev ids).
TRAIN = Source(
    url="https://dl.fbaipublicfiles.com/senteval/senteval_data/msr_paraphrase_train.txt",
    sha256="60a9b09084528f0673eedee2b69cb941920f0b8cd0eeccefc464a98768457f89",
)
TEST = Source(
    url="https://dl.fbaipublicfiles.com/senteval/senteval_data/msr_paraphrase_test.txt",
    sha256="a04e271090879aaba6423d65b94950c089298587d9c084bf9cd7439bd785f784",
)
DEV_IDS = Source(
    url="https://dl.fbaipublicfiles.com/glue/data/mrpc_dev_ids.tsv",
    sha256="971d7767d81b997fd9060ade0ec23c4fc31cbb226a55d1bd4a1bac474eb81dc7",
    filename="dev_ids.tsv",
)
SOURCES = (TRAIN, TEST, DEV_IDS)


class MRPC(Dataset):
    name = "mrpc"
    description = "GLUE MRPC: paraphrase sentence pairs (3,668 train / 408 dev / 1,725 test)"
    labels = ("0", "1")
    metrics = ("f1", "accuracy")

    def check(self) -> None:
        for source in SOURCES:
            self.files.path(source.name, source)

    def _dev_ids(self) -> set[tuple[str, str]]:
        path = self.files.path(DEV_IDS.name, DEV_IDS)
        return {(row[0].strip(), row[1].strip()) for _, row in read_rows(path, columns=2)}

    def load(self, split: str) -> list[Example]:
        source = TEST if split == "test" else TRAIN
        path = self.files.path(source.name, source)
        dev = self._dev_ids() if split != "test" else set()
        out = []
        for line, row in read_rows(path, header=True, columns=5):
            label, id1, id2, text, pair = (field.strip() for field in row)
            if split != "test" and ((id1, id2) in dev) != (split == "validation"):
                continue
            out.append(Example(text=text, text_pair=pair, label=parse_label(label, self.labels, path, line)))
        return require_rows(out, path, split)


@hookimpl
def harness_register_datasets(register):
    register(MRPC)
