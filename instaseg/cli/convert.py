"""``instaseg convert``: read an annotated dataset in any supported format and write it as canonical COCO."""

from __future__ import annotations

import argparse

from .. import storage
from . import UsageError
from ._common import add_dataset_arguments, print_problems

HELP = "Convert an annotated dataset (COCO, Label Studio, labelme, VIA, mask PNGs) to canonical COCO JSON."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataset_arguments(parser)
    parser.add_argument(
        "destination",
        metavar="DST",
        help="where to write: a .json file, or a folder (annotations.json is written in it); path or URL",
    )
    parser.add_argument(
        "--masks",
        choices=["polygon", "rle"],
        default="polygon",
        help="how to write masks: polygons (source polygons, or traced; masks with holes "
        "stay RLE) or compressed RLE; crowd regions are always RLE",
    )
    parser.add_argument(
        "--copy-images",
        action="store_true",
        help="copy the images into images/ next to the JSON and point file_name there",
    )


def run(args: argparse.Namespace) -> int:
    from ..formats.coco_export import annotation_location, write_coco
    from ..formats.load import load_dataset

    target = annotation_location(args.destination)
    try:
        storage.check_output_file(target, [args.data], "DESTINATION")
        inside_source = storage.is_dir(args.data) and storage.same_file(storage.parent(target), args.data)
        if inside_source and storage.exists(target):
            raise storage.OutputError(
                f"DESTINATION {target} already exists in the dataset folder being converted (it may be the "
                "export itself); choose another destination"
            )
    except storage.OutputError as e:
        raise UsageError(str(e)) from None
    dataset = load_dataset(args.data, args.images, args.format, args.allow_outside_paths)
    written = write_coco(dataset, args.destination, mask_format=args.masks, copy_images=args.copy_images)
    errors, warnings = print_problems(dataset.problems)
    missing = f" ({len(dataset.missing)} missing, not written)" if dataset.missing else ""
    print(
        f"{dataset.format} -> COCO: {len(dataset.present)} images{missing}, {dataset.num_instances()} "
        f"instances, {dataset.class_map.num_classes} classes written to {written}"
        f"{' with images copied' if args.copy_images else ''}; problems: {errors} errors, "
        f"{warnings} warnings"
    )
    return 1 if errors else 0
