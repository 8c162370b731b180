"""Progress across a process boundary: what the loop tells (:class:`harness.loop.train.Progress`)
as typed messages, written by the worker of rank 0 and replayed by the parent on its bars.

One JSON line per message, ``kind`` telling which (:data:`Event`): :class:`StartEpoch`,
:class:`Advance` (steps done, batched: a line at most every :data:`POLL_SECONDS`) and
:class:`EndEpoch` (the epoch's measurements, as the record holds them). :func:`replay`
reads the lines written since an offset, a line still being written waiting for the next look.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, TypeAdapter

from harness.loop.train import Progress
from harness.records.record import EpochRecord

#: how often the parent looks at a run's process (progress events, exit, timeout), and the
#: longest a worker holds back its step count
POLL_SECONDS = 0.2


class StartEpoch(BaseModel):
    kind: Literal["start_epoch"] = "start_epoch"
    epoch: int
    epochs: int
    steps: int


class Advance(BaseModel):
    kind: Literal["advance"] = "advance"
    steps: int


class EndEpoch(BaseModel):
    kind: Literal["end_epoch"] = "end_epoch"
    epoch: EpochRecord


Event = Annotated[StartEpoch | Advance | EndEpoch, Field(discriminator="kind")]
_EVENT: TypeAdapter[StartEpoch | Advance | EndEpoch] = TypeAdapter(Event)


class EventProgress:
    """:class:`~harness.loop.train.Progress`, written as events to ``path`` for the parent."""

    def __init__(self, path: Path):
        self.file = open(path, "a", encoding="utf-8")
        self.pending = 0
        self.last = 0.0

    def _write(self, event: BaseModel) -> None:
        self.file.write(event.model_dump_json() + "\n")
        self.file.flush()

    def _flush_steps(self) -> None:
        if self.pending:
            self._write(Advance(steps=self.pending))
            self.pending = 0
        self.last = time.monotonic()

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        self._write(StartEpoch(epoch=epoch, epochs=epochs, steps=steps))

    def advance(self, steps: int = 1) -> None:
        self.pending += steps
        if time.monotonic() - self.last > POLL_SECONDS:
            self._flush_steps()

    def end_epoch(self, epoch: EpochRecord) -> None:
        self._flush_steps()
        self._write(EndEpoch(epoch=epoch))

    def close(self) -> None:
        self._flush_steps()
        self.file.close()


def replay(path: Path, offset: int, progress: Progress) -> int:
    """Tell ``progress`` the events written to ``path`` since ``offset``; the new offset."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return offset
    end = data.rfind(b"\n") + 1  # a line still being written waits for the next look
    for line in data[:end].splitlines():
        match _EVENT.validate_json(line):
            case StartEpoch(epoch=epoch, epochs=epochs, steps=steps):
                progress.start_epoch(epoch, epochs, steps)
            case Advance(steps=steps):
                progress.advance(steps)
            case EndEpoch(epoch=epoch):
                progress.end_epoch(epoch)
    return offset + end
