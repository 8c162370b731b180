"""Calibration files: the price of a batch's shape on one machine, for one configuration.

A calibration file is JSON, ``{"format": 1, "calibrations": [...]}``; each calibration holds

- ``machine``: what it was measured on (device type, the GPU's or CPU's name, torch's
  threads, torch's version), and ``config``: the configuration whose steps it priced
  (model and its architecture, precision, attention, compile, head and its options,
  gradient clipping, processes per run): together its key;
- ``train`` and ``eval``: step seconds as a function of (B, L) (:class:`harness.stats.cost.CostFit`,
  the form, coefficients, residuals and the range of shapes measured); ``contexts``: a
  training curve per context, the largest shape its steps were timed after (``largest``:
  [B, L], :mod:`harness.loop.probe`), which :meth:`Calibration.train_for` picks for a run
  by the run's own largest shape, ``train`` where none holds it; ``memory``: the
  peak memory likewise (``memory_kind`` says which figure: ``rss`` on a CPU,
  ``cuda_allocated`` on a GPU, as the records' ``peak_memory_kind``);
- ``setup_seconds`` (what preparing a run took), ``first_epoch_seconds`` (what a run's first
  epoch takes beyond the price of its steps: the first steps of a process, the optimizer's
  state allocated), ``parameters``, when and from what it was made (``source``: ``probe``,
  or the results directory its steps came from), the memory runs may use there
  (``device_memory_bytes``), and the raw samples it was fitted on (a step's row: kind, B, L,
  seconds, context), so a file can be refitted or checked.

:func:`read_calibrations` and :func:`write_calibration` read and update a file (a
calibration replaces the one of the same key; the file is replaced atomically);
:func:`find` picks the calibration of a key, :func:`nearest_difference` says in one line
why none fits. numpy-free, torch-free: a calibration made on a rented GPU is a file to
carry to a laptop.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from harness.errors import HarnessError
from harness.records.store import write_atomically
from harness.stats.cost import CostFit

FORMAT = 1
#: the calibration file ``harness estimate`` and ``harness calibrate`` use without ``--calibration``
DEFAULT_FILE = "calibrations.json"
#: the machine fields of a key, in the order a difference is named
MACHINE_FIELDS = ("device", "device_name", "threads", "torch")
#: the configuration fields of a key, in the order a difference is named
CONFIG_FIELDS = ("model", "architecture", "precision", "attention", "compile", "head", "clip", "world_size")


@dataclass
class Calibration:
    machine: dict[str, Any]
    config: dict[str, Any]
    train: CostFit
    eval: CostFit
    memory: CostFit | None
    memory_kind: str
    setup_seconds: float
    parameters: int
    measured_at: str
    source: str
    probe_seconds: float | None = None
    #: other processes' CPU use while it was probed, in cores on average (None: not probed, or unreadable)
    other_cores: float | None = None
    #: the memory runs may use on the machine measured (a GPU's memory, a CPU's RAM or cgroup limit)
    device_memory_bytes: int | None = None
    samples: dict[str, list[list[float]]] = field(default_factory=dict)
    first_epoch_seconds: float = 0.0
    #: (largest shape, training curve) per context (see the module's docstring)
    contexts: list[tuple[tuple[int, int], CostFit]] = field(default_factory=list)

    def train_for(self, largest: tuple[int, int]) -> CostFit:
        """The training curve of a run whose largest shape is ``largest``: that of the context
        of its batch size whose largest length is the shortest that holds the run's; ``train``
        where no context does."""
        b, length = largest
        held = [(l, fit) for (cb, l), fit in self.contexts if cb == b and l >= length]
        return min(held, key=lambda c: c[0])[1] if held else self.train

    @property
    def key(self) -> tuple[str, str]:
        return _canonical(self.machine), _canonical(self.config)

    def describe(self) -> str:
        """``cpu 'AMD EPYC 9B45' x2 threads, torch 2.13.0+cpu``: where it was measured."""
        m = self.machine
        threads = f" x{m['threads']} threads" if m.get("device") == "cpu" and m.get("threads") else ""
        return f"{m.get('device')} {m.get('device_name')!r}{threads}, torch {m.get('torch')}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "machine": self.machine, "config": self.config, "train": self.train.to_dict(),
            "eval": self.eval.to_dict(), "memory": self.memory.to_dict() if self.memory else None,
            "memory_kind": self.memory_kind, "setup_seconds": self.setup_seconds,
            "first_epoch_seconds": self.first_epoch_seconds, "parameters": self.parameters,
            "measured_at": self.measured_at, "source": self.source, "probe_seconds": self.probe_seconds,
            "device_memory_bytes": self.device_memory_bytes, "other_cores": self.other_cores,
            "contexts": [{"largest": list(largest), "train": fit.to_dict()} for largest, fit in self.contexts],
            "samples": self.samples,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Calibration":
        return cls(
            machine=dict(data["machine"]), config=dict(data["config"]), train=CostFit.from_dict(data["train"]),
            eval=CostFit.from_dict(data["eval"]),
            memory=CostFit.from_dict(data["memory"]) if data.get("memory") else None,
            memory_kind=str(data.get("memory_kind") or ""), setup_seconds=float(data.get("setup_seconds") or 0.0),
            first_epoch_seconds=float(data.get("first_epoch_seconds") or 0.0),
            parameters=int(data.get("parameters") or 0), measured_at=str(data["measured_at"]),
            source=str(data.get("source") or ""), probe_seconds=data.get("probe_seconds"),
            device_memory_bytes=data.get("device_memory_bytes"), other_cores=data.get("other_cores"),
            samples=dict(data.get("samples") or {}),
            contexts=[((int(c["largest"][0]), int(c["largest"][1])), CostFit.from_dict(c["train"]))
                      for c in data.get("contexts") or ()],
        )


def _canonical(part: dict[str, Any]) -> str:
    return json.dumps(part, sort_keys=True, separators=(",", ":"))


def read_calibrations(path: Path) -> list[Calibration]:
    """Every calibration of the file; none when it does not exist. A file that is not a
    calibration file is an error naming it."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HarnessError(f"{path}: not a calibration file ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("calibrations"), list):
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise HarnessError(f"{path}: not a calibration file of format {FORMAT} (format: {found!r})")
    out = []
    for i, entry in enumerate(data["calibrations"]):
        try:
            out.append(Calibration.from_dict(entry))
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise HarnessError(f"{path}: calibration {i + 1} is malformed ({type(exc).__name__}: {exc})") from None
    return out


def write_calibration(path: Path, calibration: Calibration) -> None:
    """Add ``calibration`` to the file (replacing the one of its key), atomically."""
    path = Path(path)
    kept = [c for c in read_calibrations(path) if c.key != calibration.key]
    text = json.dumps({"format": FORMAT, "calibrations": [c.to_dict() for c in [*kept, calibration]]}, indent=1)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, lambda f: f.write(text.encode("utf-8") + b"\n"), prefix=".calibration-")
    except OSError as exc:
        raise HarnessError(f"{path}: cannot write the calibration ({exc.strerror or exc})") from None


def find(
    calibrations: Sequence[Calibration], machine: dict[str, Any], config: dict[str, Any], *, any_machine: bool = False,
) -> Calibration | None:
    """The calibration of this configuration on this machine; with ``any_machine`` (a file
    carried from another machine) of this configuration on a device of the same type, this
    machine's first. Several other machines for one configuration: the newest."""
    same = [c for c in calibrations if _canonical(c.config) == _canonical(config)]
    here = [c for c in same if _canonical(c.machine) == _canonical(machine)]
    if here or not any_machine:
        return here[-1] if here else None
    carried = [c for c in same if c.machine.get("device") == machine.get("device")]
    return max(carried, key=lambda c: c.measured_at) if carried else None


def nearest_difference(
    calibrations: Sequence[Calibration], machine: dict[str, Any], config: dict[str, Any], *, any_machine: bool = False,
) -> str:
    """Why no calibration fits, in a few words: the first field in which the nearest one differs."""
    if not calibrations:
        return "the file holds no calibration"
    fields = [("config", f) for f in CONFIG_FIELDS] + [("machine", f) for f in MACHINE_FIELDS
                                                        if not any_machine or f == "device"]

    def ours(part: str) -> dict[str, Any]:
        return config if part == "config" else machine

    def differences(c: Calibration) -> list[tuple[str, str]]:
        return [(part, f) for part, f in fields if getattr(c, part).get(f) != ours(part).get(f)]

    nearest = min(calibrations, key=lambda c: len(differences(c)))
    part, name = differences(nearest)[0]
    return (f"the nearest was measured with {name} {_show(getattr(nearest, part).get(name))} "
            f"(this run: {_show(ours(part).get(name))})")


def _show(value: Any) -> str:
    return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else str(value)
