"""Tiled prediction of large images and flip test-time augmentation, both merged by mask overlap.

A photo of 4000x3000 pixels resized to a model's 1024 (or 256) pixels shrinks objects a few dozen pixels
wide below what the network can see. Tiled prediction cuts the image into overlapping ``size x size`` tiles
(:func:`tile_grid`), runs them at their native resolution in batches through the predictor's engine (tiles
of one size batch together), shifts each tile's instances into the image's coordinates as box-local crops
(:func:`shift_instances`) and merges the instances that several tiles saw (:func:`merge_instances`).
Optionally the whole image is predicted too, and its large objects (those that may not fit in any tile)
join the merge. ``--tta flip`` predicts the image and its mirror image and merges them the same way.

Merging (:mod:`.merging`): instances of different sources are one object when their masks agree inside the
part of the image both sources saw (IoU >= 0.5, or a thin piece mostly inside the other mask); a merged
object takes the mask of a member that no tile border cut, or the union of the pieces when all were cut.

Memory: the tensors of one batch of tiles at a time, plus the instances' crops (the sum of their box areas).
Coordinates are pixels, boxes xyxy with exclusive ends, tile windows ``(y0, x0, y1, x1)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from ..core import Instances
from .config import MAX_IMAGE_SIZE
from .merging import flip_instances, merge_instances, shift_instances

TTA_MODES = ("flip",)
# --tile auto tiles an image whose longest side is more than this many times the model's input size.
AUTO_FACTOR = 2.0
MIN_TILE = 64
# Pieces of an object cut by a tile border are matched where the tiles overlap: that needs some pixels.
MIN_OVERLAP = 16


@dataclass(frozen=True)
class TileConfig:
    """How an image is cut into tiles.

    Attributes:
        size: tile side in pixels (tiles are ``size x size``, smaller only where the image is);
            ``None`` for ``auto`` (see :func:`resolve_tile`).
        overlap: pixels neighbouring tiles share (at least :data:`MIN_OVERLAP`); an object no larger than
            this lies whole in at least one tile, and a larger one cut by a border is matched across it
            there. Default ``size // 4``.
        whole_image: also predict the whole image (resized as without tiles) and merge in its instances
            larger than ``overlap`` (objects that may not fit whole in any tile).
        batch_size: tiles per forward pass.
        merge_iou: instances of two sources are one object when their IoU inside the sources' common
            window is at least this.
    """

    size: int | None = 512
    overlap: int | None = None
    whole_image: bool = False
    batch_size: int = 4
    merge_iou: float = 0.5

    def __post_init__(self) -> None:
        if self.size is not None:
            if not MIN_TILE <= self.size <= MAX_IMAGE_SIZE:
                raise ValueError(f"tile size must be {MIN_TILE}..{MAX_IMAGE_SIZE} pixels, got {self.size}")
            overlap = self.size // 4 if self.overlap is None else self.overlap
            if not MIN_OVERLAP <= overlap <= self.size // 2:
                raise ValueError(
                    f"tile overlap must be {MIN_OVERLAP}..{self.size // 2} pixels (at most half the tile) "
                    f"for {self.size} px tiles, got {overlap}; objects cut by a tile border are matched "
                    "where the tiles overlap"
                )
            object.__setattr__(self, "overlap", overlap)
        if self.batch_size < 1 or not 0 < self.merge_iou <= 1:
            raise ValueError("tile batch_size must be >= 1 and merge_iou in (0, 1]")


def parse_tile(text: str) -> TileConfig:
    """``"512"``, ``"512,64"``, ``"512,64,whole"``, ``"auto"`` or ``"auto,whole"`` -> :class:`TileConfig`.

    Raises ``ValueError`` saying what is expected.
    """
    usage = "expected SIZE[,OVERLAP][,whole] in pixels (e.g. 512 or 512,64) or auto"
    parts = [p.strip().lower() for p in str(text).split(",")]
    whole = parts[-1] == "whole"
    if whole:
        parts = parts[:-1]
    if parts == ["auto"]:
        return TileConfig(size=None, whole_image=whole)
    if not 1 <= len(parts) <= 2 or not all(p.isdigit() for p in parts):
        raise ValueError(f"{usage}; got {text!r}")
    size = int(parts[0])
    overlap = int(parts[1]) if len(parts) == 2 else None
    return TileConfig(size=size, overlap=overlap, whole_image=whole)


def resolve_tile(tile: TileConfig | None, model_config, height: int, width: int) -> TileConfig | None:
    """The tiling to use on a ``height x width`` image, or ``None`` for whole-image prediction.

    An explicit size is used as given. ``auto`` (``size=None``) tiles only when the model was trained on
    crops at native resolution (``model_config.crop_size``, ``train --crop``) and the image's longest side
    is more than :data:`AUTO_FACTOR` times the model's input size: tiles of ``max(512, 2 * crop)`` pixels
    overlapping by half a crop.
    """
    if tile is None or tile.size is not None:
        return tile
    crop = getattr(model_config, "crop_size", None)
    if crop is None or max(height, width) <= AUTO_FACTOR * model_config.image_size:
        return None
    size = min(MAX_IMAGE_SIZE, max(512, 2 * crop))
    return replace(tile, size=size, overlap=min(size // 2, crop // 2))


def _starts(length: int, size: int, overlap: int) -> list[int]:
    """Start pixels of tiles covering ``0..length``, spread evenly, neighbours sharing >= ``overlap`` px."""
    if length <= size:
        return [0]
    count = math.ceil((length - size) / (size - overlap)) + 1
    return [round(i * (length - size) / (count - 1)) for i in range(count)]


def tile_grid(height: int, width: int, size: int, overlap: int) -> np.ndarray:
    """``(T, 4)`` int64 tile windows ``(y0, x0, y1, x1)`` covering the image, row by row.

    All tiles have the same shape, ``(min(size, height), min(size, width))``; the first and last tiles of
    a row or column touch the image's edges and neighbours overlap by at least ``overlap`` pixels.
    """
    tile_h, tile_w = min(size, height), min(size, width)
    rows = [
        (y, x, y + tile_h, x + tile_w)
        for y in _starts(height, size, overlap)
        for x in _starts(width, size, overlap)
    ]
    return np.array(rows, dtype=np.int64).reshape(-1, 4)


def _prepare_tile(tile: np.ndarray) -> np.ndarray:
    """A tile as the network takes it at native resolution: float32 ``(3, h, w)``, normalised, not resized."""
    from .engine import prepare_image

    return prepare_image(tile, max(tile.shape[:2]), "keep")  # longest side unchanged: scale 1


def predict_tiled(predictor, image: np.ndarray, config: TileConfig) -> Instances:
    """Instances of an RGB uint8 ``(H, W, 3)`` image predicted tile by tile at native resolution.

    Tiles (:func:`tile_grid`) run ``config.batch_size`` at a time through ``predictor.engine``; each tile
    keeps the predictor's score threshold, class filter and ``max_detections`` (per tile). With
    ``config.whole_image`` the whole image is predicted too and its instances larger than
    ``config.overlap`` join the merge (ranked below tiles' complete masks).
    """
    if config.size is None:
        raise ValueError("resolve an auto tile size first (resolve_tile)")
    height, width = image.shape[:2]
    grid = tile_grid(height, width, config.size, config.overlap)
    parts: list[Instances] = []
    for first in range(0, len(grid), config.batch_size):
        windows = grid[first : first + config.batch_size]
        prepared = [_prepare_tile(image[y0:y1, x0:x1]) for y0, x0, y1, x1 in windows]
        for (y0, x0, y1, x1), raw in zip(windows, predictor.engine.detect(prepared), strict=True):
            size = (int(y1 - y0), int(x1 - x0))
            local = predictor._finish(raw, size, size)  # tile pixels = network pixels
            parts.append(shift_instances(local, int(y0), int(x0), height, width))
    windows, priorities = list(grid), [1.0] * len(grid)
    if config.whole_image:
        whole = predictor.predict_whole([image])[0]
        sides = np.maximum(whole.boxes[:, 2] - whole.boxes[:, 0], whole.boxes[:, 3] - whole.boxes[:, 1])
        parts.append(whole[sides > config.overlap])
        windows.append((0, 0, height, width))
        priorities.append(0.0)
    return merge_instances(
        parts, windows, (height, width), merge_iou=config.merge_iou, score_rule="max", priorities=priorities
    )


def predict_image(predictor, image: np.ndarray, tile: TileConfig | None, tta: str | None) -> Instances:
    """Instances of one RGB uint8 ``(H, W, 3)`` image with tiling (:func:`resolve_tile`) and/or flip TTA.

    ``tta="flip"``: the image and its horizontal mirror are predicted (each tiled or not) and merged as two
    views of the whole image, scores averaged over the views (see the module doc); the predictor's score
    threshold applies to the averaged scores, and without tiles ``max_detections`` to the merged list.
    """
    height, width = image.shape[:2]

    def one_view(view: np.ndarray) -> Instances:
        config = resolve_tile(tile, predictor.model_config, height, width)
        if config is None:
            return predictor.predict_whole([view])[0]
        return predict_tiled(predictor, view, config)

    if tta is None:
        return one_view(image)
    if tta not in TTA_MODES:
        raise ValueError(f"unknown test-time augmentation {tta!r}; valid: {', '.join(TTA_MODES)}")
    views = [one_view(image), flip_instances(one_view(np.ascontiguousarray(image[:, ::-1])))]
    whole = (0, 0, height, width)
    merge_iou = tile.merge_iou if tile is not None else TileConfig().merge_iou
    # Two views of the same pixels: IoU alone (a blob over two objects must not absorb both).
    merged = merge_instances(
        views, [whole, whole], (height, width), merge_iou=merge_iou, merge_ios=None, score_rule="mean"
    )
    merged = merged[merged.scores >= predictor.score_threshold]
    if resolve_tile(tile, predictor.model_config, height, width) is None:
        merged = merged[: predictor.max_detections]
    return merged
