"""COCO import (plain and Label Studio exports, real files) and COCO export round trips."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from instaseg.dataset import Dataset
from instaseg.formats.coco import load_coco
from instaseg.formats.coco_export import dataset_to_coco, write_coco
from instaseg.masks import box_to_rle, mask_to_polygons, mask_to_rle, polygons_to_rle, rle_to_mask
from instaseg.problems import ProblemLog

LS = "label_studio_1.23_exports"
POLY_ZIPS = ["poly_COCO.zip", "poly_COCO_sdk.zip", "poly_snapshot_COCO.zip", "poly_COCO_WITH_IMAGES.zip"]


def load(source, images=None) -> Dataset:
    log = ProblemLog()
    class_map, records = load_coco(str(source), None if images is None else str(images), log)
    return Dataset("coco", str(source), class_map, records, log.problems)


@pytest.mark.parametrize("path", ["furniture_labelstudio/coco/result.json", "furniture_labelstudio/coco"])
def test_furniture_labelstudio_coco(datasets, path):
    dataset = load(datasets / path)
    assert len(dataset.records) == 136
    assert len(dataset.missing) == 112 and len(dataset.present) == 24
    assert dataset.num_instances() == 65
    assert dataset.category_counts() == {"Chair": 5, "Painting": 20, "Plant": 14, "Sofa": 9, "Table": 17}
    missing = [p for p in dataset.problems if "not found" in p.message]
    assert len(missing) == 1 and missing[0].message.startswith("112 of 136 listed images were not found")
    assert not [p for p in dataset.problems if p.level == "error"]
    first = dataset.records[0]
    assert first.file_name == "images/2f4821cd-10.jpg" and first.image is None  # backslash normalised
    present = dataset.present[0]
    assert present.mode == "RGB" and Image.open(present.image).size == (present.width, present.height)
    assert [r.image_id for r in dataset.records] == list(range(1, 137))


# (zip, images folder given?, class names, expected instances per image)
LS_CASES = [
    ("poly_COCO.zip", True, ("blob", "triangle"), [2, 2, 2]),
    ("poly_COCO_sdk.zip", True, ("blob", "triangle"), [2, 2, 2]),
    ("poly_snapshot_COCO.zip", True, ("blob", "triangle"), [2, 2, 2]),
    ("poly_COCO_WITH_IMAGES.zip", False, ("blob", "triangle"), [2, 2, 2]),
    ("brush_BRUSH_TO_COCO.zip", True, ("blob", "triangle"), [1, 2, 2]),
    ("brush_COCO.zip", True, ("blob", "triangle"), [0, 0, 0]),
]


@pytest.mark.parametrize("name, with_images, names, per_image", LS_CASES, ids=[c[0] for c in LS_CASES])
def test_label_studio_coco_zips(datasets, name, with_images, names, per_image):
    dataset = load(datasets / LS / name, datasets / LS / "images" if with_images else None)
    assert dataset.class_map.names == names
    assert dataset.problems == []
    assert len(dataset.present) == 3
    assert [len(r.annotations) for r in dataset.records] == per_image
    for record in dataset.records:
        with Image.open(
            record.image
            if "::" not in record.image
            else str(datasets / LS / "images" / record.file_name.split("__")[-1])
        ) as img:
            assert img.size == (record.width, record.height)
        assert "\\" not in record.file_name and not record.file_name.startswith("..")


def test_brush_to_coco_maps_ids_from_one(datasets):
    dataset = load(datasets / LS / "brush_BRUSH_TO_COCO.zip", datasets / LS / "images")
    # category 1 = blob, 2 = triangle in the file; labels are 1 and 2 after mapping, the same names.
    record = dataset.records[1]  # 883a40c7-img0.png: triangle (2) then blob (1)
    assert record.image.endswith("images/img0.png")
    assert [a.label for a in record.annotations] == [2, 1]


def test_poly_zip_masks_agree(datasets):
    loaded = [load(datasets / LS / z, datasets / LS / "images") for z in POLY_ZIPS]
    reference = [r.instances() for r in loaded[0].records]
    assert sum(int(i.dense_masks().sum()) for i in reference) > 1000
    for dataset in loaded[1:]:
        for ref, record in zip(reference, dataset.records, strict=True):
            inst = record.instances()
            np.testing.assert_array_equal(inst.dense_masks(), ref.dense_masks())
            np.testing.assert_array_equal(inst.labels, ref.labels)


def test_zip_images_are_readable_through_the_zip(datasets):
    from instaseg.images import load_image

    dataset = load(datasets / LS / "poly_COCO_WITH_IMAGES.zip")
    record = dataset.records[0]
    assert record.image.startswith("zip://images/a43e3fb6__img0.png::")
    direct = np.asarray(Image.open(datasets / LS / "images" / "img0.png").convert("RGB"))
    np.testing.assert_array_equal(load_image(record.image), direct)


# ---- round trips on synthetic COCO -------------------------------------------------------------------

H, W = 30, 40


def synthetic_coco() -> dict:
    mask = np.zeros((H, W), bool)
    mask[5:15, 5:12] = True
    mask[8:10, 7:9] = False  # a hole: polygons cannot hold it
    ring = mask_to_rle(mask)
    crowd = np.zeros((H, W), bool)
    crowd[20:28, 1:39] = True
    uncompressed = []  # column-major run lengths, starting with background
    flat = crowd.flatten(order="F")
    value, run = False, 0
    for pixel in flat:
        if pixel != value:
            uncompressed.append(run)
            value, run = pixel, 0
        run += 1
    uncompressed.append(run)
    return {
        "images": [{"id": 7, "file_name": "img.png", "width": W, "height": H}],
        "categories": [{"id": 3, "name": "b"}, {"id": 1, "name": "a"}],
        "annotations": [
            {
                "id": 1,
                "image_id": 7,
                "category_id": 1,
                "iscrowd": 0,
                "bbox": [0, 0, 1, 1],
                "segmentation": [[20, 2, 30, 2, 30, 8], [32, 10, 38, 10, 38, 16, 32, 16]],
            },  # two polygons
            {"id": 2, "image_id": 7, "category_id": 3, "iscrowd": 0, "segmentation": ring},  # compressed RLE
            {
                "id": 3,
                "image_id": 7,
                "category_id": 3,
                "iscrowd": 1,
                "segmentation": {"size": [H, W], "counts": uncompressed},
            },  # uncompressed RLE, crowd
            {"id": 4, "image_id": 7, "category_id": 1, "iscrowd": 1, "segmentation": [[1, 1, 4, 1, 4, 4]]},
            {
                "id": 5,
                "image_id": 7,
                "category_id": 1,
                "iscrowd": 0,
                "segmentation": [],
                "bbox": [2, 3, 4, 5],
            },
        ],
    }


@pytest.mark.parametrize("mask_format", ["polygon", "rle"])
def test_round_trip_is_pixel_exact(tmp_path, mask_format):
    Image.new("RGB", (W, H)).save(tmp_path / "img.png")
    (tmp_path / "coco.json").write_text(json.dumps(synthetic_coco()))
    first = load(tmp_path / "coco.json")
    assert first.class_map.names == ("a", "b")  # sorted by category id: 1 -> label 1, 3 -> label 2
    assert [p.message for p in first.problems] == [
        "1 of 5 objects have no mask (empty segmentation); they are kept as boxes only"
    ]
    out = tmp_path / "out"
    write_coco(first, str(out), mask_format=mask_format, copy_images=True)
    second = load(out)
    a, b = first.records[0], second.records[0]
    assert [x.label for x in a.annotations] == [x.label for x in b.annotations] == [1, 2, 2, 1, 1]
    assert [x.iscrowd for x in b.annotations] == [False, False, True, True, False]
    assert [x.rle for x in a.annotations[:4]] == [x.rle for x in b.annotations[:4]]
    # The box-only object, in a dataset with masks, is written as the filled box training and evaluation use.
    assert a.annotations[4].rle is None and b.annotations[4].rle == box_to_rle((2, 3, 6, 8), H, W)
    assert b.annotations[4].box == (2.0, 3.0, 6.0, 8.0)
    if mask_format == "polygon":  # the source polygons travel unchanged
        assert b.annotations[0].polygons == a.annotations[0].polygons and len(b.annotations[0].polygons) == 2
    ia, ib = a.instances(crowd=True), b.instances(crowd=True)
    np.testing.assert_array_equal(ia.dense_masks(), ib.dense_masks())
    np.testing.assert_array_equal(ia.boxes, ib.boxes)


def test_export_is_canonical(tmp_path):
    Image.new("RGB", (W, H)).save(tmp_path / "img.png")
    (tmp_path / "coco.json").write_text(json.dumps(synthetic_coco()))
    coco = dataset_to_coco(load(tmp_path / "coco.json"), "polygon")
    assert coco["categories"] == [
        {"id": 1, "name": "a", "supercategory": ""},
        {"id": 2, "name": "b", "supercategory": ""},
    ]
    assert coco["images"] == [{"id": 1, "file_name": "img.png", "width": W, "height": H}]
    anns = coco["annotations"]
    assert [a["id"] for a in anns] == [1, 2, 3, 4, 5]
    assert isinstance(anns[1]["segmentation"], dict)  # mask with a hole stays RLE
    assert isinstance(anns[2]["segmentation"]["counts"], str)  # crowd: compressed RLE
    assert isinstance(anns[3]["segmentation"], dict)  # crowd polygon written as RLE
    assert anns[4]["segmentation"] == box_to_rle((2, 3, 6, 8), H, W) and anns[4]["bbox"] == [
        2.0,
        3.0,
        4.0,
        5.0,
    ]
    assert anns[4]["area"] == 20
    assert anns[2]["area"] == 8 * 38 and anns[2]["bbox"] == [1.0, 20.0, 38.0, 8.0]


def test_traced_polygons_reproduce_masks_without_holes():
    rng = np.random.default_rng(0)
    for _ in range(20):
        mask = np.zeros((H, W), bool)
        y, x = rng.integers(0, 25), rng.integers(0, 35)
        mask[y : y + rng.integers(1, 6), x : x + rng.integers(1, 6)] = True
        mask[rng.integers(0, H, 3), rng.integers(0, W, 3)] = True  # single pixels too
        np.testing.assert_array_equal(rle_to_mask(polygons_to_rle(mask_to_polygons(mask), H, W)), mask)


def test_write_to_fsspec_url(datasets):
    dataset = load(datasets / LS / "poly_COCO_WITH_IMAGES.zip")
    written = write_coco(dataset, "memory://instaseg-test/out", mask_format="rle", copy_images=True)
    assert written == "memory://instaseg-test/out/annotations.json"
    again = load("memory://instaseg-test/out")
    assert [r.file_name for r in again.records] == [
        f"images/{n}" for n in ("a43e3fb6__img0.png", "b1e23a5b__img1.png", "b7759cab__img2.png")
    ]
    assert all(r.image.startswith("memory://") and r.image.endswith(r.file_name) for r in again.records)
    for a, b in zip(dataset.records, again.records, strict=True):
        np.testing.assert_array_equal(a.instances().dense_masks(), b.instances().dense_masks())
