"""Predictions with box-local masks: a huge photo's instances without N full-size masks in memory.

:class:`CroppedInstances` keeps, per instance, a boolean crop covering its (expanded) box and where the crop
lies in the image. Its memory is the sum of the box areas, not ``N x H x W``: a 8640x8640 photo with 100
instances needs ~7.5 GB as dense boolean masks, and a few MB as crops. :mod:`instaseg.render` draws it
directly; :meth:`CroppedInstances.to_instances` gives the dense :class:`~instaseg.core.Instances` when wanted.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..core import Instances, mask_to_rle


@dataclass
class CroppedInstances:
    """The predicted instances of one image with masks stored as crops.

    Attributes:
        boxes: ``(N, 4)`` float32 xyxy pixels of the original image.
        labels: ``(N,)`` int64, 1..K.
        scores: ``(N,)`` float32, decreasing.
        crops: N boolean arrays ``(h_i, w_i)``; crop ``i`` covers rows ``y0_i .. y0_i + h_i`` and columns
            ``x0_i .. x0_i + w_i`` of the image; pixels outside it are not part of instance ``i``.
        origins: ``(N, 2)`` int64 ``(y0, x0)`` of each crop.
        height, width: the image's size in pixels (as displayed, EXIF applied).
    """

    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    crops: list[np.ndarray]
    origins: np.ndarray
    height: int
    width: int

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        self.origins = np.asarray(self.origins, dtype=np.int64).reshape(-1, 2)
        n = len(self.boxes)
        if not (len(self.labels) == len(self.scores) == len(self.crops) == len(self.origins) == n):
            raise ValueError(
                f"{n} boxes but {len(self.labels)} labels, {len(self.scores)} scores, "
                f"{len(self.crops)} crops, {len(self.origins)} origins"
            )
        for (y0, x0), crop in zip(self.origins, self.crops, strict=True):
            if crop.dtype != bool or crop.ndim != 2:
                raise ValueError(f"crops must be 2-D bool arrays, got {crop.dtype} {crop.shape}")
            if y0 < 0 or x0 < 0 or y0 + crop.shape[0] > self.height or x0 + crop.shape[1] > self.width:
                raise ValueError(
                    f"crop at ({y0}, {x0}) of shape {crop.shape} leaves the {self.width}x{self.height} image"
                )

    def __len__(self) -> int:
        return len(self.boxes)

    def __getitem__(self, index) -> CroppedInstances:
        """The instances selected by a boolean mask or integer indices, in that order."""
        index = np.asarray(index)
        rows = np.flatnonzero(index) if index.dtype == bool else index.reshape(-1).astype(np.int64)
        return CroppedInstances(
            self.boxes[rows],
            self.labels[rows],
            self.scores[rows],
            [self.crops[i] for i in rows],
            self.origins[rows],
            self.height,
            self.width,
        )

    def pieces(self) -> Iterator[tuple[int, int, np.ndarray]]:
        """``(y0, x0, crop)`` per instance (the protocol of :func:`instaseg.render.mask_pieces`)."""
        for (y0, x0), crop in zip(self.origins, self.crops, strict=True):
            yield int(y0), int(x0), crop

    def mask(self, i: int) -> np.ndarray:
        """The full-size boolean mask ``(H, W)`` of instance ``i`` (one at a time keeps memory low)."""
        out = np.zeros((self.height, self.width), dtype=bool)
        (y0, x0), crop = self.origins[i], self.crops[i]
        out[y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]] = crop
        return out

    def rle(self, i: int) -> dict:
        """COCO compressed RLE (``counts`` str) of instance ``i``'s full-size mask."""
        return mask_to_rle(self.mask(i))

    def areas(self) -> np.ndarray:
        """``(N,)`` int64 mask areas in pixels."""
        return np.array([int(c.sum()) for c in self.crops], dtype=np.int64)

    def to_instances(self) -> Instances:
        """Dense :class:`Instances` with ``(N, H, W)`` bool masks (N x H x W bytes of memory)."""
        masks = np.zeros((len(self), self.height, self.width), dtype=bool)
        for i, (y0, x0, crop) in enumerate(self.pieces()):
            masks[i, y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]] = crop
        return Instances(self.boxes, self.labels, masks, self.scores)

    @staticmethod
    def empty(height: int, width: int) -> CroppedInstances:
        return CroppedInstances(
            np.zeros((0, 4)), np.zeros(0), np.zeros(0), [], np.zeros((0, 2)), height, width
        )
