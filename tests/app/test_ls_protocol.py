"""Label configs and predicted instances -> Label Studio regions (no server)."""

from __future__ import annotations

import numpy as np
import pytest

from instaseg.app.ls_protocol import LabelConfigError, parse_label_config
from instaseg.app.pull import image_file_name
from instaseg.core import ClassMap, Instances
from instaseg.formats.brush import brush_rle_to_mask
from instaseg.formats.labelstudio_export import instances_to_label_studio_regions
from instaseg.masks import masks_to_boxes, polygons_to_rle, rle_to_mask

CONFIG = """<View><Header value="x"/><Image name="photo" value="$img"/>
  <Choices name="c" toName="photo"><Choice value="ok"/></Choices>
  <{tag} name="seg" toName="photo"><Label value="cell"/><Label value="Dirt"/></{tag}></View>"""


@pytest.mark.parametrize("tag, kind", [("PolygonLabels", "polygonlabels"), ("BrushLabels", "brushlabels")])
def test_parse_label_config(tag, kind):
    target = parse_label_config(CONFIG.format(tag=tag))
    assert (target.kind, target.from_name, target.to_name, target.data_key) == (kind, "seg", "photo", "img")
    assert target.labels == ("cell", "Dirt")
    assert target.label_for(ClassMap(("dirt", "other"))) == {1: "Dirt"}
    with pytest.raises(LabelConfigError, match="none of the model's classes"):
        target.label_for(ClassMap(("car",)))


@pytest.mark.parametrize(
    "config, message",
    [
        ("", "empty"),
        ("<View><Image name='i' value='$i'/>", "not valid XML"),
        (
            "<View><Image name='i' value='$i'/><RectangleLabels name='r' toName='i'><Label value='a'/>"
            "</RectangleLabels></View>",
            "RectangleLabels",
        ),
        (
            "<View><Image name='i' value='$i'/><PolygonLabels name='p' toName='other'><Label value='a'/>"
            "</PolygonLabels></View>",
            "toName='other'",
        ),
    ],
)
def test_unusable_label_configs(config, message):
    with pytest.raises(LabelConfigError, match=message):
        parse_label_config(config)


def two_objects(height=40, width=100) -> Instances:
    masks = np.zeros((2, height, width), bool)
    masks[0, 5:15, 10:30] = True  # a 20x10 rectangle
    masks[1, 20:38, 60:70] = True
    masks[1, 30:38, 70:90] = True  # an L shape
    return Instances(masks_to_boxes(masks), [1, 1], masks, [0.9, 0.6])


def regions_for(instances: Instances, tag: str) -> list[dict]:
    """What the backend writes for a project with this control tag (the target parsed from its config)."""
    target = parse_label_config(CONFIG.format(tag=tag))
    names = target.label_for(ClassMap(("cell",)))
    return instances_to_label_studio_regions(instances, names, target.kind, target.from_name, target.to_name)


def test_polygon_regions_are_percent_and_rasterise_back_to_the_masks():
    instances = two_objects()
    regions = regions_for(instances, "PolygonLabels")
    assert [r["score"] for r in regions] == pytest.approx([0.9, 0.6])
    assert {(r["from_name"], r["to_name"], r["type"]) for r in regions} == {("seg", "photo", "polygonlabels")}
    for region, mask in zip(regions, instances.dense_masks(), strict=True):
        assert region["value"]["polygonlabels"] == ["cell"] and region["original_width"] == 100
        points = np.array(region["value"]["points"])
        assert points[:, 0].max() <= 100 and points[:, 1].max() <= 100
        pixels = (points * [100 / 100, 40 / 100]).reshape(-1).tolist()  # percent -> pixels
        assert np.array_equal(rle_to_mask(polygons_to_rle([pixels], 40, 100)), mask)


def test_brush_regions_decode_to_the_masks():
    instances = two_objects()
    regions = regions_for(instances, "BrushLabels")
    for region, mask in zip(regions, instances.dense_masks(), strict=True):
        assert np.array_equal(brush_rle_to_mask(region["value"]["rle"], 40, 100), mask)


@pytest.mark.parametrize(
    "url, name",
    [
        ("/data/upload/3/0a1b2c3d-cells%201.png", "0a1b2c3d-cells 1.png"),
        ("http://h:8080/data/local-files/?d=photos/a/b.jpg", "b.jpg"),
        ("https://example.org/x/y.tif?sig=1", "y.tif"),
    ],
)
def test_image_file_name(url, name):
    assert image_file_name(url) == name
