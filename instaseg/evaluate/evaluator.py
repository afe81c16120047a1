"""One call that evaluates predictions on records: COCO metrics for boxes and masks, per class, and the
plain-language matching (precision/recall/F1, mean mask IoU, confusion matrix).

:func:`evaluate_results` takes COCO results (a predictions file, see :mod:`.predictions`);
:func:`evaluate_instances` takes one :class:`~instaseg.core.Instances` per record, as
:func:`predict_records` makes them with a :class:`~instaseg.model.predictor.Predictor` (what
``evaluate CHECKPOINT`` and training's ``--select map`` use). Both routes turn instances into COCO results
with the same converter as ``instaseg predict --save json``, so they give the same AP.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core import ClassMap, Instances, Record
from ..formats.coco_export import instances_to_coco_results, records_to_coco
from ..images import load_image
from .cocoeval import CocoMetrics, coco_evaluate, dataset_has_masks
from .matching import MatchResult, match_predictions

NA = "n/a"  # how an unavailable metric is written in report.json and report.md


@dataclass(frozen=True)
class EvaluationConfig:
    """``score_threshold`` and ``iou_threshold`` apply to precision/recall/F1 and the confusion matrix only
    (COCO AP uses every prediction); ``max_dets``: most detections per image kept by COCO AP."""

    score_threshold: float = 0.5
    iou_threshold: float = 0.5
    max_dets: int = 100


@dataclass
class Evaluation:
    """Everything measured on one set of images.

    ``bbox``/``segm`` are ``None`` when not available (``segm``: dataset or predictions without masks); the
    reason is in ``notes``. ``losses``: split -> loss name -> value, or ``None`` when not computed.
    """

    images: int
    instances: int
    predictions: int
    class_names: tuple[str, ...]
    class_instances: dict[str, int]
    config: EvaluationConfig
    bbox: CocoMetrics | None
    segm: CocoMetrics | None
    matching: MatchResult
    notes: list[str] = field(default_factory=list)
    losses: dict[str, dict[str, float]] | None = None
    source: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict:
        """The JSON object of ``report.json`` and ``--json``: unavailable values are the string ``"n/a"``."""
        per_class = {}
        for name in self.class_names:
            per_class[name] = {
                "instances": self.class_instances[name],
                "segm": self.segm.per_class[name] if self.segm else NA,
                "bbox": self.bbox.per_class[name] if self.bbox else NA,
                "matching": self.matching.per_class[name],
            }
        m = self.matching
        return _na(
            {
                "images": self.images,
                "instances": self.instances,
                "predictions": self.predictions,
                "classes": list(self.class_names),
                "segm": self.segm.summary if self.segm else NA,
                "bbox": self.bbox.summary if self.bbox else NA,
                "per_class": per_class,
                "matching": {
                    "iou_type": m.iou_type,
                    "score_threshold": m.score_threshold,
                    "iou_threshold": m.iou_threshold,
                    "precision": m.precision,
                    "recall": m.recall,
                    "f1": m.f1,
                    "mean_mask_iou": m.mean_iou if m.iou_type == "segm" else NA,
                    "mean_box_iou": m.mean_iou if m.iou_type == "bbox" else NA,
                    "tp": m.tp,
                    "fp": m.fp,
                    "fn": m.fn,
                    "confusion_matrix": {
                        "labels": ["background", *self.class_names],
                        "rows": "true class",
                        "columns": "predicted class",
                        "matrix": m.confusion.tolist(),
                    },
                },
                "losses": self.losses if self.losses is not None else NA,
                "max_dets": self.config.max_dets,
                "notes": list(self.notes),
                "source": dict(self.source),
            }
        )


def _na(value: Any) -> Any:
    """``None`` -> ``"n/a"``, recursively."""
    if value is None:
        return NA
    if isinstance(value, dict):
        return {k: _na(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_na(v) for v in value]
    return value


def evaluate_results(
    records: list[Record],
    class_map: ClassMap,
    results: list[dict],
    with_masks: bool,
    config: EvaluationConfig = EvaluationConfig(),
    notes: list[str] | None = None,
) -> Evaluation:
    """Evaluate checked COCO ``results`` (see :func:`.predictions.check_predictions`) on ``records``.

    ``with_masks``: the results carry ``segmentation`` RLEs; mask metrics need them and a dataset with masks.
    """
    notes = list(notes or [])
    gt = records_to_coco(records, class_map)
    gt_masks = dataset_has_masks(records)
    if not gt_masks:
        notes.append("The dataset has boxes only: mask metrics (segm) are not available; box metrics are.")
    if not results:
        notes.append("There are no predictions: every AP, AR and recall is 0.")
    bbox = coco_evaluate(gt, results, "bbox", config.max_dets)
    segm = coco_evaluate(gt, results, "segm", config.max_dets) if gt_masks and with_masks else None
    matching = match_predictions(
        gt,
        results,
        use_masks=gt_masks and with_masks,
        score_threshold=config.score_threshold,
        iou_threshold=config.iou_threshold,
    )
    counted = [a for a in gt["annotations"] if not a["iscrowd"]]
    class_instances = {n: 0 for n in class_map.names}
    for a in counted:
        class_instances[class_map.name(a["category_id"])] += 1
    return Evaluation(
        images=len(records),
        instances=len(counted),
        predictions=len(results),
        class_names=class_map.names,
        class_instances=class_instances,
        config=config,
        bbox=bbox,
        segm=segm,
        matching=matching,
        notes=notes,
    )


def evaluate_instances(
    records: list[Record],
    class_map: ClassMap,
    predictions: list[Instances],
    config: EvaluationConfig = EvaluationConfig(),
) -> Evaluation:
    """Evaluate one :class:`~instaseg.core.Instances` per record (same order; ``scores`` required, labels in
    ``class_map``'s 1..K; masks at the record's size, or ``None`` for boxes only)."""
    results, with_masks = _coco_results(records, class_map, predictions)
    notes = [] if with_masks else ["The model predicted boxes only: mask metrics are not available."]
    return evaluate_results(records, class_map, results, with_masks, config, notes)


def _coco_results(
    records: list[Record], class_map: ClassMap, predictions: list[Instances]
) -> tuple[list[dict], bool]:
    """COCO results of one ``Instances`` per record (checked against it), and whether they all carry masks."""
    if len(predictions) != len(records):
        raise ValueError(f"{len(predictions)} predictions for {len(records)} records; give one per record")
    results: list[dict] = []
    with_masks = True
    for record, instances in zip(records, predictions, strict=True):
        if not instances.has_masks:
            with_masks = with_masks and len(instances) == 0
        elif instances.image_size != (record.height, record.width):
            raise ValueError(
                f"masks of {record.file_name} are {instances.image_size} (H, W), the image is "
                f"({record.height}, {record.width}); predict at the image's size"
            )
        if len(instances) and instances.labels.max() > class_map.num_classes:
            raise ValueError(
                f"prediction label {instances.labels.max()} on {record.file_name} is outside "
                f"1..{class_map.num_classes} ({', '.join(class_map.names)})"
            )
        results.extend(instances_to_coco_results(instances, record.image_id))
    if not with_masks:
        for r in results:
            r.pop("segmentation", None)
    return results, with_masks


def predict_records(
    predictor,
    records: list[Record],
    label_map: dict[int, int] | None = None,
    progress: Callable[[int], None] | None = None,
    lanes: int = 1,
) -> list[Instances]:
    """Predictions of ``predictor`` (:class:`~instaseg.model.predictor.Predictor`) on each record's image.

    Args:
        label_map: model label -> dataset label (the same class names in another order); identity if ``None``.
        progress: called with the number of images done after each one.
        lanes: images predicted at once (:func:`~instaseg.model.lanes.in_lanes`; the caller sets torch's
            threads per lane, :func:`~instaseg.model.lanes.lanes_for`).
    """
    from ..model.lanes import in_lanes

    lookup = None
    if label_map is not None:
        lookup = np.zeros(max(label_map) + 1, dtype=np.int64)
        for model_label, data_label in label_map.items():
            lookup[model_label] = data_label

    def predict(record: Record) -> Instances:
        return predictor.predict_arrays([load_image(record.image)])[0]

    predictions = []
    for done, (_, predicted) in enumerate(in_lanes(predict, records, lanes), start=1):
        instances = predicted.result()
        if lookup is not None:
            instances = Instances(
                instances.boxes,
                lookup[instances.labels],
                instances.masks,
                instances.scores,
                instances.image_size,
            )
        predictions.append(instances)
        if progress is not None:
            progress(done)
    return predictions


def mask_map(
    records: list[Record], class_map: ClassMap, predictions: list[Instances], max_dets: int = 100
) -> float | None:
    """Mask AP (COCO AP@[.50:.95]) for the training loop's validation and ``--select map``; box AP when the
    dataset or the predictions have boxes only; ``None`` when undefined (no ground truth at all)."""
    results, with_masks = _coco_results(records, class_map, predictions)
    iou_type = "segm" if with_masks and dataset_has_masks(records) else "bbox"
    return coco_evaluate(records_to_coco(records, class_map), results, iou_type, max_dets).summary["AP"]
