"""How much the step-time probe's choice varies between runs on this machine: the probe that chooses the
image size from scratch on a CPU (instaseg.train.probe), run ``--runs`` times on a dataset at the sizes and
anchors training would probe there (instaseg.train.recipe.probe_sizes, choose_anchors), with the light model,
batch 2, the automatic precision. Prints each run's step times, their ratios to the smallest size and the size
:func:`instaseg.train.recipe.choose_probed_size` picks from them. Run it alone on the machine.

    .venv/bin/python bench/probe_spread.py [--data ../shared/datasets/dsb2018_nuclei_sample/stage1_train]
"""

from __future__ import annotations

import argparse

import torch

from instaseg.formats.load import load_dataset
from instaseg.model.config import ModelConfig
from instaseg.train.config import TrainConfig
from instaseg.train.probe import PROBE_STEPS, probe_step_times
from instaseg.train.recipe import (
    LIGHT_MASK_HEAD,
    STEP_COST_LIMIT,
    choose_anchors,
    choose_probed_size,
    measure_objects,
    probe_sizes,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/datasets/dsb2018_nuclei_sample/stage1_train")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=PROBE_STEPS)
    args = parser.parse_args()
    dataset = load_dataset(args.data)
    stats = measure_objects(dataset.records)
    sizes = probe_sizes(stats)
    model = ModelConfig(
        arch="maskrcnn_resnet18_fpn",
        num_classes=len(dataset.class_map.names),
        image_size=sizes[0],
        pretrained_backbone=False,
        anchor_sizes=choose_anchors(stats, sizes[0])[0],
        mask_head_channels=LIGHT_MASK_HEAD,  # as train's probe builds it
    )
    config = TrainConfig(weights="none", batch_size=2, precision="auto", device="cpu", workers=0)
    for run in range(args.runs):
        times = probe_step_times(dataset.records, model, config, sizes, torch.device("cpu"), args.steps)
        base = min(times)
        shown = ", ".join(f"{s} px {t:.3f} s ({t / times[base]:.2f}x)" for s, t in times.items())
        chosen = choose_probed_size(times)[0]
        print(f"run {run + 1}: {shown}; chooses {chosen} px (limit {STEP_COST_LIMIT:g}x)", flush=True)


if __name__ == "__main__":
    main()
