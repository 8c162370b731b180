"""Suite loading: expansion, precedence, and errors that name the file, line and key."""

import pytest

from harness.errors import HarnessError
from harness.loop.env import cpu_bf16_native
from harness.registry import load_registry
from harness.config.suite import load_suite, parse_set
from harness.config.resolve import resolve


@pytest.fixture(scope="module")
def registry():
    return load_registry()


def runs_of(path, registry, *sets):
    return resolve(load_suite(path), registry, parse_set(list(sets)))


def test_matrix_is_a_cartesian_product_crossed_with_each_explicit_run(write_suite, registry):
    path = write_suite(
        """
        name: x
        defaults: {model: bert-tiny, init: random, epochs: 3}
        runs:
          - {head: linear}
          - {head: linear, lr: 1.0e-4}
        matrix:
          max_len: [16, 32]
          strategy.options.truncation: [head, tail]
        """
    )
    runs = runs_of(path, registry)
    assert len(runs) == 2 * 2 * 2
    combos = {(r.config.lr, r.config.max_len, r.config.strategy.options["truncation"]) for r in runs}
    assert len(combos) == 8
    assert all(r.config.epochs == 3 for r in runs)
    assert len({r.run_id for r in runs}) == 8


def test_precedence_defaults_then_runs_then_matrix_then_set(write_suite, registry):
    path = write_suite(
        """
        name: x
        defaults: {max_len: 8, batch_size: 4, epochs: 2}
        runs: [{batch_size: 8, epochs: 5}]
        matrix: {epochs: [7]}
        """
    )
    (run,) = runs_of(path, registry, "batch_size=16")
    assert (run.config.max_len, run.config.batch_size, run.config.epochs) == (8, 16, 7)


def test_built_in_defaults_are_the_tutorials(write_suite, registry):
    (run,) = runs_of(write_suite("name: x\n"), registry)
    c = run.config
    assert (c.lr, c.adam_eps, c.max_grad_norm, c.batch_size) == (2e-5, 1e-8, 1.0, 32)
    assert (c.model, c.dataset.name, c.strategy.name, c.head.name) == ("minilm", "cola", "fixed", "linear")
    # plugin options are recorded with their defaults filled in
    assert c.head.options == {"dropout": None, "freeze_backbone": False}
    # `auto` is resolved on this machine, so the record says what ran: bf16 where this CPU computes it
    assert c.device == "cpu" and c.precision == ("bf16" if cpu_bf16_native() else "fp32")


def test_on_cpu_overrides_apply_on_cpu_and_set_still_wins(write_suite, registry):
    path = write_suite(
        """
        name: x
        on_cpu: {dataset.subset.train: 100, epochs: 1}
        """
    )
    (run,) = runs_of(path, registry)
    assert run.config.dataset.subset.train == 100 and run.config.epochs == 1
    (run,) = runs_of(path, registry, "dataset.subset.train=null")
    assert run.config.dataset.subset.train is None


def test_plugin_shorthand_and_mapping_merge_and_replace_on_new_name(write_suite, registry):
    path = write_suite(
        """
        name: x
        defaults:
          head: {name: linear, options: {dropout: 0.3}}
        """
    )
    (run,) = runs_of(path, registry, "head.options.freeze_backbone=true")
    assert run.config.head.options == {"dropout": 0.3, "freeze_backbone": True}


def test_identical_runs_are_merged_and_run_ids_are_stable(write_suite, registry):
    path = write_suite("name: x\nmatrix: {max_len: [16, 32, 64]}\n")
    runs = runs_of(path, registry, "max_len=16")
    assert len(runs) == 1
    again = runs_of(path, registry, "max_len=16")
    assert runs[0].run_id == again[0].run_id
    # data_dir says where the data is read from, not what is measured: same run id
    other = runs_of(path, registry, "max_len=16", "data_dir=/elsewhere")
    assert other[0].run_id == runs[0].run_id


@pytest.mark.parametrize(
    "text, sets, expected",
    [
        ("name: x\nmatrix:\n  head:\n    - linear\n    - {name: linear, options: {dropout: high}}\n", [],
         "suite.yaml:5: matrix.head[1].options.dropout: expected a number, got 'high'"),
        ("name: x\ndefaults:\n  max_len: 1\n", [], "suite.yaml:3: defaults.max_len: must be >= 2, got 1"),
        ("name: x\ndefaults:\n  batchsize: 8\n", [], "suite.yaml:3: defaults.batchsize: unknown key 'batchsize'. Did you mean 'batch_size'?"),
        ("name: x\ndefaults:\n  head: linaer\n", [], "suite.yaml:3: defaults.head: unknown head 'linaer'. Did you mean 'linear'? Available: "),
        ("name: x\nmatrix:\n  strategy: [fixed, fixd]\n", [], "suite.yaml:3: matrix.strategy[1]: unknown strategy 'fixd'. Did you mean 'fixed'?"),
        ("name: x\n", ["head.options.dropuot=0.1"], "--set head.options.dropuot: unknown key 'dropuot'. Did you mean 'dropout'?"),
        ("name: x\nmatrix: {}\n", [], "suite.yaml:2: matrix: empty matrix"),
        ("name: x\nmatrix:\n  max_len: []\n", [], "suite.yaml:3: matrix.max_len: empty list"),
        ("name: x\ndefaults: {seed: one}\n", [], "defaults.seed: expected an integer, got 'one'"),
        ("name: x\ndefaults: {precision: fp8}\n", [], "defaults.precision: expected one of 'auto', 'fp32', 'tf32', 'bf16' or 'fp16', got 'fp8'"),
        ("defaults: {}\n", [], "suite.yaml: name: expected a non-empty string"),
        ("name: x\nmatrx: {}\n", [], "suite.yaml:2: matrx: unknown key 'matrx'. Did you mean 'matrix'?"),
        ("name: x\ndefaults: [1, 2\n", [], "suite.yaml:3: malformed YAML"),
        ("name: x\n", ["max_len"], "--set max_len: expected key=value"),
    ],
)
def test_errors_name_the_file_line_and_key(write_suite, registry, text, sets, expected):
    path = write_suite(text)
    with pytest.raises(HarnessError) as info:
        runs_of(path, registry, *sets)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


def test_missing_suite_file(tmp_path, registry):
    with pytest.raises(HarnessError, match="no such suite file"):
        load_suite(tmp_path / "nope.yaml")


def test_every_shipped_suite_validates(registry):
    from pathlib import Path

    suites = sorted((Path(__file__).resolve().parents[1] / "suites").glob("*.yaml"))
    assert suites, "no suites found"
    for path in suites:
        suite = load_suite(path)
        assert resolve(suite, load_registry(suite.plugins, base_dir=path.parent)), path
