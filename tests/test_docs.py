"""The docs are part of the contract: every hook, every built-in plugin and every option of
a built-in is documented, and the head walk-through's code works as written."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
import torch

from harness import hookspecs
from harness.base import Example, iter_option_fields
from harness.registry import load_registry

REPO = Path(__file__).resolve().parents[1]
PLUGINS_MD = REPO / "docs" / "plugins.md"


def _hooks() -> dict[str, inspect.Signature]:
    marker = f"{hookspecs.PROJECT}_spec"
    return {
        name: inspect.signature(fn)
        for name, fn in vars(hookspecs).items()
        if callable(fn) and hasattr(fn, marker)
    }


def _all_docs() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted((REPO / "docs").glob("*.md")))


@pytest.fixture(scope="module")
def builtins():
    # built-ins only, no installed packages. conftest's autouse fixture turns autoload off,
    # but it is function-scoped: this module-scoped fixture runs before it, so say it here
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HARNESS_DISABLE_PLUGIN_AUTOLOAD", "1")
        return load_registry()


def test_the_documented_hooks_are_exactly_the_hookspecs():
    """The reverse of the test below: a section for a hook that was renamed or removed fails."""
    text = PLUGINS_MD.read_text(encoding="utf-8")
    documented = set(re.findall(r"^### (harness_\w+)\(", text, flags=re.M))
    assert documented == set(_hooks()), (
        f"docs/plugins.md documents hooks {sorted(documented - set(_hooks()))} that harness/hookspecs.py "
        f"does not have, and lacks {sorted(set(_hooks()) - documented)}"
    )


@pytest.mark.parametrize("hook", sorted(_hooks()))
def test_every_hook_has_a_section_with_its_exact_arguments_and_an_example(hook):
    text = PLUGINS_MD.read_text(encoding="utf-8")
    args = ", ".join(_hooks()[hook].parameters)
    heading = f"### {hook}({args})"
    assert heading in text.splitlines(), f"docs/plugins.md has no section `{heading}`"
    section = text.split(heading, 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    assert "```python" in section and f"def {hook}(" in section, f"the section of {hook} has no example implementing it"


def test_every_built_in_plugin_is_documented(builtins):
    docs = _all_docs()
    missing = [
        f"{family} {name}"
        for family, entries in builtins.entries.items()
        for name in entries
        if f"`{name}`" not in docs
    ]
    assert not missing, f"built-in plugins not named (as `name`) in docs/*.md: {', '.join(missing)}"


def test_every_option_of_a_built_in_plugin_is_documented(builtins):
    docs = _all_docs()
    missing = [
        f"{family} {name}: {option}"
        for family, entries in builtins.entries.items()
        for name, entry in entries.items()
        for option, *_ in iter_option_fields(entry.cls.Options)
        if f"`{option}`" not in docs
    ]
    assert not missing, f"options not named (as `option`) in docs/*.md: {', '.join(missing)}"


def _walkthrough_module() -> str:
    text = PLUGINS_MD.read_text(encoding="utf-8")
    walk = text.split("## Writing a head plugin", 1)[1]
    return re.search(r"```python\n(.*?)```", walk, re.S).group(1)


def test_the_head_walkthrough_code_works_as_written(tmp_path):
    from harness.loop.classifier import build_classifier
    from harness.loop.checkpoints import load_tokenizer

    path = tmp_path / "maxpool_head.py"
    path.write_text(_walkthrough_module(), encoding="utf-8")
    registry = load_registry([str(path)])
    head = registry.get("head", "maxpool")
    assert head.source.startswith("local module")
    tokenizer = load_tokenizer("bert-tiny", "random", None)
    fixed = registry.get("strategy", "fixed").cls
    for include_special in (True, False):
        options = head.cls.Options(include_special=include_special, freeze_backbone=True)
        model = build_classifier("bert-tiny", "random", "sdpa", head.cls, options, 3).eval()
        logits = []
        for max_len in (16, 40):  # the same sentences padded to two lengths: the same logits
            strategy = fixed(fixed.Options(), tokenizer, max_len)
            enc = strategy.encode([Example("The cat sat on the mat.", 0), Example("Run!", 2)])
            b = strategy.collate(enc, torch.arange(2).numpy())
            with torch.no_grad():
                logits.append(model(b.input_ids, b.attention_mask, b.token_type_ids))
        assert logits[0].shape == (2, 3)
        torch.testing.assert_close(logits[0], logits[1], rtol=0, atol=1e-5)


# ------------------------------------------------- generated and checked: keys, columns

SUITES_MD = REPO / "docs" / "suites.md"
RESULTS_MD = REPO / "docs" / "results.md"
KEYS_START, KEYS_END = "<!-- keys:start -->", "<!-- keys:end -->"


def _generated_block(path: Path, start: str, end: str, expected: str, command: str) -> None:
    """The text between two markers of a doc equals what the code generates now."""
    text = path.read_text(encoding="utf-8")
    assert start in text and end in text, f"{path} lacks the markers {start} / {end}"
    current = text.split(start, 1)[1].split(end, 1)[0]
    assert current.strip() == expected.strip(), (
        f"the generated table in {path} is out of date with the code; regenerate it with\n"
        f'  .venv/bin/python -c "{command}"\nand paste the output between {start} and {end}'
    )


def test_the_key_table_in_docs_is_generated_from_runconfig():
    from harness.config.docs import key_table

    _generated_block(SUITES_MD, KEYS_START, KEYS_END, key_table(),
                     "from harness.config.docs import key_table; print(key_table())")


def test_every_suite_key_has_a_type_a_default_and_a_meaning():
    from harness.config.docs import key_table

    rows = key_table().splitlines()[2:]
    keys = [row.split(" | ")[0].strip("| `") for row in rows]
    assert {"batch_size", "precision", "dataset.subset.train", "strategy.options", "launcher.nproc"} <= set(keys)
    blank = [key for key, row in zip(keys, rows) if any(not cell.strip() for cell in row.strip("|").split(" | "))]
    assert not blank, f"keys without a description (Field(description=...) in harness/config.py): {blank}"


def _columns_section() -> str:
    text = RESULTS_MD.read_text(encoding="utf-8")
    heading = "## The table's columns\n"
    assert heading in text, f"{RESULTS_MD} has no section `{heading.strip()}`"
    return text.split(heading, 1)[1].split("\n## ", 1)[0]


def test_every_column_of_the_results_table_is_explained():
    from records import record

    from harness.render.tables import table_cells

    # two seeds of one configuration on a known GPU, compiled: every optional column shows
    records = [record(f"seed{seed}", seed=seed) for seed in (1, 2)]
    for r in records:
        r["env"]["cuda"] = "12.4"
        r["compile_seconds"] = 30.0
    header, _, _ = table_cells(records)
    metrics = {name for r in records for name in r["metrics"]}
    fixed = [h for h in header if h not in metrics]
    assert {"runs", "% bf16 peak", "compile s"} <= set(fixed), header  # the optional ones are there
    section = _columns_section()
    missing = [h for h in fixed if f"`{h}`" not in section]
    assert not missing, f"table columns not explained (as `name`) in {RESULTS_MD}'s columns section: {missing}"


def test_the_readme_dataset_plugin_works_as_written(tmp_path):
    from harness.data import DataFiles

    block = re.search(r"```python\n(# my_dataset\.py.*?)```", (REPO / "README.md").read_text(encoding="utf-8"), re.S)
    assert block, "README.md has no ```python block starting with # my_dataset.py"
    (tmp_path / "my_dataset.py").write_text(block.group(1), encoding="utf-8")
    (tmp_path / "data" / "my_reviews").mkdir(parents=True)
    (tmp_path / "data" / "my_reviews" / "train.tsv").write_text("label\ttext\npos\tGreat.\nneg\tAwful.\n")
    (tmp_path / "data" / "my_reviews" / "dev.tsv").write_text("label\ttext\nneg\tDull.\n")
    cls = load_registry([str(tmp_path / "my_dataset.py")]).get("dataset", "my_reviews").cls
    dataset = cls(cls.Options(), DataFiles("my_reviews", data_dir=tmp_path / "data"))
    assert [(e.text, e.label) for e in dataset.load("train")] == [("Great.", 1), ("Awful.", 0)]
    assert [e.label for e in dataset.load("validation")] == [0]


def _slug(heading: str) -> str:
    """A heading's anchor as GitHub makes it."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_links_between_the_readme_and_the_docs_resolve():
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        text = page.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):  # http(s), mailto: not checked here
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif anchor and file.suffix == ".md":
                anchors = {_slug(h) for h in re.findall(r"^#+ (.+)$", file.read_text(encoding="utf-8"), re.M)}
                if anchor not in anchors:
                    broken.append(f"{page.name}: {target} (no such heading)")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_every_option_of_a_built_in_plugin_is_explained_in_the_suites_page(builtins):
    """A swept option becomes a table column named after it: its meaning is one link away."""
    text = SUITES_MD.read_text(encoding="utf-8")
    heading = "## The built-in plugins' options\n"
    assert heading in text, f"{SUITES_MD} has no section `{heading.strip()}`"
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    missing = [
        f"{family} {name}: {option}"
        for family, entries in builtins.entries.items()
        for name, entry in entries.items()
        for option, *_ in iter_option_fields(entry.cls.Options)
        if f"`{option}`" not in section
    ]
    assert not missing, f"options not explained in {SUITES_MD}'s section `{heading.strip()}`: {', '.join(missing)}"


# ------------------------------------------------- generated and checked: the run record

RECORD_START, RECORD_END = "<!-- record:start -->", "<!-- record:end -->"


def test_the_record_table_in_docs_is_generated_from_runrecord():
    from harness.records.record import field_table

    _generated_block(RESULTS_MD, RECORD_START, RECORD_END, field_table(),
                     "from harness.records.record import field_table; print(field_table())")


def test_every_record_field_has_a_type_and_a_meaning():
    from harness.records.record import field_table

    rows = field_table().splitlines()[2:]
    fields = [row.split(" | ")[0].strip("| `") for row in rows]
    # the names users and readers rely on are all there
    assert {"run_id", "status", "error", "config", "env", "data", "epochs", "metrics", "log",
            "epochs[].train_seconds", "epochs[].peak_memory_bytes", "epochs[].metrics"} <= set(fields)
    blank = [f for f, row in zip(fields, rows) if any(not cell.strip() for cell in row.strip("|").split(" | "))]
    assert not blank, f"record fields without a description (Field(description=...) in harness/record.py): {blank}"


def test_the_readme_is_a_newcomers_page_of_200_lines_at_most():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines: the details belong in docs/"
