"""``instaseg split``: write a reproducible train/val/test split of a dataset to a JSON file."""

from __future__ import annotations

import argparse

from .. import storage
from ..splits import SplitConfig, assign_splits, save_splits
from ._common import add_dataset_arguments, print_problems

HELP = (
    "Split a dataset's present images into train/val/test (deterministic) and save the split as JSON; "
    "exits 1 (after writing it) when the dataset has errors, as check does."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataset_arguments(parser)
    parser.add_argument("--out", default="splits.json", help="where to write the split (path or URL)")
    parser.add_argument("--train", type=float, default=0.7, help="fraction of images for training")
    parser.add_argument("--val", type=float, default=0.15, help="fraction for validation (model selection)")
    parser.add_argument("--test", type=float, default=0.15, help="fraction held out for the final evaluation")
    parser.add_argument(
        "--seed", type=int, default=0, help="shuffle seed: the same seed gives the same split"
    )


def run(args: argparse.Namespace) -> int:
    from ..cli import UsageError
    from ..formats.load import load_dataset

    try:
        config = SplitConfig(args.train, args.val, args.test, args.seed)
    except ValueError as e:
        raise UsageError(str(e)) from None
    try:
        storage.check_output_file(args.out, [args.data], "--out")
    except storage.OutputError as e:
        raise UsageError(str(e)) from None
    dataset = load_dataset(args.data, args.images, args.format, args.allow_outside_paths)
    splits = assign_splits(dataset.records, config)
    save_splits(splits, args.out, config)
    errors, warnings = print_problems(dataset.problems)
    counts = ", ".join(f"{name} {len(files)}" for name, files in splits.items())
    print(
        f"split {len(dataset.present)} images: {counts} -> {args.out}; "
        f"problems: {errors} errors, {warnings} warnings"
    )
    return 1 if errors else 0
