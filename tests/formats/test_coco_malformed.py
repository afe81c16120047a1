"""Malformed COCO input: each case asserts the exact outcome (DatasetError naming the file, or one problem
of a given level naming the annotation, with the rest imported)."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from instaseg.formats.coco import load_coco
from instaseg.problems import DatasetError, ProblemLog

WIDTH, HEIGHT = 40, 30


def base_coco() -> dict:
    """Two 40x30 images, two categories, one polygon annotation on each image (ids 10 and 11)."""
    return {
        "images": [
            {"id": 1, "file_name": "a.png", "width": WIDTH, "height": HEIGHT},
            {"id": 2, "file_name": "b.png", "width": WIDTH, "height": HEIGHT},
        ],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
        "annotations": [
            {
                "id": 10,
                "image_id": 1,
                "category_id": 1,
                "segmentation": [[2, 2, 20, 2, 20, 20, 2, 20]],
                "bbox": [2, 2, 18, 18],
                "iscrowd": 0,
                "area": 324,
            },
            {
                "id": 11,
                "image_id": 2,
                "category_id": 2,
                "segmentation": [[5, 5, 30, 5, 30, 25]],
                "bbox": [5, 5, 25, 20],
                "iscrowd": 0,
                "area": 250,
            },
        ],
    }


def png_bytes(mode: str = "RGB", size: tuple[int, int] = (WIDTH, HEIGHT)) -> bytes:
    buffer = io.BytesIO()
    if mode == "I;16":
        Image.fromarray(np.full((size[1], size[0]), 40000, dtype=np.uint16)).save(buffer, "PNG")
    else:
        Image.new(mode, size).save(buffer, "PNG")
    return buffer.getvalue()


def rotated_jpeg_bytes() -> bytes:
    """A 40x30 JPEG stored unrotated with EXIF orientation 6: displayed as 30x40."""
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    Image.new("RGB", (WIDTH, HEIGHT), (200, 10, 10)).save(buffer, "JPEG", exif=exif)
    return buffer.getvalue()


def set_ann(index: int, **fields):
    def mutate(coco: dict) -> None:
        coco["annotations"][index].update(fields)

    return mutate


def replace_file(name: str, data: bytes):
    def mutate_files(folder: Path) -> None:
        (folder / name).write_bytes(data)

    return mutate_files


# (case id, mutate coco dict, mutate files, expected) where expected is
#   ("raise", message fragment)                              -> DatasetError naming the JSON file
#   (level, message fragment, annotation id, instances left) -> that problem logged, the rest imported
CASES = [
    ("missing-images-key", lambda c: c.pop("images"), None, ("raise", "missing key(s) images")),
    (
        "missing-annotations-key",
        lambda c: c.pop("annotations"),
        None,
        ("raise", "missing key(s) annotations"),
    ),
    ("missing-categories-key", lambda c: c.pop("categories"), None, ("raise", "missing key(s) categories")),
    (
        "annotations-not-a-list",
        lambda c: c.update(annotations={}),
        None,
        ("raise", "'annotations' must be a list, got dict"),
    ),
    (
        "empty-categories-with-annotations",
        lambda c: c.update(categories=[]),
        None,
        ("raise", "'categories' is empty but there are 2 annotations"),
    ),
    (
        "duplicate-category-names",
        lambda c: c["categories"].append({"id": 3, "name": "cat"}),
        None,
        ("raise", "repeated: cat"),
    ),
    (
        "category-id-not-integer",
        lambda c: c["categories"][1].update(id="2"),
        None,
        ("raise", "needs an integer id"),
    ),
    ("bbox-a-string", set_ann(0, bbox="2,2,18,18"), None, ("error", "bbox must be", 10, 1)),
    ("bbox-with-nan", set_ann(0, bbox=[2, math.nan, 18, 18]), None, ("error", "bbox must be", 10, 1)),
    (
        "segmentation-a-number",
        set_ann(0, segmentation=7),
        None,
        ("error", "segmentation must be a list of polygons or an RLE object, got int", 10, 1),
    ),
    (
        "nan-coordinates",
        set_ann(0, segmentation=[[2, 2, math.nan, 2, 20, 20]]),
        None,
        ("error", "no valid polygon left", 10, 1),
    ),
    (
        "negative-coordinates-clipped",
        set_ann(0, segmentation=[[-5, -5, 20, 2, 20, 20, 2, 20]]),
        None,
        ("warning", "extends outside the 40x30 image; clipped", 10, 2),
    ),
    (
        "polygon-two-points",
        set_ann(0, segmentation=[[2, 2, 20, 2]]),
        None,
        ("warning", "has 2 points (needs 3)", 10, 1),
    ),
    (
        "odd-coordinate-count",
        set_ann(0, segmentation=[[2, 2, 20, 2, 20, 20, 2]]),
        None,
        ("warning", "odd number of coordinates (7)", 10, 1),
    ),
    (
        "zero-area-polygon",
        set_ann(0, segmentation=[[2, 2, 10, 2, 20, 2]]),
        None,
        ("warning", "zero-area mask", 10, 1),
    ),
    (
        "box-only-outside-image",
        set_ann(0, segmentation=[], bbox=[100, 100, 10, 10]),
        None,
        ("error", "box lies entirely outside the image", 10, 1),
    ),
    ("duplicate-annotation-ids", set_ann(1, id=10), None, ("error", "annotation id 10 is used twice", 10, 1)),
    ("unknown-category-id", set_ann(1, category_id=7), None, ("error", "unknown category id 7", 11, 1)),
    ("annotation-on-unknown-image", set_ann(1, image_id=99), None, ("error", "unknown image id 99", 11, 1)),
    ("iscrowd-not-0-or-1", set_ann(1, iscrowd=2), None, ("error", "iscrowd must be 0 or 1", 11, 1)),
    (
        "flat-polygon-repaired",
        set_ann(1, segmentation=[5, 5, 30, 5, 30, 25]),
        None,
        ("warning", "one flat list of coordinates", 11, 2),
    ),
    (
        "uncompressed-rle-wrong-length",
        set_ann(1, segmentation={"size": [HEIGHT, WIDTH], "counts": [5, 10, 3]}),
        None,
        ("error", "sum to 30*40", 11, 1),
    ),
    (
        "rle-size-mismatch",
        set_ann(1, segmentation={"size": [10, 10], "counts": [50, 50]}),
        None,
        ("error", "RLE size [10, 10] does not match", 11, 1),
    ),
    (
        "width-height-disagree",
        lambda c: c["images"][1].update(width=50),
        None,
        ("error", "annotations declare 50x30 but the image is displayed at 40x30", None, 1),
    ),
    (
        "missing-image-file",
        None,
        lambda folder: (folder / "b.png").unlink(),
        ("warning", "1 of 2 listed images were not found (b.png)", None, 1),
    ),
    ("zero-byte-image", None, replace_file("b.png", b""), ("error", "empty file (0 bytes)", None, 1)),
    (
        "corrupt-image",
        None,
        replace_file("b.png", png_bytes()[:8] + b"garbage" * 10),
        ("error", "corrupt or truncated image", None, 1),
    ),
    (
        "non-image-file",
        None,
        replace_file("b.png", b"this is a text file, not a PNG\n"),
        ("error", "not an image PIL can read", None, 1),
    ),
    (
        "exif-rotated-jpeg",
        lambda c: c["images"][1].update(file_name="b.jpg"),
        replace_file("b.jpg", rotated_jpeg_bytes()),
        ("error", "EXIF orientation 6", None, 1),
    ),
]


def write_case(folder: Path, coco: dict) -> Path:
    (folder / "a.png").write_bytes(png_bytes())
    (folder / "b.png").write_bytes(png_bytes())
    path = folder / "coco.json"
    path.write_text(json.dumps(coco))
    return path


@pytest.mark.parametrize("mutate, mutate_files, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_case(tmp_path, mutate, mutate_files, expected):
    coco = base_coco()
    if mutate:
        mutate(coco)
    path = write_case(tmp_path, coco)
    if mutate_files:
        mutate_files(tmp_path)
    log = ProblemLog()
    if expected[0] == "raise":
        with pytest.raises(DatasetError) as info:
            load_coco(str(path), None, log)
        assert expected[1] in str(info.value)
        assert info.value.problem.file == str(path)
        return
    level, fragment, annotation_id, instances_left = expected
    _, records = load_coco(str(path), None, log)
    matching = [p for p in log.problems if fragment in p.message]
    assert matching, f"no problem containing {fragment!r}; got {[str(p) for p in log.problems]}"
    assert matching[0].level == level
    # Problems with an image file name that file; the others name the annotation file.
    assert matching[0].file in (str(path), str(tmp_path / "b.png"))
    if annotation_id is not None:
        assert matching[0].annotation == annotation_id
    assert sum(len(r.annotations) for r in records if r.image is not None) == instances_left
    # The untouched first image always imports with its annotation 10.
    assert records[0].image == str(tmp_path / "a.png")
    assert [a.source_id for a in records[0].annotations] == [10] or annotation_id == 10


@pytest.mark.parametrize(
    "data, message",
    [
        (None, "the file ends early"),
        (b"hello, not json", "not valid JSON"),
        (b"\xff\xfe\x00binary", "not a text (UTF-8) JSON file"),
        (b"[1, 2, 3]", "got a list"),
    ],
    ids=["truncated", "not-json", "binary", "list-at-top-level"],
)
def test_unreadable_json_raises_naming_the_file(tmp_path, data, message):
    path = write_case(tmp_path, base_coco())
    text = path.read_bytes()
    path.write_bytes(text[: len(text) // 2] if data is None else data)
    with pytest.raises(DatasetError, match="coco.json") as info:
        load_coco(str(path), None, ProblemLog())
    assert message in str(info.value)


def test_duplicate_image_ids_keep_the_first(tmp_path):
    coco = base_coco()
    coco["images"].append({"id": 1, "file_name": "b.png", "width": WIDTH, "height": HEIGHT})
    log = ProblemLog()
    _, records = load_coco(str(write_case(tmp_path, coco)), None, log)
    assert [r.file_name for r in records] == ["a.png", "b.png"]
    (problem,) = [p for p in log.problems if "listed twice" in p.message]
    assert problem.level == "error" and problem.image == "b.png"
    assert [a.source_id for a in records[0].annotations] == [10]


@pytest.mark.parametrize("mode", ["RGBA", "L", "I;16"])
def test_unusual_png_modes_import_with_their_mode(tmp_path, mode):
    path = write_case(tmp_path, base_coco())
    (tmp_path / "b.png").write_bytes(png_bytes(mode))
    log = ProblemLog()
    _, records = load_coco(str(path), None, log)
    assert log.problems == []
    assert records[1].mode == ("I;16" if mode == "I;16" else mode)
    assert records[1].image is not None and len(records[1].annotations) == 1


def test_box_only_objects_are_kept_with_one_summary_warning(tmp_path):
    coco = base_coco()
    for ann in coco["annotations"]:
        ann["segmentation"] = []
    coco["annotations"][1].pop("segmentation")
    log = ProblemLog()
    _, records = load_coco(str(write_case(tmp_path, coco)), None, log)
    assert [str(p.message) for p in log.problems] == [
        "2 of 2 objects have no mask (empty segmentation); they are kept as boxes only"
    ]
    assert records[0].annotations[0].rle is None
    assert records[0].annotations[0].box == (2.0, 2.0, 20.0, 20.0)  # COCO xywh stored as xyxy
    assert records[1].annotations[0].box == (5.0, 5.0, 30.0, 25.0)
