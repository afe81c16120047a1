"""COCO metrics (AP, AP50, AP75, AP small/medium/large, AR@1/10/max) with faster-coco-eval.

Ground truth is the *canonical COCO* of a dataset, built from the records already in memory by
:func:`instaseg.formats.coco_export.records_to_coco` (no image is read again): image ``id`` =
``Record.image_id`` (1-based), ``category_id`` = the label 1..K. Predictions are COCO results
(:func:`instaseg.formats.coco_export.instances_to_coco_results`):
``{"image_id", "category_id", "score", "bbox": [x, y, w, h], "segmentation": compressed RLE}``.

For mask AP, detections carry no ``bbox`` so that the small/medium/large ranges use the mask area, the
same choice as detectron2 (pycocotools' ``loadRes`` would take the box area when a box is present).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from faster_coco_eval import COCO, COCOeval_faster
from pycocotools import mask as coco_mask

from ..core import Record
from ..masks import rle_for_pycocotools

IOU_TYPES = ("bbox", "segm")

# Summary names in the order a person reads them; AR names depend on max_dets (see summary_names).
_AREAS = (("s", "small"), ("m", "medium"), ("l", "large"))


def _silent(*args, **kwargs) -> None:
    """faster-coco-eval reports progress through a print function; library code stays quiet."""


def dataset_has_masks(records: list[Record]) -> bool:
    """True when at least one (non-crowd or crowd) annotation of the records has a mask."""
    return any(a.has_mask for r in records for a in r.annotations)


def summary_names(max_dets: int) -> list[str]:
    """Names of the summary metrics: AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR<max_dets>, ARs, ARm, ARl."""
    return (
        ["AP", "AP50", "AP75"]
        + [f"AP{a}" for a, _ in _AREAS]
        + [f"AR{m}" for m in _max_dets_list(max_dets)]
        + [f"AR{a}" for a, _ in _AREAS]
    )


def _max_dets_list(max_dets: int) -> list[int]:
    if int(max_dets) < 1:
        raise ValueError(f"max_dets must be at least 1, got {max_dets}")
    # AR is reported at 1, 10 and max_dets detections; below 10, at 1 and max_dets.
    return [m for m in (1, 10) if m < int(max_dets)] + [int(max_dets)]


@dataclass
class CocoMetrics:
    """COCO metrics of one IoU type.

    Attributes:
        iou_type: ``"bbox"`` or ``"segm"``.
        summary: name (see :func:`summary_names`) -> value in [0, 1], or ``None`` where undefined (no
            ground truth in that area range).
        per_class: class name -> ``{"AP", "AP50", "AP75"}`` (``None`` for a class without ground truth).
        recall_thresholds: ``(101,)`` float, the recall points of the precision-recall curves.
        precision: ``(T, 101, K)`` interpolated precision at IoU thresholds ``iou_thresholds`` (T=10), area
            "all", ``max_dets`` detections; -1 where a class has no ground truth.
        iou_thresholds: ``(T,)`` float, 0.50:0.95.
    """

    iou_type: str
    summary: dict[str, float | None]
    per_class: dict[str, dict[str, float | None]]
    recall_thresholds: np.ndarray
    precision: np.ndarray
    iou_thresholds: np.ndarray


def _detections(results: list[dict], iou_type: str) -> list[dict]:
    """Result dicts shaped as faster-coco-eval wants them, without mutating ``results``."""
    detections = []
    for i, r in enumerate(results, start=1):
        d = {
            "id": i,
            "image_id": r["image_id"],
            "category_id": r["category_id"],
            "score": float(r["score"]),
            "iscrowd": 0,
        }
        if iou_type == "bbox":
            d["bbox"] = list(r["bbox"])
            d["area"] = float(r["bbox"][2] * r["bbox"][3])
        else:
            rle = rle_for_pycocotools(r["segmentation"])
            d["segmentation"] = r["segmentation"]
            d["area"] = float(coco_mask.area(rle))
            d["bbox"] = [float(v) for v in coco_mask.toBbox(rle)]
        detections.append(d)
    return detections


def coco_evaluate(gt: dict, results: list[dict], iou_type: str, max_dets: int = 100) -> CocoMetrics:
    """Run COCO evaluation of ``results`` (checked COCO results) against ``gt`` (``records_to_coco``).

    Every image of ``gt`` is evaluated (an image without predictions counts its ground truth as missed).
    ``max_dets`` is the largest number of detections per image kept (AP uses it; AR is given at 1, 10 and
    ``max_dets``). Results equal pycocotools' on the same input.
    """
    if iou_type not in IOU_TYPES:
        raise ValueError(f"unknown IoU type {iou_type!r}; valid: {', '.join(IOU_TYPES)}")
    # Shallow copies: the evaluator writes keys ("ignore", "rle") into the annotation dicts it is given.
    ground = COCO(print_function=_silent)
    ground.dataset = {**gt, "annotations": [dict(a) for a in gt["annotations"]]}
    if iou_type == "bbox":
        for a in ground.dataset["annotations"]:
            a.pop("segmentation", None)
        # The area that decides small/medium/large stays the mask area, as in pycocotools.
    ground.createIndex()
    detected = COCO(print_function=_silent)
    detected.dataset = {
        "images": gt["images"],
        "categories": gt["categories"],
        "annotations": _detections(results, iou_type),
    }
    detected.createIndex()

    evaluator = COCOeval_faster(ground, detected, iou_type, print_function=_silent)
    evaluator.params.maxDets = _max_dets_list(max_dets)
    evaluator.evaluate()
    evaluator.accumulate()
    return _metrics(evaluator, iou_type, gt["categories"])


def _mean(values: np.ndarray) -> float | None:
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else None


def _metrics(evaluator, iou_type: str, categories: list[dict]) -> CocoMetrics:
    params = evaluator.params
    precision = np.asarray(evaluator.eval["precision"])  # (T, R, K, A, M)
    recall = np.asarray(evaluator.eval["recall"])  # (T, K, A, M)
    ious = np.asarray(params.iouThrs)
    at50, at75 = int(np.argmin(abs(ious - 0.5))), int(np.argmin(abs(ious - 0.75)))
    area = {label: i for i, label in enumerate(params.areaRngLbl)}
    last = len(params.maxDets) - 1
    summary: dict[str, float | None] = {
        "AP": _mean(precision[:, :, :, area["all"], last]),
        "AP50": _mean(precision[at50, :, :, area["all"], last]),
        "AP75": _mean(precision[at75, :, :, area["all"], last]),
    }
    for short, label in _AREAS:
        summary[f"AP{short}"] = _mean(precision[:, :, :, area[label], last])
    for m, max_det in enumerate(params.maxDets):
        summary[f"AR{max_det}"] = _mean(recall[:, :, area["all"], m])
    for short, label in _AREAS:
        summary[f"AR{short}"] = _mean(recall[:, :, area[label], last])
    per_class = {}
    for k, category in enumerate(categories):
        p = precision[:, :, k, area["all"], last]
        per_class[category["name"]] = {"AP": _mean(p), "AP50": _mean(p[at50]), "AP75": _mean(p[at75])}
    return CocoMetrics(
        iou_type, summary, per_class, np.asarray(params.recThrs), precision[:, :, :, area["all"], last], ious
    )
