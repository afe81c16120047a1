"""Plain-language accuracy next to mAP: precision, recall and F1 at one IoU and one score threshold, the mean
mask IoU of matched instances, and a confusion matrix with background.

Predictions with ``score >= score_threshold`` are matched greedily, highest score first, each to the unmatched
ground-truth instance of highest IoU (at least ``iou_threshold``), as COCO does at one IoU:

- **precision / recall / F1** match within a class (a true positive has the right class);
- the **confusion matrix** matches across classes, so that a right object with the wrong class shows up
  off the diagonal instead of as one miss plus one false alarm.

Crowd regions are not objects to find: a prediction that falls on one (IoU over the prediction's own area
at least ``iou_threshold``) is neither true nor false, as in COCO.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from pycocotools import mask as coco_mask

from ..masks import rle_for_pycocotools


@dataclass
class MatchResult:
    """Counts and rates at one score threshold.

    Attributes:
        iou_type: ``"segm"`` (mask IoU) or ``"bbox"`` (box IoU), what the matching used.
        score_threshold, iou_threshold: the thresholds used.
        tp, fp, fn: true positives, false positives, missed ground truth, all classes.
        per_class: class name -> ``{"tp", "fp", "fn", "precision", "recall", "f1"}``.
        mean_iou: mean IoU (of ``iou_type``) of the true-positive pairs; ``None`` when there is none.
        confusion: ``(K+1, K+1)`` int64, rows the true class, columns the predicted class, index 0 the
            background (row 0: false alarms; column 0: missed objects) and i the label i.
    """

    iou_type: str
    score_threshold: float
    iou_threshold: float
    tp: int
    fp: int
    fn: int
    per_class: dict[str, dict]
    mean_iou: float | None
    confusion: np.ndarray

    @property
    def precision(self) -> float | None:
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float | None:
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> float | None:
        return _f1(self.tp, self.fp, self.fn)


def _ratio(a: int, b: int) -> float | None:
    return a / b if b else None


def _f1(tp: int, fp: int, fn: int) -> float | None:
    return _ratio(2 * tp, 2 * tp + fp + fn)


def match_predictions(
    gt: dict, results: list[dict], use_masks: bool, score_threshold: float = 0.5, iou_threshold: float = 0.5
) -> MatchResult:
    """Match checked COCO ``results`` to the canonical COCO ``gt`` of the evaluated images.

    ``use_masks``: compare ``segmentation`` RLEs (both sides must have them) instead of ``bbox``.
    """
    names = [c["name"] for c in gt["categories"]]
    k = len(names)
    truths, preds = defaultdict(list), defaultdict(list)
    for a in gt["annotations"]:
        truths[a["image_id"]].append(a)
    for r in results:
        if r["score"] >= score_threshold:
            preds[r["image_id"]].append(r)

    tp, fp, fn = np.zeros(k + 1, np.int64), np.zeros(k + 1, np.int64), np.zeros(k + 1, np.int64)
    confusion = np.zeros((k + 1, k + 1), np.int64)
    matched_ious: list[float] = []
    key = "segmentation" if use_masks else "bbox"
    for image in gt["images"]:
        gts = truths.get(image["id"], [])
        dts = sorted(preds.get(image["id"], []), key=lambda r: -r["score"])
        gt_labels = np.array([a["category_id"] for a in gts], np.int64)
        dt_labels = np.array([r["category_id"] for r in dts], np.int64)
        crowd = np.array([bool(a["iscrowd"]) for a in gts], bool)
        ious = _ious(dts, gts, key, crowd)  # (D, G); over the prediction's area for crowd columns

        same_class = dt_labels[:, None] == gt_labels[None, :]
        hits, ignored = _greedy(ious, same_class, crowd, iou_threshold)
        for d, g in hits.items():
            tp[dt_labels[d]] += 1
            matched_ious.append(float(ious[d, g]))
        for d in range(len(dts)):
            if d not in hits and d not in ignored:
                fp[dt_labels[d]] += 1
        found = set(hits.values())
        for g in range(len(gts)):
            if not crowd[g] and g not in found:
                fn[gt_labels[g]] += 1

        hits, ignored = _greedy(ious, np.ones_like(same_class), crowd, iou_threshold)
        for d, g in hits.items():
            confusion[gt_labels[g], dt_labels[d]] += 1
        for d in range(len(dts)):
            if d not in hits and d not in ignored:
                confusion[0, dt_labels[d]] += 1
        found = set(hits.values())
        for g in range(len(gts)):
            if not crowd[g] and g not in found:
                confusion[gt_labels[g], 0] += 1

    per_class = {}
    for label, name in enumerate(names, start=1):
        t, f, m = int(tp[label]), int(fp[label]), int(fn[label])
        per_class[name] = {
            "tp": t,
            "fp": f,
            "fn": m,
            "precision": _ratio(t, t + f),
            "recall": _ratio(t, t + m),
            "f1": _f1(t, f, m),
        }
    return MatchResult(
        iou_type="segm" if use_masks else "bbox",
        score_threshold=score_threshold,
        iou_threshold=iou_threshold,
        tp=int(tp.sum()),
        fp=int(fp.sum()),
        fn=int(fn.sum()),
        per_class=per_class,
        mean_iou=float(np.mean(matched_ious)) if matched_ious else None,
        confusion=confusion,
    )


def _ious(dts: list[dict], gts: list[dict], key: str, crowd: np.ndarray) -> np.ndarray:
    """IoU ``(D, G)`` float64 of predictions against ground truth (pycocotools semantics for crowd)."""
    if not dts or not gts:
        return np.zeros((len(dts), len(gts)))
    if key == "segmentation":
        d = [rle_for_pycocotools(r["segmentation"]) for r in dts]
        g = [rle_for_pycocotools(a["segmentation"]) for a in gts]
    else:
        d = [list(r["bbox"]) for r in dts]
        g = [list(a["bbox"]) for a in gts]
    return np.asarray(coco_mask.iou(d, g, [int(c) for c in crowd]), dtype=np.float64).reshape(
        len(dts), len(gts)
    )


def _greedy(
    ious: np.ndarray, allowed: np.ndarray, crowd: np.ndarray, threshold: float
) -> tuple[dict[int, int], set[int]]:
    """Predictions (rows, in score order) -> matched ground truth column; and the rows ignored on crowds."""
    hits: dict[int, int] = {}
    ignored: set[int] = set()
    taken = np.zeros(ious.shape[1], bool)
    for d in range(ious.shape[0]):
        candidates = np.where(allowed[d] & ~crowd & ~taken, ious[d], -1.0)
        if candidates.size and candidates.max() >= threshold:
            g = int(candidates.argmax())
            hits[d] = g
            taken[g] = True
        elif np.any(allowed[d] & crowd & (ious[d] >= threshold)):
            ignored.add(d)
    return hits, ignored
