"""Write an imported :class:`~instaseg.dataset.Dataset` as canonical COCO instance segmentation.

Canonical means: image, annotation and category ids start at 1 (category id = label 1..K), ``bbox`` is
``[x, y, width, height]`` in pixels, ``area`` is the mask area in pixels (the box area for box-only
objects), and ``segmentation`` is either polygons or compressed RLE (``counts`` as a string).
"""

from __future__ import annotations

import posixpath

from .. import storage
from ..core import Annotation, Record, mask_to_polygons, mask_to_rle, polygons_to_rle, rle_to_mask
from ..dataset import Dataset

MASK_FORMATS = ("polygon", "rle")


def dataset_to_coco(
    dataset: Dataset,
    mask_format: str = "polygon",
    include_missing: bool = False,
    file_names: dict[int, str] | None = None,
) -> dict:
    """The COCO dict (``images``, ``annotations``, ``categories``, ``info``) of ``dataset``.

    Args:
        dataset: the imported dataset.
        mask_format: ``"polygon"``: an object's source polygons when it has them, else polygons traced
            from its mask; a mask that polygons cannot reproduce pixel-exactly (one with holes) is written
            as RLE. ``"rle"``: every mask as compressed RLE. Crowd regions are always RLE; box-only objects
            get an empty ``segmentation``.
        include_missing: also list images whose file is missing (``record.image is None``).
        file_names: ``id(record) -> file_name`` to write instead of ``record.file_name``.
    """
    if mask_format not in MASK_FORMATS:
        raise ValueError(f"unknown mask format {mask_format!r}; valid: {', '.join(MASK_FORMATS)}")
    records = dataset.records if include_missing else dataset.present
    file_names = file_names or {}
    images, annotations = [], []
    for image_id, record in enumerate(records, start=1):
        images.append(
            {
                "id": image_id,
                "file_name": file_names.get(id(record), record.file_name),
                "width": record.width,
                "height": record.height,
            }
        )
        for annotation in record.annotations:
            annotations.append(
                annotation_to_coco(
                    annotation, record, mask_format, annotation_id=len(annotations) + 1, image_id=image_id
                )
            )
    categories = [
        {"id": label, "name": name, "supercategory": ""}
        for label, name in enumerate(dataset.class_map.names, start=1)
    ]
    info = {"description": f"exported by instaseg from {dataset.format} {dataset.source}"}
    return {"info": info, "images": images, "annotations": annotations, "categories": categories}


def annotation_to_coco(
    annotation: Annotation, record: Record, mask_format: str, annotation_id: int, image_id: int
) -> dict:
    """One COCO annotation dict; ``bbox`` is xywh, ``category_id`` the label."""
    x0, y0, x1, y1 = annotation.box
    coco = {
        "id": annotation_id,
        "image_id": image_id,
        "category_id": annotation.label,
        "bbox": [x0, y0, x1 - x0, y1 - y0],
        "area": annotation.area,
        "iscrowd": int(annotation.iscrowd),
    }
    if annotation.rle is None:
        coco["segmentation"] = []
    elif annotation.iscrowd or mask_format == "rle":
        coco["segmentation"] = {"size": list(annotation.rle["size"]), "counts": annotation.rle["counts"]}
    elif annotation.polygons:
        coco["segmentation"] = [list(p) for p in annotation.polygons]
    else:
        polygons = mask_to_polygons(rle_to_mask(annotation.rle))
        exact = (
            polygons
            and polygons_to_rle(polygons, record.height, record.width)["counts"]
            == mask_to_rle(rle_to_mask(annotation.rle))["counts"]
        )
        coco["segmentation"] = polygons if exact else dict(annotation.rle)
    return coco


def annotation_location(location: str) -> str:
    """The JSON file written for ``location``: itself when it ends with ``.json``, else ``annotations.json`` in it."""
    return location if location.lower().endswith(".json") else storage.join(location, "annotations.json")


def write_coco(
    dataset: Dataset,
    location: str,
    mask_format: str = "polygon",
    copy_images: bool = False,
    include_missing: bool = False,
) -> str:
    """Write ``dataset`` as COCO to ``location`` (a ``.json`` path or a folder; local path or fsspec URL).

    With ``copy_images``, the image files are copied into ``images/`` next to the JSON and ``file_name``
    becomes ``images/<name>`` (names made unique); otherwise ``file_name`` is the record's name and the
    images stay where they are. Returns the location of the JSON written.
    """
    json_location = annotation_location(location)
    file_names: dict[int, str] = {}
    if copy_images:
        folder = (
            storage.parent(json_location)
            if storage.is_url(json_location)
            else posixpath.dirname(json_location) or "."
        )
        taken: set[str] = set()
        for record in dataset.present:
            name = _unique(posixpath.basename(record.file_name) or f"{record.image_id}.png", taken)
            storage.write_bytes(storage.join(folder, "images", name), storage.read_bytes(record.image))
            file_names[id(record)] = f"images/{name}"
    coco = dataset_to_coco(dataset, mask_format, include_missing=include_missing, file_names=file_names)
    storage.write_json(json_location, coco)
    return json_location


def _unique(name: str, taken: set[str]) -> str:
    stem, suffix = posixpath.splitext(name)
    candidate, n = name, 1
    while candidate.lower() in taken:
        n += 1
        candidate = f"{stem}_{n}{suffix}"
    taken.add(candidate.lower())
    return candidate
