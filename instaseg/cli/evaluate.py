"""``instaseg evaluate``: COCO box and mask metrics, per class, plain precision/recall, losses and a report.

Two routes to the predictions:

- ``instaseg evaluate CHECKPOINT DATA``: the checkpoint predicts every image of the split through
  :class:`~instaseg.model.predictor.Predictor`, the path ``instaseg predict`` takes (so ``predict --save json``
  then ``evaluate --predictions`` scores the same), and the losses per split are computed as in training;
- ``instaseg evaluate --predictions preds.json DATA``: a COCO results file from any tool. Its ``image_id``
  and ``category_id`` refer to the dataset's canonical COCO: ``image_id`` is the 1-based position of the
  image in the dataset as imported (the ids ``instaseg convert`` gives in a COCO export of the whole dataset), or give
  ``file_name`` instead; ``category_id`` is 1..K in the dataset's class order.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from .. import storage
from ..core import ClassMap, Record
from ..model.config import DEVICES
from ..problems import DatasetError
from ..splits import SPLITS, assign_splits, load_splits, records_of_split, split_file_mismatch
from . import UsageError
from ._common import (
    add_lanes_argument,
    add_outside_paths_argument,
    add_precision_argument,
    lanes_line,
    set_lanes,
)

HELP = (
    "Evaluate a checkpoint, or a COCO predictions file, on a dataset: COCO mask and box AP per class, "
    "precision/recall/F1, confusion matrix, losses; writes report.json, report.md and PNG plots."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "checkpoint",
        nargs="?",
        help="model checkpoint (.pt) written by `instaseg train`, or its export (.onnx, or the .xml of "
        "`export --format openvino-int8`: metrics without losses); leave out with --predictions",
    )
    parser.add_argument("data", help="the dataset (annotation file or folder, local or bucket URL)")
    parser.add_argument(
        "--predictions",
        metavar="FILE",
        help="COCO results JSON to evaluate instead of a "
        "checkpoint (image_id = 1-based image id of the dataset, or file_name; category_id = 1..K)",
    )
    parser.add_argument("--split", choices=[*SPLITS, "all"], default="test", help="images to evaluate")
    parser.add_argument(
        "--splits",
        metavar="FILE",
        help="split file (splits.json of the training run); by "
        "default the one beside the checkpoint, else the dataset's own split",
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        help="report folder (default: eval-SPLIT beside the checkpoint or the predictions file)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object on stdout")
    parser.add_argument(
        "--images", metavar="DIR", help="folder of the images, when the annotations do not lead to them"
    )
    parser.add_argument("--format", help="dataset format (detected when left out)")
    add_outside_paths_argument(parser)
    parser.add_argument(
        "--score-threshold",
        type=float,
        default=0.5,
        help="score from which a prediction counts for precision/recall/F1 and the confusion "
        "matrix (COCO AP uses every score)",
    )
    parser.add_argument("--iou-threshold", type=float, default=0.5, help="IoU for precision/recall/F1")
    parser.add_argument(
        "--max-dets",
        type=int,
        default=None,
        help="most detections per image kept by COCO AP/AR (default: the checkpoint's detections per "
        "image, at least COCO's 100; 100 for a predictions file)",
    )
    parser.add_argument("--no-losses", action="store_true", help="skip the per-split losses")
    parser.add_argument(
        "--device", default="auto", choices=DEVICES, help="auto: CUDA, then MPS, else the CPU"
    )
    add_precision_argument(parser)
    add_lanes_argument(parser)


def run(args: argparse.Namespace) -> int:
    from ..evaluate import EvaluationConfig, write_report
    from ..formats.load import load_dataset

    if (args.checkpoint is None) == (args.predictions is None):
        raise UsageError("give either a CHECKPOINT or --predictions FILE (not both), then DATA")
    if not 0 <= args.score_threshold <= 1 or not 0 < args.iou_threshold <= 1:
        raise UsageError("--score-threshold must be in [0, 1] and --iou-threshold in (0, 1]")
    if args.max_dets is not None and args.max_dets < 1:
        raise UsageError("--max-dets must be at least 1")
    config = EvaluationConfig(args.score_threshold, args.iou_threshold, args.max_dets or 100)
    dataset = load_dataset(args.data, args.images, args.format, args.allow_outside_paths)
    origin = args.checkpoint or args.predictions
    out = args.out or storage.join(storage.parent(origin), f"eval-{args.split}")
    try:
        storage.check_output_folder(out, "--out")
    except storage.OutputError as e:
        raise UsageError(str(e)) from None
    notes = _choose_splits(dataset.records, args, origin)
    records = records_of_split(dataset.records, args.split)
    if not records:
        raise DatasetError(
            f"split '{args.split}' has no images with a file; choose another --split (train, "
            "val, test, all) or give the run's --splits file",
            file=args.data,
        )

    if args.predictions:
        evaluation = _from_predictions(args, dataset, records, config, notes)
    else:
        evaluation = _from_checkpoint(args, dataset.class_map, dataset.records, records, config, notes)
    evaluation.source = {
        "data": args.data,
        "split": args.split,
        ("predictions" if args.predictions else "checkpoint"): origin,
    }

    written = write_report(evaluation, out)
    report = evaluation.to_json()
    if args.json:
        print(json.dumps(report))
        print(f"report written to {written['markdown']}", file=sys.stderr)
    else:
        _print_summary(report, evaluation)
        print(f"report: {written['markdown']} (and report.json, PNG plots)")
    return 0


def _choose_splits(all_records: list[Record], args, origin: str) -> list[str]:
    """Assign splits to the records; returns notes saying where the split came from.

    The training run's ``splits.json`` beside the checkpoint is used only when it describes this dataset;
    ``--split all`` needs no split file (the per-split losses then use one when there is a matching one).
    """
    if args.splits:
        load_splits(all_records, args.splits)
        return [f"Split from {args.splits}."]
    beside = storage.join(storage.parent(origin), "splits.json")
    if args.checkpoint and storage.exists(beside):
        mismatch = split_file_mismatch(all_records, beside)
        if mismatch is None:
            load_splits(all_records, beside)
            return [f"Split from {beside} (the training run's split file)."]
        if args.split == "all":
            return [
                f"Every image evaluated; the run's split file {beside} describes another dataset ({mismatch})."
            ]
        raise DatasetError(
            f"the training run's split file beside the checkpoint describes another dataset ({mismatch}); "
            "evaluate this dataset with --split all, or give its own split file with --splits",
            file=beside,
        )
    if args.split == "all":
        return ["Every image evaluated."] if not any(r.split for r in all_records) else []
    if any(r.split for r in all_records):
        return ["Split as given by the dataset."]
    assign_splits(all_records)
    return [
        "No split file: images were split with the default 70/15/15, seed 0. Pass --splits with the "
        "training run's splits.json to evaluate on the images it held out."
    ]


def _from_predictions(args, dataset, records: list[Record], config, notes: list[str]):
    from ..evaluate import check_predictions, evaluate_results, read_predictions
    from ..formats.coco_export import records_to_coco

    items = read_predictions(args.predictions)
    selected = {r.image_id for r in records}
    results, with_masks, more = check_predictions(
        items, records_to_coco(dataset.records, dataset.class_map), args.predictions, selected
    )
    notes = notes + more + ["Losses need a model: they are not computed for a predictions file."]
    return evaluate_results(records, dataset.class_map, results, with_masks, config, notes)


def _label_mapping(model_names: tuple[str, ...], data: ClassMap, checkpoint: str) -> dict[int, int]:
    """Model label -> dataset label, by class name; ``DatasetError`` when the class names differ."""
    if set(model_names) != set(data.names):
        only_model = sorted(set(model_names) - set(data.names))
        only_data = sorted(set(data.names) - set(model_names))
        raise DatasetError(
            f"the checkpoint's classes ({', '.join(model_names)}) differ from the dataset's "
            f"({', '.join(data.names)}): only in the checkpoint: {only_model or 'none'}; only in the dataset: "
            f"{only_data or 'none'}. Evaluate on a dataset with the classes the model was trained on.",
            file=checkpoint,
        )
    return {i + 1: data.label(name) for i, name in enumerate(model_names)}


def _predict(predictor, records, mapping, requested_lanes: int | None):
    """The predictions of ``records``, in lanes (:func:`~instaseg.cli._common.set_lanes`, as ``predict``
    runs a folder); torch's thread count is given back afterwards, for the losses."""
    import torch
    from tqdm import tqdm

    from ..evaluate import predict_records

    threads = torch.get_num_threads()
    lanes, per_lane = set_lanes(predictor, len(records), threads, requested_lanes)
    try:
        line = lanes_line(lanes, per_lane)
        if line:
            print(line, file=sys.stderr)
        with tqdm(total=len(records), desc="predicting", unit="img", disable=not sys.stderr.isatty()) as bar:
            return predict_records(predictor, records, mapping, lambda done: bar.update(1), lanes)
    finally:
        torch.set_num_threads(threads)


def _from_checkpoint(args, class_map: ClassMap, all_records, records, config, notes: list[str]):
    """Predict ``records`` through :class:`~instaseg.model.predictor.Predictor` (the path ``instaseg
    predict`` takes, at the checkpoint's test-time settings) and evaluate; losses per split as in training."""
    from ..evaluate import evaluate_instances
    from ..model.checkpoint import CheckpointError
    from ..model.predictor import Predictor
    from ..train.engine import compute_dataset_losses

    try:
        predictor = Predictor(args.checkpoint, device=args.device, precision=args.precision)
    except (CheckpointError, ValueError) as e:
        raise UsageError(str(e)) from None
    print(f"precision: {predictor.precision.reason}", file=sys.stderr)
    if args.max_dets is None:  # as many as the model may return per image
        config = dataclasses.replace(config, max_dets=max(100, predictor.max_detections))
    mapping = _label_mapping(predictor.class_names, class_map, args.checkpoint)
    predictions = _predict(predictor, records, mapping, args.lanes)
    evaluation = evaluate_instances(records, class_map, predictions, config)
    evaluation.notes = notes + evaluation.notes
    if args.no_losses:
        evaluation.notes.append("Losses were not computed (--no-losses).")
        return evaluation
    if predictor.model is None:  # an ONNX or OpenVINO export: no torch model to compute losses with
        evaluation.notes.append(
            f"Losses were not computed: {args.checkpoint} is an export, not a checkpoint."
        )
        return evaluation
    splits = (args.split,)
    if args.split == "all" and any(r.split for r in all_records):
        splits = SPLITS  # one loss per split of the run, as training reported them
    evaluation.losses = {
        s: dict(
            compute_dataset_losses(
                predictor.model,
                records_of_split(all_records, s),
                predictor.model_config,
                precision=predictor.precision,
            )
        )
        for s in splits
        if records_of_split(all_records, s)
    }
    return evaluation


def _print_summary(report: dict, evaluation) -> None:
    def show(v):
        return v if isinstance(v, str) else f"{v:.3f}"

    print(f"{report['images']} images, {report['instances']} objects, {report['predictions']} predictions")
    for kind in ("segm", "bbox"):
        m = report[kind]
        line = "n/a" if m == "n/a" else ", ".join(f"{k} {show(m[k])}" for k in ("AP", "AP50", "AP75"))
        print(f"{'masks' if kind == 'segm' else 'boxes'}: {line}")
    match = report["matching"]
    print(
        f"at score >= {match['score_threshold']:g}: precision {show(match['precision'])}, recall "
        f"{show(match['recall'])}, F1 {show(match['f1'])}, mean mask IoU {show(match['mean_mask_iou'])}"
    )
    for note in evaluation.notes:
        print(f"note: {note}")
