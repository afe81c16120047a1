"""Data-pipeline overhead of training: step time with the real pipeline vs on preloaded tensors.

Real pipeline: PNG decode + albumentations (training augmentations) + collate, in DataLoader workers.
Preloaded: the same batches decoded and augmented beforehand, kept in memory as tensors. Same model,
optimizer, batch size and number of steps; the preloaded run is timed before and after the real one and
averaged, to even out drift on a shared machine.

    .venv/bin/python bench/train_overhead.py [--arch maskrcnn_resnet18_fpn] [--image-size 256]
        [--batch-size 2] [--workers N] [--steps 12] [--device cpu]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path

import torch

from instaseg.formats.load import load_dataset
from instaseg.model.architectures import build_model, compute_losses
from instaseg.model.config import ModelConfig
from instaseg.train.augment import build_train_transform
from instaseg.train.config import TrainConfig, default_workers
from instaseg.train.data import DetectionDataset, make_loader
from instaseg.train.engine import build_optimizer

DSB = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "dsb2018_nuclei_sample"


def step(model, optimizer, images, targets, device) -> None:
    images = [i.to(device) for i in images]
    targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
    losses = compute_losses(model, images, targets)
    sum(losses.values()).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(model, optimizer, batches, device, warmup: int) -> list[float]:
    """Per-step seconds (data wait included) after ``warmup`` untimed steps."""
    times = []
    iterator = iter(batches)
    index = 0
    while True:
        start = time.perf_counter()
        try:
            images, targets = next(iterator)  # with workers: waits for the pipeline when it lags behind
        except StopIteration:
            break
        step(model, optimizer, images, targets, device)
        if index >= warmup:
            times.append(time.perf_counter() - start)
        index += 1
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DSB))
    parser.add_argument("--arch", default="maskrcnn_resnet18_fpn")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--workers", type=int, default=default_workers(), help="default: as instaseg train")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)

    dataset = load_dataset(args.data)
    records = dataset.present[: args.batch_size * (args.steps + args.warmup)]
    data = DetectionDataset(records, build_train_transform(args.image_size, "keep"), seed=0)
    torch.manual_seed(0)
    config = ModelConfig(
        arch=args.arch,
        num_classes=dataset.class_map.num_classes,
        image_size=args.image_size,
        pretrained_backbone=False,
    )
    template = build_model(config).to(device)
    train_config = TrainConfig(weights="none", lr=0.001, device=args.device)

    def fresh():
        model = copy.deepcopy(template)
        return model, build_optimizer(model, train_config)

    started = time.perf_counter()
    preloaded = list(make_loader(data, args.batch_size, False, 0, epoch=1, seed=0))  # same batches, in memory
    prepare = time.perf_counter() - started
    model, optimizer = fresh()
    before = timed(model, optimizer, preloaded, device, args.warmup)
    model, optimizer = fresh()
    loader = make_loader(data, args.batch_size, False, args.workers, epoch=1, seed=0)
    real = timed(model, optimizer, loader, device, args.warmup)
    model, optimizer = fresh()
    after = timed(model, optimizer, preloaded, device, args.warmup)

    base = statistics.mean(before + after)
    pipeline = statistics.mean(real)
    print(
        f"{args.arch}, image size {args.image_size}, batch {args.batch_size}, {args.workers} workers, "
        f"{len(real)} timed steps on {device} ({torch.get_num_threads()} torch threads)"
    )
    print(f"data preparation alone (main process, no workers): {prepare / len(preloaded):.3f} s/batch")
    print(
        f"preloaded tensors : {base:.3f} s/step (before {statistics.mean(before):.3f}, "
        f"after {statistics.mean(after):.3f})"
    )
    print(f"real pipeline     : {pipeline:.3f} s/step (median {statistics.median(real):.3f})")
    print(f"overhead          : {100 * (pipeline - base) / base:+.1f} %")


if __name__ == "__main__":
    main()
