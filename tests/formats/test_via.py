"""VIA 1.x/2.x JSON: the real balloon val export, a VIA 2 project built from it, and every shape kind."""

from __future__ import annotations

import json
import math
import uuid

import fsspec
import numpy as np
import pytest
from PIL import Image

from instaseg.formats.via import ellipse_to_polygon, load_via
from instaseg.masks import rle_to_mask
from instaseg.problems import DatasetError, ProblemLog


def load(source, images=None):
    log = ProblemLog()
    class_map, records = load_via(str(source), None if images is None else str(images), log)
    return class_map, records, log.problems


@pytest.fixture(scope="module")
def balloon_json(datasets):
    return json.loads((datasets / "balloon" / "val" / "via_region_data.json").read_text())


@pytest.mark.parametrize("name", ["val", "val/via_region_data.json"])
def test_balloon_val(datasets, balloon_json, name):
    class_map, records, problems = load(datasets / "balloon" / name)
    assert problems == []  # every polygon lies inside its image: nothing clipped or dropped
    assert class_map.names == ("object",)
    assert len(records) == 13
    assert sum(len(r.annotations) for r in records) == 50
    assert [r.file_name for r in records] == [v["filename"] for v in balloon_json.values()]
    for record, entry in zip(records, balloon_json.values(), strict=True):
        with Image.open(record.image) as img:
            assert (record.width, record.height) == img.size
        regions = [entry["regions"][k] for k in sorted(entry["regions"], key=int)]
        assert len(record.annotations) == len(regions)
        for annotation, region in zip(record.annotations, regions, strict=True):
            xs, ys = region["shape_attributes"]["all_points_x"], region["shape_attributes"]["all_points_y"]
            assert annotation.polygons == [[float(v) for xy in zip(xs, ys, strict=True) for v in xy]]
            # The mask's box is the polygon's extent (pixel rasterisation: within one pixel).
            assert annotation.box == pytest.approx((min(xs), min(ys), max(xs), max(ys)), abs=1.0)
            assert 0 <= annotation.box[0] < annotation.box[2] <= record.width
            assert 0 <= annotation.box[1] < annotation.box[3] <= record.height


def test_via2_project_with_class_attribute(datasets, balloon_json, tmp_path):
    metadata = {}
    for key, entry in balloon_json.items():
        regions = [entry["regions"][k] for k in sorted(entry["regions"], key=int)]
        metadata[key] = {
            **entry,
            "regions": [{**r, "region_attributes": {"name": "balloon"}} for r in regions],
        }
    project = {
        "_via_settings": {},
        "_via_img_metadata": metadata,
        "_via_attributes": {"region": {}, "file": {}},
    }
    (tmp_path / "project.json").write_text(json.dumps(project))

    class_map, records, problems = load(tmp_path / "project.json", images=datasets / "balloon" / "val")
    assert problems == []
    assert class_map.names == ("balloon",)
    _, reference, _ = load(datasets / "balloon" / "val")
    assert [r.image for r in records] == [r.image for r in reference]
    for record, expected in zip(records, reference, strict=True):
        assert [a.rle for a in record.annotations] == [a.rle for a in expected.annotations]


def test_shapes_classes_and_ignored_kinds(datasets, tmp_path):
    image = "2917282960_06beee649a_b.jpg"
    regions = [
        {
            "shape_attributes": {"name": "rect", "x": 10, "y": 20, "width": 30, "height": 40},
            "region_attributes": {"kind": "b"},
        },
        {
            "shape_attributes": {"name": "circle", "cx": 200, "cy": 150, "r": 50},
            "region_attributes": {"kind": "a"},
        },
        {
            "shape_attributes": {
                "name": "ellipse",
                "cx": 400,
                "cy": 300,
                "rx": 80,
                "ry": 30,
                "theta": math.pi / 2,
            },
            "region_attributes": {"kind": {"a": False, "c": True}},
        },  # a checkbox with one option ticked
        {
            "shape_attributes": {"name": "polyline", "all_points_x": [1, 5, 9], "all_points_y": [1, 5, 1]},
            "region_attributes": {"kind": "a"},
        },
    ]
    via = {f"{image}123": {"filename": image, "size": 123, "regions": regions, "file_attributes": {}}}
    (tmp_path / "via.json").write_text(json.dumps(via))
    class_map, records, problems = load(tmp_path, images=datasets / "balloon" / "val")

    assert class_map.names == ("a", "b", "c")
    assert [(p.level, p.annotation) for p in problems] == [("warning", 3)]
    assert "'polyline' is not used" in problems[0].message
    rect, circle, ellipse = records[0].annotations
    assert (rect.label, rect.box, rect.rle) == (2, (10.0, 20.0, 40.0, 60.0), None)
    assert circle.label == 1 and circle.area == pytest.approx(math.pi * 50**2, rel=0.03)
    assert circle.box == pytest.approx((150, 100, 250, 200), abs=1)
    # theta = 90 degrees: the long axis is vertical.
    assert ellipse.label == 3 and ellipse.box == pytest.approx((370, 220, 430, 380), abs=1)
    assert ellipse.area == pytest.approx(math.pi * 80 * 30, rel=0.03)


def test_region_without_class_when_others_have_one(datasets, tmp_path):
    polygon = {"name": "polygon", "all_points_x": [10, 60, 60], "all_points_y": [10, 10, 50]}
    regions = [
        {"shape_attributes": polygon, "region_attributes": {"class": "red"}},
        {"shape_attributes": polygon, "region_attributes": {}},
    ]
    name = "410488422_5f8991f26e_b.jpg"
    (tmp_path / "via.json").write_text(json.dumps({name: {"filename": name, "regions": regions}}))
    class_map, records, problems = load(tmp_path / "via.json", images=datasets / "balloon" / "val")
    assert class_map.names == ("red",)
    assert len(records[0].annotations) == 1
    assert [(p.level, p.annotation) for p in problems] == [("error", 1)]
    assert "no class in its 'class' attribute" in problems[0].message


def test_ellipse_polygon_stays_within_half_a_pixel():
    flat = np.array(ellipse_to_polygon(0.0, 0.0, 100.0, 100.0))
    xs, ys = flat[0::2], flat[1::2]
    assert np.allclose(np.hypot(xs, ys), 100.0)
    chord = np.hypot(np.diff(xs), np.diff(ys)).max()
    assert 100.0 - math.sqrt(100.0**2 - (chord / 2) ** 2) <= 0.1  # sagitta of the longest chord


def test_fsspec_memory_url():
    root = f"memory:///via-{uuid.uuid4().hex}"
    fs = fsspec.filesystem("memory")
    with fs.open(f"{root}/img/a.png", "wb") as f:
        Image.fromarray(np.zeros((10, 20, 3), np.uint8)).save(f, format="PNG")
    region = {
        "shape_attributes": {"name": "polygon", "all_points_x": [2, 12, 12, 2], "all_points_y": [1, 1, 6, 6]},
        "region_attributes": {},
    }
    via = {"a.png99": {"filename": "img/a.png", "size": 99, "regions": {"0": region}}}
    fs.pipe(f"{root}/via.json".replace("memory://", ""), json.dumps(via).encode())
    try:
        _, records, problems = load(root)
        assert problems == []
        assert records[0].image == f"{root}/img/a.png"
        assert (records[0].file_name, records[0].width, records[0].height) == ("img/a.png", 20, 10)
        mask = rle_to_mask(records[0].annotations[0].rle)
        assert mask.sum() == 50 and mask[1:6, 2:12].all()
    finally:
        fs.rm(root.replace("memory://", ""), recursive=True)


def test_unusable_sources(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        load(tmp_path / "nothing.json")
    (tmp_path / "coco.json").write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(DatasetError, match="not a VIA annotation file"):
        load(tmp_path / "coco.json")
    with pytest.raises(DatasetError, match="no readable VIA JSON file among the 1"):
        load(tmp_path)
    (tmp_path / "v3.json").write_text(json.dumps({"project": {}, "file": {}, "metadata": {}}))
    with pytest.raises(DatasetError, match="VIA 3 project"):
        load(tmp_path / "v3.json")


def test_through_load_dataset(datasets):
    from instaseg.formats.load import load_dataset

    dataset = load_dataset(str(datasets / "balloon" / "val" / "via_region_data.json"), format="via")
    assert (dataset.format, len(dataset.present), dataset.num_instances()) == ("via", 13, 50)
    assert dataset.problems == []
