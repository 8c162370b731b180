"""The ``mlflow`` exporter: one MLflow run per stored record.

Switched on by a suite's ``export: [mlflow]`` (or ``{name: mlflow, options: {...}}``) or
``harness run --export mlflow``; the ``mlflow`` extra installs what it needs (mlflow-skinny,
and SQLAlchemy with Alembic for the local store). Where the runs go: the ``tracking_uri``
option, else ``MLFLOW_TRACKING_URI``, else a SQLite store in the output directory,
``sqlite:///<out>/mlflow.db`` (``mlflow ui --backend-store-uri sqlite:///<out>/mlflow.db``
shows it). The experiment is the suite's name (or the ``experiment`` option); the run is
named by the ``run_id``. Logged: the flattened config as params (``head.options.dropout``),
each epoch's figures (:func:`harness.records.export.epoch_figures`) with step = the epoch, the final
metrics and throughput, ``env`` as ``env.*`` tags, the harness's status as a tag, and the
MLflow status: ``ok`` -> FINISHED, ``diverged`` and ``failed`` -> FAILED.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from pydantic import Field

from harness import hookimpl
from harness.base import Exporter, Options
from harness.records.export import epoch_figures
from harness.records.store import RESULTS_FILE
from harness.records.summary import flatten

STATUS = {"ok": "FINISHED", "diverged": "FAILED", "failed": "FAILED"}
#: run-level figures logged once, at the last epoch's step, besides the final metrics
FINAL = ("train_samples_per_second", "train_steps_per_second", "total_flos", "warmup_seconds", "compile_seconds")
#: MLflow's limits: values per param and tag, entries per log_batch request
MAX_PARAM, MAX_TAG, BATCH_PARAMS, BATCH_METRICS = 6000, 8000, 100, 1000


class MLflowOptions(Options):
    tracking_uri: str | None = Field(
        None, description="where the runs go (an MLflow server, a database URI); default: MLFLOW_TRACKING_URI, "
        "else sqlite:///<out>/mlflow.db"
    )
    experiment: str | None = Field(None, description="the MLflow experiment; default: the suite's name")


def _ms(stamp: str | None) -> int | None:
    try:
        return int(dt.datetime.fromisoformat(stamp).timestamp() * 1000) if stamp else None
    except ValueError:
        return None


def _text(value: Any, limit: int) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def params(record: dict[str, Any]) -> dict[str, str]:
    """The config, flattened to dotted keys, as MLflow param values (JSON for lists and null)."""
    return {key: _text(value, MAX_PARAM) for key, value in flatten(record.get("config") or {}).items()}


def tags(record: dict[str, Any], results: Path) -> dict[str, str]:
    out = {f"env.{key}": _text(value, MAX_TAG) for key, value in flatten(record.get("env") or {}).items()
           if value is not None}
    out |= {f"harness.{key}": _text(record[key], MAX_TAG) for key in ("run_id", "status", "error", "suite",
                                                                      "schema_version") if record.get(key) is not None}
    return out | {"harness.results": str(results)}


def metrics(record: dict[str, Any]) -> list[tuple[str, float, int]]:
    """(key, value, step): each epoch's figures at its step, then the final ones at the last step."""
    epochs = record.get("epochs") or []
    out = [(tag, value, epoch["epoch"]) for epoch in epochs for tag, value in epoch_figures(epoch).items()]
    last = epochs[-1]["epoch"] if epochs else 0
    final = dict(record.get("metrics") or {})
    final |= {key: record.get(key) for key in FINAL}
    for metric, (low, high) in (record.get("metrics_ci95") or {}).items():
        final |= {f"{metric}_ci95_low": low, f"{metric}_ci95_high": high}
    return out + [(key, float(value), last) for key, value in final.items() if isinstance(value, (int, float))]


class MLflow(Exporter):
    name = "mlflow"
    description = "one MLflow run per record (sqlite:///<out>/mlflow.db unless tracking_uri): the config as " \
        "params, per-epoch metrics, env as tags"
    extra = "mlflow"
    requires = ("mlflow", "sqlalchemy", "alembic")
    Options = MLflowOptions

    def __init__(self, options: MLflowOptions) -> None:
        super().__init__(options)
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()  # records may be stored from several threads (parallel jobs)

    def _client(self, out_dir: Path) -> tuple[Any, str, bool]:
        """The client of this output directory's tracking URI (made once: a new SQLite store
        creates its tables), the URI, and whether it is the local default."""
        from mlflow.tracking import MlflowClient

        uri = self.options.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        local = not uri
        uri = uri or f"sqlite:///{(Path(out_dir) / 'mlflow.db').resolve()}"
        if uri not in self._clients:
            for name in ("mlflow.store.db.utils", "alembic"):  # "Creating initial MLflow database tables..."
                logging.getLogger(name).setLevel(logging.WARNING)
            self._clients[uri] = MlflowClient(tracking_uri=uri)
        return self._clients[uri], uri, local

    def _experiment(self, client: Any, name: str, artifacts: Path | None) -> str:
        from mlflow.exceptions import MlflowException

        found = client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return client.create_experiment(name, artifact_location=artifacts.resolve().as_uri() if artifacts else None)
        except MlflowException:  # created meanwhile by another process sharing the store
            found = client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    @hookimpl
    def harness_record_stored(self, record: dict[str, Any], out_dir: Path) -> None:
        from mlflow.entities import Metric, Param, RunTag

        with self._lock:
            client, _, local = self._client(out_dir)
            experiment = self.options.experiment or record.get("suite") or Path(out_dir).resolve().name
            experiment_id = self._experiment(client, experiment, Path(out_dir) / "mlartifacts" if local else None)
            run = client.create_run(experiment_id, start_time=_ms(record.get("started_at")), run_name=record["run_id"])
            run_id = run.info.run_id
            try:
                stamp = _ms(record.get("finished_at")) or 0
                entries = [Param(k, v) for k, v in params(record).items()]
                for i in range(0, len(entries), BATCH_PARAMS):
                    client.log_batch(run_id, params=entries[i: i + BATCH_PARAMS])
                entries = [RunTag(k, v) for k, v in tags(record, Path(out_dir) / RESULTS_FILE).items()]
                for i in range(0, len(entries), BATCH_PARAMS):
                    client.log_batch(run_id, tags=entries[i: i + BATCH_PARAMS])
                entries = [Metric(k, v, stamp, step) for k, v, step in metrics(record)]
                for i in range(0, len(entries), BATCH_METRICS):
                    client.log_batch(run_id, metrics=entries[i: i + BATCH_METRICS])
            except BaseException:
                client.set_terminated(run_id, "FAILED", end_time=_ms(record.get("finished_at")))
                raise
            client.set_terminated(run_id, STATUS.get(record.get("status"), "FAILED"), end_time=_ms(record.get("finished_at")))
