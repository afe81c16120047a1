"""Label Studio results (one region of a task's annotation) -> :class:`~instaseg.core.Annotation`:
:func:`result_to_annotation`, used by :mod:`.labelstudio_json`."""

from __future__ import annotations

import math

from ..core import Annotation, ClassMap
from ..problems import ProblemLog
from .brush import brush_rle_to_mask
from .geometry import build_annotation, is_number
from .limits import shown

# Result types that carry an object; every other type (choices, textarea, keypointlabels...) is ignored.
SUPPORTED_TYPES = ("polygonlabels", "brushlabels", "rectanglelabels")


def result_to_annotation(
    result: dict, class_map: ClassMap, width: int, height: int, log: ProblemLog, where: dict
) -> Annotation | None:
    """The annotation of one Label Studio result of a :data:`SUPPORTED_TYPES` type, at the image's
    ``width`` x ``height`` pixels; ``None`` (logged with ``where``: file, image, annotation) when dropped.

    ``polygonlabels``: ``value.points`` ``[[x, y], ...]`` in percent -> a pixel polygon mask;
    ``brushlabels``: ``value.rle`` (Label Studio's brush RLE) -> mask; ``rectanglelabels``: percent
    ``x, y, width, height`` (``rotation`` in degrees) -> an xyxy pixel box without mask. The first of
    several labels is used; a result rotated in the editor (``image_rotation``) or declaring another
    ``original_width``/``original_height`` is dropped.
    """
    kind = str(result["type"]).lower()
    value = result.get("value")
    label = _usable_label(result, kind, width, height, log, where)
    if label is None:
        return None
    common = {
        "label": class_map.label(label),
        "height": height,
        "width": width,
        "file": where["file"],
        "image": where["image"],
        "annotation_id": where["annotation"],
    }
    if kind == "polygonlabels":
        points = value.get("points")
        if not isinstance(points, list) or not all(
            isinstance(p, list | tuple) and len(p) == 2 for p in points
        ):
            log.error("polygon value.points must be a list of [x, y] pairs; region dropped", **where)
            return None
        flat = []
        for x, y in points:  # percent -> pixels, as Label Studio's own converters do
            flat += [_scale(x, width), _scale(y, height)]
        return build_annotation(log, polygons=[flat], **common)
    if kind == "brushlabels":
        if value.get("format", "rle") != "rle" or "rle" not in value:
            log.error(
                f"brush value.format {value.get('format')!r} is not supported (expected 'rle' with "
                "value.rle); region dropped",
                **where,
            )
            return None
        try:
            mask = brush_rle_to_mask(value["rle"], height, width)
        except ValueError as e:
            log.error(f"{e}; region dropped", **where)
            return None
        return build_annotation(log, mask=mask, **common)
    return build_annotation(log, box_xyxy=_rectangle_box(value, width, height, log, where), **common)


def _usable_label(
    result: dict, kind: str, width: int, height: int, log: ProblemLog, where: dict
) -> str | None:
    """The class name of a result (its first label); ``None`` (logged) when it has none, was rotated in the
    editor, or declares an original size other than the image's ``width`` x ``height``."""
    value = result.get("value")
    labels = value.get(kind) if isinstance(value, dict) else None
    if not (isinstance(labels, list) and labels and isinstance(labels[0], str) and labels[0].strip()):
        log.error(f"{kind} region has no label (value.{kind} = {shown(labels)}); region dropped", **where)
        return None
    if len(labels) > 1:
        log.warn(
            f"region has {len(labels)} labels {shown(labels)}; using the first, {shown(labels[0])}", **where
        )
    rotation = result.get("image_rotation") or 0
    if rotation != 0:
        log.error(
            f"image_rotation = {shown(rotation)} (the image was rotated in the editor) is not supported; "
            "region dropped: annotate the image unrotated or rotate the file itself",
            **where,
        )
        return None
    declared = (result.get("original_width"), result.get("original_height"))
    if declared != (None, None) and declared != (width, height):  # pre-annotations may omit the size
        log.error(
            f"region declares original size {shown(declared[0])}x{shown(declared[1])} but the image is {width}x{height}; "
            "region dropped",
            **where,
        )
        return None
    return labels[0]


def _scale(percent, size: int) -> float:
    return percent / 100 * size if is_number(percent) else math.nan


def _rectangle_box(value: dict, width: int, height: int, log: ProblemLog, where: dict) -> list[float] | None:
    """xyxy pixels of a rectangle (percent ``x, y, width, height``; ``rotation`` in degrees about its corner)."""
    x, y, w, h = (value.get(k) for k in ("x", "y", "width", "height"))
    if not all(is_number(v) for v in (x, y, w, h)):
        return None  # build_annotation reports it
    x0, y0, bw, bh = _scale(x, width), _scale(y, height), _scale(w, width), _scale(h, height)
    rotation = value.get("rotation") or 0
    if not is_number(rotation) or rotation % 360 == 0:
        return [x0, y0, x0 + bw, y0 + bh]
    log.warn(f"rectangle rotated by {rotation} degrees; using its axis-aligned bounding box", **where)
    c, s = math.cos(math.radians(rotation)), math.sin(math.radians(rotation))
    xs = [x0 + dx * c - dy * s for dx, dy in ((0, 0), (bw, 0), (bw, bh), (0, bh))]
    ys = [y0 + dx * s + dy * c for dx, dy in ((0, 0), (bw, 0), (bw, bh), (0, bh))]
    return [min(xs), min(ys), max(xs), max(ys)]
