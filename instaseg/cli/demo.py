"""``instaseg demo``: the main job, end to end, on the bundled sample dataset (what ``make demo`` runs)."""

from __future__ import annotations

import argparse
import os
from importlib import resources

HELP = "Run instaseg end to end on the bundled sample (CC0 nuclei images exported from Label Studio)."


def sample_dataset_dir() -> str:
    """Folder of the bundled sample: a Label Studio COCO export (result.json + images/)."""
    return str(resources.files("instaseg") / "sample_data" / "nuclei")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="folder for everything the demo writes")


def run(args: argparse.Namespace) -> int:
    from ..formats.coco_export import write_coco
    from ..formats.load import load_dataset
    from ..splits import SplitConfig, assign_splits, save_splits
    from .check import print_summary, summarize

    source = sample_dataset_dir()
    print(f"[1/3] importing the bundled sample: {source}")
    dataset = load_dataset(source)
    print_summary(summarize(dataset))

    os.makedirs(args.out, exist_ok=True)
    print("[2/3] splitting train/val/test 70/15/15 (seed 0)")
    config = SplitConfig()
    splits = assign_splits(dataset.records, config)
    split_file = os.path.join(args.out, "splits.json")
    save_splits(splits, split_file, config)
    print("      " + ", ".join(f"{k} {len(v)}" for k, v in splits.items()) + f" -> {split_file}")

    coco_file = os.path.join(args.out, "coco", "annotations.json")
    print("[3/3] converting to canonical COCO (1-based ids, polygons)")
    write_coco(dataset, coco_file, mask_format="polygon", copy_images=True)
    print(f"      -> {coco_file}")
    print(f"done. Next: `instaseg check {coco_file}` reads it back.")
    return 0
