"""A whole training run: :func:`fit` (epochs, validation, best/last checkpoints, early stopping, resume, logs)."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..core import ClassMap, Record
from ..distributed import Distributed, parameters_digest
from ..problems import DatasetError
from .augment import build_eval_transform, build_train_transform
from .checkpoint import checkpoint_header, read_checkpoint, save_atomic
from .config import ModelConfig, TrainConfig
from .data import DetectionDataset, make_loader
from .engine import build_optimizer, build_scheduler, evaluate_losses, train_one_epoch
from .logs import TensorBoardLog, plot_losses, write_config, write_metrics_csv
from .model import LOSS_NAMES, build_model
from .weights import apply_weights

# (model, epoch) -> mask mAP on the validation split, higher is better; supplied by the evaluation module.
SelectMetric = Callable[[nn.Module, int], float]


@dataclass
class FitResult:
    """What a run produced. ``history`` has one dict per epoch (the rows of ``metrics.csv``)."""

    run_dir: Path
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_score: float = math.inf
    stop_reason: str = "finished"


def resolve_device(name: str) -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; asking for an absent accelerator is a ``ValueError``."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for, but torch sees no CUDA GPU; use --device cpu or auto")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("--device mps asked for, but MPS is not available; use --device cpu or auto")
    return torch.device(name)


def _check_splits(splits: dict[str, list[Record]]) -> None:
    train = splits.get("train", [])
    if not train:
        raise DatasetError("the train split has no images; check the split file or the split fractions")
    if not any(not a.iscrowd for r in train for a in r.annotations):
        raise DatasetError(
            f"none of the {len(train)} training images has a (non-crowd) annotation: nothing "
            "to learn from; check that the annotations were imported (instaseg check)"
        )
    if not splits.get("val"):
        raise DatasetError(
            "the val split has no images; validation picks the best model, so give it some "
            "(split fractions or split file)"
        )


def _rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _summary(row: dict, epochs: int, best: bool) -> str:
    parts = " ".join(f"{n.removeprefix('loss_')[:5]} {row['val_' + n]:.3f}" for n in LOSS_NAMES)
    test = f"  test {row['test_loss']:.4f}" if "test_loss" in row else ""
    metric = f"  mAP {row['val_map']:.4f}" if "val_map" in row else ""
    return (
        f"epoch {row['epoch']}/{epochs}  train {row['train_loss']:.4f}  val {row['val_loss']:.4f} "
        f"({parts}){test}{metric}  lr {row['lr']:.2e}  {row['seconds']:.0f}s" + ("  * best" if best else "")
    )


def _save_epoch(
    run_dir: Path, base: dict, model: nn.Module, row: dict, improved: bool, trace: Callable | None
) -> None:
    """``best.pt`` when the epoch improved (weights and metrics only; ``last.pt`` is written by the caller)."""
    if trace is not None:
        trace({"event": "checkpoint", "epoch": row["epoch"], "best": improved})
    if improved:
        weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        metrics = {k: v for k, v in row.items() if isinstance(v, (int, float))}
        save_atomic(
            {**base, "model": weights, "epoch": row["epoch"], "metrics": metrics}, run_dir / "best.pt"
        )


def fit(
    splits: dict[str, list[Record]],
    class_map: ClassMap,
    config: TrainConfig,
    model_config: ModelConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    select_metric: SelectMetric | None = None,
    progress: bool = False,
    report: Callable[[str], None] | None = None,
    download: bool = True,
    stop_after: int | None = None,
    distributed: Distributed | None = None,
    sync_batchnorm: bool = False,
    trace: Callable[[dict], None] | None = None,
) -> FitResult:
    """Train a Mask R-CNN on ``splits["train"]``, validating on ``splits["val"]`` after each epoch.

    Writes into ``run_dir``: ``best.pt`` (lowest validation loss, or highest ``select_metric`` when
    ``config.select == "map"``), ``last.pt`` (with the optimizer/scheduler/RNG state for ``resume``),
    ``metrics.csv``, ``loss_curve.png``, ``tensorboard/`` and ``config.yaml``. Test losses are measured each
    epoch when ``splits["test"]`` has images (reported only, never used for selection).

    Args:
        resume: continue from ``run_dir/last.pt`` exactly where it stopped (same config expected).
        progress: show a tqdm bar per epoch on stderr. ``report`` receives one summary line per epoch.
        download: allow downloading COCO weights when they are not cached.
        stop_after: stop after this epoch as if interrupted (the schedule still spans ``config.epochs``).
        distributed: this process's place in a torchrun job (:func:`instaseg.distributed.init_distributed`),
            or ``None`` alone. Under DDP each rank trains on its shard of the images with
            ``config.batch_size`` images per batch (the global batch is ``world_size`` times that),
            gradients are averaged across ranks, losses and metrics are averaged over the ranks' shards,
            ``select_metric`` is called on every rank (it must gather and return the same value on all),
            and only rank 0 writes files and calls ``report`` / shows progress.
        sync_batchnorm: under DDP on CUDA, turn BatchNorm layers into SyncBatchNorm (statistics over the
            global batch); useful for the v2 architecture or ResNet-50 from scratch, not for models with
            frozen BatchNorm or GroupNorm.
        trace: called with a dict per training batch (epoch, batch, image ids, losses, a digest of the
            weights) and per checkpoint written; tests use it to check DDP runs.
    """
    run_dir = Path(run_dir)
    main = distributed is None or distributed.is_main
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
    _check_splits(splits)
    if config.select == "map" and select_metric is None:
        raise ValueError("select='map' needs a select_metric callable (model, epoch) -> mask mAP")
    if model_config.num_classes != class_map.num_classes:
        raise ValueError(
            f"model_config has {model_config.num_classes} classes, class_map {class_map.num_classes}"
        )
    say = (report if main else None) or (lambda line: None)
    device = distributed.device if distributed else resolve_device(config.device)
    if sync_batchnorm and (distributed is None or device.type != "cuda"):
        raise ValueError("--sync-bn needs several processes on CUDA GPUs (torchrun); leave it out here")
    torch.manual_seed(config.seed)
    model = build_model(model_config)
    if not resume:
        if not main:  # rank 0 first, so that only it downloads COCO weights into the shared cache
            distributed.barrier()
        say(f"weights: {apply_weights(model, model_config.arch, config.weights, class_map.names, download)}")
        if main and distributed is not None:
            distributed.barrier()
    if sync_batchnorm:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    if distributed is not None:  # a distinct stream per rank for the heads' random sampling
        torch.manual_seed(config.seed + distributed.rank)
    shard = (distributed.rank, distributed.world_size) if distributed else None

    train_set = DetectionDataset(
        splits["train"],
        build_train_transform(model_config.image_size, model_config.resize, config.augment),
        seed=config.seed,
    )
    eval_transform = build_eval_transform(model_config.image_size, model_config.resize)
    eval_sets = {s: DetectionDataset(splits[s], eval_transform) for s in ("val", "test") if splits.get(s)}
    per_rank = math.ceil(len(train_set) / (distributed.world_size if distributed else 1))
    batches = math.ceil(per_rank / config.batch_size)
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, config, math.ceil(batches / config.accumulate))
    scaler = torch.amp.GradScaler(device.type, enabled=config.amp and device.type == "cuda")
    result = FitResult(run_dir)
    start_epoch, bad_epochs = 0, 0
    if resume:
        state = read_checkpoint(run_dir / "last.pt")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        rng = state["rng"]
        if distributed is not None:
            ranks = state.get("rng_ranks") or []
            # each rank continues its own stream; with another number of ranks, fresh per-rank streams
            rng = ranks[distributed.rank] if len(ranks) == distributed.world_size else None
        if rng is not None:
            torch.set_rng_state(rng["torch"])
            if "cuda" in rng and device.type == "cuda":
                torch.cuda.set_rng_state(rng["cuda"], device)
        start_epoch, bad_epochs = int(state["epoch"]), int(state["bad_epochs"])
        result.history = [dict(row) for row in state["history"]]
        result.best_epoch, result.best_score = int(state["best_epoch"]), float(state["best_score"])
        say(f"resuming {run_dir} after epoch {start_epoch}")
    trained = model  # what the training steps call: the DDP wrapper under torchrun
    if distributed is not None:
        ids = [device.index] if device.type == "cuda" else None
        trained = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    board = None
    if main:
        write_config(run_dir, config.to_dict(), model_config.to_dict(), list(class_map.names))
        board = TensorBoardLog(run_dir, start_epoch)
    deadline = time.monotonic() + 60 * config.minutes if config.minutes else None
    base = checkpoint_header(list(class_map.names), model_config, config.to_dict())
    try:
        for epoch in range(start_epoch + 1, config.epochs + 1):
            started = time.monotonic()
            loader = make_loader(
                train_set, config.batch_size, True, config.workers, epoch, config.seed, shard
            )
            bar = None
            if progress and main:
                from tqdm import tqdm

                bar = tqdm(
                    total=len(loader),
                    desc=f"epoch {epoch}/{config.epochs}",
                    leave=False,
                    file=sys.stderr,
                    dynamic_ncols=True,
                )

            def show(done: int, losses: dict, lr: float, bar=bar) -> None:
                bar.update(1)
                bar.set_postfix(loss=f"{losses['loss']:.3f}", lr=f"{lr:.2e}")

            def after_batch(index: int, ids: list, losses: dict, stepped: bool, epoch=epoch) -> None:
                event = {"epoch": epoch, "batch": index, "image_ids": ids, "losses": losses}
                trace({**event, "stepped": stepped, "weights": parameters_digest(model)})

            lr = optimizer.param_groups[0]["lr"]
            train_losses, stopped = train_one_epoch(
                trained,
                loader,
                optimizer,
                scheduler,
                scaler,
                device,
                config,
                deadline,
                show if bar is not None else None,
                agree=distributed.any if distributed else None,
                after_batch=after_batch if trace is not None else None,
            )
            if bar is not None:
                bar.close()
            if distributed is not None:
                train_losses = distributed.all_reduce_mean(train_losses)
            row: dict = {"epoch": epoch, "lr": lr}
            row.update({f"train_{k}": v for k, v in train_losses.items()})
            for split, dataset in eval_sets.items():
                eval_loader = make_loader(
                    dataset, config.batch_size, False, config.workers, epoch, config.seed, shard
                )
                losses = evaluate_losses(model, eval_loader, device, seed=config.seed)
                if distributed is not None:  # mean over all batches of all shards
                    losses = distributed.all_reduce_mean(losses, weight=len(eval_loader))
                row.update({f"{split}_{k}": v for k, v in losses.items()})
            if config.select == "map":
                row["val_map"] = float(select_metric(model, epoch))
                score = -row["val_map"]
            else:
                score = row["val_loss"]
            row["seconds"] = time.monotonic() - started
            result.history.append(row)
            improved = score < result.best_score
            if improved:
                result.best_epoch, result.best_score, bad_epochs = epoch, score, 0
            else:
                bad_epochs += 1
            rng_ranks = distributed.all_gather(_rng_state(device)) if distributed else None
            if main:
                _save_epoch(run_dir, base, model, row, improved, trace)
                save_atomic(
                    {
                        **base,
                        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                        "epoch": epoch,
                        "metrics": {k: v for k, v in row.items() if isinstance(v, (int, float))},
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "scaler": scaler.state_dict(),
                        "rng": _rng_state(device),
                        **({"rng_ranks": rng_ranks} if rng_ranks else {}),
                        "history": result.history,
                        "best_epoch": result.best_epoch,
                        "best_score": result.best_score,
                        "bad_epochs": bad_epochs,
                    },
                    run_dir / "last.pt",
                )
                write_metrics_csv(run_dir, result.history)
                plot_losses(run_dir, result.history)
                board.write(row)
                say(_summary(row, config.epochs, improved))
            # every rank reaches the same decision: the values it rests on were averaged across ranks
            past_deadline = deadline is not None and time.monotonic() > deadline
            if deadline is not None and distributed is not None:
                past_deadline = distributed.any(past_deadline)
            if stopped:
                result.stop_reason = f"time budget of {config.minutes:g} minutes reached during epoch {epoch}"
                break
            if stop_after is not None and epoch >= stop_after:
                result.stop_reason = f"stopped after epoch {epoch} as asked"
                break
            if config.patience and bad_epochs >= config.patience:
                result.stop_reason = f"early stop: no improvement for {bad_epochs} epochs"
                break
            if past_deadline:
                result.stop_reason = f"time budget of {config.minutes:g} minutes reached after epoch {epoch}"
                break
    finally:
        if board is not None:
            board.close()
    if distributed is not None:  # the checkpoints are written when fit returns, on every rank
        distributed.barrier()
    return result


def compute_dataset_losses(
    model: nn.Module, records: list[Record], model_config: ModelConfig, batch_size: int = 2, seed: int = 0
) -> dict[str, float]:
    """Mean losses (``loss`` and the five components) of ``model`` on ``records``, resized as in training
    (no random augmentation), measured as the validation loss of :func:`fit` is. Used by evaluation."""
    dataset = DetectionDataset(records, build_eval_transform(model_config.image_size, model_config.resize))
    loader = make_loader(dataset, batch_size, False, 0, 0, seed)
    return evaluate_losses(model, loader, next(model.parameters()).device, seed=seed)
