"""``instaseg export``: write a checkpoint's model as ONNX (and check it against the torch model) or as an
INT8 OpenVINO IR quantized with NNCF on calibration images (and report how far it moved)."""

from __future__ import annotations

import argparse
import sys

from .. import storage

HELP = "Export a checkpoint to ONNX or INT8 OpenVINO (with class names and settings) and check it."

FORMATS = ("onnx", "openvino-int8")
SUFFIXES = {"onnx": ".onnx", "openvino-int8": "-int8.xml"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="instaseg checkpoint (.pt)")
    parser.add_argument(
        "--format",
        default="onnx",
        choices=FORMATS,
        help="onnx (float32, ONNX Runtime) or openvino-int8 (OpenVINO IR quantized to INT8 by NNCF after "
        "training: fastest on CPUs with VNNI or AMX; needs pip install 'instaseg[openvino]')",
    )
    parser.add_argument(
        "--out", default=None, help="output file (default: CHECKPOINT with .onnx, or -int8.xml and .bin)"
    )
    parser.add_argument(
        "--proposals",
        type=int,
        default=None,
        help="RPN proposals fixed in the graph (default: the predictor's default, 1000)",
    )
    parser.add_argument(
        "--score-threshold",
        type=float,
        default=None,
        help="lowest score kept, fixed in the graph (default: the checkpoint's, 0.05 unless trained "
        "otherwise); predicting with it can raise the threshold, not lower it. A higher one is faster: the "
        "mask head runs on fewer detections",
    )
    parser.add_argument(
        "--calibration-images",
        nargs="*",
        default=None,
        metavar="INPUT",
        help="openvino-int8: images, folders or globs NNCF measures activation ranges on (default: the "
        "training images of the checkpoint's run: its dataset and RUN_DIR/splits.json)",
    )
    parser.add_argument(
        "--calibration-count",
        type=int,
        default=64,
        help="openvino-int8: at most this many calibration images, spread over the set (default 64)",
    )
    parser.add_argument(
        "--check-images",
        nargs="*",
        default=None,
        metavar="INPUT",
        help="images, folders or globs for the check (default: onnx, 8 of the bundled nuclei sample; "
        "openvino-int8, 8 of the calibration images)",
    )
    parser.add_argument("--no-check", action="store_true", help="skip the check")


def _read_images(inputs: list[str], count: int) -> list:
    """Up to ``count`` readable images of ``inputs``, spread evenly over them."""
    from ..images import ImageError, load_image
    from ..predict.inputs import expand_inputs

    found, _, _ = expand_inputs(inputs)
    if len(found) > count:
        found = [found[i * len(found) // count] for i in range(count)]
    images = []
    for image in found:
        try:
            images.append(load_image(image.location))
        except ImageError as e:
            print(f"skipping {e}", file=sys.stderr)
    return images


def _sample_images(inputs: list[str] | None, count: int = 8) -> list:
    from importlib import resources

    if not inputs:
        folder = resources.files("instaseg") / "sample_data" / "nuclei" / "images"
        inputs = [str(folder)]
    return _read_images(inputs, count)


def _training_images(checkpoint: str) -> list[str]:
    """The image locations the checkpoint was trained on: its run's dataset (``train_config``), the train
    split of ``splits.json`` beside the checkpoint when there is one, else every image of the dataset."""
    from pathlib import Path

    from ..formats.load import load_dataset
    from ..model.checkpoint import read_checkpoint
    from ..splits import load_splits, records_of_split
    from . import UsageError

    train = read_checkpoint(checkpoint).get("train_config") or {}
    advice = "pass --calibration-images (the training images)"
    if not train.get("data"):
        raise UsageError(f"{checkpoint} does not say which data it was trained on; {advice}")
    try:
        dataset = load_dataset(train["data"], train.get("images"), train.get("format"))
        split_file = Path(checkpoint).parent / "splits.json"
        split = "all"
        if split_file.is_file():
            load_splits(dataset.records, str(split_file))
            split = "train"
    except Exception as e:  # a dataset moved or changed since training: say so, do not guess
        raise UsageError(f"cannot read the training data {train['data']} ({e}); {advice}") from None
    locations = [r.image for r in records_of_split(dataset.records, split)]
    if not locations:
        raise UsageError(f"no training image of {train['data']} is present; {advice}")
    return locations


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from . import UsageError

    out = args.out or str(Path(args.checkpoint).with_suffix("")) + SUFFIXES[args.format]
    try:
        storage.check_output_file(out, [args.checkpoint], "--out")
    except storage.OutputError as e:
        raise UsageError(str(e)) from None
    if args.score_threshold is not None and not 0 <= args.score_threshold <= 1:
        raise UsageError("--score-threshold must be in [0, 1]")
    if args.format == "openvino-int8":
        return _run_int8(args, out)
    return _run_onnx(args, out)


def _run_onnx(args: argparse.Namespace, out: str) -> int:
    from ..model.checkpoint import CheckpointError
    from ..model.onnx_export import export_onnx, parity_check
    from . import UsageError

    try:
        path = export_onnx(
            args.checkpoint, out, proposals=args.proposals, score_threshold=args.score_threshold
        )
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


def _run_int8(args: argparse.Namespace, out: str) -> int:
    from ..model.checkpoint import CheckpointError
    from ..model.openvino_engine import OpenVinoError
    from ..model.openvino_export import agreement, export_openvino_int8
    from . import UsageError

    if not out.lower().endswith(".xml"):
        raise UsageError("--out of an openvino-int8 export must end in .xml (its weights go to .bin beside)")
    if args.calibration_count < 1:
        raise UsageError("--calibration-count must be at least 1")
    try:
        inputs = args.calibration_images or _training_images(args.checkpoint)
        calibration = _read_images(inputs, args.calibration_count)
        if not calibration:
            raise UsageError("no readable calibration image; pass --calibration-images")
        print(f"calibrating on {len(calibration)} image(s); quantizing (a minute or more on 2 cores)")
        export = export_openvino_int8(
            args.checkpoint, out, calibration, proposals=args.proposals, score_threshold=args.score_threshold
        )
    except (CheckpointError, OpenVinoError) as e:
        raise UsageError(str(e)) from None
    size = sum(p.stat().st_size for p in (export.path, export.path.with_suffix(".bin"))) / 1e6
    print(
        f"exported {args.checkpoint} -> {export.path} (+ .bin, {size:.1f} MB): {export.quantizers} INT8 "
        f"quantizers, calibrated on {export.calibration_images} image(s)"
    )
    if args.no_check:
        return 0
    images = (
        _read_images(args.check_images, 8)
        if args.check_images
        else calibration[:: max(1, len(calibration) // 8)][:8]
    )
    report = agreement(args.checkpoint, export.path, images)
    print(
        f"agreement with the float32 checkpoint on {report.images} image(s): {report.detections_int8} "
        f"detection(s) vs {report.detections_float}, median mask IoU {report.median_mask_iou:.3f} (each "
        f"float32 instance's best match, unmatched counting 0). INT8 moves results: measure mask AP with "
        f"`instaseg evaluate {export.path} DATA` against the checkpoint's"
    )
    return 0
