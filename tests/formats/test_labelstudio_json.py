"""Label Studio native JSON importer on real exports, cross-checked against the same projects' other exports."""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from instaseg.formats.labelstudio_json import image_reference, load_labelstudio_json
from instaseg.masks import polygons_to_rle, rle_to_mask
from instaseg.problems import ProblemLog

EXPORTS = "label_studio_1.23_exports"
FURNITURE_JSON = "furniture_labelstudio/only-json/project-8-at-2023-12-18-13-17-708e3340.json"


def load(path, images=None):
    log = ProblemLog()
    class_map, records = load_labelstudio_json(str(path), images and str(images), log)
    return class_map, records, log


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def match_instances(ours: list[tuple[str, np.ndarray]], theirs: list[tuple[str, np.ndarray]]) -> list[float]:
    """Pair each (class, mask) of ``ours`` with the best unused one of ``theirs`` of the same class."""
    assert sorted(n for n, _ in ours) == sorted(n for n, _ in theirs)
    unused = list(theirs)
    ious = []
    for name, mask in ours:
        scores = [iou(mask, m) if n == name else -1.0 for n, m in unused]
        best = int(np.argmax(scores))
        ious.append(scores[best])
        unused.pop(best)
    return ious


def named_masks(record, class_map) -> list[tuple[str, np.ndarray]]:
    return [(class_map.name(a.label), rle_to_mask(a.rle)) for a in record.annotations]


def test_furniture_counts(datasets):
    class_map, records, log = load(datasets / FURNITURE_JSON, datasets / "furniture_labelstudio/coco/images")
    assert class_map.names == ("Chair", "Painting", "Plant", "Sofa", "Table")
    assert len(records) == 136
    present = [r for r in records if r.image is not None]
    assert len(present) == 24
    counts = Counter(class_map.name(a.label) for r in present for a in r.annotations)
    assert counts == {"Painting": 20, "Table": 17, "Plant": 14, "Sofa": 9, "Chair": 5}
    # Missing images keep their objects (placed at the declared size): 427 polygons in all.
    assert sum(len(r.annotations) for r in records) == 427
    assert not log.has_errors
    summaries = [p.message for p in log.problems if p.annotation is None]
    assert any(m.startswith("112 of 136 task images not found") for m in summaries)
    assert any(m.startswith("2 tasks have drafts") for m in summaries)
    record = next(r for r in present if r.file_name == "c43e0844-8.jpg")
    assert (record.width, record.height) == (1000, 1080)
    assert os.path.basename(record.image) == "c43e0844-8.jpg"


def test_furniture_masks_match_coco_export(datasets):
    from instaseg.formats.coco import load_coco

    class_map, records, _ = load(datasets / FURNITURE_JSON, datasets / "furniture_labelstudio/coco/images")
    coco_log = ProblemLog()
    coco_map, coco_records = load_coco(
        str(datasets / "furniture_labelstudio/coco/result.json"), None, coco_log
    )
    coco_by_name = {os.path.basename(r.image): r for r in coco_records if r.image is not None}
    present = [r for r in records if r.image is not None]
    assert len(present) == 24 and set(coco_by_name) == {os.path.basename(r.image) for r in present}
    ious = []
    for record in present:
        theirs = coco_by_name[os.path.basename(record.image)]
        assert (theirs.width, theirs.height) == (record.width, record.height)
        ious += match_instances(named_masks(record, class_map), named_masks(theirs, coco_map))
    assert len(ious) == 65
    assert min(ious) >= 0.99


def coco_zip_masks(path) -> dict[str, list[tuple[str, np.ndarray]]]:
    """Image basename -> (class, mask) of a Label Studio COCO export zip, rasterised independently."""
    with zipfile.ZipFile(path) as z:
        coco = json.loads(z.read("result.json"))
    names = {c["id"]: c["name"] for c in coco["categories"]}
    out = {}
    for image in coco["images"]:
        out[os.path.basename(image["file_name"])] = [
            (
                names[a["category_id"]],
                rle_to_mask(polygons_to_rle(a["segmentation"], image["height"], image["width"])),
            )
            for a in coco["annotations"]
            if a["image_id"] == image["id"]
        ]
    return out


@pytest.mark.parametrize("export", ["poly_JSON.json", "poly_snapshot_JSON.json", "poly_JSON_MIN.json"])
def test_poly_exports_agree_with_coco_export(datasets, export):
    class_map, records, log = load(datasets / EXPORTS / export, datasets / EXPORTS / "images")
    assert log.problems == []
    assert class_map.names == ("blob", "triangle")
    coco = coco_zip_masks(datasets / EXPORTS / "poly_COCO.zip")
    assert sorted(r.file_name for r in records) == ["images/img0.png", "images/img1.png", "images/img2.png"]
    for record in records:
        assert record.image is not None
        ious = match_instances(named_masks(record, class_map), coco[os.path.basename(record.image)])
        assert len(ious) == 2 and min(ious) >= 0.99
        assert all(a.polygons is not None for a in record.annotations)


def test_poly_json_found_next_to_the_file_without_images_argument(datasets):
    _, records, log = load(datasets / EXPORTS / "poly_JSON.json")
    assert [os.path.basename(r.image) for r in records] == ["img0.png", "img1.png", "img2.png"]
    assert log.problems == []


def test_brush_masks_equal_server_png_export(datasets):
    class_map, records, log = load(datasets / EXPORTS / "brush_JSON.json", datasets / EXPORTS / "images")
    assert log.problems == []
    assert class_map.names == ("blob", "triangle")
    with zipfile.ZipFile(datasets / EXPORTS / "brush_PNG_3tasks.zip") as z:
        pngs = {n: np.array(Image.open(io.BytesIO(z.read(n)))) for n in z.namelist()}
    # The uploaded copies are "<8hex>-imgN.png"; the local originals "imgN.png".
    assert [(r.file_name, os.path.basename(r.image)) for r in records] == [
        ("a97a6f3c-img1.png", "img1.png"),
        ("883a40c7-img0.png", "img0.png"),
        ("87d372d4-img2.png", "img2.png"),
    ]
    compared = 0
    for record in records:
        seen = Counter()
        for a in record.annotations:
            task = a.source_id.split()[1]
            name = class_map.name(a.label)
            png = pngs.pop(f"task-{task}-annotation-{task}-by-1-tag-{name}-{seen[name]}.png")
            seen[name] += 1
            np.testing.assert_array_equal(rle_to_mask(a.rle), png > 0)
            assert a.polygons is None
            compared += 1
    assert compared == 5 and pngs == {}


@pytest.mark.parametrize(
    "value, expected",
    [
        ("/data/local-files/?d=images%2Fsub%20dir%2Fa.jpg", ("images/sub dir/a.jpg", False)),
        ("/data/local-files/?d=images/img0.png", ("images/img0.png", False)),
        ("/data/upload/8/2f4821cd-10.jpg", ("2f4821cd-10.jpg", False)),
        ("http://localhost:8080/data/upload/8/2f4821cd-10.jpg", ("2f4821cd-10.jpg", False)),
        ("https://example.com/photos/a%20b.jpg?X-Amz-Signature=1", ("a b.jpg", False)),
        ("s3://bucket/photos/a.jpg", ("s3://bucket/photos/a.jpg", True)),
        ("/tasks/3/presign/?fileuri=czM6Ly9idWNrZXQvYS5qcGc=", ("s3://bucket/a.jpg", True)),
        ("photos\\a.jpg", ("photos/a.jpg", False)),
        ("C:\\photos\\a.jpg", ("C:/photos/a.jpg", False)),
    ],
)
def test_image_reference(value, expected):
    assert image_reference(value) == expected
