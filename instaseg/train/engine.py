"""One epoch of training and of validation losses, plus the optimizer and learning-rate schedule."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..core import Record
from ..model.architectures import LOSS_NAMES, compute_losses, frozen_statistics
from ..model.config import ModelConfig
from ..model.precision import Precision, autocast, resolve_precision
from .augment import build_eval_transform
from .config import TrainConfig
from .data import DetectionDataset, make_loader
from .schedule import TrainingClock, build_schedule


class TrainingError(Exception):
    """Training cannot go on (e.g. the loss became NaN); the CLI prints it and exits with status 2."""


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD with momentum or AdamW over the trainable parameters (frozen backbone layers excluded)."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(
        parameters, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    steps_per_epoch: int,
    clock: TrainingClock | None = None,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per optimizer step: linear warmup from 0.1% of ``lr`` over ``warmup_steps``, then cosine to 0 at the
    last of ``epochs x steps_per_epoch`` steps or when ``clock``'s time budget runs out, whichever comes
    first, or ``step_gamma`` every ``step_epochs`` epochs (:mod:`instaseg.train.schedule`)."""
    return build_schedule(
        optimizer,
        config.epochs * steps_per_epoch,
        config.warmup_steps,
        clock or TrainingClock(0),
        config.scheduler,
        decay_every=config.step_epochs * steps_per_epoch,
        gamma=config.step_gamma,
    )


def training_precision(config: TrainConfig, device: torch.device) -> Precision:
    """What a run computes in on ``device``: ``config.precision`` resolved
    (:func:`~instaseg.model.precision.resolve_precision`), except that ``config.amp = False`` (``--no-amp``)
    keeps CUDA in fp32, as it did before ``precision`` existed."""
    if device.type == "cuda" and not config.amp:
        return Precision("fp32", "cuda", "fp32 (--no-amp)")
    return resolve_precision(config.precision, device)


def use_channels_last(device: torch.device, precision: Precision | None = None) -> bool:
    """Whether training stores the model's weights (hence its activations) channels-last (NHWC): on the CPU
    with bf16, where oneDNN's bf16 convolutions run NHWC natively. In fp32 on a CPU it made training slower
    (AVX2 Zen 3, 1 thread: R50-FPN at 512 px 0.60-0.64x of the reference loop channels-last vs 0.81-0.85x
    contiguous; light model 0.69-0.76x vs 0.96-1.01x), so fp32 keeps the standard layout; CUDA keeps its own."""
    return device.type == "cpu" and precision is not None and precision.name == "bf16"


def _to_device(images: list[torch.Tensor], targets: list[dict], device: torch.device):
    images = [image.to(device, non_blocking=True) for image in images]
    targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]
    return images, targets


def _check_finite(losses: dict[str, torch.Tensor], targets: list[dict]) -> None:
    bad = {k: float(v) for k, v in losses.items() if not torch.isfinite(v)}
    if bad:
        ids = [int(t["image_id"]) for t in targets]
        raise TrainingError(
            f"non-finite loss {bad} on images {ids}; lower --lr, keep --grad-clip on, or "
            "check these images' annotations"
        )


def train_one_epoch(
    model: nn.Module,
    loader,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    device: torch.device,
    config: TrainConfig,
    stop: Callable[[], bool] | None = None,
    progress: Callable | None = None,
    agree: Callable[[bool], bool] | None = None,
    after_batch: Callable[[int, list[int], dict[str, float], bool], None] | None = None,
    precision: Precision | None = None,
    after_step: Callable[[], None] | None = None,
) -> tuple[dict[str, float], bool]:
    """Train over ``loader`` once; returns the mean losses (``loss`` and :data:`LOSS_NAMES`) and whether
    ``stop()`` (asked after each batch, e.g. :meth:`~instaseg.train.schedule.TrainingClock.past_deadline`)
    ended the epoch early.

    ``progress``, when given, is called after each batch with ``(batches_done, losses_so_far, lr)``.
    Under DDP, ``agree(stop()) -> bool`` makes every rank stop at the same batch (each rank's clock
    differs; a rank that stopped alone would leave the others waiting), and ``after_batch(index, image_ids,
    losses, stepped)`` is told of each batch (tests trace it). ``after_step()`` is called after each optimizer
    step (the weight average of ``--ema`` folds the new weights in).

    The forward pass runs in ``precision`` (default :func:`training_precision`) under
    :func:`~instaseg.model.precision.autocast`: the losses are float32, and so are the weights and their
    gradients (autocast casts copies of the weights); ``scaler`` scales the loss for fp16 only.
    """
    precision = precision or training_precision(config, device)
    sums = dict.fromkeys(("loss", *LOSS_NAMES), 0.0)
    batches, stopped = 0, False
    optimizer.zero_grad(set_to_none=True)
    n = len(loader)
    for index, (images, targets) in enumerate(loader):
        images, targets = _to_device(images, targets, device)
        with autocast(model, precision):
            losses = compute_losses(model, images, targets)
        total = sum(losses.values())
        _check_finite({"loss": total, **losses}, targets)
        scaler.scale(total / config.accumulate).backward()
        if (index + 1) % config.accumulate == 0 or index + 1 == n:
            if config.grad_clip > 0:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(
                    [p for g in optimizer.param_groups for p in g["params"]], config.grad_clip
                )
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            if after_step is not None:
                after_step()
        batches += 1
        sums["loss"] += total.item()
        for name in LOSS_NAMES:
            sums[name] += losses[name].item()
        if progress is not None:
            progress(batches, {k: v / batches for k, v in sums.items()}, optimizer.param_groups[0]["lr"])
        if after_batch is not None:
            stepped = (index + 1) % config.accumulate == 0 or index + 1 == n
            ids = [int(t["image_id"]) for t in targets]
            after_batch(
                index, ids, {"loss": total.item(), **{k: v.item() for k, v in losses.items()}}, stepped
            )
        past = stop is not None and stop()
        if stop is not None and agree is not None:
            past = agree(past)
        if past and index + 1 < n:
            stopped = True
            if (index + 1) % config.accumulate:  # do not leave accumulated gradients unapplied
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
                if after_step is not None:
                    after_step()
            break
    return {k: v / max(1, batches) for k, v in sums.items()}, stopped


def evaluate_losses(
    model: nn.Module, loader, device: torch.device, seed: int = 0, precision: Precision | None = None
) -> dict[str, float]:
    """Mean losses over ``loader`` without gradients, BatchNorm/Dropout frozen (see
    :func:`~instaseg.model.architectures.frozen_statistics`), the forward pass in ``precision`` (``None``:
    float32; the losses are float32 either way).

    The heads sample proposals at random in train mode; the sampling is seeded with ``seed`` in a forked
    RNG, so validation losses of different epochs are comparable and training's RNG stream is untouched.
    """
    sums = dict.fromkeys(("loss", *LOSS_NAMES), 0.0)
    batches = 0
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad(), frozen_statistics(model):
        torch.manual_seed(seed)
        for images, targets in loader:
            images, targets = _to_device(images, targets, device)
            with autocast(model, precision):
                losses = model(images, targets)
            batches += 1
            sums["loss"] += float(sum(losses.values()))
            for name in LOSS_NAMES:
                sums[name] += losses[name].item()
    return {k: v / max(1, batches) for k, v in sums.items()}


def compute_dataset_losses(
    model: nn.Module,
    records: list[Record],
    model_config: ModelConfig,
    batch_size: int = 2,
    seed: int = 0,
    precision: Precision | None = None,
) -> dict[str, float]:
    """Mean losses (``loss`` and the five components) of ``model`` on ``records``, resized as in training
    (no random augmentation; fixed windows for a model trained on crops), measured as the validation loss of :func:`~instaseg.train.fit.fit` is. Used by ``evaluate CHECKPOINT``."""
    transform = build_eval_transform(model_config.image_size, model_config.resize)
    dataset = DetectionDataset(records, transform, crop=model_config.crop_size, random_crops=False)
    loader = make_loader(dataset, batch_size, False, 0, 0, seed)
    return evaluate_losses(model, loader, next(model.parameters()).device, seed=seed, precision=precision)
