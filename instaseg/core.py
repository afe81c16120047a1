"""The small types that flow through every stage of instaseg.

- :class:`ClassMap`: class names <-> contiguous labels 1..K (0 is background, torchvision's convention).
- :class:`Instances`: the instances of one image (boxes, labels, masks dense or box-local, optional
  scores, the image's size); ground truth and predictions alike.
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

from .masks import Masks, box_to_mask, rle_area, rle_to_mask


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
    """The instances of one image: the type every stage passes on (ground truth and predictions alike).

    Attributes:
        boxes: ``(N, 4)`` float32, xyxy pixels.
        labels: ``(N,)`` int64, 1..K.
        masks: :class:`~instaseg.masks.Masks` (dense ``(N, H, W)`` or box-local crops), or ``None`` when
            the instances have boxes only. A ``(N, H, W)`` array is accepted and stored dense.
        scores: ``(N,)`` float32 confidences in [0, 1] for predictions; ``None`` for ground truth.
        image_size: ``(height, width)`` of the image, pixels; taken from ``masks`` when left out.

    Validated once on construction; ``instances[keep]`` (boolean or integer index) returns a new
    ``Instances`` with the selected rows, masks in the same storage.
    """

    boxes: np.ndarray
    labels: np.ndarray
    masks: Masks | None = None
    scores: np.ndarray | None = None
    image_size: tuple[int, int] | None = None

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
            if not isinstance(self.masks, Masks):
                self.masks = Masks.from_dense(self.masks)
            if len(self.masks) != n:
                raise ValueError(f"{n} boxes but {len(self.masks)} masks")
            if self.image_size is not None and tuple(self.image_size) != self.masks.image_size:
                raise ValueError(f"image_size {tuple(self.image_size)} but masks of {self.masks.image_size}")
            self.image_size = self.masks.image_size
        elif self.image_size is not None:
            self.image_size = (int(self.image_size[0]), int(self.image_size[1]))
        if self.scores is not None:
            self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
            if len(self.scores) != n:
                raise ValueError(f"{n} boxes but {len(self.scores)} scores")

    def __len__(self) -> int:
        return len(self.boxes)

    def __getitem__(self, index: Any) -> Instances:
        index = np.arange(len(self))[index] if isinstance(index, slice) else np.asarray(index)
        if index.dtype != bool:
            index = index.reshape(-1).astype(np.int64)
        return Instances(
            boxes=self.boxes[index],
            labels=self.labels[index],
            masks=None if self.masks is None else self.masks[index],
            scores=None if self.scores is None else self.scores[index],
            image_size=self.image_size,
        )

    @property
    def has_masks(self) -> bool:
        return self.masks is not None

    def _masks(self) -> Masks:
        if self.masks is None:
            raise ValueError("these instances have boxes only, no masks")
        return self.masks

    def mask(self, i: int) -> np.ndarray:
        """The full-size bool mask ``(H, W)`` of instance ``i``."""
        return self._masks().mask(i)

    def mask_crop(self, i: int) -> tuple[int, int, np.ndarray]:
        """``(y0, x0, crop)``: a bool crop holding all of instance ``i``'s mask, and its top-left pixel."""
        return self._masks().crop(i)

    def rle(self, i: int) -> dict:
        """COCO compressed RLE (``counts`` str) of instance ``i``'s mask at the image's size."""
        return self._masks().rle(i)

    def areas(self) -> np.ndarray:
        """``(N,)`` int64 mask areas in pixels (box areas, rounded, for box-only instances)."""
        if self.masks is None:
            widths, heights = self.boxes[:, 2] - self.boxes[:, 0], self.boxes[:, 3] - self.boxes[:, 1]
            return np.round(widths * heights).astype(np.int64)
        return self.masks.areas()

    def dense_masks(self) -> np.ndarray | None:
        """``(N, H, W)`` bool masks, or ``None`` for box-only instances (N x H x W bytes of memory)."""
        return None if self.masks is None else self.masks.to_dense()

    @staticmethod
    def empty(height: int | None = None, width: int | None = None) -> Instances:
        """No instances; with a size, an empty mask storage too."""
        masks = None if height is None else Masks.empty(height, width)
        return Instances(np.zeros((0, 4), np.float32), np.zeros((0,), np.int64), masks)


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
            return float(rle_area(self.rle))
        x0, y0, x1, y1 = self.box
        return float((x1 - x0) * (y1 - y0))


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

        Masks (dense) are ``None`` when no annotation has a mask; a box-only annotation among masked ones
        gets its filled box as mask (:func:`~instaseg.masks.box_to_mask`, the rule training and evaluation
        share). ``image_size`` is the record's.
        """
        annotations = [a for a in self.annotations if crowd or not a.iscrowd]
        boxes = np.array([a.box for a in annotations], dtype=np.float32).reshape(-1, 4)
        labels = np.array([a.label for a in annotations], dtype=np.int64)
        if not any(a.has_mask for a in annotations):
            return Instances(boxes, labels, None, image_size=(self.height, self.width))
        masks = np.zeros((len(annotations), self.height, self.width), dtype=bool)
        for i, a in enumerate(annotations):
            masks[i] = (
                rle_to_mask(a.rle) if a.rle is not None else box_to_mask(a.box, self.height, self.width)
            )
        return Instances(boxes, labels, masks)
