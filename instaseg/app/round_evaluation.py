"""Evaluate a round's candidate and the served model on the round's validation images (a child process).

``python -m instaseg.app.round_evaluation --data labelled.json --images DIR --splits splits.json
--model candidate=PATH --model current=PATH --out EVAL_DIR [--device cpu]`` writes, per model,
``EVAL_DIR/<name>/report.{json,md}`` and the figures (:func:`instaseg.evaluate.report.write_report`), and
``EVAL_DIR/metrics.json`` ``{name: {"mask_map", "box_map", "images", "instances", "predictions"}}`` (maps as
fractions, ``null`` when undefined). Predictions go through :class:`~instaseg.model.predictor.Predictor` and
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
        evaluation = evaluate_instances(
            records, dataset.class_map, predict_records(predictor, records), config
        )
        evaluation.source.update(checkpoint=str(path), data=data, split="val")
        write_report(evaluation, str(out / name))
        metrics[name] = {
            "mask_map": evaluation.segm.summary["AP"] if evaluation.segm else None,
            "box_map": evaluation.bbox.summary["AP"] if evaluation.bbox else None,
            "images": evaluation.images,
            "instances": evaluation.instances,
            "predictions": evaluation.predictions,
        }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics


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
