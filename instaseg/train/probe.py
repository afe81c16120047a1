"""Step-time probe: how long a training step takes at each candidate image size on this machine, measured
before training (inside the time budget), so that the recipe's upscaling of small objects fits the machine
(AMX, AVX-512-BF16, AVX2, a GPU) instead of a table measured on one CPU. The choice from the times is
:func:`~instaseg.train.recipe.choose_probed_size` (a pure function, tested apart).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from ..core import Record
from ..model.architectures import build_model
from ..model.config import ModelConfig
from ..model.roi_heads import use_gather_roi_align
from .augment import build_train_transform
from .config import TrainConfig
from .data import DetectionDataset, collate
from .engine import build_optimizer, train_one_epoch, training_precision, use_channels_last

# Steps timed per size, after one untimed step (allocations, oneDNN kernel choice). The sizes are timed in
# turn (one step of each, then the next round), so that a load or clock change during the probe falls on all
# sizes alike. Single steps of one batch vary by up to 1.8x on a shared 2-core VM; with the anchors training
# uses on DSB the median-of-4 384/256-px ratio was 0.99-1.16 over three probes (Zen 5, bench/probe_spread.py),
# against 1.01-1.38 for two steps timed one size after the other in an earlier session (Zen 4/5).
PROBE_STEPS = 4
# Rounds the probe may go on to while ``undecided`` (recipe.too_close_to_call) says a ratio lies near the
# limit, where a few noisy steps would otherwise flip the image size between runs of the same command.
PROBE_MAX_STEPS = 8


def probe_step_times(
    records: list[Record],
    model_config: ModelConfig,
    config: TrainConfig,
    sizes: list[int],
    device: torch.device,
    steps: int = PROBE_STEPS,
    stop: Callable[[], bool] | None = None,
    undecided: Callable[[dict[int, float]], bool] | None = None,
    max_steps: int = PROBE_MAX_STEPS,
) -> dict[int, float]:
    """Median seconds of one training step (batch of ``config.batch_size`` of the first ``records``, the
    run's precision and memory layout) at each image size of ``sizes``, smallest first, with a fresh model
    of ``model_config`` (its ``image_size`` replaced). The first round builds each size's model and times
    one step after an untimed one; the next ``steps - 1`` rounds time one more step of every size in turn.
    While ``undecided(medians so far)`` is true after those rounds, more rounds run, up to ``max_steps``
    timed steps per size. ``stop()`` asked between steps ends the probe early (each size measured has at
    least one timed step; the sizes measured so far are returned). The caller's RNG state is left as it
    was."""
    precision = training_precision(config, device)
    seconds: dict[int, list[float]] = {}
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        steppers = {}
        for size in sorted(sizes):
            if seconds and stop is not None and stop():
                break
            steppers[size] = _stepper(records, model_config, config, size, device, precision)
            steppers[size]()  # untimed
            seconds[size] = [steppers[size]()]
        rounds = 1
        while rounds < steps or (
            undecided is not None and rounds < max_steps and undecided(_medians(seconds))
        ):
            for size, step in steppers.items():
                if stop is not None and stop():
                    return _medians(seconds)
                seconds[size].append(step())
            rounds += 1
    return _medians(seconds)


def _medians(seconds: dict[int, list[float]]) -> dict[int, float]:
    return {size: sorted(values)[len(values) // 2] for size, values in seconds.items()}


def _stepper(records, model_config, config, size, device, precision) -> Callable[[], float]:
    """A function that runs one training step of a fresh model at ``size`` on the probe's batch and
    returns its seconds."""
    torch.manual_seed(0)
    sized = ModelConfig.from_dict({**model_config.to_dict(), "image_size": size})
    model = build_model(sized).to(device)
    if use_channels_last(device, precision):
        model.to(memory_format=torch.channels_last)
    use_gather_roi_align(model)  # as fit trains it
    batch_records = records[: config.batch_size]
    dataset = DetectionDataset(batch_records, build_train_transform(size, sized.resize, "none"))
    batch = collate([dataset[i] for i in range(len(dataset))])
    probe = TrainConfig.from_dict({**config.to_dict(), "accumulate": 1, "lr": 1e-6, "warmup_steps": 0})
    optimizer = build_optimizer(model, probe)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    scaler = torch.amp.GradScaler(device.type, enabled=precision.needs_grad_scaler)
    model.train()

    def step() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        train_one_epoch(model, [batch], optimizer, scheduler, scaler, device, probe, precision=precision)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - started

    return step
