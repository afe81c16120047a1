"""COCO metrics: sanity on ground truth as predictions, and parity with pycocotools on real data."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from instaseg.core import Instances
from instaseg.evaluate import EvaluationConfig, coco_evaluate, evaluate_instances, mask_map
from instaseg.formats.coco_export import records_to_coco

from .factories import (
    class_map,
    ground_truth_as_predictions,
    jittered_results,
    pycocotools_metrics,
    shift,
    two_class,
)


def test_ground_truth_gives_ap_one(pennfudan):
    records = pennfudan[:20]
    result = evaluate_instances(records, class_map(1), ground_truth_as_predictions(records))
    for metrics in (result.segm, result.bbox):
        assert metrics.summary["AP"] == pytest.approx(1.0)
        assert metrics.summary["AP50"] == pytest.approx(1.0)
        assert metrics.summary["AR100"] == pytest.approx(1.0)
        assert metrics.per_class["person"]["AP"] == pytest.approx(1.0)
    assert result.matching.precision == result.matching.recall == 1.0
    assert result.matching.mean_iou == pytest.approx(1.0)


def test_no_predictions_gives_zero(pennfudan):
    records = pennfudan[:10]
    empty = [Instances.empty(r.height, r.width) for r in records]
    result = evaluate_instances(records, class_map(1), empty)
    assert result.segm.summary["AP"] == 0.0 and result.bbox.summary["AP"] == 0.0
    assert result.matching.recall == 0.0 and result.matching.fn == result.instances
    assert any("no predictions" in n for n in result.notes)


def test_shifted_prediction_is_strictly_between(pennfudan):
    records = pennfudan[:10]
    shifted = [shift(p, 4, 3) for p in ground_truth_as_predictions(records)]
    result = evaluate_instances(records, class_map(1), shifted)
    for metrics in (result.segm, result.bbox):
        assert 0.0 < metrics.summary["AP"] < 1.0
    assert 0.0 < result.matching.mean_iou < 1.0


def test_box_only_predictions_leave_segm_unavailable(pennfudan):
    records = pennfudan[:5]
    result = evaluate_instances(records, class_map(1), ground_truth_as_predictions(records, boxes_only=True))
    assert result.segm is None and result.bbox.summary["AP"] == pytest.approx(1.0)
    assert result.to_json()["segm"] == "n/a"
    assert result.matching.iou_type == "bbox"


def test_box_only_dataset(pennfudan):
    records = pennfudan[:5]
    predictions = ground_truth_as_predictions(records)
    boxes_only = copy.deepcopy(records)
    for record in boxes_only:
        for a in record.annotations:
            a.rle = None
    result = evaluate_instances(boxes_only, class_map(1), predictions)
    report = result.to_json()
    assert report["segm"] == "n/a" and report["bbox"]["AP"] == pytest.approx(1.0)
    assert report["per_class"]["person"]["segm"] == "n/a"
    assert any("boxes only" in n for n in result.notes)


def test_mask_map_for_training(pennfudan):
    records = pennfudan[:8]
    assert mask_map(records, class_map(1), ground_truth_as_predictions(records)) == pytest.approx(1.0)
    shifted = [shift(p, 6, 0) for p in ground_truth_as_predictions(records)]
    assert 0.0 < mask_map(records, class_map(1), shifted) < 1.0


@pytest.mark.parametrize("num_classes", [1, 2])
@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_parity_with_pycocotools(pennfudan, num_classes, iou_type):
    records = pennfudan if num_classes == 1 else two_class(pennfudan)
    gt = records_to_coco(records, class_map(num_classes))
    results = jittered_results(records, num_classes, seed=num_classes)
    ours = coco_evaluate(gt, results, iou_type)
    reference, reference_per_class = pycocotools_metrics(gt, results, iou_type)
    assert 0.1 < ours.summary["AP"] < 0.95  # a real, non-trivial case
    assert ours.summary.keys() == reference.keys()
    for name, value in reference.items():
        if value is None:
            assert ours.summary[name] is None, name
        else:
            assert ours.summary[name] == pytest.approx(value, abs=1e-4), name
    per_class = [ours.per_class[n]["AP"] for n in class_map(num_classes).names]
    assert per_class == pytest.approx(reference_per_class, abs=1e-4)
    if num_classes == 2:
        assert per_class[0] != pytest.approx(per_class[1], abs=1e-4)  # per-class values really differ


def test_parity_with_custom_max_dets(pennfudan):
    records = pennfudan[:60]
    gt = records_to_coco(records, class_map(1))
    results = jittered_results(records, 1, seed=5)
    ours = coco_evaluate(gt, results, "segm", max_dets=3)
    _, reference_per_class = pycocotools_metrics(gt, results, "segm", max_dets=3)
    assert list(ours.summary)[6:8] == ["AR1", "AR3"]
    assert ours.summary["AP"] == pytest.approx(reference_per_class[0], abs=1e-4)  # one class: AP = class AP
    assert ours.summary["AP"] < coco_evaluate(gt, results, "segm", max_dets=100).summary["AP"]


def test_evaluate_instances_checks_mask_size_and_labels(pennfudan):
    record = pennfudan[0]
    bad = Instances(np.zeros((1, 4)), [1], np.zeros((1, 5, 5), bool), [0.5])
    with pytest.raises(ValueError, match="image's size"):
        evaluate_instances([record], class_map(1), [bad])
    with pytest.raises(ValueError, match="outside 1..1"):
        evaluate_instances([record], class_map(1), [Instances(np.zeros((1, 4)), [2], None, [0.5])])


def test_config_max_dets_reaches_the_report(pennfudan):
    records = pennfudan[:3]
    result = evaluate_instances(
        records, class_map(1), ground_truth_as_predictions(records), EvaluationConfig(max_dets=300)
    )
    assert "AR300" in result.to_json()["bbox"] and result.to_json()["max_dets"] == 300
