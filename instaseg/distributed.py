"""Several processes on PyTorch's own engine (``torchrun`` / ``torch.distributed``), for training and prediction.

instaseg never starts processes on its own beyond ``python -m torch.distributed.run`` (see
:func:`torchrun_command`): under ``torchrun`` every process runs the same command, reads who it is from the
environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) and
joins one process group (:func:`init_distributed`): NCCL when the processes use CUDA GPUs, gloo on CPU.

Training (DDP) and prediction (sharded inputs) talk through the :class:`Distributed` handle: which rank is
the main one (it alone writes files and prints), means of loss dicts across ranks, gathering Python objects,
splitting a list into per-rank shards and merging them back in the original order.

A process that fails raises (and exits non-zero): torchrun then stops the other processes of the job.
Collectives also have a timeout (``timeout_minutes``), so a job whose peer vanished without torchrun
noticing (e.g. a lost node) ends with an error instead of waiting forever.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from .model.device import resolve_device

# The variables torchrun sets for each process; MASTER_* tell the processes where to meet.
LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
# Set by tests only: a folder where each rank writes a JSON line per training batch (see StepTrace).
TRACE_VARIABLE = "INSTASEG_TRACE_DIR"


class DistributedError(Exception):
    """A multi-process setup that cannot work (missing variables, more ranks than GPUs, MPS)."""


def launched() -> bool:
    """Whether this process is one of several started by torchrun (``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@dataclass(frozen=True)
class Distributed:
    """This process's place in the job, and the collectives instaseg uses.

    Attributes:
        rank: 0..world_size-1 over all machines; rank 0 is the main process.
        world_size: number of processes in the job.
        local_rank: index of this process on its machine (its GPU index under CUDA).
        device: the device this process computes on (``cuda:<local_rank>`` or ``cpu``).
        backend: ``"nccl"`` or ``"gloo"``.
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def _tensor(self, values: list[float]) -> torch.Tensor:
        # NCCL reduces CUDA tensors only; gloo CPU tensors.
        device = self.device if self.backend == "nccl" else torch.device("cpu")
        return torch.tensor(values, dtype=torch.float64, device=device)

    def barrier(self) -> None:
        """Wait until every rank arrives here."""
        dist.barrier()

    def all_reduce_mean(self, values: dict[str, float], weight: float = 1.0) -> dict[str, float]:
        """Weighted mean of each value over the ranks (same keys in the same order on every rank), the same
        result on all.

        ``weight`` is this rank's share (e.g. its number of batches); a rank with weight 0 adds nothing.
        When all weights are 0 the values are 0.
        """
        keys = list(values)  # same insertion order on every rank; kept so CSV columns match a 1-process run
        tensor = self._tensor([values[k] * weight for k in keys] + [float(weight)])
        dist.all_reduce(tensor)
        total = float(tensor[-1])
        return {
            k: float(v) / total if total > 0 else 0.0 for k, v in zip(keys, tensor[:-1].tolist(), strict=True)
        }

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on at least one (so all ranks take the same branch)."""
        tensor = self._tensor([1.0 if flag else 0.0])
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return bool(tensor.item() > 0)

    def all_gather(self, value: Any) -> list[Any]:
        """Every rank's ``value`` (picklable), in rank order, on every rank."""
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, value)
        return gathered

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` (picklable) on every rank."""
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def shard(self, items: list) -> list:
        """This rank's share of ``items``: every ``world_size``-th item from index ``rank``."""
        return items[self.rank :: self.world_size]

    def unshard(self, parts: list[list]) -> list:
        """Merge per-rank shards (``parts[r]`` = rank r's :meth:`shard`, processed) back into the original
        order."""
        merged: list = [None] * sum(len(p) for p in parts)
        for rank, part in enumerate(parts):
            merged[rank :: self.world_size] = part
        return merged


def _resolve_device(name: str, local_rank: int) -> torch.device:
    """This process's device: :func:`~instaseg.model.device.resolve_device`'s choice, with each process
    taking the GPU of its ``LOCAL_RANK`` (a ``cuda:N`` given is read as ``cuda``) and MPS refused."""
    name = "cuda" if name.startswith("cuda:") else name
    try:
        chosen = resolve_device(name)
    except ValueError as e:
        raise DistributedError(str(e)) from None
    if chosen.type == "mps":
        raise DistributedError(
            "several processes on MPS are not supported by torch.distributed; use --device cpu"
        )
    if chosen.type == "cpu":
        return chosen
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise DistributedError(
            f"process with LOCAL_RANK {local_rank} has no GPU of its own: this machine shows {count} "
            f"GPU(s); start at most {count} processes per machine (--nproc_per_node {count})"
        )
    return torch.device("cuda", local_rank)


def init_distributed(device: str = "auto", timeout_minutes: float = 30.0) -> Distributed | None:
    """Join the torchrun job this process belongs to; ``None`` when it runs alone (no ``WORLD_SIZE`` > 1).

    Args:
        device: ``"auto"`` (this process's GPU when CUDA is available, else CPU), ``"cuda"`` or ``"cpu"``;
            under torchrun process ``LOCAL_RANK`` always takes GPU ``cuda:<LOCAL_RANK>`` (a ``cuda:N``
            given is read as ``cuda``).
        timeout_minutes: how long a collective waits for the other ranks before raising.

    Raises ``DistributedError`` naming what is missing or wrong.
    """
    if not launched():
        return None
    missing = [name for name in LAUNCH_VARIABLES if name not in os.environ]
    if missing:
        raise DistributedError(
            f"WORLD_SIZE is {os.environ['WORLD_SIZE']} but {', '.join(missing)} are not set: start the "
            "processes with torchrun (python -m torch.distributed.run), which sets them"
        )
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    target = _resolve_device(device, local_rank)
    backend = "nccl" if target.type == "cuda" else "gloo"
    if target.type == "cuda":
        torch.cuda.set_device(target)
    if not dist.is_initialized():
        dist.init_process_group(
            backend,
            init_method="env://",
            rank=rank,
            world_size=world_size,
            timeout=datetime.timedelta(minutes=timeout_minutes),
            device_id=target if target.type == "cuda" else None,
        )
    return Distributed(rank, world_size, local_rank, target, backend)


def cpu_threads() -> int:
    """This process's share of the machine's cores: all of them alone, ``cores // processes per machine``
    under torchrun (``LOCAL_WORLD_SIZE``), at least 1."""
    return max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def shutdown(context: Distributed | None) -> None:
    """Leave the process group (a no-op when running alone)."""
    if context is not None and dist.is_initialized():
        dist.destroy_process_group()


def torchrun_command(nproc: int, arguments: list[str]) -> list[str]:
    """The command that starts ``nproc`` processes of ``instaseg ARGUMENTS`` on this machine with torchrun.

    ``--standalone`` lets torchrun pick a free port on localhost (one machine; see docs/distributed.md for
    several machines).
    """
    if nproc < 1:
        raise DistributedError(f"the number of processes must be >= 1, got {nproc}")
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(nproc),
        "-m",
        "instaseg",
        *arguments,
    ]


def parameters_digest(model: torch.nn.Module) -> str:
    """SHA-256 of all parameters' bytes, in ``named_parameters`` order: equal digests, equal weights."""
    digest = hashlib.sha256()
    for name, parameter in model.named_parameters():
        digest.update(name.encode())
        # tobytes() writes C order whatever the strides: channels-last weights (bf16 training) included,
        # whose 1x1 kernels count as contiguous with a last stride of C and cannot be viewed as bytes.
        digest.update(parameter.detach().cpu().float().numpy().tobytes())
    return digest.hexdigest()


class StepTrace:
    """Per-rank JSON lines (``rank<R>.jsonl``) describing each training batch, written only when the
    ``INSTASEG_TRACE_DIR`` environment variable names a folder; tests read them to check which images
    each rank trained on and that the weights stay identical across ranks. Costs a hash of the weights
    per batch, so it is off in normal use."""

    def __init__(self, folder: str | Path, rank: int):
        self.path = Path(folder) / f"rank{rank}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rank = rank

    @classmethod
    def from_environment(cls, rank: int = 0) -> StepTrace | None:
        folder = os.environ.get(TRACE_VARIABLE)
        return cls(folder, rank) if folder else None

    def __call__(self, event: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps({"rank": self.rank, **event}) + "\n")
