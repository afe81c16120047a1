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
from .augment import build_train_transform
from .config import TrainConfig
from .data import DetectionDataset, collate
from .engine import build_optimizer, train_one_epoch, training_precision, use_channels_last

# Steps timed per size, after one untimed step (allocations, oneDNN kernel choice).
PROBE_STEPS = 2


def probe_step_times(
    records: list[Record],
    model_config: ModelConfig,
    config: TrainConfig,
    sizes: list[int],
    device: torch.device,
    steps: int = PROBE_STEPS,
    stop: Callable[[], bool] | None = None,
) -> dict[int, float]:
    """Median seconds of one training step (batch of ``config.batch_size`` of the first ``records``, the
    run's precision and memory layout) at each image size of ``sizes``, smallest first, with a fresh model
    of ``model_config`` (its ``image_size`` replaced). ``stop()`` asked between steps and sizes ends the
    probe early (each size measured has at least one timed step; the sizes measured so far are returned). The caller's RNG state is left as it was."""
    precision = training_precision(config, device)
    times: dict[int, float] = {}
    batch_records = records[: config.batch_size]
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for size in sorted(sizes):
            if times and stop is not None and stop():
                break
            torch.manual_seed(0)
            sized = ModelConfig.from_dict({**model_config.to_dict(), "image_size": size})
            model = build_model(sized).to(device)
            if use_channels_last(device, precision):
                model.to(memory_format=torch.channels_last)
            dataset = DetectionDataset(batch_records, build_train_transform(size, sized.resize, "none"))
            batch = collate([dataset[i] for i in range(len(dataset))])
            probe = TrainConfig.from_dict(
                {**config.to_dict(), "accumulate": 1, "lr": 1e-6, "warmup_steps": 0}
            )
            optimizer = build_optimizer(model, probe)
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
            scaler = torch.amp.GradScaler(device.type, enabled=precision.needs_grad_scaler)
            model.train()
            seconds = []
            for index in range(steps + 1):
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                started = time.perf_counter()
                train_one_epoch(
                    model, [batch], optimizer, scheduler, scaler, device, probe, precision=precision
                )
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                if index:  # the first step is not timed
                    seconds.append(time.perf_counter() - started)
                    if stop is not None and index < steps and stop():
                        break  # one timed step is enough when the budget's share is spent
            times[size] = sorted(seconds)[len(seconds) // 2]
            del model, optimizer
    return times
