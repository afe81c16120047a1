"""Malformed Label Studio JSON exports: each case mutates a real export and asserts the exact outcome."""

from __future__ import annotations

import copy
import json
import math

import pytest

from instaseg.formats.labelstudio_json import load_labelstudio_json
from instaseg.problems import DatasetError, ProblemLog

EXPORTS = "label_studio_1.23_exports"


@pytest.fixture(scope="module")
def poly_tasks(datasets) -> list[dict]:
    """Real export: tasks 1..3 (img0 64x48, img1 80x60, img2 40x40), regions poly1 (triangle), poly2 (blob)."""
    return json.loads((datasets / EXPORTS / "poly_JSON.json").read_text())


@pytest.fixture(scope="module")
def brush_tasks(datasets) -> list[dict]:
    """Real export: task 4 (img1, br1), task 5 (img0, b0 b1), task 6 (img2, b0 b1)."""
    return json.loads((datasets / EXPORTS / "brush_JSON.json").read_text())


def run(tmp_path, datasets, tasks) -> tuple:
    path = tmp_path / "export.json"
    path.write_text(json.dumps(tasks) if not isinstance(tasks, str) else tasks)
    log = ProblemLog()
    class_map, records = load_labelstudio_json(str(path), str(datasets / EXPORTS / "images"), log)
    return class_map, records, [(p.level, p.message, p.annotation) for p in log.problems]


def region(tasks, task_index=0, region_index=0) -> dict:
    return tasks[task_index]["annotations"][0]["result"][region_index]


def set_points(points):
    def mutate(tasks):
        region(tasks)["value"]["points"] = points

    return mutate


def with_extra_annotation(**fields):
    """Task 1 gets a second annotation holding only a copy of poly2 (blob), with ``fields`` set."""

    def mutate(tasks):
        extra = copy.deepcopy(tasks[0]["annotations"][0])
        extra.update(id=99, result=[extra["result"][1]], **fields)
        tasks[0]["annotations"].append(extra)

    return mutate


def add_draft(tasks):
    tasks[0]["drafts"] = [{"id": 7, "result": [], "created_at": "2030-01-01T00:00:00Z"}]


def wrong_width(tasks):
    for r in tasks[0]["annotations"][0]["result"]:
        r["original_width"] = 65


def missing_image(tasks):
    tasks[1]["data"]["image"] = "/data/local-files/?d=images/not_there.png"


def unknown_types(tasks):
    result = tasks[0]["annotations"][0]["result"]
    result.append(
        {
            "id": "c1",
            "type": "choices",
            "value": {"choices": ["indoor"]},
            "from_name": "c",
            "to_name": "image",
        }
    )
    result.append(
        {"id": "t1", "type": "textarea", "value": {"text": ["note"]}, "from_name": "t", "to_name": "image"}
    )
    result.append(
        {
            "id": "k1",
            "type": "keypointlabels",
            "original_width": 64,
            "original_height": 48,
            "value": {"x": 1, "y": 2, "keypointlabels": ["tip"]},
        }
    )


def two_labels(tasks):
    region(tasks)["value"]["polygonlabels"] = ["triangle", "blob"]


def rotated(tasks):
    region(tasks)["image_rotation"] = 90


def no_annotations(tasks):
    tasks[2]["annotations"] = []


def rectangle(tasks):
    region(tasks)["type"] = "rectanglelabels"
    region(tasks)["value"] = {
        "x": 25,
        "y": 50,
        "width": 50,
        "height": 25,
        "rotation": 0,
        "rectanglelabels": ["triangle"],
    }


def no_original_size(tasks):
    for r in tasks[0]["annotations"][0]["result"]:
        del r["original_width"], r["original_height"]


def completions(tasks):
    tasks[0]["completions"] = tasks[0].pop("annotations")


TRIANGLE_OF_TASK_1 = "task 1 region poly1"
FULL = [["triangle", "blob"]] * 3  # class names per task of the unmodified export

# (case id, mutation, objects per kept task as class names, problems as (level, message start, annotation))
CASES = [
    (
        "polygon with 2 points",
        set_points([[10, 10], [50, 50]]),
        [["blob"], *FULL[1:]],
        [
            ("warning", "polygon 0 has 2 points (needs 3)", TRIANGLE_OF_TASK_1),
            ("error", "no valid polygon left", TRIANGLE_OF_TASK_1),
        ],
    ),
    (
        "NaN point",
        set_points([[10, 10], [math.nan, 50], [50, 80]]),
        [["blob"], *FULL[1:]],
        [
            ("warning", "polygon 0 has non-numeric, NaN or infinite coordinates", TRIANGLE_OF_TASK_1),
            ("error", "no valid polygon left", TRIANGLE_OF_TASK_1),
        ],
    ),
    (
        "null point",
        set_points([[10, 10], [None, 50], [50, 80]]),
        [["blob"], *FULL[1:]],
        [
            ("warning", "polygon 0 has non-numeric, NaN or infinite coordinates", TRIANGLE_OF_TASK_1),
            ("error", "no valid polygon left", TRIANGLE_OF_TASK_1),
        ],
    ),
    (
        "points not pairs",
        set_points([[10, 10, 3], [20, 50], [50, 80]]),
        [["blob"], *FULL[1:]],
        [("error", "polygon value.points must be a list of [x, y] pairs", TRIANGLE_OF_TASK_1)],
    ),
    (
        "points outside 0-100",
        set_points([[-10, 20], [120, 20], [50, 150]]),
        FULL,
        [("warning", "polygon 0 extends outside the 64x48 image; clipped to it", TRIANGLE_OF_TASK_1)],
    ),
    (
        "unknown result types",
        unknown_types,
        FULL,
        [
            (
                "warning",
                "ignored 3 results of types that carry no object mask or box: choices (1), "
                "keypointlabels (1), textarea (1)",
                None,
            )
        ],
    ),
    (
        "cancelled annotation ignored",
        with_extra_annotation(was_cancelled=True, updated_at="2030-01-01T00:00:00Z"),
        FULL,
        [("warning", "ignored 1 cancelled annotations; 0 tasks had only cancelled", None)],
    ),
    ("draft ignored", add_draft, FULL, [("warning", "1 tasks have drafts (unsubmitted work)", None)]),
    (
        "two annotations: latest taken",
        with_extra_annotation(updated_at="2030-01-01T00:00:00Z"),
        [["blob"], *FULL[1:]],
        [("warning", "1 tasks have several annotations", None)],
    ),
    (
        "two annotations: older one ignored",
        with_extra_annotation(updated_at="2000-01-01T00:00:00Z"),
        FULL,
        [("warning", "1 tasks have several annotations", None)],
    ),
    (
        "two annotations: ground truth wins",
        with_extra_annotation(updated_at="2000-01-01T00:00:00Z", ground_truth=True),
        [["blob"], *FULL[1:]],
        [("warning", "1 tasks have several annotations", None)],
    ),
    ("missing image", missing_image, FULL, [("warning", "1 of 3 task images not found", None)]),
    (
        "original_width disagrees with the file",
        wrong_width,
        FULL[1:],
        [("error", "annotations declare 65x48 but the image is displayed at 64x48", None)],
    ),
    (
        "image_rotation not supported",
        rotated,
        [["blob"], *FULL[1:]],
        [
            (
                "error",
                "image_rotation = 90 (the image was rotated in the editor) is not supported",
                TRIANGLE_OF_TASK_1,
            )
        ],
    ),
    (
        "several labels: first used",
        two_labels,
        FULL,
        [
            (
                "warning",
                "region has 2 labels ['triangle', 'blob']; using the first, 'triangle'",
                TRIANGLE_OF_TASK_1,
            )
        ],
    ),
    ("task without annotations: negative image", no_annotations, [*FULL[:2], []], []),
    ("rectangle: box only", rectangle, FULL, []),
    ("no original size (pre-annotation): the file's size", no_original_size, FULL, []),
    ("'completions' of Label Studio before 1.0", completions, FULL, []),
]


@pytest.mark.parametrize("mutate, objects, problems", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_polygon_export(tmp_path, datasets, poly_tasks, mutate, objects, problems):
    tasks = copy.deepcopy(poly_tasks)
    mutate(tasks)
    class_map, records, found = run(tmp_path, datasets, tasks)
    assert [[class_map.name(a.label) for a in r.annotations] for r in records] == objects
    assert len(found) == len(problems), found
    for (level, message, annotation), (want_level, want_start, want_annotation) in zip(
        found, problems, strict=True
    ):
        assert (level, annotation) == (want_level, want_annotation)
        assert message.startswith(want_start), message


def test_missing_image_record_keeps_declared_size(tmp_path, datasets, poly_tasks):
    tasks = copy.deepcopy(poly_tasks)
    missing_image(tasks)
    _, records, _ = run(tmp_path, datasets, tasks)
    assert records[1].image is None
    assert (records[1].file_name, records[1].width, records[1].height) == ("images/not_there.png", 80, 60)


def test_points_outside_are_clipped_to_the_image(tmp_path, datasets, poly_tasks):
    tasks = copy.deepcopy(poly_tasks)
    set_points([[-10, 20], [120, 20], [50, 150]])(tasks)
    _, records, _ = run(tmp_path, datasets, tasks)
    # (-10%, 20%), (120%, 20%), (50%, 150%) of 64x48 -> (-6.4, 9.6), (76.8, 9.6), (32, 72), clipped:
    assert records[0].annotations[0].polygons == [pytest.approx([0.0, 9.6, 64.0, 9.6, 32.0, 48.0])]


def test_rectangle_becomes_a_pixel_box_without_mask(tmp_path, datasets, poly_tasks):
    tasks = copy.deepcopy(poly_tasks)
    rectangle(tasks)
    _, records, _ = run(tmp_path, datasets, tasks)
    box = records[0].annotations[0]
    assert box.rle is None and box.box == (16.0, 24.0, 48.0, 36.0)  # 64x48: x 25%..75%, y 50%..75%


def test_all_annotations_cancelled_task_left_out(tmp_path, datasets, poly_tasks):
    tasks = copy.deepcopy(poly_tasks)
    tasks[0]["annotations"][0]["was_cancelled"] = True
    _, records, found = run(tmp_path, datasets, tasks)
    assert [r.file_name for r in records] == ["images/img1.png", "images/img2.png"]
    assert [m for _, m, _ in found] == [
        "ignored 1 cancelled annotations; 1 tasks had only cancelled annotations "
        "(skipped by the annotator) and are left out"
    ]


def test_brush_rle_of_wrong_length_drops_the_region(tmp_path, datasets, brush_tasks):
    tasks = copy.deepcopy(brush_tasks)
    region(tasks, 0)["value"]["rle"] = region(tasks, 2)["value"]["rle"]  # a 40x40 mask on the 80x60 image
    class_map, records, found = run(tmp_path, datasets, tasks)
    assert [len(r.annotations) for r in records] == [0, 2, 2]
    assert found == [
        (
            "error",
            "brush RLE holds 6400 values but a 80x60 RGBA image needs 19200 (4*60*80); the "
            "mask was drawn on an image of another size; region dropped",
            "task 4 region br1",
        )
    ]


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not a JSON file"),
        (
            '{"images": [], "annotations": []}',
            "a Label Studio JSON export is a list of tasks, this file holds a dict",
        ),
        ('[{"id": 1, "annotations": []}]', "task 1 has no 'data' object"),
        (
            '[{"id": 1, "data": {"image": "a.png"}}, {"id": 2, "annotations": []}]',
            "task 2 has no 'data' object",
        ),
        ('[{"id": 1, "foo": 3}]', "item 1 has neither 'data'"),
        ("[3]", "task 0 is a int"),
    ],
    ids=[
        "not JSON",
        "not a list",
        "task without data",
        "second task without data",
        "no image field",
        "not objects",
    ],
)
def test_unusable_file_raises(tmp_path, datasets, content, message):
    with pytest.raises(DatasetError, match=message.replace("[", r"\[")) as error:
        run(tmp_path, datasets, content)
    assert error.value.problem.file.endswith("export.json")


def test_missing_file_raises(tmp_path):
    with pytest.raises(DatasetError, match="file not found"):
        load_labelstudio_json(str(tmp_path / "nope.json"), None, ProblemLog())
