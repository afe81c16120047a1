"""Label Studio's interactive pre-annotations: a person's smart box or click answered by the served model.

With ``smart="true"`` on a ``RectangleLabels`` / ``KeyPointLabels`` control and *Use for interactive
preannotations* on for the backend, Label Studio 1.23's editor posts ``/api/ml/<id>/interactive-annotating``
``{task, context}``; Label Studio forwards it to the backend's ``/predict`` as ``{tasks: [task],
params: {context}}`` (``label_studio/ml/api.py``, ``models.py`` ``interactive_annotating``) and shows
``results[0]``. ``context.result`` holds the person's prompts::

    {"type": "rectanglelabels", "original_width": W, "original_height": H,
     "value": {"x": %, "y": %, "width": %, "height": %, "rotation": 0, "rectanglelabels": ["cat"]}}
    {"type": "keypointlabels", "is_positive": true, "value": {"x": %, "y": %, "keypointlabels": ["cat"]}}

(``x``/``y``/``width``/``height`` in percent of the image's width/height). The answer is one region per
box and per positive click that found an object, in the project's own control (``BrushLabels`` RLE or
``PolygonLabels``: the largest part of the mask), ``readonly: false`` so that the person can edit it; a
context without prompts gets no regions. Boxes go through :meth:`ImagePrompts.boxes
<instaseg.model.prompts.ImagePrompts.boxes>`, the keypoints of a context together through
:meth:`ImagePrompts.click <instaseg.model.prompts.ImagePrompts.click>` (negative clicks veto the candidates
whose masks hold them). A prompt's label picks the class when the model knows it (mapped through the
config as pre-annotations are), else the box head's best class is used.

The image's features are computed once per (model version, task, image URL) and kept in a small LRU
:class:`PromptCache` (dropped when the backend swaps its model), so the next prompts on an image run only
the heads.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..core import Instances
from ..formats.labelstudio_export import instances_to_label_studio_regions, label_studio_prediction
from .ls_protocol import PROMPT_CONTROLS, LabelTarget

MAX_PROMPTS = 100  # per request: a person clicks a few times; 10,000 is a broken or hostile client
CACHED_IMAGES = 8  # images whose features are kept (a 1024-px image's light-model features: ~30-90 MB)


class PromptError(ValueError):
    """A context the backend refuses (sent back as a 422 with this one-line message)."""


@dataclass(frozen=True)
class Prompt:
    """One prompt in the image's pixels.

    Attributes:
        kind: ``"box"`` or ``"click"``.
        coordinates: box ``(x0, y0, x1, y1)`` or click ``(x, y)``, pixels of the image.
        positive: a click on the object (``True``) or off it; boxes are positive.
        label: the Label Studio label value the prompt carries, or ``None``.
    """

    kind: str
    coordinates: tuple[float, ...]
    positive: bool
    label: str | None


def has_context(body: dict) -> bool:
    """Whether a ``/predict`` body is interactive (``params.context`` is an object, or not null)."""
    params = body.get("params")
    return isinstance(params, dict) and params.get("context") is not None


def parse_context(context, width: int, height: int, known_labels: set[str]) -> list[Prompt]:
    """The prompts of ``params.context`` for a ``width x height`` image.

    Raises:
        PromptError: a context that is not an object, ``result`` not a list, more than
            :data:`MAX_PROMPTS`, an item of another type, coordinates that are not finite numbers or leave
            the image, a zero-size or rotated box, a label that is not in the config.
    """
    if not isinstance(context, dict):
        raise PromptError(f"params.context must be an object, got {type(context).__name__}")
    items = context.get("result", [])
    if not isinstance(items, list):
        raise PromptError(f"params.context.result must be a list of prompts, got {type(items).__name__}")
    if len(items) > MAX_PROMPTS:
        raise PromptError(f"{len(items)} prompts in one request; at most {MAX_PROMPTS}")
    return [_parse_item(item, i, width, height, known_labels) for i, item in enumerate(items)]


def _parse_item(item, i: int, width: int, height: int, known_labels: set[str]) -> Prompt:
    where = f"prompt {i}"
    if not isinstance(item, dict) or not isinstance(item.get("value"), dict):
        raise PromptError(f"{where} must be an object with a 'value' object")
    kind = item.get("type")
    if kind not in PROMPT_CONTROLS.values():
        raise PromptError(
            f"{where}: type {str(kind)[:40]!r} is not a prompt; valid: {', '.join(PROMPT_CONTROLS.values())}"
        )
    value = item["value"]
    x, y = _percent(value, "x", where), _percent(value, "y", where)
    label = _label(value.get(kind), kind, where, known_labels)
    positive = item.get("is_positive", True)
    if not isinstance(positive, bool):
        raise PromptError(f"{where}: is_positive must be true or false")
    if kind == "keypointlabels":
        return Prompt("click", (x * width / 100, y * height / 100), positive, label)
    w, h = _percent(value, "width", where), _percent(value, "height", where)
    rotation = value.get("rotation", 0) or 0
    if not isinstance(rotation, int | float) or isinstance(rotation, bool) or rotation % 360:
        raise PromptError(f"{where}: rotated boxes are not supported (rotation {str(rotation)[:20]})")
    if w <= 0 or h <= 0:
        raise PromptError(f"{where}: the box has zero size ({w:g}% x {h:g}%)")
    if x + w > 100 + 1e-6 or y + h > 100 + 1e-6:
        raise PromptError(f"{where}: the box leaves the image (x+width {x + w:g}%, y+height {y + h:g}%)")
    box = (x * width / 100, y * height / 100, min(x + w, 100) * width / 100, min(y + h, 100) * height / 100)
    if box[2] - box[0] < 1 or box[3] - box[1] < 1:
        raise PromptError(f"{where}: the box is under one pixel of the {width}x{height} image")
    return Prompt("box", box, True, label)


def _percent(value: dict, key: str, where: str) -> float:
    number = value.get(key)
    if isinstance(number, bool) or not isinstance(number, int | float):
        raise PromptError(
            f"{where}: value.{key} must be a number (percent of the image), got {str(number)[:40]!r}"
        )
    if not math.isfinite(number):
        raise PromptError(f"{where}: value.{key} must be a finite number, got {number}")
    if not 0 <= number <= 100:
        raise PromptError(f"{where}: value.{key} = {number:g} is outside the image (0..100%)")
    return float(number)


def _label(labels, kind: str, where: str, known: set[str]) -> str | None:
    if labels is None or labels == []:
        return None
    if not isinstance(labels, list) or not all(isinstance(v, str) for v in labels):
        raise PromptError(f"{where}: value.{kind} must be a list of label names")
    unknown = [v for v in labels if v not in known]
    if unknown:
        raise PromptError(
            f"{where}: label {unknown[0][:60]!r} is not in the labeling config ({', '.join(sorted(known))[:200]})"
        )
    return labels[0]


class PromptCache:
    """The :class:`~instaseg.model.prompts.ImagePrompts` of the last :data:`CACHED_IMAGES` images, least
    recently used dropped first; thread-safe. Keys name the model version, so a swapped model never
    answers from another model's features; :meth:`clear` drops everything (on a swap)."""

    def __init__(self, size: int = CACHED_IMAGES):
        self.size = size
        self._entries: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key, make: Callable):
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
        value = make()  # outside the lock: other images' prompts need not wait for these features
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


def answer_prompts(image_prompts, prompts: list[Prompt], target: LabelTarget, class_map) -> list[dict]:
    """Regions of ``target``'s control answering ``prompts`` on one image (``image_prompts``: its
    :class:`~instaseg.model.prompts.ImagePrompts`), boxes first, then the clicks' objects."""
    names = target.label_for(class_map)  # model label -> Label Studio value
    by_value = {v.lower(): k for k, v in names.items()}
    by_class = {n.lower(): i + 1 for i, n in enumerate(class_map.names)}

    def model_label(value: str | None) -> int | None:
        if value is None:
            return None
        return by_value.get(value.lower()) or by_class.get(value.lower())

    boxes = [p for p in prompts if p.kind == "box"]
    clicks = [p for p in prompts if p.kind == "click"]
    answers: list[tuple[Instances, str | None]] = []
    if boxes:
        found = image_prompts.boxes(
            np.array([p.coordinates for p in boxes]), [model_label(p.label) for p in boxes]
        )
        answers += [(found[[i]], p.label) for i, p in enumerate(boxes)]
    if any(p.positive for p in clicks):
        found = image_prompts.click(
            np.array([p.coordinates for p in clicks]), np.array([p.positive for p in clicks])
        )
        label = next((p.label for p in clicks if p.positive), None)
        answers += [(found[[i]], label) for i in range(len(found))]
    regions = []
    for row, asked in answers:
        label = int(row.labels[0])
        # The person's label when the config has it and the model's class is not in the config.
        name = names.get(label) or (asked if asked in target.labels else None) or next(iter(names.values()))
        found = instances_to_label_studio_regions(
            row, {label: name}, target.kind, target.from_name, target.to_name
        )
        if found:
            regions.append({**max(found, key=_region_size), "readonly": False})
    return regions


def _region_size(region: dict) -> float:
    """Area of a polygon region (shoelace, percent units); brush regions are one per instance."""
    points = region["value"].get("points")
    if not points:
        return 0.0
    xs, ys = np.array([p[0] for p in points]), np.array([p[1] for p in points])
    return float(abs(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1))) / 2)


def interactive_prediction(
    service, task, context, target: LabelTarget, known_labels: set[str], cache: PromptCache, load_image
) -> dict:
    """The prediction answering one task's context: ``{model_version, score, result: regions}``.

    Args:
        service: the served :class:`~instaseg.app.service.ModelService` (read once for the request).
        load_image: ``task -> RGB uint8 (H, W, 3)`` (the backend's fetch; its errors pass through), called
            only when the image's features are not cached.

    Raises:
        PromptError: a bad context, or a model engine without features.
    """
    from ..model.prompts import ImagePrompts

    if not isinstance(context, dict):
        raise PromptError(f"params.context must be an object, got {type(context).__name__}")
    items = context.get("result", [])
    if isinstance(items, list) and not items:
        return label_studio_prediction([], service.version, 0.0)
    location = (
        task.get("data", {}).get(target.data_key)
        if isinstance(task, dict) and isinstance(task.get("data"), dict)
        else None
    )
    parse_context(context, 1 << 20, 1 << 20, known_labels)  # refuse a bad context before fetching the image
    key = (
        service.version,
        id(service),
        str(task.get("id")) if isinstance(task, dict) else None,
        str(location),
    )

    def make():
        image = load_image(task)
        with service._lock:  # one model call at a time, as ModelService.predict
            try:
                return ImagePrompts(service.predictor, image)
            except ValueError as e:
                raise PromptError(str(e)) from None

    image_prompts = cache.get(key, make)
    height, width = image_prompts.original_size
    prompts = parse_context(context, width, height, known_labels)
    with service._lock:
        try:
            regions = answer_prompts(image_prompts, prompts, target, service.class_map)
        except ValueError as e:
            raise PromptError(str(e)) from None
    score = float(np.mean([r["score"] for r in regions])) if regions else 0.0
    return label_studio_prediction(regions, service.version, score)
