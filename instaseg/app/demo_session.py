"""The web demo's session logic as plain functions (no Gradio, no browser): one photo, one prediction, views.

A :class:`PhotoSession` holds one uploaded photo, a downscaled copy for display and the model's
:class:`~instaseg.core.Instances` at the lowest score the model returns (the checkpoint's score threshold),
at full size and scaled to the display copy. Threshold, classes, style and the highlighted instance only
choose rows (:func:`visible_rows`) and redraw the display copy (:func:`draw_view`); the model is not run
again. Coordinates are pixels, boxes xyxy (see :mod:`instaseg.core`); display pixels are full-size pixels
times :attr:`PhotoSession.scale`.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field

import cv2
import numpy as np

from .. import render
from ..core import ClassMap, Instances
from ..masks import Masks

STYLES = ("overlay", "binary", "rgb")
COLOR_MODES = ("class", "object")
DISPLAY_SIDE = 1600  # longest side of the picture drawn for the page; downloads are full size
TABLE_HEADERS = ["id", "class", "score", "area", "x_min", "y_min", "x_max", "y_max"]
HIGHLIGHT = (255, 255, 255)


@dataclass
class PhotoSession:
    """One person's photo and its prediction (kept in ``gr.State``; one per browser session).

    Attributes:
        name: the uploaded file's name.
        photo: RGB uint8 ``(H, W, 3)``, full size.
        display: RGB uint8 ``(h, w, 3)``, the photo scaled so its longest side is at most
            :data:`DISPLAY_SIDE`.
        scale: ``h / H`` (1.0 when the photo is small enough).
        instances: the prediction at full size (``None`` before predicting), scores decreasing.
        display_instances: the same rows scaled to ``display``.
        model_runs: how many times the model ran for this photo.
        settings: the tiling/TTA the prediction was made with (a change of those needs the model again).
        note: what was converted on reading (e.g. a 16-bit or CMYK photo), or ``""``.
    """

    name: str
    photo: np.ndarray
    display: np.ndarray
    scale: float
    instances: Instances | None = None
    display_instances: Instances | None = None
    model_runs: int = 0
    settings: tuple = ()
    note: str = ""
    extra: dict = field(default_factory=dict)


def display_copy(photo: np.ndarray, side: int = DISPLAY_SIDE) -> tuple[np.ndarray, float]:
    """``(display image, scale)``: ``photo`` resized (area filter) so its longest side is at most ``side``."""
    height, width = photo.shape[:2]
    scale = min(1.0, side / max(height, width))
    if scale == 1.0:
        return photo, 1.0
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(photo, size, interpolation=cv2.INTER_AREA), size[1] / height


def scale_instances(instances: Instances, height: int, width: int) -> Instances:
    """``instances`` (full size) drawn at ``height x width``: boxes scaled, each box-local mask crop resized
    (area filter, >= half covered); scores and labels unchanged."""
    full_h, full_w = instances.image_size
    sy, sx = height / full_h, width / full_w
    boxes = instances.boxes * np.array([sx, sy, sx, sy], np.float32)
    crops, origins = [], []
    for i in range(len(instances)):
        y0, x0, crop = instances.mask_crop(i)
        ny0, nx0 = min(int(y0 * sy), height - 1), min(int(x0 * sx), width - 1)
        ny1 = min(height, max(ny0 + 1, int(np.ceil((y0 + crop.shape[0]) * sy))))
        nx1 = min(width, max(nx0 + 1, int(np.ceil((x0 + crop.shape[1]) * sx))))
        if crop.size:
            small = cv2.resize(
                crop.view(np.uint8) * 255, (nx1 - nx0, ny1 - ny0), interpolation=cv2.INTER_AREA
            )
            crops.append(small >= 128)
        else:
            crops.append(np.zeros((0, 0), bool))
            ny0 = nx0 = 0
        origins.append((ny0, nx0))
    masks = Masks.from_crops(crops, np.array(origins, np.int64).reshape(-1, 2), height, width)
    return Instances(boxes, instances.labels, masks, instances.scores)


def attach_prediction(session: PhotoSession, instances: Instances, settings: tuple) -> None:
    """Keep ``instances`` (full size) and their display-size copy on the session; counts a model run."""
    session.instances = instances
    height, width = session.display.shape[:2]
    session.display_instances = (
        instances if session.scale == 1.0 else scale_instances(instances, height, width)
    )
    session.model_runs += 1
    session.settings = settings


def visible_rows(
    instances: Instances, score_threshold: float, classes: list[str] | None, class_map: ClassMap
) -> np.ndarray:
    """Indices of the rows scoring ``>= score_threshold`` of the ``classes`` (all when empty), in order.

    ``KeyError`` (listing the known names) for a class the model does not know."""
    keep = instances.scores >= float(score_threshold)
    if classes:
        keep &= np.isin(instances.labels, [class_map.label(c) for c in classes])
    return np.flatnonzero(keep)


def class_colors(class_map: ClassMap) -> np.ndarray:
    """``(K + 1, 3)`` uint8 RGB: row ``label`` is that class's colour (row 0, background, unused)."""
    return np.concatenate([np.zeros((1, 3), np.uint8), render.instance_colors(class_map.num_classes)])


def instance_colors_for(instances: Instances, mode: str, class_map: ClassMap) -> np.ndarray:
    """``(N, 3)`` uint8 colours: by class (``mode="class"``) or one per object (``"object"``)."""
    if mode == "class":
        return class_colors(class_map)[instances.labels]
    if mode == "object":
        return render.instance_colors(len(instances))
    raise ValueError(f"unknown colour mode {mode!r}; valid: {', '.join(COLOR_MODES)}")


def draw_style(
    image: np.ndarray, instances: Instances, style: str, class_map: ClassMap, colors: np.ndarray | None = None
) -> np.ndarray:
    """The picture of one output style at the image's size: RGB uint8 ``(H, W, 3)``."""
    if style == "overlay":
        return render.draw_overlay(image, instances, class_map, colors=colors)
    if style == "binary":
        return np.repeat(render.binary_mask(instances)[:, :, None], 3, axis=2)
    if style == "rgb":
        return render.rgb_masked_image(instances, colors=colors)
    raise ValueError(f"unknown output style {style!r}; valid: {', '.join(STYLES)}")


def highlight(picture: np.ndarray, instances: Instances, index: int) -> np.ndarray:
    """``picture`` with instance ``index``'s mask outlined thickly in white over black (a new array)."""
    out = picture.copy()
    y0, x0, crop = instances.mask_crop(index)
    height, width = out.shape[:2]
    thickness = max(2, round(min(height, width) / 250))
    if crop.size and crop.any():
        mask = np.zeros((height, width), np.uint8)
        mask[y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]] = crop
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, (0, 0, 0), thickness + 2)
        cv2.drawContours(out, contours, -1, HIGHLIGHT, thickness)
    else:
        x_min, y_min, x_max, y_max = (int(round(v)) for v in instances.boxes[index])
        cv2.rectangle(
            out, (x_min, y_min), (max(x_min, x_max - 1), max(y_min, y_max - 1)), HIGHLIGHT, thickness
        )
    return out


def draw_view(
    session: PhotoSession,
    rows: np.ndarray,
    style: str,
    class_map: ClassMap,
    color_mode: str = "class",
    selected: int | None = None,
) -> np.ndarray:
    """The display-size picture of ``rows`` (indices into the session's instances) in ``style``, with
    ``selected`` (an index into ``rows``' instances, i.e. the table's row) outlined."""
    shown = session.display_instances[rows]
    colors = instance_colors_for(shown, color_mode, class_map)
    picture = draw_style(session.display, shown, style, class_map, colors)
    if selected is not None and 0 <= selected < len(shown):
        picture = highlight(picture, shown, selected)
    return picture


def detections_table(instances: Instances, class_map: ClassMap) -> list[list]:
    """Rows ``[id, class, score, area px, x_min, y_min, x_max, y_max]`` (box xyxy full-size pixels)."""
    areas = instances.areas()
    return [
        [
            i + 1,
            class_map.name(int(instances.labels[i])),
            round(float(instances.scores[i]), 4),
            int(areas[i]),
            *(round(float(v), 1) for v in instances.boxes[i]),
        ]
        for i in range(len(instances))
    ]


def class_counts(instances: Instances, class_map: ClassMap) -> dict[str, int]:
    """Objects per class name, in the model's class order (classes with none included)."""
    counts = np.bincount(instances.labels, minlength=class_map.num_classes + 1)
    return {name: int(counts[i + 1]) for i, name in enumerate(class_map.names)}


def legend_html(instances: Instances, class_map: ClassMap, color_mode: str) -> str:
    """The legend: each class with its colour swatch (colour by class) and its count of shown objects."""
    colors = class_colors(class_map)
    items = []
    for label, (name, count) in enumerate(class_counts(instances, class_map).items(), start=1):
        r, g, b = (int(c) for c in colors[label])
        swatch = (
            f'<span class="swatch" style="background: rgb({r},{g},{b})"></span>'
            if color_mode == "class"
            else ""
        )
        items.append(
            f'<span class="legend-item" data-class="{html.escape(name)}" data-count="{count}">{swatch}'
            f"{html.escape(name)}: <b>{count}</b></span>"
        )
    total = len(instances)
    return f'<div class="legend" data-total="{total}">{" ".join(items)} <span>({total} in all)</span></div>'


def instance_at(session: PhotoSession, rows: np.ndarray, x: float, y: float) -> int | None:
    """The table row (index into ``rows``) of the shown instance under display pixel ``(x, y)``, the
    highest-scored where several overlap; ``None`` on background."""
    shown = session.display_instances[rows]
    xi, yi = int(x), int(y)
    for i in range(len(shown)):  # scores decrease: the first hit is the best
        y0, x0, crop = shown.mask_crop(i)
        if y0 <= yi < y0 + crop.shape[0] and x0 <= xi < x0 + crop.shape[1] and crop[yi - y0, xi - x0]:
            return i
    return None
