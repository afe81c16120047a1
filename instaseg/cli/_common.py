"""Arguments several commands share."""

from __future__ import annotations

import argparse

from ..formats.detect import FORMATS


def add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    """DATA, --images and --format: how a command finds and reads an annotated dataset."""
    parser.add_argument(
        "data",
        metavar="DATA",
        help="annotation file or dataset folder: COCO JSON, a Label Studio export (COCO "
        "folder/zip or JSON), labelme/VIA JSON, or a folder of mask PNGs; path or URL",
    )
    parser.add_argument(
        "--images",
        metavar="DIR",
        default=None,
        help="folder holding the images when the annotation file's paths do not lead to them "
        "(Label Studio exports): images are matched by file name",
    )
    parser.add_argument(
        "--format",
        default=None,
        choices=list(FORMATS),
        help="read DATA as this format instead of detecting it",
    )
