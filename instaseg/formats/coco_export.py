"""Records and predictions -> COCO: :func:`records_to_coco` (ground truth, ``instaseg convert``),
:func:`instances_to_coco_results` (predictions), :func:`write_coco` (a dataset to a file or folder).

Canonical COCO means: ids start at 1 (image id = ``Record.image_id``, category id = label 1..K), ``bbox``
is ``[x, y, width, height]`` in pixels, ``area`` is the mask area in pixels, and ``segmentation`` is
polygons or compressed RLE (``counts`` as a string).
"""

from __future__ import annotations

import posixpath

from .. import storage
from ..core import Annotation, ClassMap, Instances, Record
from ..dataset import Dataset
from ..masks import box_to_rle, mask_to_polygons, polygons_to_rle, rle_area, rle_to_mask

MASK_FORMATS = ("polygon", "rle")


def records_to_coco(
    records: list[Record],
    class_map: ClassMap,
    mask_format: str = "rle",
    file_names: dict[int, str] | None = None,
) -> dict:
    """The canonical COCO dict (``images``, ``annotations``, ``categories``) of ``records``.

    The one converter from records to COCO, used by ``instaseg convert`` and as the ground truth of every
    evaluation. Rules:

    - image ``id`` = ``Record.image_id`` (1-based position in the dataset as imported, so predictions can
      name images by it); annotation ids 1..N in record order; ``category_id`` = the label 1..K;
    - ``bbox`` ``[x, y, w, h]`` pixels; ``area`` the mask area in pixels;
    - ``mask_format="rle"``: every mask as compressed RLE (``counts`` str); ``"polygon"``: an object's
      source polygons when it has them, else polygons traced from its mask, and RLE for a mask polygons
      cannot reproduce pixel-exactly (one with holes). Crowd regions are always RLE;
    - a box-only object, in a dataset where other objects have masks, gets its filled box as an RLE mask
      (:func:`~instaseg.masks.box_to_rle`, the rasterisation training uses); in a dataset of boxes only,
      objects have ``segmentation: []`` and ``area`` the box area.

    Args:
        file_names: ``id(record) -> file_name`` to write instead of ``record.file_name``.
    """
    if mask_format not in MASK_FORMATS:
        raise ValueError(f"unknown mask format {mask_format!r}; valid: {', '.join(MASK_FORMATS)}")
    file_names = file_names or {}
    with_masks = any(a.has_mask for r in records for a in r.annotations)
    images, annotations = [], []
    for record in records:
        images.append(
            {
                "id": record.image_id,
                "file_name": file_names.get(id(record), record.file_name),
                "width": record.width,
                "height": record.height,
            }
        )
        for annotation in record.annotations:
            coco = annotation_to_coco(annotation, record, mask_format, with_masks)
            annotations.append({"id": len(annotations) + 1, **coco})
    categories = [
        {"id": label, "name": name, "supercategory": ""}
        for label, name in enumerate(class_map.names, start=1)
    ]
    return {"images": images, "annotations": annotations, "categories": categories}


def dataset_to_coco(
    dataset: Dataset,
    mask_format: str = "polygon",
    include_missing: bool = False,
    file_names: dict[int, str] | None = None,
) -> dict:
    """:func:`records_to_coco` of a dataset's records whose image file exists (all with ``include_missing``),
    with an ``info`` entry naming the source."""
    records = dataset.records if include_missing else dataset.present
    coco = records_to_coco(records, dataset.class_map, mask_format, file_names)
    info = {"description": f"exported by instaseg from {dataset.format} {dataset.source}"}
    return {"info": info, **coco}


def annotation_to_coco(annotation: Annotation, record: Record, mask_format: str, with_masks: bool) -> dict:
    """One COCO annotation dict without ``id`` (see :func:`records_to_coco` for the rules)."""
    x0, y0, x1, y1 = annotation.box
    coco = {
        "image_id": record.image_id,
        "category_id": annotation.label,
        "bbox": [x0, y0, x1 - x0, y1 - y0],
        "area": annotation.area,
        "iscrowd": int(annotation.iscrowd),
    }
    rle = annotation.rle
    if rle is None:
        if not with_masks:
            coco["segmentation"] = []
            return coco
        rle = box_to_rle(annotation.box, record.height, record.width)
        coco["area"] = float(rle_area(rle))
    if annotation.rle is None or annotation.iscrowd or mask_format == "rle":
        coco["segmentation"] = {"size": list(rle["size"]), "counts": rle["counts"]}
    elif annotation.polygons:
        coco["segmentation"] = [list(p) for p in annotation.polygons]
    else:
        polygons = mask_to_polygons(rle_to_mask(rle))
        exact = polygons and polygons_to_rle(polygons, record.height, record.width)["counts"] == rle["counts"]
        coco["segmentation"] = polygons if exact else dict(rle)
    return coco


def instances_to_coco_results(instances: Instances, image_id: int | None = None) -> list[dict]:
    """COCO results of one image's predictions: the one converter, used by ``predict --save json``, the
    web demo's download and every evaluation (so they score the same).

    Each instance gives ``{"image_id" (when given), "category_id": label 1..K, "score" (5 decimals),
    "bbox": [x, y, w, h] pixels (2 decimals), "segmentation": compressed RLE}`` (no segmentation for
    box-only instances). ``instances.scores`` is required unless there are none.
    """
    if instances.scores is None and len(instances):
        raise ValueError(
            f"predictions for image {image_id} have no scores; COCO AP needs a score per instance"
        )
    results = []
    for i in range(len(instances)):
        x0, y0, x1, y1 = (float(v) for v in instances.boxes[i])
        item = {} if image_id is None else {"image_id": int(image_id)}
        item["category_id"] = int(instances.labels[i])
        item["score"] = round(float(instances.scores[i]), 5)
        item["bbox"] = [round(v, 2) for v in (x0, y0, x1 - x0, y1 - y0)]
        if instances.has_masks:
            item["segmentation"] = instances.rle(i)
        results.append(item)
    return results


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
