"""Read and check a COCO results file (predictions made by instaseg or by another tool).

The file is a JSON list of ``{"image_id", "category_id", "score", "bbox", "segmentation"}``, as written by
pycocotools/detectron2/mmdetection, referring to the *canonical COCO* of the dataset (see
:func:`instaseg.evaluate.cocoeval.records_to_coco`):

- ``image_id``: ``Record.image_id``, 1-based in the order the importer lists the images; ``file_name``
  (the record's file name, or just its base name when unique) may be given instead;
- ``category_id``: the label 1..K of the dataset's class map (class names in dataset order);
- ``bbox``: ``[x, y, w, h]`` pixels, corners within the image enlarged by its size on every side;
  ``segmentation``: COCO RLE (compressed or not; counts non-negative and covering the image exactly) or
  polygons (clipped to the image, outlines within
  :data:`~instaseg.formats.limits.MAX_OUTLINE_PIXELS`), at the image's size. A prediction with a mask and
  no box gets the mask's box. File names match in Unicode NFC.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from pycocotools import mask as coco_mask

from ..formats.geometry import checked_counts, polygons_rle
from ..formats.image_files import nfc
from ..formats.limits import read_json_file, shown
from ..masks import rle_for_pycocotools
from ..problems import DatasetError

_EXAMPLES = 5  # how many offending entries an error message quotes


def read_predictions(location: str) -> Any:
    """The parsed JSON of a predictions file (local path or URL); ``DatasetError`` when unreadable."""
    try:
        return read_json_file(location)
    except DatasetError as e:
        message = e.problem.message
        if message == "file not found":
            raise DatasetError("predictions file not found", file=location) from None
        if message.startswith("not a regular file"):
            raise DatasetError(
                "the predictions file is not a regular file (a FIFO, device or socket); refused: give the "
                "JSON file that predict (or another tool) wrote",
                file=location,
            ) from None
        raise DatasetError(f"cannot read the predictions file as JSON: {message}", file=location) from None


def check_predictions(
    items: Any, gt: dict, source: str, selected: set[int] | None = None
) -> tuple[list[dict], bool, list[str]]:
    """Check COCO results against the dataset's canonical COCO ``gt`` and normalise them.

    Args:
        items: the parsed results (a list of dicts).
        gt: canonical COCO of the *whole* dataset (so that an image of another split is told apart from an
            image the dataset does not have).
        source: the file name, for messages.
        selected: image ids being evaluated; predictions on other images of the dataset are dropped (with a
            note). ``None``: all.

    Returns:
        ``(results, with_masks, notes)``: results with ``bbox`` ``[x, y, w, h]`` floats, ``score`` float and,
        when ``with_masks``, ``segmentation`` as compressed RLE (``counts`` str); ``with_masks`` is true when
        every prediction has a mask; notes for the report.

    Raises:
        DatasetError: not a list, empty, an entry naming an image or class the dataset does not have, or
            an entry with missing or invalid fields. The message quotes the first offending entries.
    """
    _check_is_results_list(items, source)
    images = {img["id"]: img for img in gt["images"]}
    categories = {c["id"]: c["name"] for c in gt["categories"]}
    try:
        results, bad, other_split = _normalise_all(items, images, _names(gt["images"]), categories, selected)
    except RecursionError:  # a value nested just below the parser's limit, too deep to print
        raise DatasetError(
            "a value is nested too deeply to read (a malformed or hostile file)", file=source
        ) from None
    if bad["image"]:
        raise DatasetError(
            f"{len(bad['image'])} predictions refer to images the dataset does not have "
            f"({_first(bad['image'])}); image_id must be the dataset's 1-based image id "
            f"(1..{len(images)}, in import order) or give file_name",
            file=source,
        )
    if bad["class"]:
        valid_classes = ", ".join(f"{i}={n}" for i, n in categories.items())
        raise DatasetError(
            f"{len(bad['class'])} predictions refer to unknown classes ({_first(bad['class'])}); "
            f"valid category_id: {valid_classes}",
            file=source,
        )
    if bad["other"]:
        raise DatasetError(f"{len(bad['other'])} invalid predictions: {_first(bad['other'])}", file=source)
    with_masks, notes = _mask_notes(results, other_split)
    return results, with_masks, notes


def _check_is_results_list(items: Any, source: str) -> None:
    """``DatasetError`` unless ``items`` is a non-empty list (a COCO dataset file is told apart)."""
    if isinstance(items, dict):
        hint = " (this looks like a COCO dataset file: pass it as DATA)" if "images" in items else ""
        raise DatasetError(
            "expected a COCO results list [{image_id, category_id, score, bbox, segmentation}, "
            f"...], got a JSON object{hint}",
            file=source,
        )
    if not isinstance(items, list):
        raise DatasetError(f"expected a COCO results list, got {type(items).__name__}", file=source)
    if not items:
        raise DatasetError(
            "the predictions file holds no predictions (an empty list): there is nothing to "
            "evaluate; every metric would be 0",
            file=source,
        )


def _normalise_all(
    items: list, images: dict[int, dict], by_name: dict[str, int], categories: dict, selected: set[int] | None
) -> tuple[list[dict], dict[str, list[str]], int]:
    """``(normalised results, {"image"|"class"|"other": offending entries}, predictions on other images)``.

    ``images``: image id -> COCO image; ``by_name``: file name -> image id (see :func:`_names`);
    ``categories``: category id -> name; ``selected``: the evaluated image ids (``None``: all).
    """
    results: list[dict] = []
    bad: dict[str, list[str]] = {"image": [], "class": [], "other": []}
    other_split = 0
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            bad["other"].append(f"entry {index}: not an object")
            continue
        image_id = _image_id(item, by_name)
        if image_id not in images:
            bad["image"].append(
                f"entry {index}: image_id={shown(item.get('image_id'))}"
                + (f" file_name={shown(item['file_name'])}" if "file_name" in item else "")
            )
            continue
        if _category_id(item) not in categories:
            bad["class"].append(f"entry {index}: category_id={shown(item.get('category_id'))}")
            continue
        if selected is not None and image_id not in selected:
            other_split += 1
            continue
        try:
            results.append(_normalise(item, image_id, images[image_id]))
        except ValueError as e:
            bad["other"].append(f"entry {index} (image {images[image_id]['file_name']}): {e}")
    return results, bad, other_split


def _mask_notes(results: list[dict], other_split: int) -> tuple[bool, list[str]]:
    """``(with_masks, notes)``: whether every result has a mask (else masks are removed from all of them,
    in place) and the report's notes on left-out and mask-less predictions."""
    notes = []
    if other_split:
        notes.append(f"{other_split} predictions on images outside the evaluated split were left out.")
    if not results:
        notes.append("No prediction falls on the evaluated images: every metric is 0.")
    missing = sum("segmentation" not in r for r in results)
    with_masks = bool(results) and missing == 0
    if missing and missing < len(results):
        notes.append(f"{missing} of {len(results)} predictions have no mask: mask metrics are not available.")
    elif missing:
        notes.append("The predictions have boxes only: mask metrics are not available.")
    if not with_masks:
        for r in results:
            r.pop("segmentation", None)
    return with_masks, notes


def _names(images: list[dict]) -> dict[str, int]:
    """file_name and (when unique) base name -> image id."""
    by_name: dict[str, int | None] = {}
    for img in images:
        by_name[nfc(img["file_name"])] = img["id"]
    for img in images:
        name = nfc(img["file_name"])
        base = name.rsplit("/", 1)[-1]
        if base != name:
            by_name[base] = None if base in by_name else img["id"]
    return {k: v for k, v in by_name.items() if v is not None}


def _image_id(item: dict, by_name: dict[str, int]) -> Any:
    """The dataset's image id of a prediction: by ``file_name`` when it has one, else by ``image_id``.

    A file name names the image whatever order the other tool numbered images in (``instaseg predict``
    numbers them in the order it read them), so it wins over ``image_id``.
    """
    name = item.get("file_name")
    if isinstance(name, str):
        name = nfc(name.replace("\\", "/"))
        return by_name.get(name, by_name.get(name.rsplit("/", 1)[-1]))
    value = item.get("image_id")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _category_id(item: dict) -> int | None:
    """A prediction's ``category_id`` as an integer (``3.0`` is 3), or ``None`` when it is not one."""
    value = item.get("category_id")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _first(messages: list[str]) -> str:
    more = f"; and {len(messages) - _EXAMPLES} more" if len(messages) > _EXAMPLES else ""
    return "; ".join(messages[:_EXAMPLES]) + more


def _normalise(item: dict, image_id: int, image: dict) -> dict:
    score = item.get("score")
    if not _finite(score):
        raise ValueError(f"score must be a number, got {shown(score)}")
    out = {"image_id": image_id, "category_id": _category_id(item), "score": float(score)}
    height, width = image["height"], image["width"]
    segmentation = item.get("segmentation")
    if segmentation is not None and segmentation != []:
        out["segmentation"] = _to_rle(segmentation, height, width)
    bbox = item.get("bbox")
    if bbox is None and "segmentation" in out:
        bbox = [float(v) for v in coco_mask.toBbox(rle_for_pycocotools(out["segmentation"]))]
    if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4 and all(_finite(v) for v in bbox)):
        raise ValueError(f"bbox must be [x, y, w, h] numbers, got {shown(bbox)}")
    if bbox[2] < 0 or bbox[3] < 0:
        raise ValueError(f"bbox width and height must be >= 0, got {shown(bbox)}")
    x0, y0, x1, y1 = float(bbox[0]), float(bbox[1]), float(bbox[0]) + bbox[2], float(bbox[1]) + bbox[3]
    if min(x0, x1) < -width or max(x0, x1) > 2 * width or min(y0, y1) < -height or max(y0, y1) > 2 * height:
        raise ValueError(
            f"bbox {shown(bbox)} lies far outside the {width}x{height} image (corners must be within the image "
            "enlarged by its size on every side)"
        )
    out["bbox"] = [float(v) for v in bbox]
    return out


def _finite(value: Any) -> bool:
    if not isinstance(value, (int, float, np.number)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer too large for a float
        return False


def _to_rle(segmentation: Any, height: int, width: int) -> dict:
    """Compressed RLE (``counts`` str) of a COCO segmentation at ``height`` x ``width``."""
    if isinstance(segmentation, dict):
        size = segmentation.get("size")
        if not isinstance(size, list | tuple) or list(size) != [height, width]:
            raise ValueError(
                f"mask size {shown(size)} differs from the image size [{height}, {width}] (H, W)"
            )
        counts = segmentation.get("counts")
        if not isinstance(counts, list | str | bytes):
            raise ValueError("RLE 'counts' must be a string or a list of integers")
        runs = checked_counts(counts, height, width)  # ValueError: negative, overrunning, malformed
        if isinstance(counts, list):
            rle = coco_mask.frPyObjects({"size": [height, width], "counts": runs.tolist()}, height, width)
        else:
            rle = rle_for_pycocotools({"size": [height, width], "counts": counts})
    elif isinstance(segmentation, list) and all(isinstance(p, list) and len(p) >= 6 for p in segmentation):
        rle = polygons_rle(segmentation, height, width)
    else:
        raise ValueError("segmentation must be COCO RLE {size, counts} or polygons [[x1, y1, x2, y2, ...]]")
    counts = rle["counts"]
    return {
        "size": [height, width],
        "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts,
    }
