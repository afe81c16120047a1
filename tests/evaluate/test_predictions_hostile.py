"""Hostile predictions files: RLE counts that are negative or overrun the mask, coordinates as huge numbers,
names in another Unicode form. Each gives a ``DatasetError`` quoting the entry, never an OverflowError or a
read past pycocotools' buffers."""

from __future__ import annotations

import json
import unicodedata

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from instaseg.evaluate import check_predictions, read_predictions
from instaseg.formats.coco_export import records_to_coco
from instaseg.problems import DatasetError

from .factories import class_map, record_from_masks


@pytest.fixture()
def gt():
    masks = np.zeros((1, 40, 60), bool)
    masks[0, 5:20, 5:25] = True
    return records_to_coco([record_from_masks(masks, [1], image_id=1, name="caf\u00e9.png")], class_map(2))


def _prediction(**changes) -> dict:
    item = {"image_id": 1, "category_id": 1, "score": 0.9, "bbox": [5, 5, 20, 15]}
    item.update(changes)
    return item


def _rle(counts) -> dict:
    return {"size": [40, 60], "counts": counts}


def _compressed(counts: list[int], height: int, width: int) -> str:
    return coco_mask.frPyObjects({"size": [height, width], "counts": counts}, height, width)[
        "counts"
    ].decode()


@pytest.mark.parametrize(
    "segmentation, message",
    [
        (_rle([-5, 2405]), "a count is negative"),
        (_rle([10**9]), "a count overruns the mask"),
        (_rle([10**400]), "a count overruns the mask"),
        (_rle([5, 10, 20]), "they sum to 35 (too short)"),
        (_rle(_compressed([5, 10, 9000], 100, 100)), "they sum to 9015 (they overrun the mask)"),
        (_rle("\u00ff\u00ff"), "outside COCO's RLE alphabet"),
        ({"size": [10**30, 10**30], "counts": "0"}, "differs from the image size"),
        ({"size": "40x60", "counts": "0"}, "differs from the image size"),
        ([[1, 2, 3, 4, 10**400, 6]], "polygon 0 must be a list of at least 3 (x, y) pairs of finite numbers"),
        ([[v for i in range(80_000) for v in (60 * (i % 2), 20)]], "px long, over the limit of 4,000,000 px"),
    ],
    ids=[
        "negative",
        "overrun",
        "huge",
        "short",
        "compressed",
        "garbage",
        "size-huge",
        "size-str",
        "poly-huge",
        "outline",
    ],
)
def test_bad_segmentations_are_refused_with_the_entry(gt, segmentation, message):
    with pytest.raises(DatasetError, match="1 invalid predictions: entry 0 ") as error:
        check_predictions([_prediction(segmentation=segmentation)], gt, "preds.json")
    assert message in str(error.value)


@pytest.mark.parametrize(
    "bbox, message",
    [
        ([1e300, 0, 10, 10], "lies far outside the 60x40 image"),
        ([0, 0, 10**400, 10], r"bbox must be [x, y, w, h] numbers"),
        ([0, 0, float("nan"), 10], r"bbox must be [x, y, w, h] numbers"),
    ],
)
def test_absurd_boxes_are_refused(gt, bbox, message):
    with pytest.raises(DatasetError) as error:
        check_predictions([_prediction(bbox=bbox)], gt, "preds.json")
    assert message in str(error.value)


def test_huge_polygon_coordinates_are_clipped_to_the_image(gt):
    results, with_masks, _ = check_predictions(
        [_prediction(segmentation=[[1e300, 5, -1e300, 5, 20, 1e300]])], gt, "preds.json"
    )
    rle = results[0]["segmentation"]
    assert with_masks and 0 < coco_mask.area({**rle, "counts": rle["counts"].encode()}) <= 40 * 60


def test_file_names_match_in_another_unicode_form(gt):
    item = {k: v for k, v in _prediction().items() if k != "image_id"}
    item["file_name"] = unicodedata.normalize("NFD", "caf\u00e9.png")
    results, _, _ = check_predictions([item], gt, "preds.json")
    assert [r["image_id"] for r in results] == [1]


def test_a_predictions_file_nested_too_deeply(tmp_path):
    path = tmp_path / "p.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(DatasetError, match="nested too deeply"):
        read_predictions(str(path))
    path.write_text(json.dumps([_prediction()]))
    assert read_predictions(str(path)) == [_prediction()]
