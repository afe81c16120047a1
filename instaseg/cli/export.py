"""``instaseg export``: write a checkpoint's model as ONNX and check it against the torch model."""

from __future__ import annotations

import argparse
import sys

from .. import storage

HELP = "Export a checkpoint to ONNX (with class names and settings) and print a parity check."

FORMATS = ("onnx",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="instaseg checkpoint (.pt)")
    parser.add_argument("--format", default="onnx", choices=FORMATS, help="export format")
    parser.add_argument("--out", default=None, help="output file (default: CHECKPOINT with .onnx)")
    parser.add_argument(
        "--proposals",
        type=int,
        default=None,
        help="RPN proposals fixed in the graph (default: the predictor's default, 1000)",
    )
    parser.add_argument(
        "--check-images",
        nargs="*",
        default=None,
        metavar="INPUT",
        help="images, folders or globs for the parity check (default: 8 of the bundled nuclei sample)",
    )
    parser.add_argument("--no-check", action="store_true", help="skip the parity check")


def _sample_images(inputs: list[str] | None, count: int = 8) -> list:
    from importlib import resources

    from ..images import ImageError, load_image
    from ..predict.inputs import expand_inputs

    if not inputs:
        folder = resources.files("instaseg") / "sample_data" / "nuclei" / "images"
        inputs = [str(folder)]
    found, _ = expand_inputs(inputs)
    images = []
    for image in found:
        try:
            images.append(load_image(image.location))
        except ImageError as e:
            print(f"parity check: skipping {e}", file=sys.stderr)
        if len(images) == count:
            break
    return images


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..model.checkpoint import CheckpointError
    from ..model.onnx_export import export_onnx, parity_check
    from . import UsageError

    out = args.out or str(Path(args.checkpoint).with_suffix(".onnx"))
    try:
        storage.check_output_file(out, [args.checkpoint], "--out")
    except storage.OutputError as e:
        raise UsageError(str(e)) from None
    try:
        path = export_onnx(args.checkpoint, out, proposals=args.proposals)
    except CheckpointError as e:
        raise UsageError(str(e)) from None
    print(f"exported {args.checkpoint} -> {path} ({path.stat().st_size / 1e6:.1f} MB)")
    if args.no_check:
        return 0
    images = _sample_images(args.check_images)
    if not images:
        raise UsageError("no readable image for the parity check; pass --check-images or --no-check")
    report = parity_check(args.checkpoint, path, images)
    verdict = "passed" if report.passed else "FAILED"
    print(
        f"parity check {verdict} on {report.images} image(s), {report.detections} detection(s): "
        f"count mismatches {report.count_mismatches}, min box IoU {report.min_box_iou:.4f} (>= 0.99), "
        f"min mask IoU {report.min_mask_iou:.4f} (>= 0.98), max score difference "
        f"{report.max_score_difference:.2e} (<= 1e-3)"
    )
    return 0 if report.passed else 1
