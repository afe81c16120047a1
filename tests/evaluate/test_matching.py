"""Precision/recall/F1, mean IoU and the confusion matrix on hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest

from instaseg.core import Instances
from instaseg.evaluate import evaluate_instances, match_predictions
from instaseg.formats.coco_export import records_to_coco
from instaseg.masks import mask_to_rle

from .factories import class_map, record_from_masks


def _masks(*boxes, size=(50, 80)):
    masks = np.zeros((len(boxes), *size), bool)
    for mask, (x0, y0, x1, y1) in zip(masks, boxes, strict=True):
        mask[y0:y1, x0:x1] = True
    return masks


def _predictions(masks, labels, scores):
    from instaseg.masks import masks_to_boxes

    return Instances(masks_to_boxes(masks), labels, masks, scores)


def test_counts_classes_background_and_threshold():
    truth = _masks((0, 0, 20, 20), (30, 0, 50, 20), (60, 20, 80, 40))
    record = record_from_masks(truth, [1, 1, 2])
    predicted = _masks((0, 0, 20, 20), (30, 0, 48, 20), (60, 20, 80, 40), (0, 30, 20, 50), (30, 30, 50, 50))
    # right; right (IoU 0.9); wrong class; false alarm; below the score threshold
    predictions = _predictions(predicted, [1, 1, 1, 2, 1], [0.9, 0.8, 0.7, 0.6, 0.3])
    result = evaluate_instances([record], class_map(2), [predictions]).matching
    assert (result.tp, result.fp, result.fn) == (2, 2, 1)
    assert result.per_class["person"] == {
        "tp": 2,
        "fp": 1,
        "fn": 0,
        "precision": 2 / 3,
        "recall": 1.0,
        "f1": 0.8,
    }
    assert result.per_class["other"]["recall"] == 0.0 and result.per_class["other"]["precision"] == 0.0
    assert result.mean_iou == pytest.approx((1.0 + 0.9) / 2)
    # rows: true (background, person, other); columns: predicted
    assert result.confusion.tolist() == [[0, 0, 1], [0, 2, 0], [0, 1, 0]]


def test_crowd_regions_are_neither_hit_nor_false_alarm():
    truth = _masks((0, 0, 40, 40), (50, 0, 70, 20))
    record = record_from_masks(truth, [1, 1])
    record.annotations[0].iscrowd = True
    predicted = _masks((5, 5, 20, 20), (50, 0, 70, 20))
    result = evaluate_instances(
        [record], class_map(1), [_predictions(predicted, [1, 1], [0.9, 0.9])]
    ).matching
    assert (result.tp, result.fp, result.fn) == (1, 0, 0)


def test_box_matching_when_masks_are_missing():
    truth = _masks((0, 0, 20, 20))
    gt = records_to_coco([record_from_masks(truth, [1])], class_map(1))
    results = [
        {
            "image_id": 1,
            "category_id": 1,
            "score": 0.9,
            "bbox": [0, 0, 20, 20],
            "segmentation": mask_to_rle(truth[0]),
        }
    ]
    result = match_predictions(gt, results, use_masks=False)
    assert result.iou_type == "bbox" and result.tp == 1 and result.mean_iou == pytest.approx(1.0)
