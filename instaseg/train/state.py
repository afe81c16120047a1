"""The state of a training run that the steps of :func:`~instaseg.train.fit.fit` share (:class:`RunState`),
what a finished run reports (:class:`FitResult`), and how that state is saved to and restored from the run's
checkpoints (``best.pt``, and ``last.pt`` with what ``--resume`` needs: see :mod:`instaseg.model.checkpoint`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..distributed import Distributed
from ..model.checkpoint import read_checkpoint, save_atomic
from ..model.config import ModelConfig
from ..model.precision import Precision
from .config import TrainConfig
from .ema import WeightAverage
from .logs import plot_losses, write_metrics_csv
from .schedule import TrainingClock


@dataclass
class FitResult:
    """What a run produced. ``history`` has one dict per epoch (the rows of ``metrics.csv``)."""

    run_dir: Path
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_score: float = math.inf
    stop_reason: str = "finished"
    steps: int = 0  # optimizer steps taken, over the whole run (a resumed run included)
    steps_per_epoch: int = 0
    selection: str = ""  # which epoch best.pt holds and why (instaseg.train.selection.selection_line)

    @property
    def epochs_done(self) -> float:
        """Passes over the training split the steps amount to (fractional when the budget cut one)."""
        return self.steps / self.steps_per_epoch if self.steps_per_epoch else 0.0


@dataclass
class RunState:
    """The state the steps of a run share."""

    config: TrainConfig
    model_config: ModelConfig
    run_dir: Path
    device: torch.device
    distributed: Distributed | None
    model: nn.Module
    trained: nn.Module  # what the training steps call: the DDP wrapper under torchrun, else ``model``
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    header: dict
    result: FitResult
    start_epoch: int = 0
    bad_epochs: int = 0
    precision: Precision | None = None  # what the forward passes compute in (None: float32)
    clock: TrainingClock = field(default_factory=lambda: TrainingClock(0))  # the time budget
    ema: WeightAverage | None = None  # the weight average of --ema

    @property
    def evaluated(self) -> nn.Module:
        """The model that is validated and saved: the weight average with ``--ema``, else ``model``."""
        return self.ema.module if self.ema is not None else self.model

    @property
    def main(self) -> bool:
        return self.distributed is None or self.distributed.is_main

    @property
    def shard(self) -> tuple[int, int] | None:
        return (self.distributed.rank, self.distributed.world_size) if self.distributed else None


def _rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_run(run: RunState, say: Callable[[str], None]) -> None:
    """Continue from ``run_dir/last.pt``: weights, optimizer, schedule, scaler, RNG streams and history."""
    state = read_checkpoint(run.run_dir / "last.pt")
    # with --ema, "model" is the average and "trained_model" the weights that go on training
    run.model.load_state_dict(state.get("trained_model", state["model"]))
    if run.ema is not None:
        if "ema" in state:
            run.ema.load_state_dict(state["ema"])
        else:  # a run started without --ema: the average starts from the weights it reached
            run.ema.module.load_state_dict(run.model.state_dict())
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.scaler.load_state_dict(state["scaler"])
    rng = state["rng"]
    if run.distributed is not None:
        ranks = state.get("rng_ranks") or []
        # each rank continues its own stream; with another number of ranks, fresh per-rank streams
        rng = ranks[run.distributed.rank] if len(ranks) == run.distributed.world_size else None
    if rng is not None:
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and run.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], run.device)
    run.start_epoch, run.bad_epochs = int(state["epoch"]), int(state["bad_epochs"])
    run.result.history = [dict(row) for row in state["history"]]
    run.result.best_epoch, run.result.best_score = int(state["best_epoch"]), float(state["best_score"])
    run.result.steps = int(state.get("steps", run.scheduler.last_epoch))
    run.clock.used_before = float(state.get("seconds_used", 0.0))  # the budget continues where it was
    say(f"resuming {run.run_dir} after epoch {run.start_epoch}")


def _plain_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def _lowest_loss(history: list[dict]) -> bool:
    """Whether the last epoch of ``history`` has a validation loss below every earlier epoch's (the epoch
    ``--select loss`` would keep; a tie stays with the earlier epoch, as ``selection_line`` says)."""
    loss = history[-1].get("val_loss", math.nan)
    earlier = [r.get("val_loss", math.nan) for r in history[:-1]]
    return math.isfinite(loss) and all(not math.isfinite(e) or loss < e for e in earlier)


def save_checkpoints(run: RunState, row: dict, improved: bool, trace: Callable[[dict], None] | None) -> None:
    """``best.pt`` when the epoch improved, ``last.pt`` (with what ``--resume`` needs) always, and the logs.
    Called on every rank (the RNG states are gathered); only rank 0 writes."""
    rng_ranks = run.distributed.all_gather(_rng_state(run.device)) if run.distributed else None
    if not run.main:
        return
    if trace is not None:
        trace({"event": "checkpoint", "epoch": row["epoch"], "best": improved})
    # float32 and in the standard (contiguous) layout, whatever the run computed in (bf16 autocast casts
    # copies of the weights) and however it stored them (channels-last).
    weights = _plain_weights(run.evaluated)
    metrics = {k: v for k, v in row.items() if isinstance(v, (int, float))}
    checkpoint = {**run.header, "model": weights, "epoch": row["epoch"], "metrics": metrics}
    if improved:
        save_atomic(checkpoint, run.run_dir / "best.pt")
    if run.config.keep_by_loss and run.config.select != "loss" and _lowest_loss(run.result.history):
        save_atomic(checkpoint, run.run_dir / "best-by-loss.pt")
    resume = {
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "scaler": run.scaler.state_dict(),
        "seconds_used": run.clock.used(),
        "steps": run.scheduler.last_epoch,
        "rng": _rng_state(run.device),
        **({"rng_ranks": rng_ranks} if rng_ranks else {}),
        "history": run.result.history,
        "best_epoch": run.result.best_epoch,
        "best_score": run.result.best_score,
        "bad_epochs": run.bad_epochs,
    }
    if run.ema is not None:
        resume["trained_model"] = _plain_weights(run.model)
        resume["ema"] = {"updates": run.ema.updates, "decay": run.ema.decay}
        resume["ema"]["weights"] = weights
    save_atomic({**checkpoint, **resume}, run.run_dir / "last.pt")
    write_metrics_csv(run.run_dir, run.result.history)
    plot_losses(run.run_dir, run.result.history)
