"""How unsure the model is about one image: the number Label Studio sorts tasks by to pick the next to label.

:func:`predict_with_uncertainty` predicts an image and its horizontal mirror with the same model (any
``image -> Instances`` callable: :meth:`~instaseg.model.predictor.Predictor.predict`,
:meth:`~instaseg.app.service.ModelService.predict`), maps the mirror's instances back
(:func:`flip_instances`), pairs the two sets by mask IoU and combines two signals, each in ``[0, 1]``:

- **score ambiguity**: detections whose score is near ``decision_threshold`` (0.5) are the ones the model
  cannot decide on: ``1 - |s - t| / max(t, 1 - t)`` per detection (1 at ``s = t``, 0 at ``s`` = 0 or 1);
- **flip disagreement**: ``1 - IoU`` between a detection and its mirror twin (1 when it has none), so
  objects the model sees only from one side, or outlines that move with the viewpoint, count.

Both are averaged over the detections of either view that score at least ``min_score`` (0.4), weighted
by their scores (a faint detection matters less than a confident one); the uncertainty is their mean (the
score term alone with ``flip=False``, at half the cost). An image where neither view finds anything
gets 1.0: the model has nothing to offer there, so it is worth a person's look.

The Label Studio prediction ``score`` is ``1 - uncertainty`` (:func:`prediction_score`): Label Studio's
convention is "higher = more confident", so sorting the Data Manager's *Prediction score* column
ascending lists the least certain images first. That column averages the predictions of the model version
selected for prelabeling only (``instaseg label-studio-predict --use-for-prelabeling`` selects it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from pycocotools import mask as coco_mask

from ..core import Instances
from ..masks import Masks, rle_for_pycocotools

DECISION_THRESHOLD = 0.5
# Detections below this score are not counted. On the bundled sample with a partly trained model (40
# held-out images), counting all detections (score >= 0.05, ~240 per image) ranked the images no better
# than chance (Spearman -0.14 between uncertainty and mask IoU); from 0.4 up, -0.59.
MIN_SCORE = 0.4


@dataclass(frozen=True)
class Uncertainty:
    """How unsure the model is about one image; every field in ``[0, 1]``.

    Attributes:
        value: the combined uncertainty (higher = less sure).
        score_ambiguity: score-weighted mean ambiguity of the detection scores.
        flip_disagreement: score-weighted mean ``1 - IoU`` with the mirror view, ``None`` without ``flip``.
        detections: detections counted (score >= ``min_score``) in the original view;
            ``flip_detections`` in the mirror view.
    """

    value: float
    score_ambiguity: float
    flip_disagreement: float | None
    detections: int
    flip_detections: int | None = None


def flip_instances(instances: Instances) -> Instances:
    """The instances of a horizontally mirrored image, in that mirror's pixels (applying it twice gives
    the original): boxes xyxy ``x -> W - x``, masks mirrored (crops stay box-local)."""
    height, width = instances.image_size or (0, 0)
    boxes = instances.boxes.copy()
    boxes[:, [0, 2]] = width - instances.boxes[:, [2, 0]]
    masks = None
    if instances.masks is not None:
        crops, origins = [], []
        for i in range(len(instances)):
            y0, x0, crop = instances.mask_crop(i)
            crops.append(np.ascontiguousarray(crop[:, ::-1]))
            origins.append((y0, width - x0 - crop.shape[1]))
        masks = Masks.from_crops(crops, np.array(origins, np.int64).reshape(-1, 2), height, width)
    return Instances(boxes, instances.labels.copy(), masks, instances.scores, (height, width))


def mask_ious(a: Instances, b: Instances) -> np.ndarray:
    """``(len(a), len(b))`` float64 mask IoU (box IoU for box-only instances) of two sets on one image."""
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    if a.has_masks and b.has_masks:
        first = [rle_for_pycocotools(a.rle(i)) for i in range(len(a))]
        second = [rle_for_pycocotools(b.rle(i)) for i in range(len(b))]
    else:
        first, second = _xywh(a.boxes), _xywh(b.boxes)
    ious = coco_mask.iou(first, second, [0] * len(b))
    return np.asarray(ious, dtype=np.float64).reshape(len(a), len(b))


def _xywh(boxes: np.ndarray) -> list[list[float]]:
    return [[float(x0), float(y0), float(x1 - x0), float(y1 - y0)] for x0, y0, x1, y1 in boxes]


def match_by_iou(a: Instances, b: Instances) -> tuple[np.ndarray, np.ndarray]:
    """For each instance of ``a`` (highest score first), the IoU with its twin in ``b``: the unpaired
    instance of ``b`` with the same label and the highest IoU (> 0); 0 when there is none. Also returns
    which ``b`` instances were paired. ``((len(a),) float64, (len(b),) bool)``."""
    ious = mask_ious(a, b)
    best = np.zeros(len(a))
    taken = np.zeros(len(b), dtype=bool)
    order = np.argsort(-a.scores) if a.scores is not None else np.arange(len(a))
    for i in order:
        candidates = np.where((b.labels == a.labels[i]) & ~taken, ious[i], 0.0)
        if candidates.size and candidates.max() > 0:
            j = int(candidates.argmax())
            best[i], taken[j] = candidates[j], True
    return best, taken


def _ambiguity(scores: np.ndarray, threshold: float) -> np.ndarray:
    return 1.0 - np.abs(scores - threshold) / max(threshold, 1.0 - threshold)


def image_uncertainty(
    original: Instances,
    mirrored: Instances | None = None,
    decision_threshold: float = DECISION_THRESHOLD,
    min_score: float = MIN_SCORE,
) -> Uncertainty:
    """The :class:`Uncertainty` of one image from its predictions (scores required) and, when given, the
    predictions of its mirror image already mapped back (:func:`flip_instances`).

    Only detections scoring >= ``min_score`` count: below it lie the model's hundreds of faint guesses
    on a dense image, whose number depends on the detection cap more than on the image. A counted
    detection's twin in the other view may have any score.
    """
    counted = original[_scores(original) >= min_score]
    if mirrored is None:
        if not len(counted):
            return Uncertainty(1.0, 1.0, None, 0)
        scores = counted.scores.astype(np.float64)
        ambiguity = _weighted(_ambiguity(scores, decision_threshold), scores)
        return Uncertainty(ambiguity, ambiguity, None, len(counted))
    counted_mirror = mirrored[_scores(mirrored) >= min_score]
    if not len(counted) and not len(counted_mirror):
        return Uncertainty(1.0, 1.0, 1.0, 0, 0)
    # Each counted detection of either view, with the IoU of its twin in the other view.
    twins = np.concatenate([match_by_iou(counted, mirrored)[0], match_by_iou(counted_mirror, original)[0]])
    scores = np.concatenate([counted.scores, counted_mirror.scores]).astype(np.float64)
    ambiguity = _weighted(_ambiguity(scores, decision_threshold), scores)
    flip = _weighted(1.0 - twins, scores)
    return Uncertainty((ambiguity + flip) / 2, ambiguity, flip, len(counted), len(counted_mirror))


def _scores(instances: Instances) -> np.ndarray:
    if instances.scores is None:
        raise ValueError("uncertainty needs predicted instances with scores")
    return instances.scores.astype(np.float64)


def _weighted(values: np.ndarray, weights: np.ndarray) -> float:
    total = float(weights.sum())
    if total <= 0:
        return float(values.mean()) if len(values) else 1.0
    return float(np.clip((values * weights).sum() / total, 0.0, 1.0))


def predict_with_uncertainty(
    predict: Callable[[np.ndarray], Instances],
    image: np.ndarray,
    flip: bool = True,
    decision_threshold: float = DECISION_THRESHOLD,
    min_score: float = MIN_SCORE,
) -> tuple[Instances, Uncertainty]:
    """Predict an RGB uint8 ``(H, W, 3)`` image with ``predict`` and measure how unsure it is.

    Returns the instances of the image itself (what is shown to a person) and its :class:`Uncertainty`.
    ``flip`` predicts the mirror image too (twice the time).
    """
    instances = predict(image)
    mirrored = None
    if flip:
        mirrored = flip_instances(predict(np.ascontiguousarray(image[:, ::-1])))
    return instances, image_uncertainty(instances, mirrored, decision_threshold, min_score)


def prediction_score(uncertainty: Uncertainty) -> float:
    """The Label Studio prediction ``score``: ``1 - uncertainty`` (sort ascending: least certain first)."""
    return round(1.0 - uncertainty.value, 5)
