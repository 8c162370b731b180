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
from harness.plugins import load_registry

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
def builtins(tmp_path_factory):
    import os

    old = os.environ.get("HARNESS_DISABLE_PLUGIN_AUTOLOAD")
    os.environ["HARNESS_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # built-ins only: no installed packages
    try:
        return load_registry()
    finally:
        if old is None:
            del os.environ["HARNESS_DISABLE_PLUGIN_AUTOLOAD"]
        else:
            os.environ["HARNESS_DISABLE_PLUGIN_AUTOLOAD"] = old


def test_there_are_hooks_to_document():
    assert "harness_register_heads" in _hooks()


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
    from harness.model import build_classifier, load_tokenizer

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
