"""Raw geometry from annotation files -> validated :class:`~instaseg.core.Annotation` objects and records.

Every importer (and the predictions reader, through :func:`checked_rle` and :func:`polygons_rle`) passes
untrusted numbers through here: coordinates that are not finite numbers, RLE counts that are negative or
do not cover the image exactly, and outlines longer than
:data:`~instaseg.formats.limits.MAX_OUTLINE_PIXELS` are refused before pycocotools sees them. Safe repairs
(clipping to the image, dropping a degenerate polygon) are reported as warnings.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
from pycocotools import mask as coco_mask

from ..core import Annotation, Record
from ..masks import mask_to_rle, polygons_to_rle, rle_for_pycocotools
from ..problems import ProblemLog
from .limits import MAX_OUTLINE_PIXELS, shown

# Pixels a coordinate may lie outside the image before clipping it is reported (float noise is not).
_CLIP_TOLERANCE = 0.5


def is_number(value) -> bool:
    """A real, finite number (bools excluded; an integer too large for a float is not finite)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def finite_numbers(values) -> np.ndarray | None:
    """``values`` as a flat float64 array, or ``None`` when any is not a finite number."""
    if isinstance(values, str | bytes | dict):
        return None
    try:
        array = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError, OverflowError, RecursionError):
        return None
    return array if np.isfinite(array).all() else None


def outline_length(polygons: list[list[float]]) -> float:
    """Pixels along the closed outlines of flat polygons, measured as pycocotools walks them
    (``max(|dx|, |dy|)`` per edge)."""
    total = 0.0
    for polygon in polygons:
        points = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
        steps = np.abs(np.diff(np.vstack([points, points[:1]]), axis=0))
        total += float(steps.max(axis=1).sum())
    return total


def rle_string_counts(counts: str | bytes, pixels: int) -> np.ndarray:
    """The run lengths ``(R,)`` int64 of a COCO compressed RLE string (``rleFrString`` of pycocotools'
    ``maskApi.c``), decoded without trusting it: ``ValueError`` for characters outside the alphabet, a
    number that does not end, or more runs than the ``pixels`` of the image allow."""
    data = np.frombuffer(counts.encode("ascii") if isinstance(counts, str) else bytes(counts), np.uint8)
    codes = data.astype(np.int64) - 48
    if data.size == 0 or (codes < 0).any() or (codes > 63).any():
        raise ValueError("RLE counts string has characters outside COCO's RLE alphabet ('0'..'o')")
    ends = np.flatnonzero((codes & 0x20) == 0)  # the last 5-bit chunk of each number
    if ends.size == 0 or ends[-1] != codes.size - 1:
        raise ValueError("RLE counts string is truncated (its last number does not end)")
    if ends.size > pixels + 1:
        raise ValueError(f"RLE counts string holds {ends.size} runs, more than the {pixels} pixels allow")
    starts = np.concatenate(([0], ends[:-1] + 1))
    chunks = ends - starts + 1
    if chunks.max() > 7:  # 7 chunks of 5 bits hold any count (or difference) of an image within the limits
        raise ValueError("RLE counts string holds a number too large for an image")
    position = np.arange(codes.size) - np.repeat(starts, chunks)  # chunk index within its number
    values = np.add.reduceat((codes & 0x1F) << (5 * position), starts)
    negative = (codes[ends] & 0x10) != 0
    values[negative] -= np.left_shift(1, 5 * chunks[negative])  # sign extension
    # After the first two, each count is stored as the difference to the count two places before.
    counts_out = values.copy()
    counts_out[3::2] = values[1] + np.cumsum(values[3::2]) if values.size > 3 else values[3::2]
    counts_out[2::2] = np.cumsum(values[2::2])
    return counts_out


def checked_counts(counts, height: int, width: int) -> np.ndarray:
    """The run lengths ``(R,)`` int64 of an RLE's ``counts`` (a compressed string, or a list of integers)
    for a ``height`` x ``width`` mask; ``ValueError`` unless they are non-negative and sum to exactly
    ``height * width`` (COCO's column-major runs, background first)."""
    pixels = height * width
    if isinstance(counts, str | bytes):
        try:
            runs = rle_string_counts(counts, pixels)
        except UnicodeEncodeError:
            raise ValueError("RLE counts string has characters outside COCO's RLE alphabet") from None
    elif isinstance(counts, list):
        if not all(_whole(c) for c in counts):
            raise ValueError("uncompressed RLE counts must be a list of whole numbers")
        if any(c < 0 or c > pixels for c in counts):
            raise ValueError(
                f"uncompressed RLE counts must be non-negative and sum to {height}*{width}; "
                f"{'a count is negative' if any(c < 0 for c in counts) else 'a count overruns the mask'}"
            )
        runs = np.asarray(counts, dtype=np.float64).astype(np.int64)
    else:
        raise ValueError(f"RLE counts must be a string or a list, got {type(counts).__name__}")
    if (runs < 0).any():
        raise ValueError(f"RLE counts must be non-negative and sum to {height}*{width}; a count is negative")
    total = int(runs.sum()) if runs.size else 0
    if total != pixels:
        raise ValueError(
            f"RLE counts must be non-negative and sum to {height}*{width} = {pixels}; they sum to {total} "
            f"({'they overrun the mask' if total > pixels else 'too short'})"
        )
    return runs


def _whole(value) -> bool:
    """An integer (of any size), or a float holding one."""
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (
        isinstance(value, float) and math.isfinite(value) and value.is_integer()
    )


def checked_rle(rle, height: int, width: int) -> dict:
    """The canonical compressed RLE (``{"size": [H, W], "counts": str}``) of a COCO RLE object (compressed
    or uncompressed) that must be ``height`` x ``width``; ``ValueError`` saying what is wrong otherwise."""
    if not isinstance(rle, dict) or "counts" not in rle or "size" not in rle:
        raise ValueError("RLE segmentation must be an object with 'size' and 'counts'")
    size = rle["size"]
    if not (isinstance(size, list | tuple) and len(size) == 2 and list(size) == [height, width]):
        raise ValueError(
            f"RLE size {shown(size)} does not match the image's [height, width] = [{height}, {width}]"
        )
    runs = checked_counts(rle["counts"], height, width)
    compressed = coco_mask.frPyObjects({"size": [height, width], "counts": _canonical(runs)}, height, width)
    return {"size": [height, width], "counts": compressed["counts"].decode("ascii")}


def _canonical(runs: np.ndarray) -> list[int]:
    """Run lengths without empty runs (their neighbours merged), background first: pycocotools' encoding."""
    merged: list[list[int]] = []  # [value, length]
    for index, length in enumerate(runs.tolist()):
        value = index % 2
        if length == 0:
            continue
        if merged and merged[-1][0] == value:
            merged[-1][1] += length
        else:
            merged.append([value, length])
    lengths = [length for _, length in merged]
    return [0, *lengths] if merged and merged[0][0] == 1 else lengths


def polygons_rle(polygons, height: int, width: int) -> dict:
    """Compressed RLE of the union of flat pixel polygons ``[[x1, y1, x2, y2, ...], ...]`` clipped to the
    ``height`` x ``width`` image; ``ValueError`` when one is not at least 3 finite points or the outlines
    are longer than :data:`~instaseg.formats.limits.MAX_OUTLINE_PIXELS`."""
    if not isinstance(polygons, list) or not polygons:
        raise ValueError("polygons must be a non-empty list of [x1, y1, x2, y2, ...] lists")
    clipped = []
    for i, polygon in enumerate(polygons):
        coords = finite_numbers(polygon) if isinstance(polygon, list) else None
        if coords is None or len(coords) % 2 or len(coords) < 6:
            raise ValueError(f"polygon {i} must be a list of at least 3 (x, y) pairs of finite numbers")
        coords[0::2] = np.clip(coords[0::2], 0, width)
        coords[1::2] = np.clip(coords[1::2], 0, height)
        clipped.append(coords.tolist())
    _check_outline(clipped)
    return polygons_to_rle(clipped, height, width)


def _check_outline(polygons: list[list[float]]) -> None:
    length = outline_length(polygons)
    if length > MAX_OUTLINE_PIXELS:
        raise ValueError(
            f"polygon outline is {length:,.0f} px long, over the limit of {MAX_OUTLINE_PIXELS:,} px per object"
        )


def build_annotation(
    log: ProblemLog,
    *,
    label: int,
    height: int,
    width: int,
    file: str | None,
    image: str | None,
    annotation_id: str | int | None,
    polygons: list | None = None,
    rle: dict | None = None,
    mask: np.ndarray | None = None,
    box_xyxy: list | tuple | None = None,
    iscrowd: bool = False,
) -> Annotation | None:
    """Validate one object's geometry and build its :class:`Annotation`; ``None`` if nothing usable is left.

    Give exactly one geometry: ``polygons`` (list of flat ``[x1, y1, x2, y2, ...]`` pixel lists),
    ``rle`` (COCO RLE, compressed or uncompressed, of size ``[height, width]``), ``mask`` (bool ``(H, W)``),
    or ``box_xyxy`` alone for a box-only object. Safe repairs (clipping to the image, dropping a degenerate
    polygon) are logged as warnings; unusable geometry is logged as an error and the object dropped.
    """
    where = {"file": file, "image": image, "annotation": annotation_id}
    kept_polygons = None
    if polygons is not None:
        kept_polygons = _clean_polygons(log, polygons, height, width, where)
        if not kept_polygons:
            log.error("no valid polygon left (each needs at least 3 finite points); object dropped", **where)
            return None
        try:
            _check_outline(kept_polygons)
        except ValueError as e:
            log.error(f"{e}; object dropped", **where)
            return None
        rle = polygons_to_rle(kept_polygons, height, width)
    elif rle is not None:
        try:
            rle = checked_rle(rle, height, width)
        except ValueError as e:
            log.error(f"{e}; object dropped", **where)
            return None
    elif mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (height, width):
            log.error(
                f"mask is {mask.shape[1]}x{mask.shape[0]} but the image is {width}x{height}; dropped", **where
            )
            return None
        rle = mask_to_rle(mask)

    if rle is not None:
        area = float(coco_mask.area(rle_for_pycocotools(rle)))
        if area == 0:
            log.warn("zero-area mask; object dropped", **where)
            return None
        x, y, w, h = (float(v) for v in coco_mask.toBbox(rle_for_pycocotools(rle)))
        box = (x, y, x + w, y + h)
    else:
        box = _check_box(log, box_xyxy, height, width, where)
        if box is None:
            return None
    return Annotation(
        label=label, box=box, rle=rle, iscrowd=bool(iscrowd), polygons=kept_polygons, source_id=annotation_id
    )


def _clean_polygons(log: ProblemLog, polygons, height: int, width: int, where: dict) -> list[list[float]]:
    if not isinstance(polygons, list):
        log.error(f"segmentation polygons must be a list, got {type(polygons).__name__}", **where)
        return []
    kept = []
    for i, polygon in enumerate(polygons):
        coords = finite_numbers(polygon)
        if coords is None:
            log.warn(f"polygon {i} has non-numeric, NaN or infinite coordinates; polygon dropped", **where)
            continue
        if len(coords) % 2:
            log.warn(
                f"polygon {i} has an odd number of coordinates ({len(coords)}); polygon dropped", **where
            )
            continue
        if len(coords) < 6:
            log.warn(f"polygon {i} has {len(coords) // 2} points (needs 3); polygon dropped", **where)
            continue
        xs, ys = coords[0::2], coords[1::2]
        if (
            xs.min() < -_CLIP_TOLERANCE
            or ys.min() < -_CLIP_TOLERANCE
            or xs.max() > width + _CLIP_TOLERANCE
            or ys.max() > height + _CLIP_TOLERANCE
        ):
            log.warn(f"polygon {i} extends outside the {width}x{height} image; clipped to it", **where)
        coords[0::2] = np.clip(xs, 0, width)
        coords[1::2] = np.clip(ys, 0, height)
        kept.append(coords.tolist())
    return kept


def _check_box(log: ProblemLog, box, height: int, width: int, where: dict) -> tuple | None:
    coords = finite_numbers(box) if box is not None else None
    if coords is None or len(coords) != 4:
        log.error("box must be 4 finite numbers; object dropped", **where)
        return None
    x0, y0, x1, y1 = coords.tolist()
    if x1 <= x0 or y1 <= y0:
        log.error(
            f"box has zero or negative width/height ({x1 - x0:g} x {y1 - y0:g}); object dropped", **where
        )
        return None
    clipped = (max(0.0, x0), max(0.0, y0), min(float(width), x1), min(float(height), y1))
    if any(abs(a - b) > _CLIP_TOLERANCE for a, b in zip(clipped, (x0, y0, x1, y1), strict=True)):
        log.warn(f"box extends outside the {width}x{height} image; clipped to it", **where)
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        log.error("box lies entirely outside the image; object dropped", **where)
        return None
    return clipped


def build_record(
    log: ProblemLog,
    *,
    location: str | None,
    file_name: str,
    size: tuple[int, int, str | None],
    objects: Iterable[dict],
    file: str | None = None,
    image: str | None = None,
) -> Record:
    """The :class:`Record` of the image at ``location`` of ``size`` ``(width, height, mode)`` (pixels).

    ``objects`` gives each object's :func:`build_annotation` keywords: ``label``, ``annotation_id``, one
    geometry, and ``file``/``image`` where they differ from the ones given here. Objects that
    :func:`build_annotation` drops are left out. ``objects`` may be a generator that logs as it goes: it is
    consumed in order, so the problems of one object stay together.
    """
    width, height, mode = size
    annotations = []
    for keywords in objects:
        annotation = build_annotation(
            log, height=height, width=width, **{"file": file, "image": image, **keywords}
        )
        if annotation is not None:
            annotations.append(annotation)
    return Record(
        image=location, file_name=file_name, width=width, height=height, annotations=annotations, mode=mode
    )
