"""ImagePrompts: box and click prompts through the one engine, on a real nuclei image with the light model."""

from __future__ import annotations

import numpy as np
import pytest

from instaseg.images import load_image
from instaseg.model.predictor import Predictor
from instaseg.model.prompts import ImagePrompts

from ..predict.conftest import save_random_checkpoint


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    path = tmp_path_factory.mktemp("prompts") / "random.pt"
    save_random_checkpoint(path, image_size=128)
    return Predictor(path, device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def image(datasets):
    folder = datasets / "dsb2018_nuclei_sample" / "stage1_train"
    path = next((sorted(folder.iterdir())[0] / "images").glob("*.png"))
    return load_image(str(path))[:, :200]  # (256, 200): not square, so the resize is not a plain 2x


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Mask IoU; two empty masks agree (1.0)."""
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


def test_detections_are_the_predictors_prediction(predictor, image):
    expected = predictor.predict(image)
    found = ImagePrompts(predictor, image).detections()
    assert len(found) == len(expected) > 0
    np.testing.assert_array_equal(found.boxes, expected.boxes)
    np.testing.assert_array_equal(found.labels, expected.labels)
    np.testing.assert_array_equal(found.masks.to_dense(), expected.masks.to_dense())


def test_box_of_a_detection_gives_its_mask(predictor, image):
    prompts = ImagePrompts(predictor, image)
    detections = prompts.detections()
    answer = prompts.boxes(detections.boxes, [int(label) for label in detections.labels])
    assert len(answer) == len(detections)
    np.testing.assert_allclose(answer.boxes, detections.boxes, atol=1e-4)
    np.testing.assert_array_equal(answer.labels, detections.labels)
    assert answer.image_size == image.shape[:2]
    ious = [iou(answer.masks.mask(i), detections.masks.mask(i)) for i in range(len(answer))]
    assert min(ious) >= 0.95, (
        ious
    )  # same features, same heads: only the box's round trip to the input differs


def test_box_label_given_or_best(predictor, image):
    prompts = ImagePrompts(predictor, image)
    box = np.array([[40.0, 60.0, 110.0, 150.0]])
    best = prompts.boxes(box)
    other = 3 - int(best.labels[0])  # the other of the two classes
    forced = prompts.boxes(np.repeat(box, 2, axis=0), [other, None])
    assert forced.labels.tolist() == [other, best.labels[0]]
    assert forced.scores[1] == pytest.approx(best.scores[0], abs=1e-6)
    assert forced.scores[0] < best.scores[0]  # the best class is the most probable one
    assert 0 <= forced.scores.min() and forced.scores.max() <= 1
    # The mask lies in the box grown by the paste's one-pixel border (28 -> 30 cells).
    y0, x0, crop = best.masks.crop(0)
    assert crop.any() and y0 >= 60 - 4 and x0 >= 40 - 3
    assert y0 + crop.shape[0] <= 150 + 4 and x0 + crop.shape[1] <= 110 + 4


def test_features_computed_once(predictor, image, monkeypatch):
    calls = []
    original = predictor.engine.extract_features
    monkeypatch.setattr(
        predictor.engine, "extract_features", lambda images: calls.append(1) or original(images)
    )
    prompts = ImagePrompts(predictor, image)
    prompts.boxes([[10, 10, 60, 60]])
    prompts.click([[30, 30]], [True])
    prompts.detections()
    prompts.boxes([[100, 100, 150, 200]])
    assert len(calls) == 1
    assert prompts.feature_bytes > 0


def _clicked(detections):
    """A pixel (x, y) in the first non-empty detection mask, and the index of the highest-scoring
    detection holding it (computed from the full-size masks)."""
    dense = detections.masks.to_dense()  # (N, H, W)
    first = int(np.flatnonzero(dense.reshape(len(dense), -1).any(axis=1))[0])
    rows, cols = np.nonzero(dense[first])
    x, y = int(cols[len(cols) // 2]), int(rows[len(rows) // 2])
    return (x + 0.5, y + 0.5), int(np.flatnonzero(dense[:, y, x])[0])


def test_positive_click_gives_best_detection_holding_it(predictor, image):
    prompts = ImagePrompts(predictor, image)
    detections = prompts.detections()
    (x, y), best = _clicked(detections)
    answer = prompts.click([[x, y]], [True])
    assert len(answer) == 1
    np.testing.assert_array_equal(answer.boxes[0], detections.boxes[best])
    assert answer.masks.mask(0)[int(y), int(x)]
    # Two clicks on the same object: the object once.
    assert len(prompts.click([[x, y], [x, y]], [True, True])) == 1


def test_negative_click_vetoes_the_candidate(predictor, image):
    prompts = ImagePrompts(predictor, image)
    detections = prompts.detections()
    (x, y), _ = _clicked(detections)
    answer = prompts.click([[x, y], [x, y]], [True, False])
    # Every detection holding (x, y) also holds the negative click: the answer comes from the proposals and
    # its mask avoids the negative click.
    assert len(answer) == 1
    for i in range(len(answer)):
        assert not answer.masks.mask(i)[int(y), int(x)]
        assert not any(np.array_equal(answer.boxes[i], b) for b in detections.boxes)


def test_click_with_no_detection_uses_a_proposal(tmp_path, image):
    path = tmp_path / "strict.pt"
    save_random_checkpoint(path, image_size=128)
    strict = Predictor(path, device="cpu", precision="fp32", score_threshold=1.0)  # no detection survives
    prompts = ImagePrompts(strict, image)
    assert len(prompts.detections()) == 0
    answer = prompts.click([[100, 128]], [True])
    assert len(answer) == 1
    box = answer.boxes[0]
    assert box[0] <= 100 <= box[2] and box[1] <= 128 <= box[3]  # a proposal holding the click
    assert 0 <= answer.scores[0] <= 1 and answer.labels[0] in (1, 2)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda p: p.boxes([[np.nan, 0, 10, 10]]), "NaN"),
        (lambda p: p.boxes([[10, 10, 10, 40]]), "no area"),
        (lambda p: p.boxes([[300, 300, 400, 400]]), "no area"),
        (lambda p: p.boxes([[0, 0, 10, 10]], [3]), "not a class"),
        (lambda p: p.boxes([[0, 0, 10, 10]], [True]), "not a class"),
        (lambda p: p.boxes([[0, 0, 10, 10]], [1, 2]), "labels"),
        (lambda p: p.boxes([["a", 0, 10, 10]]), "numbers"),
        (lambda p: p.click([[-1, 5]], [True]), "outside"),
        (lambda p: p.click([[5, 5]], [1]), "booleans"),
    ],
)
def test_bad_prompts_are_one_line_errors(predictor, image, call, message):
    with pytest.raises(ValueError, match=message) as error:
        call(ImagePrompts(predictor, image))
    assert "\n" not in str(error.value)


def test_empty_prompts(predictor, image):
    prompts = ImagePrompts(predictor, image)
    assert len(prompts.boxes(np.zeros((0, 4)))) == 0
    assert len(prompts.click(np.zeros((0, 2)), np.zeros(0, bool))) == 0
    assert len(prompts.click([[5, 5]], [False])) == 0
