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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from .. import render, storage
from ..core import ClassMap, Instances
from ..formats.coco_export import instances_to_coco_results
from . import check_save_kinds
from .inputs import ImageInput

IMAGE_KINDS = {"overlay": ".jpg", "binary": ".png", "rgb": ".png", "ids": ".png"}


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
        kinds: a subset of :data:`instaseg.predict.SAVE_KINDS`.
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

    def write(self, image: ImageInput, pixels: np.ndarray, instances: Instances) -> None:
        """Write the per-image outputs of one image (pixels: RGB uint8 ``(H, W, 3)`` as predicted).

        The overlay is drawn, encoded and written in a second thread while this one makes the masks and
        the JSON (OpenCV and zlib release the GIL); the part file, which marks the image done, comes last.
        """
        height, width = pixels.shape[:2]
        with ThreadPoolExecutor(max_workers=1) as pool:
            overlay = (
                pool.submit(self._write_overlay, image, pixels, instances)
                if "overlay" in self.kinds
                else None
            )
            self._write_masks(image, instances)
            part = self._part(image, width, height, instances)
            if overlay is not None:
                overlay.result()  # raises the overlay's error, if any
        storage.write_json(self.path("parts", image.name), part)

    def _write_overlay(self, image: ImageInput, pixels: np.ndarray, instances: Instances) -> None:
        overlay = render.draw_overlay(pixels, instances, self.class_map)
        storage.write_bytes(self.path("overlay", image.name), render.encode_jpeg(overlay))

    def _write_masks(self, image: ImageInput, instances: Instances) -> None:
        if "binary" in self.kinds:
            data = render.encode_png(render.binary_mask(instances))
            storage.write_bytes(self.path("binary", image.name), data)
        if "instance-masks" in self.kinds:
            folder = self.path("instances", image.name)
            for i, mask in enumerate(render.instance_mask_images(instances)):
                label = storage.safe_file_name(self.class_map.name(int(instances.labels[i])))
                storage.write_bytes(storage.join(folder, f"{i + 1:03d}_{label}.png"), render.encode_png(mask))
        if "rgb" in self.kinds:
            data = render.encode_png(render.rgb_masked_image(instances))
            storage.write_bytes(self.path("rgb", image.name), data)
        if "ids" in self.kinds:
            data = render.encode_png(render.instance_id_image(instances))
            storage.write_bytes(self.path("ids", image.name), data)

    def _part(self, image: ImageInput, width: int, height: int, instances: Instances) -> dict:
        part = {"location": image.location, "file_name": image.name, "width": width, "height": height}
        if "json" in self.kinds:
            part["results"] = instances_to_coco_results(instances)
        if "label-studio" in self.kinds:
            # Imported only when asked for: the brush encoder loads label-studio-sdk (~3 s of imports).
            from ..formats.labelstudio_export import instances_to_label_studio_regions

            options = self.label_studio
            names = {i + 1: name for i, name in enumerate(self.class_map.names)}
            kind = "brushlabels" if options.brush else "polygonlabels"
            part["label_studio"] = instances_to_label_studio_regions(
                instances, names, kind, options.from_name, options.to_name
            )
        return part

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
        from ..formats.labelstudio_export import label_studio_prediction

        options = self.label_studio
        source = options.image_prefix + image.name if options.image_prefix is not None else image.location
        prediction = label_studio_prediction(part["label_studio"], options.model_version)
        return {"data": {options.data_key: source}, "predictions": [prediction]}
