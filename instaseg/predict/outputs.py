"""Writing what ``instaseg predict`` produces, to a local folder or a bucket URL.

Layout under the output folder ``OUT`` for an image named ``sub/photo.jpg`` (see :class:`ImageInput`):

- ``overlay/sub/photo.jpg``: the photo with masks, boxes, labels and scores (JPEG, quality 90);
- ``binary/sub/photo.png``: union of the instances, 0/255; ``instances/sub/photo/003_cat.png`` per instance;
- ``rgb/sub/photo.png``: the instances coloured on black;
- ``ids/sub/photo.png``: instance ids 0 (background), 1..N (8-bit, or 16-bit above 255 instances);
- ``parts/sub/photo.json``: this image's predictions (written last: its presence marks the image done);
- ``predictions.json``: COCO results for the whole run (``image_id`` 1-based in input order,
  ``file_name``, ``category_id``, ``score``, ``bbox`` [x, y, w, h], ``segmentation`` compressed RLE), and
  ``categories.json`` (the COCO categories);
- ``label_studio.json``: Label Studio tasks with the predictions as pre-annotations.
"""

from __future__ import annotations

import posixpath
import uuid
from dataclasses import dataclass

import numpy as np

from .. import render, storage
from ..core import ClassMap, mask_to_polygons
from .crops import CroppedInstances
from .inputs import ImageInput

# --save names -> what they write. "json" and "label-studio" are assembled for the whole run at the end.
SAVE_KINDS = ("overlay", "binary", "instance-masks", "rgb", "ids", "json", "label-studio")
IMAGE_KINDS = {"overlay": ".jpg", "binary": ".png", "rgb": ".png", "ids": ".png"}


def check_save_kinds(kinds: list[str]) -> list[str]:
    unknown = [k for k in kinds if k not in SAVE_KINDS]
    if unknown:
        raise ValueError(f"unknown output(s) {', '.join(unknown)}; valid: {', '.join(SAVE_KINDS)}")
    return list(dict.fromkeys(kinds))


@dataclass(frozen=True)
class LabelStudioOptions:
    """How predictions become Label Studio pre-annotations.

    Attributes:
        brush: brush RLE (``brushlabels``) instead of polygons (``polygonlabels``).
        from_name, to_name: the labeling config's control tag (``<PolygonLabels name=...>`` or
            ``<BrushLabels name=...>``) and its ``<Image name=...>``.
        data_key: the task's image field (``$image`` in the config).
        image_prefix: when set, ``data[data_key]`` is this prefix + the image's name (e.g. a bucket URL
            Label Studio can read, or ``/data/local-files/?d=photos/``); otherwise the image's location.
        model_version: written on each prediction.
    """

    brush: bool = False
    from_name: str = "label"
    to_name: str = "image"
    data_key: str = "image"
    image_prefix: str | None = None
    model_version: str = "instaseg"


def _stem(name: str) -> str:
    return posixpath.splitext(name)[0]


class OutputWriter:
    """Writes the chosen outputs of each image and, at the end, the run-wide JSON files.

    Args:
        out: output folder (path or URL).
        kinds: a subset of :data:`SAVE_KINDS`.
        class_map: the model's classes.
        label_studio: options of the ``label-studio`` output.
    """

    def __init__(
        self, out: str, kinds: list[str], class_map: ClassMap, label_studio: LabelStudioOptions | None = None
    ):
        self.out = out
        self.kinds = check_save_kinds(kinds)
        self.class_map = class_map
        self.label_studio = label_studio or LabelStudioOptions()

    def path(self, kind: str, name: str) -> str:
        """Where output ``kind`` of image ``name`` goes (``kind`` also ``"parts"`` and ``"instances"``)."""
        if kind in IMAGE_KINDS:
            return storage.join(self.out, kind, _stem(name) + IMAGE_KINDS[kind])
        if kind == "parts":
            return storage.join(self.out, "parts", _stem(name) + ".json")
        if kind == "instances":
            return storage.join(self.out, "instances", _stem(name))
        raise ValueError(f"no per-image file for output {kind!r}")

    def is_done(self, image: ImageInput) -> bool:
        """True when this image's part file exists (written after all its other outputs, so a run killed
        halfway through an image redoes that image)."""
        return storage.exists(self.path("parts", image.name))

    def write(self, image: ImageInput, pixels: np.ndarray, instances: CroppedInstances) -> None:
        """Write the per-image outputs of one image (pixels: RGB uint8 ``(H, W, 3)`` as predicted)."""
        height, width = pixels.shape[:2]
        if "overlay" in self.kinds:
            overlay = render.draw_overlay(pixels, instances, self.class_map)
            storage.write_bytes(self.path("overlay", image.name), render.encode_jpeg(overlay))
            del overlay
        if "binary" in self.kinds:
            data = render.encode_png(render.binary_mask(instances, height, width))
            storage.write_bytes(self.path("binary", image.name), data)
        if "instance-masks" in self.kinds:
            folder = self.path("instances", image.name)
            for i, mask in enumerate(render.instance_mask_images(instances, height, width)):
                label = self.class_map.name(int(instances.labels[i]))
                storage.write_bytes(storage.join(folder, f"{i + 1:03d}_{label}.png"), render.encode_png(mask))
        if "rgb" in self.kinds:
            data = render.encode_png(render.rgb_masked_image(instances, height, width))
            storage.write_bytes(self.path("rgb", image.name), data)
        if "ids" in self.kinds:
            data = render.encode_png(render.instance_id_image(instances, height, width))
            storage.write_bytes(self.path("ids", image.name), data)
        part = {"location": image.location, "file_name": image.name, "width": width, "height": height}
        if "json" in self.kinds:
            part["results"] = instances_to_results(instances)
        if "label-studio" in self.kinds:
            part["label_studio"] = instances_to_label_studio(instances, self.class_map, self.label_studio)
        storage.write_json(self.path("parts", image.name), part)

    def finish(self, images: list[ImageInput]) -> dict[str, str]:
        """Assemble ``predictions.json`` and ``label_studio.json`` from the part files of ``images``
        (those done in this run or an earlier one); returns ``{kind: location}`` of what was written."""
        written: dict[str, str] = {}
        if "json" not in self.kinds and "label-studio" not in self.kinds:
            return written
        results, tasks = [], []
        for image_id, image in enumerate(images, start=1):
            location = self.path("parts", image.name)
            if not storage.exists(location):
                continue  # failed in this run and never done before
            part = storage.read_json(location)
            for r in part.get("results", []):
                results.append({"image_id": image_id, "file_name": image.name, **r})
            if "label_studio" in part:
                tasks.append(self._task(image, part))
        if "json" in self.kinds:
            written["json"] = storage.join(self.out, "predictions.json")
            storage.write_json(written["json"], results)
            categories = [{"id": i + 1, "name": n} for i, n in enumerate(self.class_map.names)]
            storage.write_json(storage.join(self.out, "categories.json"), categories, indent=1)
        if "label-studio" in self.kinds:
            written["label-studio"] = storage.join(self.out, "label_studio.json")
            storage.write_json(written["label-studio"], tasks)
        return written

    def _task(self, image: ImageInput, part: dict) -> dict:
        options = self.label_studio
        source = options.image_prefix + image.name if options.image_prefix is not None else image.location
        result = part["label_studio"]
        score = float(np.mean([r["score"] for r in result])) if result else 0.0
        return {
            "data": {options.data_key: source},
            "predictions": [{"model_version": options.model_version, "score": score, "result": result}],
        }


def instances_to_results(instances: CroppedInstances) -> list[dict]:
    """COCO results of one image without ``image_id``: category, score, bbox ``[x, y, w, h]``, RLE."""
    results = []
    for i in range(len(instances)):
        x0, y0, x1, y1 = (float(v) for v in instances.boxes[i])
        results.append(
            {
                "category_id": int(instances.labels[i]),
                "score": round(float(instances.scores[i]), 5),
                "bbox": [round(v, 2) for v in (x0, y0, x1 - x0, y1 - y0)],
                "segmentation": instances.rle(i),
            }
        )
    return results


def instances_to_label_studio(
    instances: CroppedInstances, class_map: ClassMap, options: LabelStudioOptions
) -> list[dict]:
    """Label Studio ``result`` items of one image's predictions.

    Polygons: one ``polygonlabels`` region per connected part of a mask, points in percent of the image's
    width/height (Label Studio's convention). Brush: one ``brushlabels`` region per instance with its RLE.
    """
    from ..formats.brush import mask_to_brush_rle

    height, width = instances.height, instances.width
    results = []
    for i, (y0, x0, crop) in enumerate(instances.pieces()):
        name = class_map.name(int(instances.labels[i]))
        common = {
            "from_name": options.from_name,
            "to_name": options.to_name,
            "original_width": width,
            "original_height": height,
            "image_rotation": 0,
            "score": round(float(instances.scores[i]), 5),
        }
        if options.brush:
            if crop.any():
                value = {"format": "rle", "rle": mask_to_brush_rle(instances.mask(i)), "brushlabels": [name]}
                results.append({"id": uuid.uuid4().hex[:10], "type": "brushlabels", "value": value, **common})
            continue
        for polygon in mask_to_polygons(crop):
            xs = (np.asarray(polygon[0::2]) + x0) * (100.0 / width)
            ys = (np.asarray(polygon[1::2]) + y0) * (100.0 / height)
            points = [[round(float(x), 4), round(float(y), 4)] for x, y in zip(xs, ys, strict=True)]
            value = {"points": points, "polygonlabels": [name], "closed": True}
            results.append({"id": uuid.uuid4().hex[:10], "type": "polygonlabels", "value": value, **common})
    return results
