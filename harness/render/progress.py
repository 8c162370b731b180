"""Progress at the edge: bars while a suite runs, or one line per finished run.

:class:`RichProgress` is what ``harness run`` hands :func:`harness.launch.runner.run_suite`: rich
bars on a terminal (the runs; the epochs and steps of the run, with an ETA, or one bar per
active run with ``--jobs``); where the bars cannot be drawn
(CI, ``nohup``, a redirect) or are turned off (``--no-progress``), one line per finished
run as it finishes (:func:`run_line`). The training loop only counts steps; the bars read
the count when they redraw.
"""

from __future__ import annotations

import time
from typing import Any, Iterable

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from harness.records.record import EpochRecord, RunRecord
from harness.records.summary import summarize
from harness.render.console import consoles


class _SyncedProgress(Progress):
    """rich's Progress that takes the loop's step count each time it draws, so the training
    step itself makes no call into rich (``RunBars.advance`` only counts)."""

    def __init__(self, *columns: Any, sync: Any, **kwargs: Any):
        self._sync = sync  # before rich's __init__, which draws once
        super().__init__(*columns, **kwargs)

    def get_renderables(self) -> Iterable[Any]:
        self._sync()
        yield from super().get_renderables()


class RichProgress:
    """A bar for the runs of the suite, and bars for each run in progress.

    One run at a time: the run's epochs, and the steps of its epoch (with an ETA). Several
    at once (``--jobs N``): one bar per active run, its label, the steps of its epoch and
    its last epoch's figures. Where the bars cannot be drawn (stderr is not a terminal: CI,
    ``nohup``, a redirect) or are turned off (``--no-progress``), one line per finished
    run instead, as it finishes: ``[3/9] cola fixed linear L=64 seed=42: ok in 1 min 5 s,
    epoch 12.34 s, mcc 0.215``.
    """

    def __init__(self, total_runs: int, enabled: bool = True, jobs: int = 1):
        self.total, self.finished, self.jobs = total_runs, 0, jobs
        self.active: list[RunBars] = []  # drawn by rich's refresh thread, changed by this one
        self.lines = not (enabled and consoles.err.is_terminal)
        self.progress = _SyncedProgress(
            TextColumn("{task.description}", style="bold"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=consoles.err,
            disable=self.lines,
            transient=False,
            sync=self._sync,
        )
        self.runs = self.progress.add_task("runs", total=total_runs, info="")
        if jobs == 1:  # the bars every run reuses
            self.epochs = self.progress.add_task("epochs", total=1, info="", visible=False)
            self.steps = self.progress.add_task("steps", total=1, info="", visible=False)

    def __enter__(self) -> "RichProgress":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def start_run(self, label: str) -> "RunBars":
        if self.jobs == 1:
            self.progress.update(self.runs, info=label)
            self.progress.reset(self.epochs, total=1, visible=False, info="")
            bars = RunBars(self.progress, label, self.steps, self.epochs)
        else:
            bars = RunBars(self.progress, label, self.progress.add_task(label, total=None, info="starting"))
        self.active = [*self.active, bars]
        self._running()
        return bars

    def end_run(self, bars: "RunBars", record: RunRecord | None) -> None:
        self.finished += 1
        self.active = [b for b in self.active if b is not bars]
        self.progress.advance(self.runs)
        if self.jobs == 1:
            self.progress.update(self.steps, visible=False)
            self.progress.update(self.epochs, visible=False)
        else:
            self.progress.remove_task(bars.steps)
            self._running()
        if self.lines:
            text = run_line(record.to_dict() if record is not None else None, time.monotonic() - bars.started)
            # plain text: an error message may hold brackets ("[/path/pair.cc:553]") that are no markup
            line = f"[{self.finished}/{self.total}] {bars.label}: {text}"
            consoles.err.print(line, markup=False, highlight=False, soft_wrap=True)

    def skip_run(self) -> None:
        self.finished += 1
        self.progress.advance(self.runs)

    def _running(self) -> None:
        if self.jobs > 1:
            self.progress.update(self.runs, info=f"{len(self.active)} running")

    def _sync(self) -> None:
        for bars in self.active:
            bars.sync()


class RunBars:
    """One run's bars: the :class:`harness.loop.train.Progress` protocol. The loop only counts
    steps (:meth:`advance`); the bars take the count when they redraw."""

    def __init__(self, progress: Progress, label: str, steps: Any, epochs: Any = None):
        self.progress, self.label, self.steps, self.epochs = progress, label, steps, epochs
        self.started = time.monotonic()
        self.steps_done = self._drawn = 0
        self.where, self.last = "", ""

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        if self.epochs is not None and epoch == 1:
            self.progress.reset(self.epochs, total=epochs, visible=True, info="")
        self.steps_done = self._drawn = 0
        self.where = f"epoch {epoch}" if self.epochs is not None else f"epoch {epoch}/{epochs}"
        self.progress.reset(self.steps, total=steps, visible=True, info=f"{self.where}  {self.last}".strip())

    def advance(self, steps: int = 1) -> None:
        self.steps_done += steps

    def sync(self) -> None:
        done = self.steps_done
        if done != self._drawn:
            self.progress.update(self.steps, completed=done)
            self._drawn = done

    def end_epoch(self, epoch: EpochRecord) -> None:
        self.sync()
        metrics = " ".join(f"{k} {v:.3f}" for k, v in epoch.metrics.items())
        info = f"{epoch.train_seconds:.1f}s  loss {epoch.train_loss:.3f}  {metrics}"
        if self.epochs is not None:
            self.progress.update(self.epochs, advance=1, info=info)
        else:
            self.last = info
            self.progress.update(self.steps, info=f"{self.where}  {info}")


def run_line(record: dict[str, Any] | None, seconds: float) -> str:
    """What one finished run came to, in a line: status, wall time, epoch time, main metric."""
    took = duration(seconds)
    if record is None:
        return f"done in {took} (recorded by the node holding rank 0)"
    if record.get("status") != "ok":
        return f"{record.get('status')} in {took}: {record.get('error')}"
    parts = [f"ok in {took}"]
    epoch = summarize(record)["epoch_seconds"]
    if epoch is not None:
        parts.append(f"epoch {epoch:.2f} s")
    main = record.get("main_metric")
    if main and main in (record.get("metrics") or {}):
        parts.append(f"{main} {record['metrics'][main]:.3f}")
    tested = record.get("test_metrics") or {}
    if main in tested:
        parts.append(f"test {main} {tested[main]:.3f} ({(record.get('config') or {}).get('test_split')})")
    if record.get("one_class"):
        parts.append("it predicts one class for every example")
    if record.get("busy"):
        parts.append("measured on a busy machine")
    beside = (record.get("parallel") or {}).get("beside")
    if beside:
        parts.append(f"{beside} other run{'s' if beside != 1 else ''} beside it")
    return ", ".join(parts)


def duration(seconds: float) -> str:
    """``42 s``, ``1 min 5 s``, ``1 h 2 min``."""
    s = int(round(seconds))
    if s < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"
