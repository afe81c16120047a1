"""Masks for a person's prompts on one image: boxes and clicks, answered by the model's own heads.

The interactive path of the Label Studio backend (and ``bench/labelling_effort.py``'s smart box) runs
through the one :class:`~instaseg.model.predictor.Predictor` and its torch engine: the image is prepared
as the predictor prepares it (:func:`~instaseg.model.engine.prepare_image`, whole image, no tiles or TTA),
the backbone's features are computed once, and every later prompt runs only the RPN / ROI heads on them.

Stable API::

    prompts = ImagePrompts(predictor, image)          # image: RGB uint8 (H, W, 3); features computed here
    prompts.boxes(boxes_xyxy, labels=None) -> Instances
        # boxes_xyxy: (N, 4) float xyxy in the image's own pixels; labels: None, or N entries each an
        # int 1..K (the mask of that class) or None (the box head's best class). One row per box, in order:
        # box = the given box (clipped to the image), mask = the mask head's mask of that box pasted at the
        # predictor's mask threshold, label = given or best, score = that class's box-head probability.
    prompts.click(points_xy, positive) -> Instances
        # points_xy: (P, 2) float (x, y) in the image's pixels; positive: (P,) bool. See the rule below.
    prompts.detections() -> Instances                 # the whole-image prediction, computed once, reused
    prompts.feature_bytes                             # memory the cached features hold (for caches)

Click rule (:meth:`ImagePrompts.click`): a candidate is *vetoed* when its pasted mask holds any negative
click. For each positive click, in order: the highest-scoring detection (the predictor's score threshold
and class filter apply) whose mask holds the click and that is not vetoed; else, among the RPN proposals
whose box holds the click (best objectness first, the first :data:`PROPOSALS_PER_CLICK`), run through the
box and mask heads, the first not vetoed whose mask holds the click, else the first not vetoed. A click
that finds nothing gives no row; several positive clicks on the same object give that object once. Rows
come in the order of the clicks that found them.

Errors: ``ValueError`` with a one-line reason for non-finite values, wrong shapes, boxes of zero size or
entirely outside the image, points outside the image, labels outside 1..K, or an engine without features
(ONNX / OpenVINO: use ``--engine torch``).
"""

from __future__ import annotations

import numpy as np
import torch

from ..core import Instances
from ..masks import Masks
from .engine import paste_masks, prepare_image, scale_boxes

# Proposals per positive click that the box and mask heads score when no detection holds the click.
PROPOSALS_PER_CLICK = 8


class ImagePrompts:
    """The prompts of one image over a :class:`~instaseg.model.predictor.Predictor` with the torch engine.

    Args:
        predictor: its ``engine`` must have ``extract_features`` (:class:`~instaseg.model.engine.TorchEngine`);
            its ``image_size``, ``resize``, ``mask_threshold``, ``score_threshold`` and class filter apply.
        image: RGB uint8 ``(H, W, 3)``.
    """

    def __init__(self, predictor, image: np.ndarray):
        engine = predictor.engine
        if not hasattr(engine, "extract_features"):
            raise ValueError(
                f"interactive prompts need the torch engine, not {predictor.engine_name!r}; "
                "load the checkpoint with --engine torch"
            )
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
            raise ValueError(f"an image must be RGB uint8 (H, W, 3), got {image.dtype} {image.shape}")
        self.predictor, self.engine = predictor, engine
        self.original_size = (int(image.shape[0]), int(image.shape[1]))  # (H, W)
        prepared = prepare_image(image, predictor.image_size, predictor.resize)  # (3, h, w) float32
        self.resized_size = (int(prepared.shape[1]), int(prepared.shape[2]))
        self.features = engine.extract_features([prepared])
        self._detections: Instances | None = None
        self._proposals: torch.Tensor | None = None

    @property
    def feature_bytes(self) -> int:
        """Bytes held by the cached FPN features."""
        return sum(t.numel() * t.element_size() for t in self.features.maps.values())

    @property
    def num_classes(self) -> int:
        return self.predictor.class_map.num_classes

    def detections(self) -> Instances:
        """The image's whole-image prediction on the cached features (what :meth:`Predictor.predict_whole`
        gives), computed on first use and kept."""
        if self._detections is None:
            raw = self.engine.detect_features(self.features)[0]
            self._detections = self.predictor._finish(raw, self.resized_size, self.original_size)
        return self._detections

    def boxes(self, boxes_xyxy, labels=None) -> Instances:
        """One instance per given box: the mask head's mask of the box (see the module docstring).

        Args:
            boxes_xyxy: ``(N, 4)`` float xyxy in the image's pixels; clipped to the image, and each must
                keep a positive width and height inside it.
            labels: ``None`` or ``N`` entries, each an int 1..K or ``None`` (the box head's best class).
        """
        height, width = self.original_size
        boxes = _as_float_array(boxes_xyxy, "boxes").reshape(-1, 4)
        boxes = np.stack(
            [
                boxes[:, 0].clip(0, width),
                boxes[:, 1].clip(0, height),
                boxes[:, 2].clip(0, width),
                boxes[:, 3].clip(0, height),
            ],
            axis=1,
        )
        empty = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
        if empty.any():
            i = int(np.flatnonzero(empty)[0])
            raise ValueError(f"box {i} has no area inside the {width}x{height} image")
        given = self._check_labels(labels, len(boxes))
        if not len(boxes):
            return _no_instances(height, width)
        original = torch.from_numpy(boxes)
        resized = _to_resized(original, self.original_size, self.resized_size)
        answer = self.engine.masks_for_boxes(self.features, [resized], [None])[0]
        chosen = answer.labels.clone()
        if any(g is not None for g in given):
            for i, g in enumerate(given):
                if g is not None:
                    chosen[i] = g
            if not torch.equal(chosen, answer.labels):  # masks of other classes than the best one
                answer = self.engine.masks_for_boxes(self.features, [resized], [chosen])[0]
        scores = answer.class_probs.gather(1, chosen[:, None].to(torch.int64))[:, 0]
        crops, origins = paste_masks(
            answer.mask_probs, original, height, width, self.predictor.mask_threshold
        )
        return Instances(
            boxes, chosen.numpy(), Masks.from_crops(crops, origins, height, width), scores.numpy()
        )

    def click(self, points_xy, positive) -> Instances:
        """Instances under the positive clicks, avoiding the negative ones (the rule in the module docstring).

        Args:
            points_xy: ``(P, 2)`` float ``(x, y)`` in the image's pixels, inside the image.
            positive: ``(P,)`` bool: ``True`` a click on the object, ``False`` a click on what is not.
        """
        height, width = self.original_size
        points = _as_float_array(points_xy, "points").reshape(-1, 2)
        signs = np.asarray(positive).reshape(-1)
        if signs.dtype != bool or len(signs) != len(points):
            raise ValueError(f"positive must be {len(points)} booleans, got {signs.dtype} {signs.shape}")
        outside = (points[:, 0] < 0) | (points[:, 0] > width) | (points[:, 1] < 0) | (points[:, 1] > height)
        if outside.any():
            x, y = points[int(np.flatnonzero(outside)[0])]
            raise ValueError(f"click ({x:g}, {y:g}) is outside the {width}x{height} image")
        # Pixel (column, row) under each click; a click on the far edge belongs to the last pixel.
        pixels = np.stack(
            [np.minimum(points[:, 0], width - 1), np.minimum(points[:, 1], height - 1)], axis=1
        ).astype(np.int64)
        negatives = pixels[~signs]
        detections = self.detections()
        holds = _holds(detections.masks, pixels) if len(detections) else np.zeros((0, len(pixels)), bool)
        vetoed = holds[:, ~signs].any(axis=1)
        rows: list[Instances] = []
        found: list[tuple] = []  # ("detection", i) or ("proposal", box tuple) already answered
        for p in np.flatnonzero(signs):
            candidates = np.flatnonzero(holds[:, p] & ~vetoed)  # detections are in decreasing score order
            if len(candidates):
                key = ("detection", int(candidates[0]))
                row = detections[candidates[:1]]
            else:
                row = self._proposal_for(points[p], pixels[p], negatives)
                if row is None:
                    continue
                key = ("proposal", tuple(row.boxes[0].tolist()))
            if key not in found:
                found.append(key)
                rows.append(row)
        return _concatenate(rows, height, width)

    def _proposal_for(self, point: np.ndarray, pixel: np.ndarray, negatives: np.ndarray) -> Instances | None:
        """The first proposal holding ``point`` whose mask avoids ``negatives`` (preferring masks that hold
        the click), through the box and mask heads; ``None`` when no proposal holds it."""
        if self._proposals is None:
            self._proposals = self.engine.propose(self.features)[0].cpu()  # (P, 4) resized pixels
        proposals = scale_boxes(self._proposals, self.resized_size, self.original_size)
        x, y = float(point[0]), float(point[1])
        inside = (
            (proposals[:, 0] <= x) & (x <= proposals[:, 2]) & (proposals[:, 1] <= y) & (y <= proposals[:, 3])
        )
        index = torch.nonzero(inside).flatten()[:PROPOSALS_PER_CLICK]
        if not len(index):
            return None
        answer = self.boxes(proposals[index].numpy())
        holds = _holds(answer.masks, np.concatenate([pixel[None], negatives]))
        allowed = ~holds[:, 1:].any(axis=1)
        for choice in (np.flatnonzero(allowed & holds[:, 0]), np.flatnonzero(allowed)):
            if len(choice):
                return answer[choice[:1]]
        return None

    def _check_labels(self, labels, n: int) -> list[int | None]:
        if labels is None:
            return [None] * n
        labels = list(labels)
        if len(labels) != n:
            raise ValueError(f"{n} boxes but {len(labels)} labels")
        k = self.num_classes
        for label in labels:
            if label is not None and (
                isinstance(label, bool) or not isinstance(label, int | np.integer) or not 1 <= label <= k
            ):
                raise ValueError(f"label {label!r} is not a class of this model (1..{k}) or None")
        return [None if label is None else int(label) for label in labels]


def _as_float_array(values, what: str) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=np.float32)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be numbers") from None
    if not np.isfinite(array).all():
        raise ValueError(f"{what} contain NaN or infinity")
    return array


def _to_resized(boxes: torch.Tensor, original: tuple[int, int], resized: tuple[int, int]) -> torch.Tensor:
    """Boxes ``(N, 4)`` xyxy from the original image's pixels to the network input's (inverse of
    :func:`~instaseg.model.engine.scale_boxes`)."""
    return scale_boxes(boxes, original, resized)


def _holds(masks: Masks, pixels: np.ndarray) -> np.ndarray:
    """``(N, P)`` bool: mask ``i`` holds pixel ``pixels[j] = (column, row)``."""
    out = np.zeros((len(masks), len(pixels)), dtype=bool)
    for i in range(len(masks)):
        y0, x0, crop = masks.crop(i)
        rows, cols = pixels[:, 1] - y0, pixels[:, 0] - x0
        inside = (rows >= 0) & (rows < crop.shape[0]) & (cols >= 0) & (cols < crop.shape[1])
        out[i, inside] = crop[rows[inside], cols[inside]]
    return out


def _no_instances(height: int, width: int) -> Instances:
    return Instances(
        np.zeros((0, 4), np.float32),
        np.zeros(0, np.int64),
        Masks.empty(height, width),
        np.zeros(0, np.float32),
    )


def _concatenate(rows: list[Instances], height: int, width: int) -> Instances:
    if not rows:
        return _no_instances(height, width)
    crops, origins = [], []
    for row in rows:
        y0, x0, crop = row.masks.crop(0)
        crops.append(crop)
        origins.append((y0, x0))
    return Instances(
        np.concatenate([r.boxes for r in rows]),
        np.concatenate([r.labels for r in rows]),
        Masks.from_crops(crops, origins, height, width),
        np.concatenate([r.scores for r in rows]),
    )
