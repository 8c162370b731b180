"""Data parallelism inside a run: this process's place in the group, and the checks.

A run whose ``launcher`` asks for more than one process (``launcher.nproc x
launcher.nnodes``, or ``harness run --nproc N``) is started through torchrun by
:mod:`harness.launch.process`; each worker joins the process group (NCCL on GPUs, gloo on the
CPU) and trains with the :class:`Group` of this module, which shards the batches, wraps
the model in DistributedDataParallel and combines the measurements across ranks. For a
single process every method is a no-op, so the loop reads the same either way.
:func:`check` refuses, before any run starts, what would make a data-parallel run fail
only after it started.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist

from harness.errors import HarnessError

if TYPE_CHECKING:
    from harness.config.resolve import ResolvedRun


# ------------------------------------------------------------------ inside fit(): the group


@dataclass(frozen=True)
class Group:
    """This process's place in the data-parallel group (rank 0 of 1 when not distributed).

    Every method is a no-op for a single process, so ``fit()`` reads the same either way.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def shard(self) -> dict[str, int]:
        """Keyword arguments of ``TokenizerStrategy.batches``: this rank's share of the data."""
        return {"rank": self.rank, "world_size": self.world_size}

    def device(self, name: str) -> torch.device:
        """The run's device for this rank: ``cuda`` means the rank's own GPU."""
        if self.world_size > 1 and name == "cuda":
            return torch.device("cuda", self.local_rank)
        return torch.device(name)

    def per_rank(self, batch_size: int) -> int:
        """This rank's share of the global ``batch_size`` (the launcher checked it divides)."""
        return batch_size // self.world_size

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """DistributedDataParallel around ``model`` (averages gradients in backward)."""
        if self.world_size == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        # BERT's buffers (position ids) never change: no need to broadcast them every step
        return DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False
        )

    def _reduce(self, value: float, op: str) -> float:
        if self.world_size == 1:
            return float(value)
        t = torch.tensor([float(value)], dtype=torch.float64, device=_comm_device())
        dist.all_reduce(t, op=getattr(dist.ReduceOp, op))
        return float(t.item())

    def max(self, value: float) -> float:
        """The largest value over the ranks (the slowest rank's time)."""
        return self._reduce(value, "MAX")

    def sum(self, value: float) -> float:
        """The total over the ranks; a whole number stays one (token and example counts)."""
        total = self._reduce(value, "SUM")
        return int(round(total)) if isinstance(value, int) else total

    def mean(self, value: float) -> float:
        return self._reduce(value, "SUM") / self.world_size

    def all(self, value: float) -> list[float]:
        """Every rank's value, in rank order, on every rank."""
        if self.world_size == 1:
            return [value]
        parts: list[Any] = [None] * self.world_size
        dist.all_gather_object(parts, value)
        return parts

    def gather(self, index: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every rank's (index, values), concatenated, on every rank."""
        if self.world_size == 1:
            return index, values
        parts: list[Any] = [None] * self.world_size
        dist.all_gather_object(parts, (index, values))
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


SINGLE = Group()


def current() -> Group:
    """The group this process belongs to: the torchrun one in a worker, else :data:`SINGLE`."""
    if not (dist.is_available() and dist.is_initialized()):
        return SINGLE
    return Group(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def _comm_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# ----------------------------------------------------------------------- preflight checks


def check(run: ResolvedRun) -> None:
    """Preflight: what would make a data-parallel run fail only after it started."""
    cfg, launcher = run.config, run.config.launcher
    ws = cfg.world_size
    if ws == 1:
        return
    where = run.where("launcher")
    if cfg.batch_size % ws:
        raise HarnessError(
            f"{run.where('batch_size')}: batch_size {cfg.batch_size} is the global batch and must divide "
            f"evenly among the {ws} processes of {where} (nproc {launcher.nproc} x nnodes {launcher.nnodes})"
        )
    if cfg.device not in ("cpu", "cuda"):
        raise HarnessError(
            f"{run.where('device')}: device {cfg.device!r} with {ws} processes; use `cuda` (each process "
            "takes its own GPU, CUDA_VISIBLE_DEVICES picks them) or `cpu`"
        )
    if cfg.device == "cuda" and torch.cuda.is_available() and launcher.nproc > torch.cuda.device_count():
        raise HarnessError(
            f"{where}: nproc {launcher.nproc} processes, one GPU each, and this node has "
            f"{torch.cuda.device_count()} GPU(s)"
        )
    if launcher.nnodes > 1 and not launcher.rdzv_endpoint:
        raise HarnessError(
            f"{where}: nnodes {launcher.nnodes} needs rdzv_endpoint (host:port that every node reaches), "
            "e.g. --set launcher.rdzv_endpoint=node0:29400"
        )
