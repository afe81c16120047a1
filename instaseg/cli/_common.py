"""Arguments several commands share."""

from __future__ import annotations

import argparse
import os
import sys

from ..formats.detect import FORMATS
from ..formats.limits import LIMITS_HELP


def print_problems(problems: list, shown: int = 20) -> tuple[int, int]:
    """Print the first ``shown`` import problems on stderr (``check`` lists all); returns
    ``(errors, warnings)``."""
    for problem in problems[:shown]:
        print(problem, file=sys.stderr)
    if len(problems) > shown:
        print(f"... and {len(problems) - shown} more problems (instaseg check lists all)", file=sys.stderr)
    errors = sum(1 for p in problems if p.level == "error")
    return errors, len(problems) - errors


def add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    """DATA, --images, --format and --allow-outside-paths: how a command finds and reads an annotated
    dataset; the limits on input are stated at the end of the command's help."""
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
    add_outside_paths_argument(parser)


def add_outside_paths_argument(parser: argparse.ArgumentParser) -> None:
    """``--allow-outside-paths``, and the limits on input at the end of the command's help."""
    parser.add_argument(
        "--allow-outside-paths",
        action="store_true",
        help="read images that paths in the annotation files lead to outside DATA's folder and --images "
        "(absolute paths, ../..); by default they are refused and reported",
    )
    parser.epilog = " ".join(filter(None, (parser.epilog, LIMITS_HELP)))


def add_tile_argument(parser: argparse.ArgumentParser) -> None:
    """``--tile SIZE[,OVERLAP][,whole] | auto`` (predict, serve, label-studio-backend)."""
    parser.add_argument(
        "--tile",
        default=None,
        metavar="SIZE[,OVERLAP]|auto",
        help="predict large images in SIZE-px tiles at native resolution (OVERLAP px shared, default "
        "SIZE/4), objects cut by tile borders merged by mask overlap; add ',whole' to also predict the "
        "whole image for large objects. auto: tile images much larger than the model's size when it was "
        "trained with --crop",
    )


def parse_tile_argument(value: str | None):
    """The ``--tile`` value as a :class:`~instaseg.model.tiling.TileConfig` (``None`` when not given);
    ``UsageError`` saying what is expected."""
    from ..model.tiling import parse_tile
    from . import UsageError

    if value is None:
        return None
    try:
        return parse_tile(value)
    except ValueError as e:
        raise UsageError(f"--tile: {e}") from None


def add_lanes_argument(parser: argparse.ArgumentParser) -> None:
    """``--lanes N`` (predict, evaluate): images predicted at once (:mod:`instaseg.model.lanes`)."""
    parser.add_argument(
        "--lanes",
        type=int,
        default=None,
        metavar="N",
        help="images predicted at once, each with 1/N of the CPU threads (default: 2 for a checkpoint on the "
        "CPU with 2+ threads and 2+ images, else 1). Two lanes fill the time one image spends on a single "
        "core in NMS, RoIAlign and mask pasting: 1.11-1.23x the images per second on a 2-core Zen 4 (1.08x in fp32). "
        "Results can differ in the last bits from --lanes 1, which predicts each image with all threads",
    )


def set_lanes(predictor, batches: int, threads: int, requested: int | None) -> tuple[int, int]:
    """``(lanes, threads per lane)`` for a run of ``batches`` forward passes on ``threads`` CPU threads
    (:func:`~instaseg.model.lanes.lanes_for`, ``requested`` from ``--lanes``), with torch's thread count set
    to each lane's. A ``--lanes`` that cannot apply is a :class:`~instaseg.cli.UsageError` with the reason."""
    import torch

    from ..model.lanes import lanes_for
    from . import UsageError

    try:
        lanes, per_lane = lanes_for(predictor, batches, threads, requested)
    except ValueError as e:
        raise UsageError(str(e)) from None
    torch.set_num_threads(per_lane)
    return lanes, per_lane


def lanes_line(lanes: int, per_lane: int) -> str | None:
    """The ``lanes:`` line ``predict`` and ``evaluate`` print; ``None`` for one lane."""
    if lanes <= 1:
        return None
    return f"lanes: {lanes} images at once, {per_lane} thread(s) each (--lanes 1: one at a time)"


def add_precision_argument(parser, resumable: bool = False) -> None:
    """``--precision auto|fp32|bf16|fp16`` (train, evaluate, predict, serve, label-studio-backend, quickstart);
    the help says what ``auto`` picks on this machine (from the CPU flags, without loading torch).

    ``resumable`` (train): no default value (``args`` lacks ``precision`` unless given), so that ``--resume``
    keeps the run's own precision unless another is asked for."""
    from ..model.config import PRECISIONS
    from ..model.cpu_features import describe_auto_precision

    parser.add_argument(
        "--precision",
        default=argparse.SUPPRESS if resumable else "auto",
        choices=PRECISIONS,
        help="numeric precision of the model's computations. auto: bf16 mixed precision on CPUs "
        "that compute bf16 natively (amx_bf16 or avx512_bf16 in the CPU flags, and torch's oneDNN agrees), "
        "fp16 mixed precision on CUDA, fp32 otherwise; here "
        f"{describe_auto_precision()}. fp32: full precision everywhere. bf16/fp16: forced (on a CPU "
        "without them they are emulated, far slower). Weights and checkpoints stay float32; boxes, masks "
        "and losses are computed in float32; an OpenVINO INT8 export (.xml) runs INT8 and, under auto, the rest "
        "in float32; the log says what runs and why"
        + ("; default auto (on --resume: the run's own)" if resumable else ""),
    )


LABEL_STUDIO_TOKEN_HELP = (
    "Label Studio API token, either kind, told apart by its form: a Personal Access Token (Label Studio "
    "1.23's default: Account & Settings -> Personal Access Token; exchanged for short-lived access tokens, "
    "renewed as they expire) or a legacy token (Account & Settings -> Legacy Token)"
)


def add_label_studio_arguments(parser: argparse.ArgumentParser) -> None:
    """URL, ``--project`` and ``--token``: which Label Studio project a command talks to."""
    parser.add_argument("url", metavar="URL", help="Label Studio server, e.g. http://localhost:8080")
    parser.add_argument("--project", type=int, required=True, help="project id (in the project's URL)")
    parser.add_argument(
        "--token",
        default=os.environ.get("LABEL_STUDIO_API_KEY"),
        help=LABEL_STUDIO_TOKEN_HELP + " (default: $LABEL_STUDIO_API_KEY)",
    )
