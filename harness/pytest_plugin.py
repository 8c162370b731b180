"""The ``harness_benchmark`` pytest fixture: benchmark a run (your own plugin's) in a few lines.

Installed through the ``pytest11`` entry point, so every pytest session in an environment
with harness installed has the fixture; it needs pytest-benchmark. Importing this module
is cheap (no torch): the harness is imported when the fixture is first used.

::

    def test_my_strategy(harness_benchmark):
        record = harness_benchmark(strategy="my_strategy", plugins=["my_plugin.py"], max_len=64)
        assert record["status"] == "ok"

Each round fine-tunes a fresh model for one epoch on a fixed, seeded slice of the data
(``harness.train.fit``, exactly what ``harness run`` does) and evaluates it. pytest-benchmark
times the whole call with the device synchronised at its end; ``extra_info`` holds the
loop's own device-synchronised epoch time per round, the metrics, the token counts, the
resolved config and the device.
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
    # pedantic warm-up rounds warm the process; each round's model is fresh
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
        """The :class:`harness.suite.ResolvedRun` for these keys (over BENCHMARK_DEFAULTS)."""
        from harness.plugins import load_registry
        from harness.suite import config_from_keys, dotted, resolve_run

        data = config_from_keys({**BENCHMARK_DEFAULTS, **(config or {}), **keys})
        registry = load_registry(list(plugins), base_dir=self.base_dir)
        return resolve_run(data, registry, self.base_dir, where=lambda loc: f"{self.where}: {dotted(loc)}")

    def __call__(
        self, config: Mapping[str, Any] | None = None, *, plugins: Sequence[str] = (), rounds: int = 3,
        warmup_rounds: int = 1, **keys: Any,
    ) -> dict[str, Any]:
        """Benchmark one run; return the record of its last measured round.

        :param config: config keys, dotted ones included (``{"dataset.subset.train": 512}``)
        :param plugins: local plugin modules (``.py`` paths relative to the test file, or names)
        :param keys: more config keys (``strategy="my_strategy", max_len=128``)
        """
        import torch

        from harness.errors import HarnessError
        from harness.measure import synchronize
        from harness.runner import preflight
        from harness.train import fit

        try:
            run = self.resolve(config, plugins, **keys)
            if run.config.world_size != 1:
                raise HarnessError(f"{self.where}: harness_benchmark times one process; leave `launcher` out")
            preflight([run])
        except HarnessError as exc:  # a mistake in the test's keys: one line, no traceback
            pytest.fail(str(exc), pytrace=False)

        device = torch.device(run.config.device)
        records: list[dict[str, Any]] = []

        def one_round() -> dict[str, Any]:
            record = fit(run)
            synchronize(device)
            records.append(record)
            return record

        self.benchmark.group = self.benchmark.group or f"{run.config.dataset.name} max_len={run.config.max_len}"
        self.benchmark.pedantic(one_round, rounds=rounds, warmup_rounds=warmup_rounds, iterations=1)
        measured = records[warmup_rounds:] or records
        self.benchmark.extra_info.update(extra_info(measured))
        return measured[-1]


def extra_info(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What a benchmark's JSON keeps beside the times: metrics, tokens, config, device."""
    from harness.summary import summarize

    last = records[-1]
    epoch_seconds = [summarize(r)["epoch_seconds"] for r in records]
    summary = summarize(last)
    epoch = (last.get("epochs") or [{}])[-1]
    env = last.get("env") or {}
    return {
        "run_id": last["run_id"],
        "status": last["status"],
        "main_metric": last.get("main_metric"),
        "metrics": last.get("metrics"),
        "epoch_seconds": epoch_seconds,
        "epoch_seconds_median": statistics.median(s for s in epoch_seconds if s is not None)
        if any(s is not None for s in epoch_seconds) else None,
        "real_tokens": epoch.get("real_tokens"),
        "padded_tokens": epoch.get("padded_tokens"),
        "padding_waste": summary["padding_waste"],
        "peak_memory_bytes": summary["peak_memory_bytes"],
        "device": env.get("device"),
        "device_name": env.get("device_name"),
        "config": last.get("config"),
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

    from harness.measure import environment, resolve_device

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
    """Benchmark one harness run with pytest-benchmark (pedantic rounds, warm-up rounds).

    ``harness_benchmark(strategy="mine", plugins=["my_plugin.py"])`` fine-tunes the embedded
    model on a fixed slice of CoLA (see ``BENCHMARK_DEFAULTS``) with your plugin, and
    returns the run record; any config key can be passed.
    """
    try:
        benchmark = request.getfixturevalue("benchmark")
    except pytest.FixtureLookupError:
        pytest.fail("harness_benchmark needs pytest-benchmark: pip install pytest-benchmark", pytrace=False)
    return HarnessBenchmark(benchmark, Path(str(request.path)).parent, request.node.nodeid)
