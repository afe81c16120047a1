"""Property-based fuzzing of the importers: valid documents of each format, mutated at random places with
hostile values (huge integers, 1e300, NaN, strings, deep nesting, paths outside the dataset...), must import
or raise :class:`~instaseg.problems.DatasetError`: never another exception.

Used by ``tests/formats/test_fuzz.py`` (a small fixed budget, derandomized) and ``bench/fuzz.py`` (many more
examples, counts printed). A target takes the drawn document and a folder holding the real image ``a.png``
(16 x 12 pixels) and returns ``"imported"`` or ``"refused"`` (a ``DatasetError``). Predictions files (COCO
results) are fuzzed the same way (:func:`check_predictions_document`: read, checked against the dataset and
evaluated), and so is the brush RLE decoder (:func:`decode_brush`).
"""

from __future__ import annotations

import copy
import functools
import json
import math
import re
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from PIL import Image
from pycocotools import mask as coco_mask

from instaseg.formats.brush import brush_rle_to_mask, mask_to_brush_rle
from instaseg.formats.load import load_dataset
from instaseg.problems import DatasetError

WIDTH, HEIGHT = 16, 12


def fixed_budget(examples: int) -> settings:
    """Hypothesis settings of a test suite's fuzz test: ``examples`` examples, the same on every run
    (derandomized, no example database), no deadline."""
    return settings(
        max_examples=examples,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
        ],
    )


def make_folder(folder: Path) -> Path:
    """``folder`` with the real 16 x 12 RGB image ``a.png`` the documents name."""
    folder.mkdir(parents=True, exist_ok=True)
    pixels = (np.arange(HEIGHT * WIDTH * 3) % 251).astype(np.uint8).reshape(HEIGHT, WIDTH, 3)
    Image.fromarray(pixels).save(folder / "a.png")
    return folder


# --- valid documents, one per format ------------------------------------------------------------------


def coco_document() -> dict:
    return {
        "images": [{"id": 1, "file_name": "a.png", "width": WIDTH, "height": HEIGHT}],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "segmentation": [[1, 1, 10, 1, 10, 8]], "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [2, 2, 5, 4], "segmentation": []},
            {
                "id": 3,
                "image_id": 1,
                "category_id": 1,
                "iscrowd": 1,
                "segmentation": {"size": [HEIGHT, WIDTH], "counts": [20, 30, HEIGHT * WIDTH - 50]},
            },
        ],
    }


def labelstudio_document() -> list:
    mask = np.zeros((HEIGHT, WIDTH), dtype=bool)
    mask[2:6, 3:9] = True
    size = {"original_width": WIDTH, "original_height": HEIGHT, "image_rotation": 0}
    return [
        {
            "id": 1,
            "data": {"image": "/data/upload/1/2f4821cd-a.png"},
            "annotations": [
                {
                    "id": 10,
                    "was_cancelled": False,
                    "result": [
                        {
                            "id": "p",
                            "type": "polygonlabels",
                            **size,
                            "value": {"points": [[5, 5], [60, 5], [60, 70]], "polygonlabels": ["cat"]},
                        },
                        {
                            "id": "b",
                            "type": "brushlabels",
                            **size,
                            "value": {
                                "format": "rle",
                                "rle": mask_to_brush_rle(mask),
                                "brushlabels": ["dog"],
                            },
                        },
                        {
                            "id": "r",
                            "type": "rectanglelabels",
                            **size,
                            "value": {
                                "x": 10,
                                "y": 10,
                                "width": 30,
                                "height": 40,
                                "rotation": 15,
                                "rectanglelabels": ["cat"],
                            },
                        },
                    ],
                }
            ],
        }
    ]


def labelme_document() -> dict:
    return {
        "shapes": [
            {"label": "cat", "points": [[1, 1], [10, 1], [10, 8]], "shape_type": "polygon", "group_id": None},
            {"label": "dog", "points": [[2, 2], [6, 5]], "shape_type": "rectangle", "group_id": 1},
            {"label": "dog", "points": [[8, 6], [10, 6]], "shape_type": "circle", "group_id": 1},
        ],
        "imagePath": "a.png",
        "imageHeight": HEIGHT,
        "imageWidth": WIDTH,
    }


def via_document() -> dict:
    return {
        "a.png123": {
            "filename": "a.png",
            "size": 123,
            "regions": [
                {
                    "shape_attributes": {
                        "name": "polygon",
                        "all_points_x": [1, 10, 10],
                        "all_points_y": [1, 1, 8],
                    },
                    "region_attributes": {"class": "cat"},
                },
                {
                    "shape_attributes": {"name": "rect", "x": 2, "y": 2, "width": 4, "height": 3},
                    "region_attributes": {"class": "dog"},
                },
                {
                    "shape_attributes": {"name": "ellipse", "cx": 8, "cy": 6, "rx": 2, "ry": 1, "theta": 0.3},
                    "region_attributes": {"class": "dog"},
                },
            ],
            "file_attributes": {},
        }
    }


TEMPLATES = {
    "coco": (coco_document, "result.json"),
    "labelstudio-json": (labelstudio_document, "export.json"),
    "labelme": (labelme_document, "a.json"),
    "via": (via_document, "via_region_data.json"),
}

# --- hostile values and mutations ------------------------------------------------------------------------

_SPECIAL = [
    0,
    -1,
    1,
    2**31,
    2**32 + 1,
    2**63,
    10**30,
    10**400,
    1e300,
    -1e300,
    1.7e308,
    math.nan,
    math.inf,
    -math.inf,
    0.5,
    1e8,
    "",
    "0",
    "10",
    "NaN",
    "a.png",
    "../../../../etc/passwd",
    "/etc/hostname",
    "/dev/zero",
    "http://127.0.0.1:9/x.png",
    "caf\u0065\u0301.png",
    "\u0000",
    "x" * 500,
    None,
    True,
    False,
    [],
    {},
    [[]],
    [0] * 7,
    [[0, 0], [1e300, 1e300], [-1e300, 5]],
    {"size": [HEIGHT, WIDTH], "counts": [-5, 400]},
    {"size": [HEIGHT, WIDTH], "counts": [10**9]},
    {"size": [HEIGHT, WIDTH], "counts": "0o0o0o"},
    {"size": [10**8, 10**8], "counts": "PPYo1"},
    [[0, 0, 1e7, 0, 1e7, 1e7] * 50],
]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def _nested(depth: int) -> str:
    """A placeholder that :func:`to_json` writes as ``depth`` nested lists (json.dumps itself stops at
    Python's recursion limit)."""
    return f"__nested_{depth}__"


def to_json(document) -> str:
    text = json.dumps(document)
    return re.sub(r'"__nested_(\d+)__"', lambda m: "[" * int(m.group(1)) + "]" * int(m.group(1)), text)


hostile_values = st.one_of(
    st.sampled_from(_SPECIAL),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=16),
    json_values,
    # Depths around the parser's limit (about 1,000 levels, less what the stack already holds).
    st.sampled_from([100, 500, 900, 950, 970, 980, 990, 1000, 5000]).map(_nested),
)


def _paths(value, prefix=()) -> list[tuple]:
    """Every path (tuple of keys/indices) into a JSON value, its root included."""
    paths = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            paths += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value[:20]):
            paths += _paths(child, (*prefix, index))
    return paths


def _set(document, path: tuple, value):
    if not path:
        return value
    parent = document
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    return document


@st.composite
def mutated(draw, template):
    """A copy of ``template()`` with 1..4 places replaced by hostile values, or a key deleted."""
    document = template()
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        paths = _paths(document)
        path = paths[draw(st.integers(min_value=0, max_value=len(paths) - 1))]
        if path and draw(st.integers(0, 5)) == 0 and isinstance(_parent(document, path), dict):
            del _parent(document, path)[path[-1]]
        else:
            document = _set(document, path, copy.deepcopy(draw(hostile_values)))  # values are shared
    return document


def _parent(document, path):
    for key in path[:-1]:
        document = document[key]
    return document


def import_document(format: str, document, folder: Path) -> str:
    """Write ``document`` as the format's file in ``folder`` and import it: ``"imported"`` or
    ``"refused"`` (``DatasetError``); any other exception propagates (a bug)."""
    name = TEMPLATES[format][1]
    for old in folder.glob("*.json"):
        old.unlink()
    path = folder / name
    path.write_text(to_json(document))
    source = folder if format in ("labelme", "via") else path
    try:
        load_dataset(str(source), format=format)
    except DatasetError:
        return "refused"
    return "imported"


# --- predictions files (COCO results) ---------------------------------------------------------------------


def predictions_document() -> list:
    """Three valid COCO results on ``a.png`` of :func:`coco_document`: compressed RLE, polygons by file
    name, uncompressed RLE."""
    mask = np.zeros((HEIGHT, WIDTH), dtype=np.uint8, order="F")
    mask[2:6, 3:9] = 1
    counts = coco_mask.encode(mask)["counts"].decode("ascii")
    return [
        {
            "image_id": 1,
            "category_id": 1,
            "score": 0.9,
            "bbox": [3, 2, 6, 4],
            "segmentation": {"size": [HEIGHT, WIDTH], "counts": counts},
        },
        {"file_name": "a.png", "category_id": 2, "score": 0.5, "segmentation": [[1, 1, 10, 1, 10, 8]]},
        {
            "image_id": 1,
            "category_id": 1,
            "score": 0.3,
            "bbox": [0, 1, 16, 2],
            "segmentation": {"size": [HEIGHT, WIDTH], "counts": [12, 2, 10, 2, HEIGHT * WIDTH - 26]},
        },
    ]


@functools.cache
def _predictions_dataset(folder: str):
    """The dataset of :func:`coco_document`, imported once, in a folder beside ``folder`` (the labelme and
    VIA targets import every JSON file under ``folder``)."""
    gt_folder = make_folder(Path(f"{folder}-predictions"))
    (gt_folder / "result.json").write_text(json.dumps(coco_document()))
    return load_dataset(str(gt_folder / "result.json"), format="coco")


def check_predictions_document(document, folder: Path) -> str:
    """Write ``document`` as a predictions file, read and check it against :func:`coco_document`'s
    dataset, and evaluate what it accepts: ``"imported"``, or ``"refused"`` (``DatasetError``)."""
    from instaseg.evaluate import check_predictions, evaluate_results, read_predictions
    from instaseg.formats.coco_export import records_to_coco

    dataset = _predictions_dataset(str(folder))
    path = Path(dataset.source).with_name("predictions.json")
    path.write_text(to_json(document))
    try:
        items = read_predictions(str(path))
        gt = records_to_coco(dataset.records, dataset.class_map)
        results, with_masks, notes = check_predictions(items, gt, str(path))
    except DatasetError:
        return "refused"
    evaluate_results(dataset.records, dataset.class_map, results, with_masks, notes=notes)
    return "imported"


# --- brush RLE ----------------------------------------------------------------------------------------------


@st.composite
def brush_cases(draw):
    """``(rle, height, width)``: a valid brush RLE mutated (bytes replaced, cut, extended), or random bytes
    behind a header declaring the right size."""
    height, width = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    mask = np.zeros((height, width), dtype=bool)
    mask[: height // 2, : width // 3] = True
    rle = mask_to_brush_rle(mask)
    kind = draw(st.integers(0, 3))
    if kind == 0:
        for _ in range(draw(st.integers(1, 8))):
            rle[draw(st.integers(0, len(rle) - 1))] = draw(st.integers(0, 255))
    elif kind == 1:
        rle = rle[: draw(st.integers(0, len(rle)))]
    elif kind == 2:
        rle = rle + draw(st.lists(st.integers(0, 255), max_size=64))
    else:
        rle = list((4 * height * width).to_bytes(4, "big")) + draw(
            st.lists(st.integers(0, 255), max_size=200)
        )
    if draw(st.integers(0, 9)) == 0:
        rle = draw(st.one_of(hostile_values, st.lists(hostile_values, max_size=6)))
    return rle, height, width


def decode_brush(rle, height: int, width: int) -> str:
    """``"imported"`` when the RLE decodes to a ``(height, width)`` bool mask, ``"refused"`` for a
    ``ValueError``; anything else propagates."""
    try:
        mask = brush_rle_to_mask(rle, height, width)
    except ValueError:
        return "refused"
    assert mask.shape == (height, width) and mask.dtype == bool
    return "imported"
