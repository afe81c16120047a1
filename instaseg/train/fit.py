"""A whole training run: :func:`fit` (epochs, validation, best/last checkpoints, early stopping, resume, logs).

:func:`fit` is a sequence of named steps over one :class:`~instaseg.train.state.RunState` (the state they
share): prepare (model, data, optimizer; restore a stopped run), then per epoch train, validate, record and
save the checkpoints, and decide whether to stop.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ..core import ClassMap, Record
from ..distributed import Distributed, parameters_digest
from ..model.architectures import build_model
from ..model.checkpoint import checkpoint_header
from ..model.config import ModelConfig
from ..model.device import resolve_device
from ..model.roi_heads import use_gather_roi_align
from ..model.weights import apply_weights
from ..problems import DatasetError
from .augment import build_eval_transform, build_train_transform
from .config import TrainConfig
from .data import DetectionDataset, make_loader
from .ema import WeightAverage
from .engine import (
    build_optimizer,
    build_scheduler,
    evaluate_losses,
    train_one_epoch,
    training_precision,
    use_channels_last,
)
from .logs import TensorBoardLog, budget_line, epoch_summary, write_config, write_metrics_csv
from .schedule import TrainingClock
from .selection import best_map, epoch_score, in_window, needs_map, schedule_progress, selection_line
from .state import FitResult, RunState, restore_run, save_checkpoints

# (model, epoch) -> mask mAP on the validation split, higher is better; supplied by the caller (the CLI
# builds it from instaseg.model.predictor.Predictor and instaseg.evaluate.mask_map).
SelectMetric = Callable[[nn.Module, int], float]


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


def _initial_model(
    config: TrainConfig,
    model_config: ModelConfig,
    class_map: ClassMap,
    distributed: Distributed | None,
    *,
    resume: bool,
    download: bool,
    sync_batchnorm: bool,
    say: Callable[[str], None],
) -> nn.Module:
    """The model, initialised from ``config.weights`` (not when resuming: ``last.pt`` has the weights)."""
    torch.manual_seed(config.seed)
    model = build_model(model_config)
    if not resume:
        main = distributed is None or distributed.is_main
        if not main:  # rank 0 first, so that only it downloads COCO weights into the shared cache
            distributed.barrier()
        say(f"weights: {apply_weights(model, model_config.arch, config.weights, class_map.names, download)}")
        if main and distributed is not None:
            distributed.barrier()
    if sync_batchnorm:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


def _train_epoch(
    run: RunState,
    train_set: DetectionDataset,
    epoch: int,
    progress: bool,
    trace: Callable[[dict], None] | None,
) -> tuple[dict[str, float], bool]:
    """One pass over the training split (with a progress bar on rank 0 when asked); returns the mean
    losses (averaged over the ranks) and whether the time budget stopped it."""
    config = run.config
    loader = make_loader(train_set, config.batch_size, True, config.workers, epoch, config.seed, run.shard)
    bar = None
    if progress and run.main:
        from tqdm import tqdm

        desc = f"epoch {epoch}" if run.clock.limited else f"epoch {epoch}/{config.epochs}"
        bar = tqdm(total=len(loader), desc=desc, leave=False, file=sys.stderr, dynamic_ncols=True)

    def show(done: int, losses: dict, lr: float) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{losses['loss']:.3f}", lr=f"{lr:.2e}")

    def after_batch(index: int, ids: list, losses: dict, stepped: bool) -> None:
        event = {"epoch": epoch, "batch": index, "image_ids": ids, "losses": losses}
        trace({**event, "stepped": stepped, "weights": parameters_digest(run.model)})

    losses, stopped = train_one_epoch(
        run.trained,
        loader,
        run.optimizer,
        run.scheduler,
        run.scaler,
        run.device,
        config,
        run.clock.past_deadline if run.clock.limited else None,
        show if bar is not None else None,
        agree=run.distributed.any if run.distributed else None,
        after_batch=after_batch if trace is not None else None,
        precision=run.precision,
        after_step=(lambda: run.ema.update(run.model)) if run.ema is not None else None,
    )
    if bar is not None:
        bar.close()
    if run.distributed is not None:
        losses = run.distributed.all_reduce_mean(losses)
    return losses, stopped


def _split_losses(run: RunState, dataset: DetectionDataset, split: str, epoch: int) -> dict[str, float]:
    """Mean losses of the evaluated model (the weight average with ``--ema``) on one split, as
    ``{split}_loss`` and ``{split}_loss_*``."""
    config = run.config
    loader = make_loader(dataset, config.batch_size, False, config.workers, epoch, config.seed, run.shard)
    losses = evaluate_losses(run.evaluated, loader, run.device, seed=config.seed, precision=run.precision)
    if run.distributed is not None:  # mean over all batches of all shards
        losses = run.distributed.all_reduce_mean(losses, weight=len(loader))
    return {f"{split}_{k}": v for k, v in losses.items()}


def _validate(
    run: RunState, val_set: DetectionDataset, epoch: int, select_metric: SelectMetric | None, used: float
) -> tuple[dict, float]:
    """Validation losses of the epoch, and the mask mAP when the selection rule needs it
    (:mod:`instaseg.train.selection`), ``used`` seconds into the budget; returns the row's entries and the
    selection score (lower is better)."""
    config, clock = run.config, run.clock
    row = _split_losses(run, val_set, "val", epoch)
    time_progress = min(1.0, used / clock.training_budget()) if clock.limited else 0.0
    progress = schedule_progress(epoch, config.epochs, time_progress)
    window = in_window(progress)
    if run.distributed is not None:  # every rank measures (or not) at the same epochs
        window = run.distributed.any(window)
    if needs_map(config.select, window):
        row["val_map"] = float(select_metric(run.evaluated, epoch))
    earlier = best_map(run.result.history)
    return row, epoch_score(config.select, epoch, row["val_loss"], row.get("val_map"), earlier)


def _test_at_end(run: RunState, test_set: DetectionDataset, say: Callable[[str], None]) -> None:
    """Test losses of ``last.pt``'s model, once when the run ends (not each epoch: they would spend the
    budget), added to the last row of the history and ``metrics.csv``. ``evaluate`` reports test mAP."""
    if not run.result.history:
        return
    row = run.result.history[-1]
    row.update(_split_losses(run, test_set, "test", row["epoch"]))
    if run.main:
        write_metrics_csv(run.run_dir, run.result.history)
        say(
            f"test losses of last.pt (epoch {row['epoch']}, {len(test_set.records)} test images): "
            f"{row['test_loss']:.4f}; mask mAP: instaseg evaluate {run.run_dir / 'last.pt'} ... --split test"
        )


def _stop_reason(run: RunState, epoch: int, stopped: bool, stop_after: int | None) -> str | None:
    """Why training ends after ``epoch``, or ``None`` to go on. Every rank reaches the same decision: the
    values it rests on were averaged across ranks, and the deadline is agreed on."""
    config = run.config
    past_deadline = run.clock.past_deadline()
    if run.clock.limited and run.distributed is not None:
        past_deadline = run.distributed.any(past_deadline)
    if stopped:
        return f"time budget of {config.minutes:g} minutes reached during epoch {epoch}"
    if stop_after is not None and epoch >= stop_after:
        return f"stopped after epoch {epoch} as asked"
    if config.patience and run.bad_epochs >= config.patience:
        return f"early stop: no improvement for {run.bad_epochs} epochs"
    if past_deadline:
        return f"time budget of {config.minutes:g} minutes reached after epoch {epoch}"
    return None


def _prepare(
    splits: dict[str, list[Record]],
    class_map: ClassMap,
    config: TrainConfig,
    model_config: ModelConfig,
    run_dir: Path,
    distributed: Distributed | None,
    *,
    resume: bool,
    download: bool,
    sync_batchnorm: bool,
    say: Callable[[str], None],
    clock: TrainingClock,
) -> tuple[RunState, DetectionDataset, dict[str, DetectionDataset]]:
    """Check the inputs, build the model, datasets, optimizer and schedule (restored when resuming)."""
    _check_splits(splits)
    if model_config.num_classes != class_map.num_classes:
        raise ValueError(
            f"model_config has {model_config.num_classes} classes, class_map {class_map.num_classes}"
        )
    device = distributed.device if distributed else resolve_device(config.device)
    if sync_batchnorm and (distributed is None or device.type != "cuda"):
        raise ValueError("--sync-bn needs several processes on CUDA GPUs (torchrun); leave it out here")
    model = _initial_model(
        config,
        model_config,
        class_map,
        distributed,
        resume=resume,
        download=download,
        sync_batchnorm=sync_batchnorm,
        say=say,
    ).to(device)
    precision = training_precision(config, device)
    channels_last = use_channels_last(device, precision)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    use_gather_roi_align(model)  # RoIAlign forward and backward vectorised on the CPU (torchvision's numbers)
    say(f"precision: {precision.reason}" + ("; channels-last" if channels_last else ""))
    if distributed is not None:  # a distinct stream per rank for the heads' random sampling
        torch.manual_seed(config.seed + distributed.rank)
    crop = model_config.crop_size  # train --crop: windows at native resolution (instaseg.train.crops)
    train_set = DetectionDataset(
        splits["train"],
        build_train_transform(model_config.image_size, model_config.resize, config.augment),
        seed=config.seed,
        crop=crop,
        copy_paste=config.augment == "copy-paste",
    )
    eval_transform = build_eval_transform(model_config.image_size, model_config.resize)
    # the validation split after each epoch; the test split once, at the end (_test_at_end)
    eval_sets = {
        s: DetectionDataset(splits[s], eval_transform, crop=crop, random_crops=False)
        for s in ("val", "test")
        if splits.get(s)
    }
    per_rank = math.ceil(len(train_set) / (distributed.world_size if distributed else 1))
    steps_per_epoch = math.ceil(math.ceil(per_rank / config.batch_size) / config.accumulate)
    optimizer = build_optimizer(model, config)
    run = RunState(
        config,
        model_config,
        run_dir,
        device,
        distributed,
        model,
        model,
        optimizer,
        build_scheduler(optimizer, config, steps_per_epoch, clock),
        torch.amp.GradScaler(device.type, enabled=precision.needs_grad_scaler),
        checkpoint_header(list(class_map.names), model_config, config.to_dict()),
        FitResult(run_dir, steps_per_epoch=steps_per_epoch),
        precision=precision,
        clock=clock,
        ema=WeightAverage(model, config.ema) if config.ema else None,
    )
    if resume:
        restore_run(run, say)
    if distributed is not None:
        ids = [device.index] if device.type == "cuda" else None
        run.trained = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    return run, train_set, eval_sets


def _run_epoch(
    run, train_set, eval_sets, epoch, select_metric, progress, trace, board, say, stop_after
) -> bool:
    """Train, validate, record and save one epoch; True when the run ends after it (reason in the result)."""
    started = time.monotonic()
    row: dict = {"epoch": epoch, "lr": run.optimizer.param_groups[0]["lr"]}
    train_losses, stopped = _train_epoch(run, train_set, epoch, progress, trace)
    row.update({f"train_{k}": v for k, v in train_losses.items()})
    closing = run.clock.used()
    measured, score = _validate(run, eval_sets["val"], epoch, select_metric, closing)
    row.update(measured, seconds=time.monotonic() - started)
    row.update(steps=run.scheduler.last_epoch, lr_end=run.optimizer.param_groups[0]["lr"])
    row["minutes_used"] = run.clock.used() / 60
    improved = _record_epoch(run, row, score, trace)
    run.clock.reserve(run.clock.used() - closing)  # the last epoch's validation + checkpoint take as long
    if run.main:
        board.write(row)
        say(epoch_summary(row, run.config.epochs, improved, run.config.minutes))
    reason = _stop_reason(run, epoch, stopped, stop_after)
    run.result.steps = row["steps"]
    if reason is None:
        return False
    run.result.stop_reason = reason
    return True


def _record_epoch(run: RunState, row: dict, score: float, trace: Callable[[dict], None] | None) -> bool:
    """Add the epoch's row to the history, track the best score, save the checkpoints; True if it improved."""
    run.result.history.append(row)
    improved = score < run.result.best_score
    if improved:
        run.result.best_epoch, run.result.best_score, run.bad_epochs = row["epoch"], score, 0
    else:
        run.bad_epochs += 1
    save_checkpoints(run, row, improved, trace)
    return improved


def _report_epoch(on_epoch: Callable[[dict], None] | None, run: RunState) -> None:
    if on_epoch is not None and run.main:  # e.g. the MLflow tracker of train --track
        on_epoch(run.result.history[-1])


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
    clock: TrainingClock | None = None,
    on_epoch: Callable[[dict], None] | None = None,
) -> FitResult:
    """Train a Mask R-CNN on ``splits["train"]``, validating on ``splits["val"]`` after each epoch.

    Writes into ``run_dir``: ``best.pt`` (the epoch ``config.select`` picks: :mod:`instaseg.train.selection`;
    ``select_metric`` gives the mask mAP for ``"map"`` and ``"auto"``), ``last.pt`` (with the
    optimizer/scheduler/RNG state for ``resume``), ``metrics.csv``, ``loss_curve.png``, ``tensorboard/`` and
    ``config.yaml``. With ``config.ema`` both checkpoints hold the weight average (:mod:`.ema`), which is
    also what is validated. Test losses are measured once, at the end, when ``splits["test"]`` has images
    (reported only, never used for selection).

    Args:
        resume: continue from ``run_dir/last.pt`` exactly where it stopped (same config expected).
        progress: show a tqdm bar per epoch on stderr. ``report`` receives one summary line per epoch.
        download: allow downloading COCO weights when they are not cached.
        stop_after: stop after this epoch as if interrupted (the schedule still spans ``config.epochs``).
        distributed: this process's place in a torchrun job, or ``None`` alone. Each rank trains on its
            shard with ``config.batch_size`` images per batch; gradients, losses and metrics are averaged
            across ranks; ``select_metric`` runs on every rank (it must return the same value on all);
            only rank 0 writes files, reports and shows progress (docs/distributed.md).
        sync_batchnorm: under DDP on CUDA, BatchNorm statistics over the global batch (SyncBatchNorm).
        trace: called with a dict per training batch (epoch, batch, image ids, losses, a digest of the
            weights) and per checkpoint written; tests use it to check DDP runs.
        clock: the clock of ``config.minutes`` (default: one started now; a caller may start it earlier so
            that the budget includes its own work, or give one with another time source).
        on_epoch: called on rank 0 with each epoch's row of ``metrics.csv`` once it is saved.
    """
    run_dir = Path(run_dir)
    main = distributed is None or distributed.is_main
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
    if config.select in ("map", "auto") and select_metric is None:
        raise ValueError(
            f"select={config.select!r} needs a select_metric callable (model, epoch) -> mask mAP"
        )
    say = (report if main else None) or (lambda line: None)
    clock = clock or TrainingClock(config.minutes)  # a resumed run adds the time it used before
    run, train_set, eval_sets = _prepare(
        splits,
        class_map,
        config,
        model_config,
        run_dir,
        distributed,
        resume=resume,
        download=download,
        sync_batchnorm=sync_batchnorm,
        say=say,
        clock=clock,
    )
    board = None
    if main:
        write_config(run_dir, config.to_dict(), model_config.to_dict(), list(class_map.names))
        board = TensorBoardLog(run_dir, run.start_epoch)
    if clock.limited and main:
        say(budget_line(config.minutes, clock.used_before, config.epochs))
    try:
        for epoch in range(run.start_epoch + 1, config.epochs + 1):
            if _run_epoch(
                run, train_set, eval_sets, epoch, select_metric, progress, trace, board, say, stop_after
            ):
                _report_epoch(on_epoch, run)
                break
            _report_epoch(on_epoch, run)
        if "test" in eval_sets:
            _test_at_end(run, eval_sets["test"], say)
        run.result.selection = selection_line(
            config.select, run.result.history, run.result.best_epoch, len(splits["val"])
        )
        say(run.result.selection)
    finally:
        if board is not None:
            board.close()
    if distributed is not None:  # the checkpoints are written when fit returns, on every rank
        distributed.barrier()
    return run.result
