"""Malformed mask-PNG, labelme and VIA inputs: each gives exactly the expected problems and records.

Every case builds a tiny dataset in ``tmp_path`` and states the full outcome: the records and instances
imported and every problem (level and a fragment of the message) in order, or the ``DatasetError``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pytest
from PIL import Image

from instaseg.formats.labelme import load_labelme
from instaseg.formats.mask_png import load_mask_png
from instaseg.formats.via import load_via
from instaseg.problems import DatasetError, ProblemLog

LOADERS = {"mask-png": load_mask_png, "labelme": load_labelme, "via": load_via}


def png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array)).save(path)


def image(path, width=10, height=6):
    png(path, np.full((height, width, 3), 90, np.uint8))


def square(height=6, width=10, value=255, top=1, left=1, size=3):
    mask = np.zeros((height, width), np.uint8)
    mask[top : top + size, left : left + size] = value
    return mask


def dsb_sample(root, sample_id, masks):
    image(root / sample_id / "images" / f"{sample_id}.png")
    for name, mask in masks.items():
        png(root / sample_id / "masks" / f"{name}.png", mask)


def write_json(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def via_entry(filename, shapes):
    return {
        f"{filename}100": {
            "filename": filename,
            "size": 100,
            "file_attributes": {},
            "regions": {
                str(i): {"shape_attributes": s, "region_attributes": {}} for i, s in enumerate(shapes)
            },
        }
    }


VIA_SQUARE = {"name": "polygon", "all_points_x": [1, 5, 5, 1], "all_points_y": [1, 1, 5, 5]}


def labelme_doc(image_path, points_list, **extra):
    shapes = [
        {"label": "cat", "points": p, "group_id": None, "shape_type": "polygon", "flags": {}}
        for p in points_list
    ]
    doc = {
        "version": "5.4.1",
        "shapes": shapes,
        "imagePath": image_path,
        "imageData": None,
        "imageHeight": 6,
        "imageWidth": 10,
    }
    doc.update(extra)
    return {k: v for k, v in doc.items() if v is not ...}


LABELME_SQUARE = [[1, 1], [5, 1], [5, 5], [1, 5]]


# ---- builders: each writes into root and returns (format, source relative to root, images or None) ----


def mask_size_differs(root):
    dsb_sample(root, "s1", {"good": square(), "wrong": square(height=8, width=8)})
    return "mask-png", ".", None


def instance_id_mask_size_differs(root):
    image(root / "images" / "a.png")
    png(root / "masks" / "a_mask.png", square(height=6, width=12, value=1))
    image(root / "images" / "b.png")
    png(root / "masks" / "b_mask.png", square(value=1))
    return "mask-png", ".", None


def empty_instance_mask(root):
    dsb_sample(root, "s1", {"good": square(), "empty": np.zeros((6, 10), np.uint8)})
    return "mask-png", ".", None


def mask_without_image(root):
    image(root / "images" / "a.png")
    png(root / "masks" / "a_mask.png", square(value=1))
    png(root / "masks" / "z_mask.png", square(value=1))
    return "mask-png", ".", None


def image_without_mask(root):
    image(root / "images" / "a.png")
    png(root / "masks" / "a_mask.png", square(value=1))
    image(root / "images" / "b.png")
    return "mask-png", ".", None


def per_instance_image_without_masks(root):
    dsb_sample(root, "s1", {"m": square()})
    image(root / "s2" / "images" / "s2.png")
    return "mask-png", ".", None


def rgb_mask_with_equal_channels(root):
    ids = square(value=1) + square(value=2, top=3, left=6)
    image(root / "images" / "a.png")
    png(root / "masks" / "a_mask.png", np.repeat(ids[:, :, None], 3, axis=2))  # grayscale saved as RGB
    return "mask-png", ".", None


def rgb_mask_with_colours(root):
    coloured = np.zeros((6, 10, 3), np.uint8)
    coloured[1:4, 1:4] = (255, 0, 0)
    coloured[3:6, 6:9] = (0, 255, 0)
    image(root / "images" / "a.png")
    png(root / "masks" / "a_mask.png", coloured)
    return "mask-png", ".", None


def via_region_with_two_points(root):
    image(root / "a.png")
    two = {"name": "polygon", "all_points_x": [1, 5], "all_points_y": [1, 5]}
    write_json(root / "via_region_data.json", via_entry("a.png", [VIA_SQUARE, two]))
    return "via", "via_region_data.json", None


def via_non_numeric_points(root):
    image(root / "a.png")
    text = {"name": "polygon", "all_points_x": [1, "five", 5], "all_points_y": [1, 1, 5]}
    write_json(root / "via_region_data.json", via_entry("a.png", [text, VIA_SQUARE]))
    return "via", "via_region_data.json", None


def via_unequal_point_lists(root):
    image(root / "a.png")
    uneven = {"name": "polygon", "all_points_x": [1, 5, 5, 1], "all_points_y": [1, 1, 5]}
    write_json(root / "via_region_data.json", via_entry("a.png", [uneven]))
    return "via", "via_region_data.json", None


def via_file_truncated(root):
    image(root / "a.png")
    text = json.dumps(via_entry("a.png", [VIA_SQUARE]))
    (root / "via_region_data.json").write_text(text[: len(text) // 2])
    return "via", "via_region_data.json", None


def via_folder_with_one_truncated_file(root):
    image(root / "a.png")
    write_json(root / "good.json", via_entry("a.png", [VIA_SQUARE]))
    (root / "bad.json").write_text('{"a.png100": {"filename": "a.png", "regi')
    return "via", ".", None


def via_image_missing(root):
    image(root / "a.png")
    write_json(root / "via.json", {**via_entry("a.png", [VIA_SQUARE]), **via_entry("gone.png", [VIA_SQUARE])})
    return "via", "via.json", None


def labelme_shape_with_two_points(root):
    image(root / "a.png")
    write_json(root / "a.json", labelme_doc("a.png", [LABELME_SQUARE, [[1, 1], [5, 5]]]))
    return "labelme", ".", None


def labelme_not_json(root):
    image(root / "a.png")
    write_json(root / "a.json", labelme_doc("a.png", [LABELME_SQUARE]))
    (root / "b.json").write_text("<html>not json</html>")
    return "labelme", ".", None


def labelme_single_file_not_json(root):
    (root / "b.json").write_text("")
    return "labelme", "b.json", None


def labelme_image_path_missing(root):
    image(root / "pictures" / "b.png")
    write_json(root / "b.json", labelme_doc(..., [LABELME_SQUARE]))
    return "labelme", ".", None


def labelme_image_path_missing_same_stem_image(root):
    image(root / "a.png")
    write_json(root / "a.json", labelme_doc(..., [LABELME_SQUARE]))
    return "labelme", ".", None


def labelme_rectangle_with_three_points(root):
    image(root / "a.png")
    doc = labelme_doc("a.png", [LABELME_SQUARE])
    doc["shapes"].append({"label": "box", "points": [[1, 1], [4, 4], [5, 5]], "shape_type": "rectangle"})
    write_json(root / "a.json", doc)
    return "labelme", ".", None


@dataclass
class Expected:
    records: int = 0
    instances: int = 0
    problems: list[tuple[str, str]] = field(default_factory=list)
    raises: str | None = None


CASES = {
    mask_size_differs: Expected(1, 1, [("error", "mask is 8x8 but the image is 10x6; dropped")]),
    instance_id_mask_size_differs: Expected(
        1, 1, [("error", "mask is 12x6 but the image is 10x6; image skipped")]
    ),
    empty_instance_mask: Expected(1, 1, [("warning", "zero-area mask; object dropped")]),
    mask_without_image: Expected(1, 1, [("error", "mask has no image with the stem 'z'")]),
    image_without_mask: Expected(1, 1, [("warning", "image has no instance-id mask")]),
    per_instance_image_without_masks: Expected(
        1, 1, [("warning", "image has no masks folder or no mask files")]
    ),
    rgb_mask_with_equal_channels: Expected(1, 2, []),
    rgb_mask_with_colours: Expected(0, 0, [("error", "mask is RGB with differing colour channels")]),
    via_region_with_two_points: Expected(
        1, 1, [("warning", "polygon 0 has 2 points (needs 3)"), ("error", "no valid polygon left")]
    ),
    via_non_numeric_points: Expected(
        1, 1, [("warning", "polygon 0 has non-numeric"), ("error", "no valid polygon left")]
    ),
    via_unequal_point_lists: Expected(1, 0, [("error", "'all_points_x' and 'all_points_y' of equal length")]),
    via_file_truncated: Expected(raises="not valid JSON"),
    via_folder_with_one_truncated_file: Expected(1, 1, [("error", "not valid JSON")]),
    via_image_missing: Expected(1, 1, [("error", "image file not found")]),
    labelme_shape_with_two_points: Expected(
        1, 1, [("warning", "polygon 0 has 2 points (needs 3)"), ("error", "no valid polygon left")]
    ),
    labelme_not_json: Expected(1, 1, [("error", "not valid JSON")]),
    labelme_single_file_not_json: Expected(raises="not valid JSON"),
    labelme_image_path_missing: Expected(0, 0, [("error", "no imagePath and no image with the JSON's name")]),
    labelme_image_path_missing_same_stem_image: Expected(1, 1, [("warning", "no imagePath; using a.png")]),
    labelme_rectangle_with_three_points: Expected(
        1, 1, [("error", "rectangle needs exactly 2 points, got 3")]
    ),
}


@pytest.mark.parametrize("build", list(CASES), ids=[b.__name__ for b in CASES])
def test_malformed(build, tmp_path):
    expected = CASES[build]
    format, source, images = build(tmp_path)
    log = ProblemLog()
    if expected.raises:
        with pytest.raises(DatasetError, match=expected.raises):
            LOADERS[format](str(tmp_path / source), images, log)
        return
    _, records = LOADERS[format](str(tmp_path / source), images, log)
    assert len(records) == expected.records
    assert sum(len(r.annotations) for r in records) == expected.instances
    assert [p.level for p in log.problems] == [level for level, _ in expected.problems], log.problems
    for problem, (_, fragment) in zip(log.problems, expected.problems, strict=True):
        assert fragment in problem.message
        assert problem.file or problem.image  # every problem says where
