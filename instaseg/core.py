"""The small types that flow through every stage of instaseg.

- :class:`ClassMap`: class names <-> contiguous labels 1..K (0 is background, torchvision's convention).
- :class:`Instances`: the dense instances of one image (boxes, masks, labels, optional scores).
- :class:`Annotation` and :class:`Record`: one image of an imported dataset, with its annotations kept
  compact (COCO RLE) so that a dataset of large photos fits in memory; pixels and dense masks are decoded
  only when a sample is used (:meth:`Record.instances`).

Coordinates are pixels of the image as displayed (EXIF orientation applied), x to the right, y down.
Boxes are ``xyxy``: ``(x_min, y_min, x_max, y_max)`` with ``x_max``/``y_max`` exclusive, as in COCO's
``[x, y, w, h]`` with ``x_max = x + w``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pycocotools import mask as coco_mask


@dataclass(frozen=True)
class ClassMap:
    """Class names in label order: ``names[0]`` has label 1, ``names[K-1]`` has label K; 0 is background."""

    names: tuple[str, ...]

    def __post_init__(self) -> None:
        names = tuple(self.names)
        object.__setattr__(self, "names", names)
        if len(set(names)) != len(names):
            duplicated = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"class names must be unique, repeated: {duplicated}")
        if any(not isinstance(n, str) or not n for n in names):
            raise ValueError(f"class names must be non-empty strings, got {names!r}")

    @property
    def num_classes(self) -> int:
        """K, the number of object classes (background not counted)."""
        return len(self.names)

    def label(self, name: str) -> int:
        """The label 1..K of ``name``; ``KeyError`` listing the known names otherwise."""
        try:
            return self.names.index(name) + 1
        except ValueError:
            raise KeyError(f"unknown class {name!r}; known classes: {', '.join(self.names)}") from None

    def name(self, label: int) -> str:
        """The name of ``label`` (1..K); 0 is ``"background"``."""
        if label == 0:
            return "background"
        if not 1 <= label <= len(self.names):
            raise KeyError(f"label {label} outside 1..{len(self.names)}")
        return self.names[label - 1]


@dataclass
class Instances:
    """The instances of one image, dense.

    Attributes:
        boxes: ``(N, 4)`` float32, xyxy pixels.
        labels: ``(N,)`` int64, 1..K.
        masks: ``(N, H, W)`` bool, or ``None`` when the instances have boxes only.
        scores: ``(N,)`` float32 confidences in [0, 1] for predictions; ``None`` for ground truth.

    Validated once on construction; ``instances[keep]`` (boolean or integer index) returns a new
    ``Instances`` with the selected rows.
    """

    boxes: np.ndarray
    labels: np.ndarray
    masks: np.ndarray | None = None
    scores: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        n = len(self.boxes)
        if len(self.labels) != n:
            raise ValueError(f"{n} boxes but {len(self.labels)} labels")
        if n and self.labels.min() < 1:
            raise ValueError(f"labels must be 1..K (0 is background), got {self.labels.min()}")
        if not np.isfinite(self.boxes).all():
            raise ValueError("boxes contain NaN or infinity")
        if n and ((self.boxes[:, 2] < self.boxes[:, 0]) | (self.boxes[:, 3] < self.boxes[:, 1])).any():
            raise ValueError("boxes must be xyxy with x_max >= x_min and y_max >= y_min")
        if self.masks is not None:
            self.masks = np.asarray(self.masks).astype(bool, copy=False)
            if self.masks.ndim != 3 or len(self.masks) != n:
                raise ValueError(f"masks must be (N, H, W) with N={n}, got shape {self.masks.shape}")
        if self.scores is not None:
            self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
            if len(self.scores) != n:
                raise ValueError(f"{n} boxes but {len(self.scores)} scores")

    def __len__(self) -> int:
        return len(self.boxes)

    def __getitem__(self, index: Any) -> Instances:
        index = np.asarray(index)
        if index.dtype != bool:
            index = index.reshape(-1).astype(np.int64)
        return Instances(
            boxes=self.boxes[index],
            labels=self.labels[index],
            masks=None if self.masks is None else self.masks[index],
            scores=None if self.scores is None else self.scores[index],
        )

    @staticmethod
    def empty(height: int | None = None, width: int | None = None) -> Instances:
        """No instances; with a size, an empty ``(0, H, W)`` mask array too."""
        masks = None if height is None else np.zeros((0, height, width), dtype=bool)
        return Instances(np.zeros((0, 4), np.float32), np.zeros((0,), np.int64), masks)


def masks_to_boxes(masks: np.ndarray) -> np.ndarray:
    """Tight xyxy boxes ``(N, 4)`` float32 of boolean masks ``(N, H, W)``; all zeros for an empty mask."""
    boxes = np.zeros((len(masks), 4), dtype=np.float32)
    for i, mask in enumerate(masks):
        rows = np.flatnonzero(mask.any(axis=1))
        cols = np.flatnonzero(mask.any(axis=0))
        if len(rows):
            boxes[i] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    return boxes


def mask_to_rle(mask: np.ndarray) -> dict:
    """COCO compressed RLE (``{"size": [H, W], "counts": str}``) of one boolean mask ``(H, W)``."""
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def rle_to_mask(rle: dict) -> np.ndarray:
    """Boolean mask ``(H, W)`` of a COCO compressed RLE (``counts`` str or bytes)."""
    return coco_mask.decode(rle_for_pycocotools(rle)).astype(bool)


def polygons_to_rle(polygons: list[list[float]], height: int, width: int) -> dict:
    """COCO compressed RLE of the union of flat polygons ``[x1, y1, x2, y2, ...]`` in pixels."""
    rles = coco_mask.frPyObjects([list(map(float, p)) for p in polygons], height, width)
    rle = coco_mask.merge(rles)
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


@dataclass
class Annotation:
    """One annotated object as imported, kept compact.

    Attributes:
        label: 1..K.
        box: xyxy pixels (float).
        rle: COCO compressed RLE of the mask at the image's size (``counts`` as str); ``None`` for an
            object annotated with a box only.
        iscrowd: COCO's crowd flag (a region of many objects; ignored by training, kept by evaluation).
        polygons: the source polygons (flat ``[x1, y1, ...]`` pixel lists) when the source had polygons;
            kept so that export can write them back unchanged.
        source_id: the annotation's id in the source file, for messages.
    """

    label: int
    box: tuple[float, float, float, float]
    rle: dict | None = None
    iscrowd: bool = False
    polygons: list[list[float]] | None = None
    source_id: str | int | None = None

    @property
    def has_mask(self) -> bool:
        return self.rle is not None

    @property
    def area(self) -> float:
        """Mask area in pixels, or the box area for a box-only annotation."""
        if self.rle is not None:
            return float(coco_mask.area(rle_for_pycocotools(self.rle)))
        x0, y0, x1, y1 = self.box
        return float((x1 - x0) * (y1 - y0))


def rle_for_pycocotools(rle: dict) -> dict:
    """The same RLE with ``counts`` as bytes, as pycocotools' C functions need (instaseg stores str)."""
    counts = rle["counts"]
    return {
        "size": list(rle["size"]),
        "counts": counts.encode("ascii") if isinstance(counts, str) else counts,
    }


@dataclass
class Record:
    """One image of a dataset and its annotations.

    Attributes:
        image: where the image is: a local path or an fsspec URL (``s3://...``); ``None`` when the source
            lists the image but the file is missing.
        file_name: the name to write on export (relative, forward slashes).
        width, height: pixels of the image as displayed (EXIF orientation applied).
        annotations: the objects on the image.
        image_id: 1-based id, unique in the dataset.
        split: ``"train"``, ``"val"``, ``"test"`` or ``None`` when not assigned.
        mode: the image's PIL mode as its header says (``"RGB"``, ``"L"``, ``"I;16"``...), when read.
    """

    image: str | None
    file_name: str
    width: int
    height: int
    annotations: list[Annotation] = field(default_factory=list)
    image_id: int = 0
    split: str | None = None
    mode: str | None = None

    def instances(self, crowd: bool = False) -> Instances:
        """Dense instances at the image's size; crowd regions only when ``crowd`` is true.

        Masks are ``None`` when no annotation has a mask; a box-only annotation among masked ones gets
        its box filled as mask.
        """
        annotations = [a for a in self.annotations if crowd or not a.iscrowd]
        boxes = np.array([a.box for a in annotations], dtype=np.float32).reshape(-1, 4)
        labels = np.array([a.label for a in annotations], dtype=np.int64)
        if not any(a.has_mask for a in annotations):
            return Instances(boxes, labels, None)
        masks = np.zeros((len(annotations), self.height, self.width), dtype=bool)
        for i, a in enumerate(annotations):
            if a.rle is not None:
                masks[i] = rle_to_mask(a.rle)
            else:
                x0, y0, x1, y1 = (int(round(v)) for v in a.box)
                masks[i, y0:y1, x0:x1] = True
        return Instances(boxes, labels, masks)


def mask_to_polygons(mask: np.ndarray, min_points: int = 3) -> list[list[float]]:
    """Outer boundary of each connected region of a boolean mask ``(H, W)`` as flat pixel polygons.

    Traces the pixel edges (not the pixel centres) so that rasterising the polygons with COCO's
    ``frPyObjects`` gives back the same pixels for hole-free regions; holes are filled.
    Returns ``[[x1, y1, x2, y2, ...], ...]`` in pixels, one list per region.
    """
    import cv2

    # At 2x nearest-neighbour scale, boundary sub-pixel centres + 0.5 map exactly onto pixel edges.
    upscaled = np.kron(np.asarray(mask, dtype=np.uint8), np.ones((2, 2), np.uint8))
    contours, _ = cv2.findContours(upscaled, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polygons = []
    for contour in contours:
        if len(contour) >= min_points:
            points = (contour.reshape(-1, 2).astype(np.float64) + 0.5) / 2.0
            polygons.append(points.reshape(-1).tolist())
    return polygons
