"""Merging several predictions of one image by mask overlap, on box-local masks only; and the moves that
bring a tile's or a mirrored view's instances into the image's coordinates.

The rule (:func:`merge_instances`): two instances from different sources (tiles, the whole image, a
flipped view) with the same label are one object when their masks agree where both sources could see,
inside the intersection W of the two sources' windows: IoU there >= ``merge_iou`` (0.5), or intersection
over the smaller there >= ``merge_ios`` (0.8) when at least half of the smaller mask lies in W (a thin
sliver cut off by a tile border, whose IoU a pixel of disagreement can halve). A piece cut by a tile border
and the whole object seen by the neighbouring tile agree inside the overlap, so they merge; two touching
objects share only boundary pixels and do not. Instances of one source never merge (the model's NMS
decided). Groups are joined transitively (an object over four tiles gives one instance), best agreements
first, with at most one instance of each source in a group: otherwise, in a dense cluster, a piece of one
tile overlapping two neighbouring objects of the other would chain them into one. A group's mask is
its best *complete* member's (a mask that comes no nearer than ``edge_margin`` pixels to its window's inner
borders, i.e. was not cut; ranked by the source's priority, then score); a group with no complete member
gets the union of its pieces. Its score is the best member's (``"max"``, tiles) or the mean over the
sources, 0 where a source missed the object (``"mean"``, flip TTA, which uses IoU alone).

Nothing here allocates an image-sized array: the work is over crops, so memory is the sum of their areas.
Coordinates are pixels, boxes xyxy with exclusive ends, windows ``(y0, x0, y1, x1)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core import Instances
from ..masks import Masks


def shift_instances(instances: Instances, dy: int, dx: int, height: int, width: int) -> Instances:
    """Instances of a tile at ``(dy, dx)`` moved into the ``height x width`` image (box-local crops)."""
    crops, origins = [], np.zeros((len(instances), 2), dtype=np.int64)
    for i in range(len(instances)):
        y0, x0, crop = instances.mask_crop(i)
        crops.append(crop)
        origins[i] = (y0 + dy, x0 + dx)
    boxes = instances.boxes + np.array([dx, dy, dx, dy], dtype=np.float32)
    return Instances(
        boxes, instances.labels, Masks.from_crops(crops, origins, height, width), instances.scores
    )


def flip_instances(instances: Instances) -> Instances:
    """Instances of the horizontally mirrored image mapped back onto the image (and vice versa)."""
    height, width = instances.image_size
    boxes = instances.boxes.copy()
    boxes[:, 0], boxes[:, 2] = width - instances.boxes[:, 2], width - instances.boxes[:, 0]
    crops, origins = [], np.zeros((len(instances), 2), dtype=np.int64)
    for i in range(len(instances)):
        y0, x0, crop = instances.mask_crop(i)
        crops.append(np.ascontiguousarray(crop[:, ::-1]))
        origins[i] = (y0, width - x0 - crop.shape[1]) if crop.size else (0, 0)
    return Instances(
        boxes, instances.labels, Masks.from_crops(crops, origins, height, width), instances.scores
    )


@dataclass
class _Pieces:
    """All instances of all sources, flattened: what :func:`merge_instances` works on."""

    boxes: np.ndarray  # (N, 4) float32 xyxy
    labels: np.ndarray  # (N,) int64
    scores: np.ndarray  # (N,) float32
    source: np.ndarray  # (N,) int64: index of the source (tile, whole image, view)
    rects: np.ndarray  # (N, 4) int64 (y0, x0, y1, x1) of each crop
    crops: list[np.ndarray]  # N bool (h, w)
    areas: np.ndarray  # (N,) int64 mask pixels
    complete: np.ndarray  # (N,) bool: the mask comes no nearer than the margin to its window's inner borders


def _is_cut(y0: int, x0: int, crop: np.ndarray, window, image_size, margin: int) -> bool:
    """Whether mask pixels come within ``margin`` pixels of an edge of ``window`` that lies inside the image
    (where the source's view was cut, not the image's own edge)."""
    if not crop.size:
        return False
    wy0, wx0, wy1, wx1 = (int(v) for v in window)
    height, width = image_size
    rows, cols = np.flatnonzero(crop.any(axis=1)), np.flatnonzero(crop.any(axis=0))
    if not len(rows):
        return False
    top, bottom = y0 + int(rows[0]), y0 + int(rows[-1]) + 1  # the mask's extent, exclusive ends
    left, right = x0 + int(cols[0]), x0 + int(cols[-1]) + 1
    return bool(
        (wy0 > 0 and top < wy0 + margin)
        or (wx0 > 0 and left < wx0 + margin)
        or (wy1 < height and bottom > wy1 - margin)
        or (wx1 < width and right > wx1 - margin)
    )


def _flatten(parts: list[Instances], windows: np.ndarray, image_size, margin: int) -> _Pieces:
    boxes, labels, scores, source, rects, crops, complete = [], [], [], [], [], [], []
    for k, part in enumerate(parts):
        if part.scores is None and len(part):
            raise ValueError("merging needs scored instances (predictions)")
        for i in range(len(part)):
            y0, x0, crop = part.mask_crop(i)
            crops.append(crop)
            rects.append((y0, x0, y0 + crop.shape[0], x0 + crop.shape[1]))
            complete.append(not _is_cut(y0, x0, crop, windows[k], image_size, margin))
        boxes.append(part.boxes)
        labels.append(part.labels)
        scores.append(part.scores if part.scores is not None else np.zeros(0, np.float32))
        source.append(np.full(len(part), k, dtype=np.int64))
    return _Pieces(
        np.concatenate(boxes).reshape(-1, 4) if boxes else np.zeros((0, 4), np.float32),
        np.concatenate(labels) if labels else np.zeros(0, np.int64),
        np.concatenate(scores) if scores else np.zeros(0, np.float32),
        np.concatenate(source) if source else np.zeros(0, np.int64),
        np.array(rects, dtype=np.int64).reshape(-1, 4),
        crops,
        np.array([int(c.sum()) for c in crops], dtype=np.int64),
        np.array(complete, dtype=bool),
    )


def _candidate_pairs(pieces: _Pieces) -> list[tuple[int, int]]:
    """Pairs ``(i, j)`` of pieces from different sources, same label, whose crops overlap (sweep over x)."""
    rects = pieces.rects
    order = np.argsort(rects[:, 1], kind="stable")
    x_starts = rects[order, 1]
    pairs = []
    for a, i in enumerate(order):
        end = np.searchsorted(x_starts, rects[i, 3], side="left")  # crops starting left of i's right edge
        others = order[a + 1 : end]
        if not len(others):
            continue
        overlap = (
            (rects[others, 0] < rects[i, 2])
            & (rects[others, 2] > rects[i, 0])
            & (pieces.labels[others] == pieces.labels[i])
            & (pieces.source[others] != pieces.source[i])
        )
        pairs.extend((int(i), int(j)) for j in others[overlap])
    return pairs


def _intersect(a, b) -> tuple[int, int, int, int]:
    return max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])


def _pixels_in(pieces: _Pieces, i: int, region) -> np.ndarray:
    """The part of piece ``i``'s crop inside ``region`` ``(y0, x0, y1, x1)`` (empty when they do not meet)."""
    y0, x0, y1, x1 = _intersect(region, pieces.rects[i])
    if y1 <= y0 or x1 <= x0:
        return np.zeros((0, 0), dtype=bool)
    ry0, rx0 = pieces.rects[i, :2]
    return pieces.crops[i][y0 - ry0 : y1 - ry0, x0 - rx0 : x1 - rx0]


def _agreement(pieces: _Pieces, i: int, j: int, windows: np.ndarray, merge_iou, merge_ios) -> float | None:
    """The IoU of masks ``i`` and ``j`` inside the intersection of their sources' windows when they are one
    object by the rule in the module doc (IoU there >= ``merge_iou``, or with ``merge_ios`` set
    intersection over the smaller >= ``merge_ios`` with at least half of the smaller mask inside that
    intersection); ``None`` when they are not."""
    shared = _intersect(windows[pieces.source[i]], windows[pieces.source[j]])
    area_i, area_j = int(_pixels_in(pieces, i, shared).sum()), int(_pixels_in(pieces, j, shared).sum())
    both = _intersect(_intersect(shared, pieces.rects[i]), pieces.rects[j])
    inter = int((_pixels_in(pieces, i, both) & _pixels_in(pieces, j, both)).sum()) if area_i and area_j else 0
    if not inter:
        return None
    iou = inter / (area_i + area_j - inter)
    if iou >= merge_iou:
        return iou
    if merge_ios is None:
        return None
    small, small_total = min((area_i, pieces.areas[i]), (area_j, pieces.areas[j]))
    return iou if inter / small >= merge_ios and 2 * small >= small_total else None


def _groups(sources: np.ndarray, pairs: list[tuple[int, int]]) -> list[list[int]]:
    """Groups of the ``len(sources)`` pieces joined along ``pairs`` (best first), with at most one piece
    per source in a group: a source (a tile, a view) saw an object once, after the model's NMS, so two of
    its pieces are two objects, even when a piece of another source overlaps both (dense clusters would
    otherwise chain into one). Each group sorted, in order of its first piece."""
    parent = list(range(len(sources)))
    members = {k: {int(sources[k])} for k in range(len(sources))}  # root -> the sources in its group

    def root(k: int) -> int:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    for i, j in pairs:
        ri, rj = root(i), root(j)
        if ri == rj or not members[ri].isdisjoint(members[rj]):
            continue
        keep, gone = min(ri, rj), max(ri, rj)
        parent[gone] = keep
        members[keep] |= members.pop(gone)
    groups: dict[int, list[int]] = {}
    for k in range(len(sources)):
        groups.setdefault(root(k), []).append(k)
    return list(groups.values())


def _union_crop(pieces: _Pieces, group: list[int]) -> tuple[int, int, np.ndarray]:
    """``(y0, x0, crop)``: the union of the group's masks, in the rectangle spanning their crops."""
    rects = pieces.rects[group]
    y0, x0 = int(rects[:, 0].min()), int(rects[:, 1].min())
    out = np.zeros((int(rects[:, 2].max()) - y0, int(rects[:, 3].max()) - x0), dtype=bool)
    for k in group:
        ry0, rx0, ry1, rx1 = pieces.rects[k]
        out[ry0 - y0 : ry1 - y0, rx0 - x0 : rx1 - x0] |= pieces.crops[k]
    return y0, x0, out


def _group_mask(pieces: _Pieces, group: list[int], priority: np.ndarray):
    """``(y0, x0, crop, box)`` of a group: its best complete member's, else the union of its pieces."""
    complete = [k for k in group if pieces.complete[k]]
    if complete:
        # Ties broken by values, not positions, so that the sources' order does not matter.
        best = max(
            complete,
            key=lambda k: (priority[pieces.source[k]], pieces.scores[k], pieces.areas[k], -k),
        )
        return int(pieces.rects[best, 0]), int(pieces.rects[best, 1]), pieces.crops[best], pieces.boxes[best]
    y0, x0, crop = _union_crop(pieces, group)
    member_boxes = pieces.boxes[group]
    return y0, x0, crop, np.concatenate([member_boxes[:, :2].min(0), member_boxes[:, 2:].max(0)])


def _group_score(pieces: _Pieces, group: list[int], score_rule: str, sources: int) -> float:
    if score_rule == "max":
        return float(pieces.scores[group].max())
    best_per_source: dict[int, float] = {}
    for k in group:
        s = int(pieces.source[k])
        best_per_source[s] = max(best_per_source.get(s, 0.0), float(pieces.scores[k]))
    return sum(best_per_source.values()) / max(1, sources)


def merge_instances(
    parts: list[Instances],
    windows,
    image_size: tuple[int, int],
    merge_iou: float = 0.5,
    merge_ios: float | None = 0.8,
    score_rule: str = "max",
    priorities=None,
    edge_margin: int = 2,
) -> Instances:
    """One instance per object from the predictions of several sources of one image (see the module doc).

    Args:
        parts: per source, scored instances in the image's coordinates (any mask storage).
        windows: per source, ``(y0, x0, y1, x1)`` of the part of the image it saw (a tile, or the image).
        image_size: ``(height, width)``.
        merge_iou: two instances of different sources and the same label are one object when the IoU of
            their masks inside the intersection of the two windows is at least this...
        merge_ios: ...or when their intersection over the smaller mask there is at least this and at
            least half of the smaller mask lies there (a thin piece cut by a border); ``None``: IoU only.
        score_rule: ``"max"`` (a group scores as its best member) or ``"mean"`` (per source, its best
            member's score, summed and divided by the number of sources: 0 for a source that missed it).
        priorities: per source, a rank: a group's mask is its complete member of highest (priority, score).
            Default: all equal.
        edge_margin: a mask within this many pixels of an inner border of its window counts as cut.

    Returns:
        Scored instances with box-local masks, scores decreasing. A merged group's box is its
        representative's, or the union of the members' boxes when the mask is a union of pieces.
    """
    if score_rule not in ("max", "mean"):
        raise ValueError(f"unknown score rule {score_rule!r}; valid: max, mean")
    height, width = image_size
    windows = np.asarray(windows, dtype=np.int64).reshape(-1, 4)
    priority = np.zeros(len(parts)) if priorities is None else np.asarray(priorities, dtype=np.float64)
    pieces = _flatten(parts, windows, image_size, edge_margin)
    agreeing = []  # (IoU, the pair's scores high and low, i, j)
    for i, j in _candidate_pairs(pieces):
        iou = _agreement(pieces, i, j, windows, merge_iou, merge_ios)
        if iou is not None:
            high, low = sorted((float(pieces.scores[i]), float(pieces.scores[j])), reverse=True)
            agreeing.append((iou, high, low, i, j))
    # Best agreements first; ties by the scores, so that the sources' order does not matter.
    agreeing.sort(key=lambda a: (-a[0], -a[1], -a[2]))
    boxes, labels, scores, crops, origins = [], [], [], [], []
    for group in _groups(pieces.source, [(i, j) for *_, i, j in agreeing]):
        y0, x0, crop, box = _group_mask(pieces, group, priority)
        boxes.append(box)
        labels.append(pieces.labels[group[0]])
        scores.append(_group_score(pieces, group, score_rule, len(parts)))
        crops.append(crop)
        origins.append((y0, x0))
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    return Instances(
        np.asarray(boxes, dtype=np.float32).reshape(-1, 4)[order],
        np.asarray(labels, dtype=np.int64)[order],
        Masks.from_crops([crops[k] for k in order], np.asarray(origins).reshape(-1, 2)[order], height, width),
        np.asarray(scores, dtype=np.float32)[order],
    )
