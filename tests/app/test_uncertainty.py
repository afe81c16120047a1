"""The uncertainty score: mirroring instances, pairing by mask IoU, and the two signals, with a real model."""

from __future__ import annotations

import numpy as np
import pytest

from instaseg.app.uncertainty import (
    MIN_SCORE,
    flip_instances,
    image_uncertainty,
    match_by_iou,
    predict_with_uncertainty,
    prediction_score,
)
from instaseg.core import Instances
from instaseg.images import load_image
from instaseg.masks import Masks
from instaseg.model.predictor import Predictor


def square_instances(boxes: list[tuple[int, int, int, int]], scores: list[float], size=(40, 60)) -> Instances:
    masks = np.zeros((len(boxes), *size), dtype=bool)
    for mask, (x0, y0, x1, y1) in zip(masks, boxes, strict=True):
        mask[y0:y1, x0:x1] = True
    return Instances(np.array(boxes, np.float32).reshape(-1, 4), np.ones(len(boxes)), masks, np.array(scores))


@pytest.fixture(scope="module")
def predicted(checkpoint, sample_image):
    """A real model's predictions on a real image (random weights: blobs with scores ~0.75)."""
    predictor = Predictor(checkpoint, device="cpu")
    return predictor, load_image(str(sample_image))


def test_flipping_mirrors_boxes_and_masks_and_twice_is_the_identity(predicted):
    predictor, image = predicted
    instances = predictor.predict(image)
    assert len(instances) > 0
    mirrored = flip_instances(instances)
    assert np.array_equal(mirrored.dense_masks(), instances.dense_masks()[:, :, ::-1])
    width = image.shape[1]
    assert np.allclose(mirrored.boxes[:, [0, 2]], width - instances.boxes[:, [2, 0]])
    back = flip_instances(mirrored)
    assert np.array_equal(back.dense_masks(), instances.dense_masks())
    assert np.allclose(back.boxes, instances.boxes)


def test_predict_with_uncertainty_returns_the_plain_prediction_and_a_bounded_score(predicted):
    predictor, image = predicted
    instances, uncertainty = predict_with_uncertainty(predictor.predict, image)
    plain = predictor.predict(image)
    assert np.array_equal(instances.boxes, plain.boxes) and np.array_equal(instances.scores, plain.scores)
    assert uncertainty.detections == int((plain.scores >= MIN_SCORE).sum()) > 0
    assert uncertainty.flip_detections is not None
    assert 0 <= uncertainty.value <= 1 and 0 < uncertainty.flip_disagreement <= 1
    assert prediction_score(uncertainty) == pytest.approx(1 - uncertainty.value, abs=1e-5)
    alone = predict_with_uncertainty(predictor.predict, image, flip=False)[1]
    assert alone.flip_disagreement is None and alone.value == image_uncertainty(plain).score_ambiguity


def test_identical_views_agree_and_a_moved_outline_disagrees():
    a = square_instances([(0, 0, 10, 10), (20, 10, 40, 30)], [0.9, 0.8])
    assert image_uncertainty(a, a).flip_disagreement == pytest.approx(0.0)
    shifted = square_instances([(5, 0, 15, 10), (20, 10, 40, 30)], [0.9, 0.8])
    ious, paired = match_by_iou(a, shifted)
    assert ious == pytest.approx([5 / 15, 1.0]) and paired.all()
    expected = (0.9 * (1 - 5 / 15) + 0.8 * 0) / 1.7
    assert image_uncertainty(a, shifted).flip_disagreement == pytest.approx(expected)
    # An object only one view sees disagrees fully, weighted by its score.
    extra = square_instances([(0, 0, 10, 10), (20, 10, 40, 30), (45, 0, 55, 10)], [0.9, 0.8, 0.5])
    assert image_uncertainty(a, extra).flip_disagreement == pytest.approx(0.5 / 3.9)


@pytest.mark.parametrize(
    "scores, ambiguity",
    [([0.5], 1.0), ([1.0], 0.0), ([0.75], 0.5), ([0.9, 0.5], (0.9 * 0.2 + 0.5 * 1.0) / 1.4)],
)
def test_scores_near_the_decision_threshold_are_ambiguous(scores, ambiguity):
    boxes = [(i * 10, 0, i * 10 + 5, 5) for i in range(len(scores))]
    result = image_uncertainty(square_instances(boxes, scores))
    assert result.score_ambiguity == pytest.approx(ambiguity) and result.value == pytest.approx(ambiguity)


def test_faint_detections_do_not_count():
    boxes = [(0, 0, 5, 5), (10, 0, 15, 5)]
    faint = image_uncertainty(square_instances(boxes, [0.9, 0.1]))
    assert faint.detections == 1 and faint.value == pytest.approx(0.2)
    only_faint = square_instances(boxes, [0.2, 0.1])
    assert image_uncertainty(only_faint, only_faint).value == 1.0


def test_an_image_where_nothing_is_found_is_worth_a_look():
    empty = Instances(np.zeros((0, 4)), np.zeros(0), Masks.empty(40, 60), np.zeros(0))
    assert image_uncertainty(empty).value == 1.0
    assert image_uncertainty(empty, empty).value == 1.0
