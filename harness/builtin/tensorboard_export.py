"""The ``tensorboard`` exporter: TensorBoard event files per run, under ``<out>/tensorboard/<run_id>/``.

Switched on by a suite's ``export: [tensorboard]`` or ``harness run --export tensorboard``
(the ``tensorboard`` extra installs what it needs); ``tensorboard --logdir <out>/tensorboard``
shows every run of the output directory. Per epoch (step = the epoch number) it writes the
scalars of :func:`harness.records.export.epoch_figures`, and once per run the config (as YAML) and
the outcome as text. A record stored again (a failed run resumed, ``--rerun``) replaces the
run's event files, as its new record replaces the old one in ``results.jsonl``.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import yaml

from harness import hookimpl
from harness.base import Exporter
from harness.records.export import epoch_figures


def _walltime(stamp: str | None) -> float | None:
    try:
        return dt.datetime.fromisoformat(stamp).timestamp() if stamp else None
    except ValueError:
        return None


def _code(text: str) -> str:
    """Preformatted in TensorBoard's markdown: every line indented four spaces."""
    return "\n".join(f"    {line}" for line in text.splitlines())


class TensorBoard(Exporter):
    name = "tensorboard"
    description = "TensorBoard event files per run under <out>/tensorboard/<run_id>/: per epoch the loss, seconds, " \
        "real tokens/s and each metric; the config as text"
    extra = "tensorboard"
    requires = ("tensorboard",)

    @hookimpl
    def harness_record_stored(self, record: dict[str, Any], out_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        run_dir = Path(out_dir) / "tensorboard" / record["run_id"]
        for old in run_dir.glob("events.out.tfevents.*"):
            old.unlink()
        walltime = _walltime(record.get("finished_at"))
        writer = SummaryWriter(log_dir=str(run_dir))
        try:
            for epoch in record.get("epochs") or []:
                for tag, value in epoch_figures(epoch).items():
                    writer.add_scalar(tag, value, epoch["epoch"], walltime=walltime)
            writer.add_text("config", _code(yaml.safe_dump(record.get("config") or {}, sort_keys=False)), 0,
                            walltime=walltime)
            outcome = {key: record.get(key) for key in ("run_id", "status", "error", "suite", "metrics", "env")}
            writer.add_text("record", _code(json.dumps(outcome, indent=2, default=str)), 0, walltime=walltime)
        finally:
            writer.close()
