"""``instaseg check``: read a dataset as instaseg will, and say what is in it and what is wrong."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter

from ..dataset import Dataset
from ..problems import Problem
from ._common import add_dataset_arguments

HELP = "Check an annotated dataset: counts per class, missing images and every problem found."

# Problems printed in the human summary before "... and N more" (all are in --json).
_SHOWN_PROBLEMS = 30


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataset_arguments(parser)
    parser.add_argument(
        "--json", action="store_true", help="print exactly one JSON object on stdout instead of the summary"
    )
    parser.add_argument(
        "--deep",
        action="store_true",
        help="decode every image (slower) to find corrupt or truncated files; by default only "
        "headers are read",
    )


def run(args: argparse.Namespace) -> int:
    from ..formats.load import load_dataset

    dataset = load_dataset(args.data, args.images, args.format, args.allow_outside_paths)
    if args.deep:
        dataset.problems.extend(decode_all(dataset))
    summary = summarize(dataset)
    if args.json:
        print(json.dumps(summary))
    else:
        print_summary(summary)
    return 1 if any(p["level"] == "error" for p in summary["problems"]) else 0


def decode_all(dataset: Dataset) -> list[Problem]:
    """Decode every present image; one error problem per image that fails."""
    from tqdm import tqdm

    from ..images import ImageError, load_image

    problems = []
    for record in tqdm(
        dataset.present, desc="decoding images", unit="img", file=sys.stderr, disable=not sys.stderr.isatty()
    ):
        try:
            load_image(record.image)
        except ImageError as e:
            problems.append(Problem("error", str(e), file=record.image, image=record.file_name))
    return problems


def summarize(dataset: Dataset) -> dict:
    """The JSON summary ``instaseg check --json`` prints."""
    present = dataset.present
    without_mask = sum(1 for r in present for a in r.annotations if not a.has_mask)
    crowd = sum(1 for r in present for a in r.annotations if a.iscrowd)
    return {
        "format": dataset.format,
        "source": dataset.source,
        "images": len(dataset.records),
        "images_present": len(present),
        "images_missing": len(dataset.missing),
        "images_without_instances": sum(1 for r in present if not r.annotations),
        "instances": dataset.num_instances(),
        "instances_without_mask": without_mask,
        "crowd_regions": crowd,
        "categories": dataset.category_counts(),
        "image_modes": dict(Counter(r.mode for r in present if r.mode)),
        "problems": [p.to_dict() for p in dataset.problems],
    }


def print_summary(summary: dict) -> None:
    print(f"{summary['source']}: {summary['format']}")
    print(
        f"  images: {summary['images']} listed, {summary['images_present']} present, "
        f"{summary['images_missing']} missing, {summary['images_without_instances']} without objects"
    )
    print(
        f"  instances: {summary['instances']} in present images"
        + (
            f" ({summary['instances_without_mask']} with a box only)"
            if summary["instances_without_mask"]
            else ""
        )
        + (f", {summary['crowd_regions']} crowd regions" if summary["crowd_regions"] else "")
    )
    width = max((len(n) for n in summary["categories"]), default=0)
    for name, count in sorted(summary["categories"].items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"    {name:<{width}}  {count}")
    problems = summary["problems"]
    errors = sum(p["level"] == "error" for p in problems)
    print(f"  problems: {errors} errors, {len(problems) - errors} warnings")
    for p in problems[:_SHOWN_PROBLEMS]:
        print(f"    {Problem(**p)}")
    if len(problems) > _SHOWN_PROBLEMS:
        print(f"    ... and {len(problems) - _SHOWN_PROBLEMS} more (use --json to see all)")
