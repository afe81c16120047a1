"""Evaluate a round's candidate and the served model on the round's validation images (a child process).

``python -m instaseg.app.round_evaluation --data labelled.json --images DIR --splits splits.json
--model candidate=PATH --model current=PATH --out EVAL_DIR [--device cpu]`` writes, per model,
``EVAL_DIR/<name>/report.{json,md}`` and the figures (:func:`instaseg.evaluate.report.write_report`), and
``EVAL_DIR/metrics.json`` ``{name: {"mask_map", "box_map", "images", "instances", "predictions",
"pre_annotation"}}`` (maps as fractions, ``null`` when undefined). ``pre_annotation`` is the score threshold
at which that model's pre-annotations would spare a person most on these images (the effort model,
:mod:`instaseg.app.effort`, without the smart box; :func:`pre_annotation_choice`). Predictions go through :class:`~instaseg.model.predictor.Predictor` and
:func:`~instaseg.evaluate.evaluator.evaluate_instances`, as ``instaseg evaluate CHECKPOINT`` does.

The training loop runs it as a separate process so that evaluating never slows the backend's answers more
than the operating system's scheduler allows, and a crash here leaves the served model untouched.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def evaluate_models(
    data: str, images: str, splits: str, models: dict[str, str], out: Path, device: str = "cpu"
) -> dict[str, dict]:
    """Evaluate each checkpoint of ``models`` (name -> path) on the val split; returns the metrics."""
    from ..evaluate.evaluator import EvaluationConfig, evaluate_instances, predict_records
    from ..evaluate.report import write_report
    from ..formats.load import load_dataset
    from ..model.predictor import Predictor
    from ..splits import load_splits, records_of_split

    dataset = load_dataset(data, images, "labelstudio-json")
    load_splits(dataset.records, splits)
    records = records_of_split(dataset.records, "val")
    metrics = {}
    for name, path in models.items():
        predictor = Predictor(path, device=device)
        if predictor.class_map.names != dataset.class_map.names:
            raise ValueError(
                f"{path} predicts {list(predictor.class_map.names)}, the annotations have "
                f"{list(dataset.class_map.names)}"
            )
        config = EvaluationConfig(max_dets=predictor.max_detections)
        predictions = predict_records(predictor, records)
        evaluation = evaluate_instances(records, dataset.class_map, predictions, config)
        evaluation.source.update(checkpoint=str(path), data=data, split="val")
        write_report(evaluation, str(out / name))
        metrics[name] = {
            "mask_map": evaluation.segm.summary["AP"] if evaluation.segm else None,
            "box_map": evaluation.bbox.summary["AP"] if evaluation.bbox else None,
            "images": evaluation.images,
            "instances": evaluation.instances,
            "predictions": evaluation.predictions,
            "pre_annotation": pre_annotation_choice(records, predictions, predictor.score_threshold),
        }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics


def pre_annotation_choice(records, predictions, min_score: float = 0.0) -> dict:
    """The pre-annotation threshold with the fewest actions on ``records`` (ground truth with masks) given
    the model's ``predictions`` (one :class:`~instaseg.core.Instances` per record, scores >= ``min_score``).

    Returns ``{"threshold", "actions_per_object", "by_hand_per_object", "accepted_share", "objects",
    "by_threshold": {threshold: actions per object}}``; ``threshold`` is ``None`` when the images hold no
    object with a mask. Thresholds of :data:`~instaseg.app.effort.THRESHOLD_GRID` below ``min_score`` (the
    model returns nothing under it) are left out.
    """
    from .effort import THRESHOLD_GRID, ImageEffort, choose_threshold

    grid = [t for t in THRESHOLD_GRID if t >= min_score] or [float(min_score)]
    images = []
    for record, predicted in zip(records, predictions, strict=True):
        truth = record.instances()
        if truth.has_masks or not len(truth):
            images.append(ImageEffort(truth, predicted))
    threshold, totals = choose_threshold(images, grid)
    chosen = totals[threshold] if threshold is not None else None
    return {
        "threshold": threshold,
        "actions_per_object": None if chosen is None else round(chosen.actions_per_object, 4),
        "by_hand_per_object": None if chosen is None else round(chosen.by_hand_per_object, 4),
        "accepted_share": None if chosen is None else round(chosen.accepted_share, 4),
        "objects": 0 if chosen is None else chosen.objects,
        "by_threshold": {
            f"{t:g}": None if e.actions_per_object is None else round(e.actions_per_object, 4)
            for t, e in totals.items()
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m instaseg.app.round_evaluation")
    parser.add_argument("--data", required=True)
    parser.add_argument("--images", required=True)
    parser.add_argument("--splits", required=True)
    parser.add_argument("--model", action="append", required=True, metavar="NAME=PATH")
    parser.add_argument("--out", required=True)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    models = dict(item.split("=", 1) for item in args.model)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    metrics = evaluate_models(args.data, args.images, args.splits, models, out, args.device)
    print(json.dumps(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
