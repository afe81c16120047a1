"""How much the step-time probe's ratios vary between runs on this machine: the probe that chooses the
image size from scratch on a CPU (instaseg.train.probe), run ``--runs`` times on a dataset at 256/384/512 px
with the light model, batch 2, the run's automatic precision. Prints each run's step times and the ratios
that :func:`instaseg.train.recipe.choose_probed_size` compares with its limit. Run it alone on the machine.

    .venv/bin/python bench/probe_spread.py [--data ../shared/datasets/dsb2018_nuclei_sample/stage1_train]
"""

from __future__ import annotations

import argparse

import torch

from instaseg.formats.load import load_dataset
from instaseg.model.config import ModelConfig
from instaseg.train.config import TrainConfig
from instaseg.train.probe import PROBE_STEPS, probe_step_times
from instaseg.train.recipe import STEP_COST_LIMIT


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/datasets/dsb2018_nuclei_sample/stage1_train")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=PROBE_STEPS)
    args = parser.parse_args()
    dataset = load_dataset(args.data)
    classes = len(dataset.class_map.names)
    for run in range(args.runs):
        model = ModelConfig(
            arch="maskrcnn_resnet18_fpn", num_classes=classes, image_size=256, pretrained_backbone=False
        )
        config = TrainConfig(weights="none", batch_size=2, precision="auto", device="cpu", workers=0)
        times = probe_step_times(
            dataset.records, model, config, [256, 384, 512], torch.device("cpu"), args.steps
        )
        ratios = "  ".join(f"{s}/256 {times[s] / times[256]:.2f}" for s in (384, 512))
        shown = ", ".join(f"{s} px {t:.3f} s" for s, t in times.items())
        print(f"run {run + 1}: {shown}  {ratios}  (limit {STEP_COST_LIMIT:g})", flush=True)


if __name__ == "__main__":
    main()
