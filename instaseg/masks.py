"""Boolean masks: COCO RLE and polygon conversions, the one box rasterisation, and :class:`Masks` storage.

Coordinates are pixels of the image as displayed, x to the right, y down; boxes are ``xyxy`` with
exclusive ``x_max``/``y_max`` (see :mod:`instaseg.core`). RLEs are COCO compressed RLE dicts
``{"size": [H, W], "counts": str}``; pycocotools wants ``counts`` as bytes (:func:`rle_for_pycocotools`).

:class:`Masks` holds the N masks of one H x W image either dense, ``(N, H, W)`` bool, or as box-local
crops (one bool array per mask and where it lies), in the spirit of detectron2's ``BitMasks`` and
``ROIMasks``. The crop form costs the sum of the box areas instead of ``N x H x W`` bytes: a 8640x8640
photo with 100 instances needs ~7.5 GB as dense masks and a few MB as crops.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from pycocotools import mask as coco_mask


def rle_for_pycocotools(rle: dict) -> dict:
    """The same RLE with ``counts`` as bytes, as pycocotools' C functions need (instaseg stores str)."""
    counts = rle["counts"]
    return {
        "size": list(rle["size"]),
        "counts": counts.encode("ascii") if isinstance(counts, str) else counts,
    }


def mask_to_rle(mask: np.ndarray) -> dict:
    """COCO compressed RLE (``{"size": [H, W], "counts": str}``) of one boolean mask ``(H, W)``."""
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def rle_to_mask(rle: dict) -> np.ndarray:
    """Boolean mask ``(H, W)`` of a COCO compressed RLE (``counts`` str or bytes)."""
    return coco_mask.decode(rle_for_pycocotools(rle)).astype(bool)


def rle_area(rle: dict) -> int:
    """Pixels inside a COCO compressed RLE."""
    return int(coco_mask.area(rle_for_pycocotools(rle)))


def crop_to_rle(crop: np.ndarray, y0: int, x0: int, height: int, width: int) -> dict:
    """COCO compressed RLE of the ``height x width`` mask that is ``crop`` at ``(y0, x0)`` and empty elsewhere.

    Equal to ``mask_to_rle`` of the full-size mask, without making it: the runs are computed on the crop
    (column-major, COCO's order), so the cost is the crop's size, not the image's.
    """
    height, width = int(height), int(width)
    h, w = crop.shape
    if not crop.any():
        return {"size": [height, width], "counts": _empty_counts(height, width)}
    columns = np.asarray(crop, dtype=bool).T  # (w, h): column-major order of the full image
    flat_start = x0 * height + y0  # flat index of the crop's top-left pixel in column-major order
    # Within each column, value changes; a column starts and ends on background unless the crop is full-height.
    padded = np.zeros((w, h + 2), dtype=np.int8)
    padded[:, 1:-1] = columns
    changes = np.diff(padded, axis=1)  # (w, h + 1): +1 where a run starts, -1 one past its end
    col, row = np.nonzero(changes)
    positions = flat_start + col.astype(np.int64) * height + row  # flat indices of run starts / ends
    # Runs that touch the bottom of one column and the top of the next (full-height crops) merge.
    bounds = np.concatenate(([0], positions, [height * width]))
    counts = np.diff(bounds)
    keep = np.ones(len(counts), dtype=bool)
    zero = np.flatnonzero(counts[1:-1] == 0) + 1  # an end immediately followed by a start: merge the runs
    if len(zero):
        keep[zero] = False
        keep[zero + 1] = False
        merged = counts.copy()
        for z in zero[::-1]:
            merged[z - 1] += merged[z + 1]
        counts = merged
    counts = counts[keep]
    if len(counts) > 1 and counts[-1] == 0:  # the mask reaches the last pixel: no closing background run
        counts = counts[:-1]
    rle = coco_mask.frPyObjects({"size": [height, width], "counts": counts.tolist()}, height, width)
    return {"size": [height, width], "counts": rle["counts"].decode("ascii")}


def rle_counts(rle: dict) -> np.ndarray:
    """The run lengths ``(R,)`` int64 of a COCO RLE (compressed ``counts`` str/bytes, or a list):
    background first, then object, alternately, in column-major order. Decodes COCO's string format
    (``rleFrString`` of pycocotools' ``maskApi.c``) without making the mask."""
    counts = rle["counts"]
    if isinstance(counts, list):
        return np.asarray(counts, dtype=np.int64)
    data = counts.encode("ascii") if isinstance(counts, str) else bytes(counts)
    out: list[int] = []
    p = 0
    while p < len(data):
        value, shift, more = 0, 0, True
        while more:
            c = data[p] - 48
            value |= (c & 0x1F) << shift
            more = bool(c & 0x20)
            p += 1
            shift += 5
            if not more and c & 0x10:
                value |= -1 << shift  # sign-extend
        if len(out) > 2:
            value += out[-2]  # counts after the first two are stored as differences
        out.append(value)
    return np.asarray(out, dtype=np.int64)


def rle_to_crop(rle: dict, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
    """The ``(y1 - y0, x1 - x0)`` bool part of a COCO RLE's mask, without decoding the whole mask: the cost
    is the number of runs plus the crop's size (a nucleus of a 4000x3000 photo: microseconds, not the
    12 MB of :func:`rle_to_mask`). The window must lie inside the image."""
    height = int(rle["size"][0])
    out = np.zeros((y1 - y0, x1 - x0), dtype=bool)
    bounds = np.concatenate(([0], np.cumsum(rle_counts(rle))))
    starts, ends = bounds[1:-1:2], bounds[2::2]  # object runs [start, end) in column-major flat indices
    for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
        column = start // height
        while start < end:  # a run may continue into the next column(s)
            stop = min(end, (column + 1) * height)
            if x0 <= column < x1:
                top, bottom = max(start - column * height, y0), min(stop - column * height, y1)
                if top < bottom:
                    out[top - y0 : bottom - y0, column - x0] = True
            start, column = stop, column + 1
    return out


def _empty_counts(height: int, width: int) -> str:
    height, width = int(height), int(width)
    rle = coco_mask.frPyObjects({"size": [height, width], "counts": [height * width]}, height, width)
    return rle["counts"].decode("ascii")


def polygons_to_rle(polygons: list[list[float]], height: int, width: int) -> dict:
    """COCO compressed RLE of the union of flat polygons ``[x1, y1, x2, y2, ...]`` in pixels."""
    rles = coco_mask.frPyObjects([list(map(float, p)) for p in polygons], height, width)
    rle = coco_mask.merge(rles)
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def box_pixels(box, height: int, width: int) -> tuple[int, int, int, int]:
    """The pixel rectangle ``(x0, y0, x1, y1)`` (ends exclusive, inside the image) that a box covers.

    The one rasterisation of a box-only object, shared by training, evaluation and export: each
    coordinate is rounded to the nearest pixel edge, then clipped to the image.
    """
    x0, y0, x1, y1 = (int(round(float(v))) for v in box)
    x0, x1 = (min(max(v, 0), int(width)) for v in (x0, x1))
    y0, y1 = (min(max(v, 0), int(height)) for v in (y0, y1))
    return x0, y0, max(x0, x1), max(y0, y1)


def box_to_mask(box, height: int, width: int) -> np.ndarray:
    """``(H, W)`` bool mask of a filled box (see :func:`box_pixels`)."""
    mask = np.zeros((height, width), dtype=bool)
    x0, y0, x1, y1 = box_pixels(box, height, width)
    mask[y0:y1, x0:x1] = True
    return mask


def box_to_rle(box, height: int, width: int) -> dict:
    """COCO compressed RLE of a filled box (see :func:`box_pixels`)."""
    x0, y0, x1, y1 = box_pixels(box, height, width)
    if x1 <= x0 or y1 <= y0:
        return {"size": [int(height), int(width)], "counts": _empty_counts(height, width)}
    return crop_to_rle(np.ones((y1 - y0, x1 - x0), dtype=bool), y0, x0, height, width)


def masks_to_boxes(masks: np.ndarray) -> np.ndarray:
    """Tight xyxy boxes ``(N, 4)`` float32 of boolean masks ``(N, H, W)``; all zeros for an empty mask."""
    boxes = np.zeros((len(masks), 4), dtype=np.float32)
    for i, mask in enumerate(masks):
        rows = np.flatnonzero(mask.any(axis=1))
        cols = np.flatnonzero(mask.any(axis=0))
        if len(rows):
            boxes[i] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    return boxes


def tight_crop(mask: np.ndarray) -> tuple[int, int, np.ndarray]:
    """``(y0, x0, crop)``: the smallest part of a bool mask ``(H, W)`` holding all its pixels (``(0, 0)`` if empty)."""
    rows = np.flatnonzero(mask.any(axis=1))
    if not len(rows):
        return 0, 0, np.zeros((0, 0), dtype=bool)
    cols = np.flatnonzero(mask[rows[0] : rows[-1] + 1].any(axis=0))
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    return y0, x0, mask[y0:y1, x0:x1]


def mask_to_polygons(mask: np.ndarray, min_points: int = 3) -> list[list[float]]:
    """Outer boundary of each connected region of a boolean mask ``(H, W)`` as flat pixel polygons.

    Traces the pixel edges (not the pixel centres) so that rasterising the polygons with COCO's
    ``frPyObjects`` gives back the same pixels for hole-free regions; holes are filled.
    Returns ``[[x1, y1, x2, y2, ...], ...]`` in pixels, one list per region (8-connected).
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


@dataclass(frozen=True)
class Masks:
    """The N boolean masks of one ``height x width`` image, dense or as box-local crops.

    Build with :meth:`from_dense` (``(N, H, W)`` bool) or :meth:`from_crops` (N bool arrays ``(h_i, w_i)``
    and their ``(y0_i, x0_i)`` top-left pixels; pixels outside crop ``i`` are not part of mask ``i``).
    Read with :meth:`crop` (the cheap form), :meth:`mask` (one full-size mask), :meth:`rle`, :meth:`areas`
    or :meth:`to_dense`; ``masks[index]`` (boolean or integer) selects masks in that order.
    """

    height: int
    width: int
    dense: np.ndarray | None = None  # (N, H, W) bool
    crops: tuple[np.ndarray, ...] | None = None  # N x (h_i, w_i) bool
    origins: np.ndarray | None = None  # (N, 2) int64 (y0, x0)

    def __post_init__(self) -> None:
        if (self.dense is None) == (self.crops is None):
            raise ValueError("Masks holds either dense masks or crops, exactly one of them")
        if self.height < 0 or self.width < 0:
            raise ValueError(f"image size must be non-negative, got {self.height}x{self.width}")
        if self.dense is not None:
            if self.dense.ndim != 3 or self.dense.shape[1:] != (self.height, self.width):
                raise ValueError(
                    f"dense masks must be (N, {self.height}, {self.width}), got {self.dense.shape}"
                )
            return
        origins = self.origins
        if origins is None or origins.shape != (len(self.crops), 2):
            raise ValueError(
                f"{len(self.crops)} crops need (N, 2) origins, got {None if origins is None else origins.shape}"
            )
        for (y0, x0), crop in zip(origins, self.crops, strict=True):
            if crop.dtype != bool or crop.ndim != 2:
                raise ValueError(f"crops must be 2-D bool arrays, got {crop.dtype} {crop.shape}")
            if y0 < 0 or x0 < 0 or y0 + crop.shape[0] > self.height or x0 + crop.shape[1] > self.width:
                raise ValueError(
                    f"crop at ({y0}, {x0}) of shape {crop.shape} leaves the {self.width}x{self.height} image"
                )

    @staticmethod
    def from_dense(masks: np.ndarray) -> Masks:
        """Dense masks ``(N, H, W)`` (any dtype; non-zero is inside)."""
        masks = np.asarray(masks)
        if masks.ndim != 3:
            raise ValueError(f"masks must be (N, H, W), got shape {masks.shape}")
        return Masks(masks.shape[1], masks.shape[2], dense=masks.astype(bool, copy=False))

    @staticmethod
    def from_crops(crops, origins, height: int, width: int) -> Masks:
        """Box-local crops: ``crops[i]`` bool ``(h_i, w_i)`` with its top-left pixel at ``origins[i] = (y0, x0)``."""
        origins = np.asarray(origins, dtype=np.int64).reshape(-1, 2)
        return Masks(int(height), int(width), crops=tuple(crops), origins=origins)

    @staticmethod
    def empty(height: int, width: int) -> Masks:
        return Masks.from_crops([], np.zeros((0, 2), np.int64), height, width)

    @property
    def image_size(self) -> tuple[int, int]:
        """``(height, width)`` of the image the masks belong to."""
        return self.height, self.width

    @property
    def is_dense(self) -> bool:
        return self.dense is not None

    def __len__(self) -> int:
        return len(self.dense) if self.dense is not None else len(self.crops)

    def __getitem__(self, index: Any) -> Masks:
        rows = _rows(index, len(self))
        if self.dense is not None:
            return Masks(self.height, self.width, dense=self.dense[rows])
        return Masks(
            self.height, self.width, crops=tuple(self.crops[i] for i in rows), origins=self.origins[rows]
        )

    def crop(self, i: int) -> tuple[int, int, np.ndarray]:
        """``(y0, x0, crop)`` of mask ``i``: a bool ``(h, w)`` array holding all its pixels, placed at ``(y0, x0)``.

        Dense masks give their tightest crop; an empty mask gives a ``(0, 0)`` crop.
        """
        if self.dense is not None:
            return tight_crop(self.dense[i])
        y0, x0 = self.origins[i]
        return int(y0), int(x0), self.crops[i]

    def mask(self, i: int) -> np.ndarray:
        """The full-size bool mask ``(H, W)`` of instance ``i`` (one at a time keeps memory low)."""
        if self.dense is not None:
            return self.dense[i]
        out = np.zeros((self.height, self.width), dtype=bool)
        y0, x0, crop = self.crop(i)
        out[y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]] = crop
        return out

    def rle(self, i: int) -> dict:
        """COCO compressed RLE (``counts`` str) of mask ``i`` at the image's size."""
        y0, x0, crop = self.crop(i)
        return crop_to_rle(crop, y0, x0, self.height, self.width)

    def areas(self) -> np.ndarray:
        """``(N,)`` int64 pixels per mask."""
        if self.dense is not None:
            return self.dense.reshape(len(self.dense), -1).sum(axis=1).astype(np.int64)
        return np.array([int(c.sum()) for c in self.crops], dtype=np.int64)

    def to_dense(self) -> np.ndarray:
        """``(N, H, W)`` bool (N x H x W bytes of memory)."""
        if self.dense is not None:
            return self.dense
        out = np.zeros((len(self), self.height, self.width), dtype=bool)
        for i in range(len(self)):
            y0, x0, crop = self.crop(i)
            out[i, y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]] = crop
        return out


def _rows(index: Any, n: int) -> np.ndarray:
    """Integer rows selected by a slice, a boolean mask or integer indices (in that order)."""
    if isinstance(index, slice):
        return np.arange(n)[index]
    index = np.asarray(index)
    if index.dtype == bool:
        if index.shape != (n,):
            raise IndexError(f"boolean index of shape {index.shape} for {n} instances")
        return np.flatnonzero(index)
    return index.reshape(-1).astype(np.int64)
