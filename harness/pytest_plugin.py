"""The ``harness_benchmark`` pytest fixture: benchmark a run (your own plugin's) in a few lines.

Installed through the ``pytest11`` entry point, so every pytest session in an environment
with harness installed has the fixture; it needs pytest-benchmark. Importing this module
is cheap (no torch): the harness is imported when the fixture is first used.

::

    def test_my_strategy(harness_benchmark):
        record = harness_benchmark(strategy="my_strategy", plugins=["my_plugin.py"], max_len=64)
        assert record["status"] == "ok"

A round is one training epoch and nothing else. pytest-benchmark's ``pedantic`` calls the
set-up before each round, off the clock: :func:`harness.loop.prepare.prepare` (data slice,
tokenizer, a fresh model with the same seed, optimizer, schedule) and the warm-up steps
(:func:`harness.loop.train.warm_up`). The round is :func:`harness.loop.train.train_epoch`, whose own
clock synchronises the device at its end, so what ``--benchmark-compare-fail`` judges is
the epoch: a slower data loader or model build does not fail it, a strategy that pads
twice as far does. After the rounds, the last round's model is evaluated once
(:func:`harness.loop.train.evaluate_epoch`) and its run record built as ``harness run`` builds
one; ``extra_info`` holds each measured round's device-synchronised epoch time, the
metrics, the token counts, the resolved config and the device.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import pytest

#: what a benchmark runs unless told otherwise: the embedded model, a fixed slice of CoLA
BENCHMARK_DEFAULTS: dict[str, Any] = {
    "model": "minilm",
    "dataset": "cola",
    "strategy": "fixed",
    "head": "linear",
    "max_len": 64,
    "batch_size": 32,
    "epochs": 1,
    "lr": 1e-4,
    "seed": 42,
    # pedantic's warm-up rounds warm the process; warm-up steps (warmup_batches=N) would run
    # in each round's untimed set-up, on that round's fresh model
    "warmup_batches": 0,
    "dataset.subset.train": 128,
    "dataset.subset.validation": 64,
    "dataset.subset.seed": 0,
}


class HarnessBenchmark:
    """The fixture's value: call it with config keys to benchmark one run."""

    def __init__(self, benchmark: Any, base_dir: Path, where: str):
        self.benchmark = benchmark
        self.base_dir = base_dir
        self.where = where

    def resolve(self, config: Mapping[str, Any] | None = None, plugins: Sequence[str] = (), **keys: Any) -> Any:
        """The :class:`harness.config.resolve.ResolvedRun` for these keys (over BENCHMARK_DEFAULTS)."""
        from harness.config.resolve import resolve_run  # lazy: pytest loads this plugin in every session
        from harness.config.suite import config_from_keys, dotted  # lazy: likewise
        from harness.registry import load_registry  # lazy: likewise

        data = config_from_keys({**BENCHMARK_DEFAULTS, **(config or {}), **keys})
        registry = load_registry(list(plugins), base_dir=self.base_dir)
        return resolve_run(data, registry, self.base_dir, where=lambda loc: f"{self.where}: {dotted(loc)}")

    def __call__(
        self, config: Mapping[str, Any] | None = None, *, plugins: Sequence[str] = (), rounds: int = 3,
        warmup_rounds: int = 1, **keys: Any,
    ) -> dict[str, Any]:
        """Benchmark one epoch of a run; return the record of the last measured round.

        :param config: config keys, dotted ones included (``{"dataset.subset.train": 512}``)
        :param plugins: local plugin modules (``.py`` paths relative to the test file, or names)
        :param rounds: measured rounds, each a fresh model's first epoch
        :param warmup_rounds: rounds run first and not measured (they warm the process)
        :param keys: more config keys (``strategy="my_strategy", max_len=128``)
        """
        from harness.errors import HarnessError  # lazy: pytest loads this plugin in every session
        from harness.launch.runner import preflight  # lazy: likewise

        try:
            run = self.resolve(config, plugins, **keys)
            if run.config.world_size != 1:
                raise HarnessError(f"{self.where}: harness_benchmark times one process; leave `launcher` out")
            preflight([run], here=False)
        except HarnessError as exc:  # a mistake in the test's keys: one line, no traceback
            pytest.fail(str(exc), pytrace=False)

        epochs = EpochRounds(run)
        self.benchmark.group = self.benchmark.group or f"{run.config.dataset.name} max_len={run.config.max_len}"
        self.benchmark.pedantic(
            epochs.round, setup=epochs.setup, teardown=epochs.teardown,
            rounds=rounds, warmup_rounds=warmup_rounds, iterations=1,
        )
        # with --benchmark-disable, pedantic runs one unmeasured round and no warm-up
        seconds = epochs.train_seconds[warmup_rounds:] or epochs.train_seconds
        record = epochs.record()
        self.benchmark.extra_info.update(extra_info(record, seconds))
        return record


class EpochRounds:
    """pedantic's ``setup``, round and ``teardown`` for one run.

    ``setup`` (untimed) prepares the run afresh, so each round trains a new model from the
    same seed on the same batches, and takes the warm-up steps; the round trains one epoch.
    Only the last round's prepared run is kept, for :meth:`record`.
    """

    def __init__(self, run: Any):
        self.run = run
        self.last: tuple[Any, float, dict[str, Any]] | None = None  # (Prepared, warm-up s, epoch)
        self.train_seconds: list[float] = []  # every round's, warm-up rounds first

    def setup(self) -> tuple[tuple[list[Any]], dict[str, Any]]:
        from harness.loop.prepare import prepare  # lazy: pytest loads this plugin in every session
        from harness.loop.train import warm_up  # lazy: likewise

        # drop the previous round's model and optimizer before building the next one: on a
        # GPU they would still be allocated, and counted in this round's peak memory
        self.last = None
        p = prepare(self.run)
        return ([p, warm_up(p)],), {}

    def round(self, prepared: list[Any]) -> None:
        from harness.loop.train import NullProgress, train_epoch  # lazy: pytest loads this plugin in every session

        p, warmup_seconds = prepared
        # train_epoch's clock synchronises the device at its end: the round ends when the
        # device is done, not when the last kernel was queued
        epoch = train_epoch(p, 0, NullProgress())
        self.train_seconds.append(epoch.train_seconds)
        self.last = (p, warmup_seconds, epoch)

    @staticmethod
    def teardown(prepared: list[Any]) -> None:
        prepared.clear()  # pedantic holds a round's arguments until the next round's setup

    def record(self) -> dict[str, Any]:
        """The last round's run record, its model evaluated once (as ``harness run`` records
        a one-epoch run)."""
        from harness.loop.train import evaluate_epoch, finish  # lazy: pytest loads this plugin in every session

        assert self.last is not None, "no round ran"
        p, warmup_seconds, epoch = self.last
        evaluation = evaluate_epoch(p, epoch)
        return finish(p, [epoch], evaluation, warmup_seconds=warmup_seconds).to_dict()


def extra_info(record: dict[str, Any], epoch_seconds: Sequence[float]) -> dict[str, Any]:
    """What a benchmark's JSON keeps beside the times: metrics, tokens, config, device.

    :param record: the last measured round's run record
    :param epoch_seconds: each measured round's epoch time, as the loop's clock took it
    """
    from harness.records.summary import summarize  # lazy: pytest loads this plugin in every session

    summary = summarize(record)
    epoch = (record.get("epochs") or [{}])[-1]
    env = record.get("env") or {}
    return {
        "run_id": record["run_id"],
        "status": record["status"],
        "main_metric": record.get("main_metric"),
        "metrics": record.get("metrics"),
        "epoch_seconds": list(epoch_seconds),
        "epoch_seconds_median": statistics.median(epoch_seconds) if epoch_seconds else None,
        "real_tokens": epoch.get("real_tokens"),
        "padded_tokens": epoch.get("padded_tokens"),
        "padding_waste": summary["padding_waste"],
        "peak_memory_bytes": summary["peak_memory_bytes"],
        "device": env.get("device"),
        "device_name": env.get("device_name"),
        "config": record.get("config"),
    }


def machine_info(device: str = "auto") -> dict[str, Any]:
    """Keys for pytest-benchmark's ``machine_info``: the GPU (or CPU), CUDA and driver, torch,
    transformers and harness versions. Use it from a conftest.py::

        from harness.pytest_plugin import machine_info as harness_machine_info

        def pytest_benchmark_update_machine_info(config, machine_info):
            machine_info.update(harness_machine_info())

    The harness git commit is left out on purpose (pytest-benchmark keeps ``commit_info``):
    machine_info that changes with every commit would warn on every comparison.
    """
    import torch

    from harness.loop.env import environment, resolve_device  # lazy: pytest loads this plugin in every session

    env = environment(torch.device(resolve_device(device)))
    return {
        "device": env["device"],
        "device_name": env.get("device_name"),
        "gpu": env.get("device_name") if env["device"].startswith("cuda") else None,
        "cuda": env.get("cuda"),
        "gpu_driver": env.get("gpu_driver"),
        "torch": env["torch"],
        "transformers": env["transformers"],
        "harness": env["harness_version"],
        "torch_threads": env["torch_threads"],
    }


@pytest.fixture
def harness_benchmark(request: pytest.FixtureRequest) -> Callable[..., dict[str, Any]]:
    """Benchmark one training epoch of a harness run with pytest-benchmark (pedantic rounds).

    ``harness_benchmark(strategy="mine", plugins=["my_plugin.py"])`` times one epoch of the
    embedded model fine-tuned on a fixed slice of CoLA (see ``BENCHMARK_DEFAULTS``) with
    your plugin, set-up untimed, and returns the run record; any config key can be passed.
    """
    try:
        benchmark = request.getfixturevalue("benchmark")
    except pytest.FixtureLookupError:
        pytest.fail("harness_benchmark needs pytest-benchmark: pip install pytest-benchmark", pytrace=False)
    return HarnessBenchmark(benchmark, Path(str(request.path)).parent, request.node.nodeid)
