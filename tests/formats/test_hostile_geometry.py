"""Hostile numbers in annotation files (sizes, coordinates, RLE counts, outlines, object counts): each ends
in a problem naming what is wrong, never an OverflowError, a crash of pycocotools or a huge allocation."""

from __future__ import annotations

import json
import math
import zipfile

import pytest
from pycocotools import mask as coco_mask

from instaseg.formats.geometry import checked_counts, rle_string_counts
from instaseg.formats.limits import MAX_IMAGE_PIXELS, MAX_OBJECTS_PER_IMAGE
from instaseg.formats.load import load_dataset
from instaseg.problems import DatasetError

from .hostile import FORMATS, has, problems_of, write_dataset

HUGE_SIZES = [(10**8, 10**8), (10**30, 10**30), (1e300, 1e300), (2**31, 2**31), (MAX_IMAGE_PIXELS + 1, 1)]


@pytest.mark.parametrize("size", HUGE_SIZES, ids=["1e8", "1e30", "1e300", "2^31", "limit+1"])
@pytest.mark.parametrize("format", ["coco", "labelstudio-json", "labelme"])
def test_a_huge_declared_size_of_a_missing_image_is_refused(tmp_path, format, size):
    document = FORMATS[format][0](width=size[0], height=size[1])
    # The rasteriser would get the whole image: a polygon covering most of it.
    source = write_dataset(tmp_path, format, document, image=False)
    records, problems = problems_of(source, format)
    assert has(problems, "error", "over the limit of 178,956,970 pixels per image"), problems
    assert all(not r.annotations for r in records)


def test_a_huge_declared_size_in_a_label_studio_coco_zip(tmp_path):
    document = FORMATS["coco"][0]("images/a.png", 10**8, 10**8, [[0, 0, 9e7, 0, 9e7, 9e7]])
    export = tmp_path / "export.zip"
    with zipfile.ZipFile(export, "w") as archive:
        archive.writestr("result.json", json.dumps(document))
    records, problems = problems_of(export, "coco")
    assert has(problems, "error", "over the limit of 178,956,970 pixels", "its annotations are not used")
    assert records[0].annotations == []


@pytest.mark.parametrize(
    "size, fragment",
    [
        ((-5, -5), "must be positive"),
        ((math.nan, 30), "not two finite numbers"),
        (("40", "30"), "not two numbers"),
    ],
    ids=["negative", "nan", "strings"],
)
@pytest.mark.parametrize("format", ["coco", "labelme"])
def test_an_invalid_declared_size_uses_the_image_file(tmp_path, format, size, fragment):
    source = write_dataset(tmp_path, format, FORMATS[format][0](width=size[0], height=size[1]))
    records, problems = problems_of(source, format)
    assert has(problems, "warning", fragment, "using the image file's size"), problems
    assert (records[0].width, records[0].height, len(records[0].annotations)) == (40, 30, 1)


def test_label_studio_sizes_as_strings_drop_the_region_with_a_message(tmp_path):
    source = write_dataset(
        tmp_path, "labelstudio-json", FORMATS["labelstudio-json"][0](width="40", height="30")
    )
    records, problems = problems_of(source, "labelstudio-json")
    assert has(problems, "warning", "not two numbers", "using the image file's size"), problems
    assert has(problems, "error", "region declares original size '40'x'30' but the image is 40x30")
    assert records[0].annotations == []


HUGE = 10**400  # an integer JSON literal no float holds


@pytest.mark.parametrize(
    "format, document, kept",
    [
        ("coco", FORMATS["coco"][0](segmentation=[[1e300, 2, -1e300, 2, 20, 1e300]]), 1),
        ("coco", FORMATS["coco"][0](segmentation=[[HUGE, 2, 20, 2, 20, 20]]), 0),
        ("labelme", FORMATS["labelme"][0](points=[[1e300, 2], [-1e300, 2], [20, 1e300]]), 1),
        ("labelme", FORMATS["labelme"][0](points=[[HUGE, 2], [20, 2], [20, 20]]), 0),
        ("via", FORMATS["via"][0](xs=[1e300, -1e300, 20], ys=[2, 2, 1e300]), 1),
        ("via", FORMATS["via"][0](xs=[HUGE, 20, 20], ys=[2, 2, 20]), 0),
        (
            "labelstudio-json",
            FORMATS["labelstudio-json"][0](points=[[1e300, 10], [-1e300, 10], [50, 1e300]]),
            1,
        ),
        ("labelstudio-json", FORMATS["labelstudio-json"][0](points=[[HUGE, 10], [50, 10], [50, 60]]), 0),
    ],
    ids=[
        "coco-1e300",
        "coco-1e400",
        "labelme-1e300",
        "labelme-1e400",
        "via-1e300",
        "via-1e400",
        "ls-1e300",
        "ls-1e400",
    ],
)
def test_huge_coordinates_are_clipped_or_the_polygon_dropped(tmp_path, format, document, kept):
    records, problems = problems_of(write_dataset(tmp_path, format, document), format)
    assert len(records[0].annotations) == kept
    if kept:
        assert has(problems, "warning", "extends outside the 40x30 image; clipped to it"), problems
        box = records[0].annotations[0].box
        assert 0 <= box[0] < box[2] <= 40 and 0 <= box[1] < box[3] <= 30
    else:
        assert has(problems, "error", "no valid polygon left"), problems


def _compressed(counts: list[int], height: int, width: int) -> str:
    return coco_mask.frPyObjects({"size": [height, width], "counts": counts}, height, width)[
        "counts"
    ].decode()


@pytest.mark.parametrize(
    "counts, fragment",
    [
        ([-5, 1205], "a count is negative"),
        ([10**9], "a count overruns the mask"),
        ([HUGE], "a count overruns the mask"),
        ([100, 100], "they sum to 200 (too short)"),
        ([1.5, 1198.5], "list of whole numbers"),
        (_compressed([5, 10, 4000], 100, 100), "they sum to 4015 (they overrun the mask)"),
        ("{{{", "outside COCO's RLE alphabet"),
        ("0o", "truncated"),
        ("é", "outside COCO's RLE alphabet"),
    ],
    ids=[
        "negative",
        "overrun",
        "huge",
        "short",
        "fractions",
        "compressed-overrun",
        "garbage",
        "cut",
        "unicode",
    ],
)
def test_rle_counts_that_do_not_cover_the_image_exactly_are_refused(tmp_path, counts, fragment):
    document = FORMATS["coco"][0](segmentation={"size": [30, 40], "counts": counts})
    records, problems = problems_of(write_dataset(tmp_path, "coco", document), "coco")
    assert has(problems, "error", fragment, "object dropped"), problems
    assert records[0].annotations == []


def test_compressed_rle_decoding_matches_pycocotools():
    for counts in ([1200], [0, 1200], [5, 10, 20, 1165], [600, 1, 1, 598], [0, 3, 1000, 2, 195]):
        text = _compressed(counts, 30, 40)
        assert checked_counts(text, 30, 40).tolist() == counts
    with pytest.raises(ValueError, match="too large"):
        rle_string_counts("o" * 9 + "0", 10**6)


def test_an_outline_longer_than_the_limit_is_refused(tmp_path):
    zigzag = [v for i in range(5000) for v in ((0, i % 30) if i % 2 else (40, i % 30))]  # 5000 x 40 px
    document = FORMATS["coco"][0](segmentation=[zigzag * 25])  # 5 million px of outline
    records, problems = problems_of(write_dataset(tmp_path, "coco", document), "coco")
    assert has(problems, "error", "px long, over the limit of 4,000,000 px per object"), problems
    assert records[0].annotations == []


def test_an_image_with_more_objects_than_the_limit_is_left_out(tmp_path):
    document = FORMATS["coco"][0]()
    document["annotations"] = [
        {"id": i, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]}
        for i in range(MAX_OBJECTS_PER_IMAGE + 1)
    ]
    records, problems = problems_of(write_dataset(tmp_path, "coco", document), "coco")
    assert has(problems, "error", "image has 10,001 objects, over the limit of 10,000 per image; left out")
    assert records == []


def _set_ids(format: str, document, value) -> None:
    """Every id of ``document`` (image, annotation, category, task, group) set to ``value``."""
    if format == "coco":
        document["images"][0]["id"] = document["annotations"][0]["image_id"] = value
        document["categories"][0]["id"] = document["annotations"][0]["category_id"] = value
        document["annotations"][0]["id"] = value
    elif format == "labelstudio-json":
        document[0]["id"] = document[0]["annotations"][0]["id"] = value
        document[0]["annotations"][0]["result"][0]["id"] = value
    elif format == "labelme":
        document["shapes"][0]["group_id"] = value


@pytest.mark.parametrize("value", [HUGE, -HUGE, 1e300, math.inf], ids=["1e400", "-1e400", "1e300", "inf"])
@pytest.mark.parametrize("format", ["coco", "labelstudio-json", "labelme"])
def test_ids_as_huge_numbers_import_or_are_reported_in_short_lines(tmp_path, format, value):
    """Integer ids are ids, however large; a float where COCO needs an integer id refuses the file, a float
    labelme group is not grouped (warned). Label Studio's ids only order annotations."""
    document = FORMATS[format][0]()
    _set_ids(format, document, value)
    source = write_dataset(tmp_path, format, document)  # inf is written as Infinity, which JSON readers take
    if format == "coco" and isinstance(value, float):
        with pytest.raises(DatasetError, match="needs an integer id, got (1e\\+300|inf)") as error:
            problems_of(source, format)
        assert len(str(error.value)) < 200
        return
    records, problems = problems_of(source, format)
    assert sum(len(r.annotations) for r in records) == 1
    if format == "labelme" and isinstance(value, float):
        assert problems == [
            f"warning: group_id must be an integer (or a text) or null, got {value:g}; shape not grouped"
        ]
    else:
        assert problems == []


def test_a_problem_line_elides_a_huge_annotation_id(tmp_path):
    """A 401-digit annotation id of an annotation that is wrong (an undeclared category): the printed problem
    keeps its start and end and says how long it is; ``to_dict`` (``check --json``) keeps the whole id."""
    document = FORMATS["coco"][0]()
    document["annotations"][0].update(id=HUGE, category_id=999)
    dataset = load_dataset(str(write_dataset(tmp_path, "coco", document)), format="coco")
    (problem,) = [p for p in dataset.problems if p.level == "error"]
    line = str(problem)
    assert "(401 characters)" in line and str(HUGE) not in line, line
    assert str(problem.to_dict()["annotation"]) == str(HUGE)
