"""How many actions a person spends labelling one image with the model's help: a fixed model of the labeller.

The model compares the image's ground truth (what the person wants in the end) with what Label Studio
shows them (the model's pre-annotated regions) and counts **actions** (clicks, drags, key presses), with
constants fixed here so that runs and models compare:

1. **Accept** (0 actions): a pre-annotated region of the object's class whose mask IoU with a ground-truth
   object is >= :data:`ACCEPT_IOU` (0.75) is kept as it is. Regions and objects pair one-to-one, the pairs
   of highest IoU first (above 0.5 IoU an object can pair with one region only anyway).
2. **Smart box** (:data:`SMART_BOX_ACTIONS` = 2: two corners of the object's box): for an object no region
   was accepted for, when a smart box is offered (``smart_box``: the model's mask head answers the box, as
   Label Studio's interactive mode does), the person draws the object's tight box; its answer is accepted
   when its mask IoU with the object is >= :data:`ACCEPT_IOU`.
3. **Polygon** (one action per vertex, at least :data:`MIN_POLYGON_VERTICES` = 4 per part): otherwise the
   person draws the outline. The vertices are those of each connected part's outer contour
   (``cv2.findContours``, external, every boundary pixel) simplified with ``cv2.approxPolyDP`` at
   :data:`POLYGON_EPSILON` = 1 px; the parts' counts are summed. A rejected smart box still cost its 2.
   (The smart box's answer is computed for every object, as a measure of the tool, ``Effort.tool_ious``;
   only the objects left by the pre-annotations cost its actions.)
4. **Delete** (:data:`DELETE_ACTIONS` = 1): every pre-annotated region not accepted is deleted.

"By hand" is the same image with nothing pre-annotated and no smart box: a polygon per object. Crowd
regions are not objects (callers pass ``record.instances()``, which leaves them out); masks are required on
both sides. IoU is :func:`instaseg.app.uncertainty.mask_ious` (pycocotools).

:func:`count_actions` counts one image; :func:`choose_threshold` picks the pre-annotation score threshold
with the fewest actions (no smart box) over images with ground truth: the labelling loop's rounds do so on
their validation images.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..core import Instances
from .uncertainty import mask_ious

ACCEPT_IOU = 0.75
SMART_BOX_ACTIONS = 2
DELETE_ACTIONS = 1
POLYGON_EPSILON = 1.0
MIN_POLYGON_VERTICES = 4
# Pre-annotation score thresholds a round chooses from.
THRESHOLD_GRID = tuple(round(0.3 + 0.05 * i, 2) for i in range(14))  # 0.30, 0.35, ..., 0.95

# ``(boxes (M, 4) float32 xyxy pixels, labels (M,) int64 1..K) -> Instances`` of M regions, in the boxes'
# order, with masks at the image's size: the smart box's answer, e.g. ImagePrompts(predictor, image).boxes.
SmartBox = Callable[[np.ndarray, np.ndarray], Instances]


_COUNTS = ("objects", "accepted", "smart_boxes", "smart_accepted", "polygons", "polygon_actions")
_COUNTS += ("deleted", "by_hand")


@dataclass
class Effort:
    """The actions of one or more images (``a + b`` sums them).

    Attributes:
        objects: ground-truth objects.
        accepted: objects whose pre-annotated region was accepted as it is.
        smart_boxes: objects the smart box was tried on; ``smart_accepted`` of them accepted.
        polygons: objects drawn as polygons; ``polygon_actions`` their vertices.
        deleted: pre-annotated regions deleted.
        by_hand: actions to draw every object as a polygon with no help (the same images).
        smart_ious: mask IoU of the smart box's answer with its object, for the objects it was tried on.
        tool_ious: the same for every object (the smart box's quality, whether or not the person needed
            it: the pre-annotations decide which objects it is tried on).
    """

    objects: int = 0
    accepted: int = 0
    smart_boxes: int = 0
    smart_accepted: int = 0
    polygons: int = 0
    polygon_actions: int = 0
    deleted: int = 0
    by_hand: int = 0
    smart_ious: list[float] = field(default_factory=list)
    tool_ious: list[float] = field(default_factory=list)

    @property
    def actions(self) -> int:
        """All actions: smart boxes, polygon vertices, deletions."""
        return SMART_BOX_ACTIONS * self.smart_boxes + self.polygon_actions + DELETE_ACTIONS * self.deleted

    @property
    def actions_per_object(self) -> float | None:
        return self.actions / self.objects if self.objects else None

    @property
    def by_hand_per_object(self) -> float | None:
        return self.by_hand / self.objects if self.objects else None

    @property
    def accepted_share(self) -> float | None:
        """Share of objects whose pre-annotated region was accepted as it is."""
        return self.accepted / self.objects if self.objects else None

    @property
    def smart_median_iou(self) -> float | None:
        """Median of :attr:`smart_ious` (the objects the smart box was tried on)."""
        return float(np.median(self.smart_ious)) if self.smart_ious else None

    @property
    def tool_median_iou(self) -> float | None:
        """Median of :attr:`tool_ious` (the smart box on every object)."""
        return float(np.median(self.tool_ious)) if self.tool_ious else None

    def __add__(self, other: Effort) -> Effort:
        counts = {name: getattr(self, name) + getattr(other, name) for name in _COUNTS}
        smart, tool = [*self.smart_ious, *other.smart_ious], [*self.tool_ious, *other.tool_ious]
        return Effort(**counts, smart_ious=smart, tool_ious=tool)

    def summary(self) -> dict:
        """The counts and rates as JSON-ready numbers (what ``rounds.jsonl`` and the bench record)."""
        return {
            "objects": self.objects,
            "actions": self.actions,
            "by_hand": self.by_hand,
            "accepted": self.accepted,
            "smart_boxes": self.smart_boxes,
            "smart_accepted": self.smart_accepted,
            "polygons": self.polygons,
            "deleted": self.deleted,
            "actions_per_object": _rounded(self.actions_per_object),
            "by_hand_per_object": _rounded(self.by_hand_per_object),
            "smart_median_iou": _rounded(self.smart_median_iou),
            "tool_median_iou": _rounded(self.tool_median_iou),
        }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def polygon_vertices(mask: np.ndarray) -> int:
    """Actions to draw a bool mask ``(h, w)`` as polygons: per connected part, the vertices of its outer
    contour simplified at :data:`POLYGON_EPSILON` px, at least :data:`MIN_POLYGON_VERTICES`; summed.
    An empty mask costs :data:`MIN_POLYGON_VERTICES` (the person still draws something)."""
    import cv2

    contours, _ = cv2.findContours(
        np.ascontiguousarray(mask, dtype=np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE
    )
    if not contours:
        return MIN_POLYGON_VERTICES
    return sum(
        max(MIN_POLYGON_VERTICES, len(cv2.approxPolyDP(c, POLYGON_EPSILON, closed=True))) for c in contours
    )


def outline_actions(truth: Instances) -> np.ndarray:
    """``(N,)`` int64 :func:`polygon_vertices` of each ground-truth instance (computed on its crop)."""
    _require_masks(truth, "ground truth")
    return np.array([polygon_vertices(truth.mask_crop(i)[2]) for i in range(len(truth))], np.int64)


def _require_masks(instances: Instances, what: str) -> None:
    if len(instances) and not instances.has_masks:
        raise ValueError(f"the effort model needs masks: the {what} has boxes only")


def accepted_pairs(ious: np.ndarray, same_class: np.ndarray) -> list[tuple[int, int]]:
    """One-to-one ``(object, region)`` pairs with IoU >= :data:`ACCEPT_IOU` and the same class, highest IoU
    first. ``ious`` and ``same_class`` are ``(objects, regions)``."""
    allowed = np.where(same_class & (ious >= ACCEPT_IOU), ious, -1.0)
    rows, columns = np.nonzero(allowed >= 0)
    order = np.argsort(-allowed[rows, columns], kind="stable")
    pairs, used_rows, used_columns = [], set(), set()
    for g, p in zip(rows[order], columns[order], strict=True):
        if g not in used_rows and p not in used_columns:
            pairs.append((int(g), int(p)))
            used_rows.add(g)
            used_columns.add(p)
    return pairs


class ImageEffort:
    """One image's ground truth and pre-annotated regions, compared once, counted at any score threshold.

    Args:
        truth: ground-truth instances (masks; crowd regions left out), labels 1..K.
        regions: the model's predicted instances (masks, scores) of the same image, or ``None`` (nothing
            pre-annotated).
        outlines: :func:`outline_actions` of ``truth`` when already known.
    """

    def __init__(
        self, truth: Instances, regions: Instances | None = None, outlines: np.ndarray | None = None
    ):
        _require_masks(truth, "ground truth")
        if regions is None:
            regions = Instances.empty(*(truth.image_size or (0, 0)))
        _require_masks(regions, "pre-annotation")
        if len(regions) and regions.scores is None:
            regions = Instances(regions.boxes, regions.labels, regions.masks, np.ones(len(regions)))
        self.truth, self.regions = truth, regions
        self.outlines = outline_actions(truth) if outlines is None else np.asarray(outlines, np.int64)
        self.ious = mask_ious(truth, regions)  # (objects, regions)
        self.same_class = truth.labels[:, None] == regions.labels[None, :]

    def count(self, min_score: float = 0.0, smart_box: SmartBox | None = None) -> Effort:
        """The :class:`Effort` when the regions scoring >= ``min_score`` are pre-annotated."""
        shown = np.flatnonzero(self.regions.scores >= min_score) if len(self.regions) else np.zeros(0, int)
        pairs = accepted_pairs(self.ious[:, shown], self.same_class[:, shown])
        accepted = {g for g, _ in pairs}
        left = np.array([g for g in range(len(self.truth)) if g not in accepted], np.int64)
        effort = Effort(
            objects=len(self.truth),
            accepted=len(accepted),
            deleted=len(shown) - len(pairs),
            by_hand=int(self.outlines.sum()),
        )
        drawn = left
        if smart_box is not None and len(self.truth):
            every = self._smart_ious(smart_box)  # one call for all objects: the tool's quality too
            effort.tool_ious = [float(v) for v in every]
            ious = every[left]
            effort.smart_boxes = len(left)
            effort.smart_accepted = int((ious >= ACCEPT_IOU).sum())
            effort.smart_ious = [float(v) for v in ious]
            drawn = left[ious < ACCEPT_IOU]
        effort.polygons = len(drawn)
        effort.polygon_actions = int(self.outlines[drawn].sum())
        return effort

    def _smart_ious(self, smart_box: SmartBox) -> np.ndarray:
        """``(objects,)`` mask IoU of the smart box's answer for each object's box with the object."""
        wanted = self.truth
        answers = smart_box(wanted.boxes, wanted.labels)
        if len(answers) != len(wanted):
            raise ValueError(f"the smart box answered {len(answers)} regions for {len(wanted)} boxes")
        _require_masks(answers, "smart box's answer")
        return np.array([mask_ious(wanted[[i]], answers[[i]])[0, 0] for i in range(len(wanted))])


def count_actions(
    truth: Instances, regions: Instances | None, smart_box: SmartBox | None = None, min_score: float = 0.0
) -> Effort:
    """The actions to label one image whose pre-annotations are ``regions`` scoring >= ``min_score``
    (``None``: none), with the smart box when given (see the module docstring)."""
    return ImageEffort(truth, regions).count(min_score, smart_box)


def effort_by_threshold(images: Sequence[ImageEffort], grid: Sequence[float] = THRESHOLD_GRID) -> dict:
    """``{threshold: Effort}`` over all ``images`` (no smart box), for each threshold of ``grid``."""
    totals = {}
    for threshold in grid:
        total = Effort()
        for image in images:
            total = total + image.count(threshold)
        totals[float(threshold)] = total
    return totals


def choose_threshold(
    images: Sequence[ImageEffort], grid: Sequence[float] = THRESHOLD_GRID
) -> tuple[float | None, dict]:
    """The threshold of ``grid`` with the fewest actions over ``images`` (no smart box), and
    :func:`effort_by_threshold`. Ties go to the higher threshold (fewer regions on screen); ``None``
    when the images hold no object."""
    totals = effort_by_threshold(images, grid)
    if not any(effort.objects for effort in totals.values()):
        return None, totals
    best = min(totals, key=lambda t: (totals[t].actions, -t))
    return best, totals
