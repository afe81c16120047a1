"""Training throughput (images/second): a plain torchvision-references fp32 loop vs ``instaseg train``'s default.

    .venv/bin/python bench/train_throughput.py [--models maskrcnn_resnet50_fpn:512,maskrcnn_resnet18_fpn:256,
        maskrcnn_resnet18_fpn:512] [--batch-size 2] [--steps 6] [--rounds 3] [--threads 2] [--variants ...]

For each model and image size, the same architecture (instaseg's ``build_model``, as ``instaseg train`` builds
it: FrozenBatchNorm ResNet-50 as for COCO weights, the light ResNet-18 from scratch with the mask head of new
trainings, ``recipe.LIGHT_MASK_HEAD``), the same seeded initial weights and the same batches of real DSB
nuclei images (augmented and resized once, kept in memory, so the data pipeline is left out:
``bench/train_overhead.py`` measures it) are trained by:

  (a) ``reference``: torchvision's ``references/detection`` loop in fp32: ``model(images, targets)``, the sum
      of the losses, ``backward()``, SGD (lr 0.005, momentum 0.9, weight decay 1e-4); no instaseg code;
  (b) ``instaseg``: ``instaseg.train.engine.train_one_epoch`` with ``TrainConfig()``'s defaults, the precision
      and memory format ``fit`` chooses on this machine (``--precision auto``: bf16 autocast on CPUs with
      native bf16, else fp32; channels-last on the CPU), gradient clipping, finite-loss checks, the schedule.

More variants (``--variants``): ``instaseg-fp32`` (channels-last, fp32), ``instaseg-bf16`` (channels-last, bf16
autocast even where emulated: 7x to 14x slower than fp32 on an AVX2 CPU, so leave it out there for R50-FPN),
``instaseg-contiguous`` (the default precision without channels-last: does channels-last pay off here?),
``instaseg-tv-roialign`` (the default with torchvision's scalar RoIAlign kernels instead of the vectorised
gather ``fit`` installs: what the gather buys).

The variants alternate in rounds of ``--steps`` steps each (after one untimed warm-up round), so that a busy
machine slows all of them alike; every round starts each variant from the same initial weights and a fresh
optimizer (the cost of a step depends on the weights: how many proposals survive NMS, how many are
positive), and (b) uses (a)'s learning rate without warm-up. images/second = images trained / seconds
summed over the rounds. Prints one
row per variant and the ratio to (a). ``--clock cpu`` counts the process's CPU time instead of wall time:
with ``--threads 1`` that ratio holds on a machine other work is using (no idle threads spinning).
"""

from __future__ import annotations

import argparse
import copy
import time
import warnings
from pathlib import Path

import torch

from instaseg.formats.load import load_dataset
from instaseg.model.architectures import build_model
from instaseg.model.config import ModelConfig
from instaseg.model.precision import Precision, resolve_precision
from instaseg.model.roi_heads import use_gather_roi_align
from instaseg.train.augment import build_train_transform
from instaseg.train.config import TrainConfig
from instaseg.train.data import DetectionDataset, make_loader
from instaseg.train.engine import (
    build_optimizer,
    build_scheduler,
    train_one_epoch,
    training_precision,
    use_channels_last,
)
from instaseg.train.recipe import LIGHT_MASK_HEAD

DSB = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "dsb2018_nuclei_sample"
DEFAULT_MODELS = "maskrcnn_resnet50_fpn:512,maskrcnn_resnet18_fpn:256,maskrcnn_resnet18_fpn:512"
VARIANTS = (
    "reference",
    "instaseg",
    "instaseg-fp32",
    "instaseg-bf16",
    "instaseg-contiguous",
    "instaseg-tv-roialign",
)


def reference_runner(model: torch.nn.Module):
    """torchvision references' ``train_one_epoch`` body, fp32, no instaseg code."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.005, momentum=0.9, weight_decay=1e-4)

    def run(batches: list) -> None:
        model.train()
        for images, targets in batches:
            loss_dict = model(images, targets)
            losses = sum(loss for loss in loss_dict.values())
            optimizer.zero_grad()
            losses.backward()
            optimizer.step()

    return run


def instaseg_runner(
    model: torch.nn.Module, precision: Precision, channels_last: bool, steps: int, gather: bool = True
):
    """``train_one_epoch`` as ``fit`` calls it, with ``TrainConfig()``'s optimizer, schedule and clipping."""
    config = TrainConfig(weights="none", workers=0, lr=0.005, warmup_steps=0)  # (a)'s learning rate
    device = next(model.parameters()).device
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if gather:
        use_gather_roi_align(model)  # as fit trains it
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, config, steps)
    scaler = torch.amp.GradScaler(device.type, enabled=precision.needs_grad_scaler)

    def run(batches: list) -> None:
        train_one_epoch(model, batches, optimizer, scheduler, scaler, device, config, precision=precision)

    return run


def make_runner(variant: str, model: torch.nn.Module, device: torch.device, steps: int):
    """A function training ``model`` on a list of batches, and a description of what it runs."""
    if variant == "reference":
        return reference_runner(model), "fp32, contiguous, torchvision references loop"
    default = training_precision(TrainConfig(), device)
    precision, channels_last = default, use_channels_last(device, default)
    if variant == "instaseg-fp32":
        precision = resolve_precision("fp32", device)
    elif variant == "instaseg-bf16":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the emulated-bf16 warning: this variant asks for it knowingly
            precision = resolve_precision("bf16", device)
        channels_last = True
    elif variant == "instaseg-contiguous":
        channels_last = False
    layout = "channels-last" if channels_last else "contiguous"
    gather = variant != "instaseg-tv-roialign"
    pooler = "gather RoIAlign" if gather else "torchvision's RoIAlign"
    return instaseg_runner(
        model, precision, channels_last, steps, gather
    ), f"{precision.name}, {layout}, {pooler}"


def batches_of(data: DetectionDataset, batch_size: int, count: int) -> list:
    loader = make_loader(data, batch_size, False, 0, epoch=1, seed=0)
    batches = []
    for batch in loader:
        batches.append(batch)
        if len(batches) == count:
            break
    while len(batches) < count:  # fewer images than steps: go round again
        batches.append(batches[len(batches) % len(loader)])
    return batches


def measure(arch: str, size: int, records, num_classes: int, args, device: torch.device) -> None:
    """Train every variant on the same batches, alternating rounds; print images/second and ratios."""
    data = DetectionDataset(records, build_train_transform(size, "keep"), seed=0)
    batches = batches_of(data, args.batch_size, args.steps)
    light = arch == "maskrcnn_resnet18_fpn"
    config = ModelConfig(
        arch=arch,
        num_classes=num_classes,
        image_size=size,
        pretrained_backbone=not light,  # instaseg train's default weights
        mask_head_channels=LIGHT_MASK_HEAD if light else None,  # and the light model's mask head
    )
    torch.manual_seed(0)
    template = build_model(config).to(device)
    initial = copy.deepcopy(template.state_dict())
    models = {variant: copy.deepcopy(template) for variant in args.variants}
    seconds, notes = dict.fromkeys(models, 0.0), {}
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    for round_index in range(args.rounds + 1):  # round 0 warms up (oneDNN kernels, allocator)
        for variant, model in models.items():
            model.load_state_dict(initial)  # same start every round (copies keep the model's layout)
            torch.manual_seed(round_index)  # the heads' proposal sampling
            run, notes[variant] = make_runner(variant, model, device, args.steps)
            start = clock()
            run(batches)
            if round_index:
                seconds[variant] += clock() - start
    images = args.rounds * args.steps * args.batch_size
    print(
        f"\n{arch} at {size} px, batch {args.batch_size}: {args.rounds} rounds x {args.steps} steps per "
        f"variant, {torch.get_num_threads()} threads, {args.clock} time"
    )
    base = images / seconds["reference"] if "reference" in seconds else None
    for variant in models:
        rate = images / seconds[variant]
        ratio = f"{rate / base:6.2f}x" if base else ""
        print(f"  {variant:22s} {rate:7.3f} images/s  {ratio}  ({notes[variant]})")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default=str(DSB))
    parser.add_argument("--models", default=DEFAULT_MODELS, help="ARCH:SIZE pairs, comma-separated")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6, help="steps per variant per round")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (after one warm-up round)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--clock", default="wall", choices=["wall", "cpu"], help="wall time or process CPU time"
    )
    parser.add_argument(
        "--variants", default="reference,instaseg", help=f"comma-separated, from: {', '.join(VARIANTS)}"
    )
    args = parser.parse_args()
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; valid: {', '.join(VARIANTS)}")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"instaseg's default here: {training_precision(TrainConfig(), device).reason}")
    print(
        f"channels-last in training (bf16 only): {use_channels_last(device, resolve_precision('auto', device))}"
    )
    dataset = load_dataset(args.data)
    records = dataset.present[: args.batch_size * args.steps]
    for pair in args.models.split(","):
        arch, _, size = pair.strip().partition(":")
        measure(arch, int(size), records, dataset.class_map.num_classes, args, device)


if __name__ == "__main__":
    main()
