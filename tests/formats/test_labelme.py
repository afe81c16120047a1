"""labelme JSON: a folder converted from the real balloon VIA export must import to the same masks."""

from __future__ import annotations

import base64
import json
import math
import os
import uuid

import fsspec
import numpy as np
import pytest
from PIL import Image

from instaseg.formats.labelme import load_labelme
from instaseg.formats.via import load_via
from instaseg.masks import rle_to_mask
from instaseg.problems import DatasetError, ProblemLog


def load(source, images=None, allow_outside_paths=False):
    log = ProblemLog()
    class_map, records = load_labelme(
        str(source), None if images is None else str(images), log, allow_outside_paths
    )
    return class_map, records, log.problems


def labelme_file(image_path, width, height, shapes, **extra):
    return {
        "version": "5.4.1",
        "flags": {},
        "shapes": shapes,
        "imagePath": image_path,
        "imageData": None,
        "imageHeight": height,
        "imageWidth": width,
        **extra,
    }


def polygon_shape(label, xs, ys, group_id=None, shape_type="polygon"):
    return {
        "label": label,
        "points": [[x, y] for x, y in zip(xs, ys, strict=True)],
        "group_id": group_id,
        "description": "",
        "shape_type": shape_type,
        "flags": {},
    }


@pytest.fixture()
def balloon_labelme(datasets, tmp_path):
    """The first 5 balloon val images as labelme files in tmp_path/labelme/ (images stay where they are,
    outside the labelme folder: reading them needs ``allow_outside_paths``)."""
    val = datasets / "balloon" / "val"
    via = json.loads((val / "via_region_data.json").read_text())
    folder = tmp_path / "labelme"
    folder.mkdir()
    for entry in list(via.values())[:5]:
        with Image.open(val / entry["filename"]) as img:
            width, height = img.size
        shapes = [
            polygon_shape(
                "balloon", r["shape_attributes"]["all_points_x"], r["shape_attributes"]["all_points_y"]
            )
            for _, r in sorted(entry["regions"].items(), key=lambda kv: int(kv[0]))
        ]
        image_path = os.path.relpath(val / entry["filename"], folder)
        stem = entry["filename"].rsplit(".", 1)[0]
        (folder / f"{stem}.json").write_text(json.dumps(labelme_file(image_path, width, height, shapes)))
    return folder, [v["filename"] for v in list(via.values())[:5]]


def test_balloon_converted_to_labelme_matches_via(datasets, balloon_labelme):
    folder, names = balloon_labelme
    class_map, records, problems = load(folder, allow_outside_paths=True)
    assert problems == []
    assert class_map.names == ("balloon",)
    _, via_records = load_via(str(datasets / "balloon" / "val"), None, ProblemLog())
    via_by_image = {r.image: r for r in via_records}
    assert sorted(r.image.split("/")[-1] for r in records) == sorted(names)
    assert sum(len(r.annotations) for r in records) == sum(
        len(via_by_image[r.image].annotations) for r in records
    )
    for record in records:
        expected = via_by_image[record.image]
        assert (record.width, record.height, record.mode) == (expected.width, expected.height, expected.mode)
        for ours, theirs in zip(record.annotations, expected.annotations, strict=True):
            a, b = rle_to_mask(ours.rle), rle_to_mask(theirs.rle)
            assert (a & b).sum() / (a | b).sum() == 1.0  # IoU
            assert ours.box == theirs.box


def test_single_file_source(balloon_labelme):
    folder, _ = balloon_labelme
    file = sorted(folder.iterdir())[0]
    class_map, records, problems = load(file, allow_outside_paths=True)
    assert problems == [] and len(records) == 1
    assert len(records[0].annotations) == len(json.loads(file.read_text())["shapes"])


def write_image(path, width=40, height=30):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((height, width, 3), np.uint8)).save(path)


def test_groups_rectangles_circles_and_ignored_shapes(tmp_path):
    write_image(tmp_path / "images" / "a.png", 40, 30)
    shapes = [
        polygon_shape("cat", [1, 5, 5, 1], [1, 1, 5, 5], group_id=3),
        polygon_shape("cat", [10, 14, 14, 10], [1, 1, 5, 5], group_id=3),  # same instance as shape 0
        polygon_shape("dog", [20, 24, 24], [1, 1, 5], group_id=3),  # same group id, other label: its own
        polygon_shape("box", [30, 22], [20, 10], shape_type="rectangle"),  # corners in any order
        polygon_shape("ball", [10, 10], [20, 26], shape_type="circle"),  # centre, point on the circle
        polygon_shape("cat", [0, 9], [29, 29], shape_type="line"),
        {
            "label": "old",
            "points": [[30, 25], [38, 25], [38, 29]],
            "group_id": None,
        },  # no shape_type: polygon
    ]
    (tmp_path / "a.json").write_text(json.dumps(labelme_file("images/a.png", 40, 30, shapes)))
    class_map, records, problems = load(tmp_path)

    assert class_map.names == ("ball", "box", "cat", "dog", "old")
    assert [(p.level, p.annotation) for p in problems] == [("warning", 5)]
    assert "'line' is not used" in problems[0].message
    cat, dog, box, ball, old = records[0].annotations
    assert (cat.label, cat.source_id, len(cat.polygons), cat.area) == (3, 0, 2, 32.0)
    assert cat.box == (1.0, 1.0, 14.0, 5.0)
    assert (dog.label, dog.source_id, len(dog.polygons)) == (4, 2, 1)
    assert (box.label, box.box, box.rle) == (2, (22.0, 10.0, 30.0, 20.0), None)
    assert ball.area == pytest.approx(math.pi * 36, rel=0.1)
    assert ball.box == pytest.approx((4, 14, 16, 26), abs=1)
    assert old.label == 5 and old.has_mask
    assert records[0].file_name == "images/a.png"


def test_missing_image_with_embedded_data_writes_nothing(tmp_path):
    data = base64.b64encode(b"\x89PNG not really").decode()
    shapes = [polygon_shape("cat", [1, 5, 5], [1, 1, 5])]
    (tmp_path / "a.json").write_text(json.dumps(labelme_file("a.png", 40, 30, shapes, imageData=data)))
    before = sorted(p.name for p in tmp_path.iterdir())
    class_map, records, problems = load(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert [(r.image, r.file_name, r.width, r.height, len(r.annotations)) for r in records] == [
        (None, "a.png", 40, 30, 1)
    ]
    assert [p.level for p in problems] == ["warning"]
    assert "image file not found" in problems[0].message and "imageData" in problems[0].message


def test_image_size_disagreeing_with_declared_size(tmp_path):
    write_image(tmp_path / "a.png", 40, 30)
    (tmp_path / "a.json").write_text(json.dumps(labelme_file("a.png", 30, 40, [])))
    _, records, problems = load(tmp_path)
    assert records == []
    assert [p.level for p in problems] == ["error"] and "declare 30x40" in problems[0].message


def test_fsspec_memory_url():
    root = f"memory:///labelme-{uuid.uuid4().hex}"
    fs = fsspec.filesystem("memory")
    with fs.open(f"{root}/a.png", "wb") as f:
        Image.fromarray(np.zeros((10, 20, 3), np.uint8)).save(f, format="PNG")
    shapes = [polygon_shape("cat", [2, 12, 12, 2], [1, 1, 6, 6])]
    fs.pipe(
        f"{root}/a.json".replace("memory://", ""), json.dumps(labelme_file("a.png", 20, 10, shapes)).encode()
    )
    try:
        class_map, records, problems = load(root)
        assert problems == []
        assert records[0].image == f"{root}/a.png"
        assert rle_to_mask(records[0].annotations[0].rle).sum() == 50
    finally:
        fs.rm(root.replace("memory://", ""), recursive=True)


def test_unusable_sources(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        load(tmp_path / "missing")
    with pytest.raises(DatasetError, match="no .json file"):
        load(tmp_path)
    (tmp_path / "coco.json").write_text(json.dumps({"images": []}))
    with pytest.raises(DatasetError, match="no 'shapes' list"):
        load(tmp_path / "coco.json")
    with pytest.raises(DatasetError, match="none of the 1 JSON file"):
        load(tmp_path)


def test_through_load_dataset(balloon_labelme):
    from instaseg.formats.load import load_dataset

    folder, names = balloon_labelme
    dataset = load_dataset(str(folder), format="labelme", allow_outside_paths=True)
    assert (dataset.format, len(dataset.present), dataset.problems) == ("labelme", len(names), [])
    assert [r.image_id for r in dataset.records] == list(range(1, len(names) + 1))
