"""Checking a COCO results file: bad input gets a clear message, never a traceback or a silent zero."""

from __future__ import annotations

import numpy as np
import pytest

from instaseg.evaluate import check_predictions, read_predictions
from instaseg.formats.coco_export import records_to_coco
from instaseg.masks import mask_to_rle
from instaseg.problems import DatasetError

from .factories import class_map, record_from_masks


@pytest.fixture()
def gt():
    masks = np.zeros((2, 40, 60), bool)
    masks[0, 5:20, 5:25] = True
    masks[1, 22:38, 30:55] = True
    records = [
        record_from_masks(masks, [1, 2], image_id=1, name="a/one.png"),
        record_from_masks(masks[:1], [2], image_id=2, name="two.png"),
    ]
    return records_to_coco(records, class_map(2))


def _good(**changes):
    mask = np.zeros((40, 60), bool)
    mask[5:20, 5:25] = True
    item = {
        "image_id": 1,
        "category_id": 1,
        "score": 0.9,
        "bbox": [5, 5, 20, 15],
        "segmentation": mask_to_rle(mask),
    }
    item.update(changes)
    return item


@pytest.mark.parametrize(
    "items, message",
    [
        ([], "no predictions"),
        ({"images": [], "annotations": []}, "COCO dataset file"),
        ([_good(image_id=99)], r"images the dataset does not have .*image_id=99.*1\.\.2"),
        ([_good(image_id="1")], "images the dataset does not have"),
        ([_good(category_id=3)], r"unknown classes .*category_id=3.*valid category_id: 1=person, 2=other"),
        ([_good(score=None)], "score must be a number"),
        ([_good(bbox=[1, 2, 3])], r"bbox must be \[x, y, w, h\]"),
        ([_good(segmentation={"size": [10, 10], "counts": "abc"})], "differs from the image size"),
        ([_good(segmentation="mask")], "segmentation must be COCO RLE"),
        ([{k: v for k, v in _good(file_name="nope.png").items() if k != "image_id"}], "file_name='nope.png'"),
    ],
)
def test_bad_predictions_get_clear_messages(gt, items, message):
    with pytest.raises(DatasetError, match=message):
        check_predictions(items, gt, "preds.json")


def test_many_bad_entries_are_summarised(gt):
    with pytest.raises(DatasetError, match=r"12 predictions .* and 7 more") as error:
        check_predictions([_good(image_id=100 + i) for i in range(12)], gt, "preds.json")
    assert "preds.json" in str(error.value)


def test_file_name_polygons_and_missing_bbox_are_accepted(gt):
    items = [
        {
            "file_name": "a/one.png",
            "category_id": 1,
            "score": 0.8,
            "segmentation": [[5, 5, 25, 5, 25, 20, 5, 20]],
        },
        {"file_name": "one.png", "category_id": 2, "score": 0.7, "bbox": [30, 22, 25, 16]},
    ]
    results, with_masks, notes = check_predictions(items, gt, "preds.json")
    assert [r["image_id"] for r in results] == [1, 1]
    assert results[0]["bbox"] == pytest.approx([5, 5, 20, 15])
    assert not with_masks and "1 of 2 predictions have no mask" in notes[0]
    assert all("segmentation" not in r for r in results)


def test_file_name_wins_over_an_image_id_numbered_by_another_tool(gt):
    # `instaseg predict` numbers images in the order it read them, not in the dataset's order.
    items = [_good(image_id=1, file_name="two.png"), _good(image_id=2, file_name="/elsewhere/a/one.png")]
    results, _, _ = check_predictions(items, gt, "preds.json")
    assert [r["image_id"] for r in results] == [2, 1]


def test_predict_output_evaluates_the_same_as_the_checkpoint_route(tmp_path):
    """End to end: `predict` over a folder (its own image order) then `evaluate --predictions`."""
    import json

    from instaseg.cli import main
    from instaseg.cli.quickstart import sample_dataset_dir

    from ..checkpoints import save_light_checkpoint

    # Random weights give detections everywhere at score threshold 0: enough to compare the two routes.
    checkpoint = save_light_checkpoint(
        tmp_path / "light.pt", ["nucleus"], score_threshold=0.0, detections_per_image=20
    )
    sample = sample_dataset_dir()
    names = sorted(json.load(open(f"{sample}/result.json"))["images"], key=lambda i: i["file_name"])[:3]
    images = [f"{sample}/{i['file_name']}" for i in reversed(names)]  # an order unlike the dataset's
    assert main(["predict", str(checkpoint), *images, "--out", str(tmp_path / "p"), "--save", "json"]) == 0
    for route, args in (
        ("file", ["--predictions", str(tmp_path / "p" / "predictions.json")]),
        ("checkpoint", [str(checkpoint)]),
    ):
        split = tmp_path / "split.json"
        split.write_text(json.dumps({"train": [], "val": [], "test": [i["file_name"] for i in names]}))
        out = tmp_path / route
        assert (
            main(["evaluate", *args, sample, "--splits", str(split), "--out", str(out), "--no-losses"]) == 0
        )
    by_file = json.loads((tmp_path / "file" / "report.json").read_text())
    by_checkpoint = json.loads((tmp_path / "checkpoint" / "report.json").read_text())
    assert by_file["predictions"] == by_checkpoint["predictions"] > 0
    for kind in ("bbox", "segm"):  # one prediction path and one converter: the same numbers
        assert by_file[kind] == pytest.approx(by_checkpoint[kind], abs=1e-6)


def test_predictions_outside_the_split_are_left_out_with_a_note(gt):
    results, with_masks, notes = check_predictions([_good(), _good(image_id=2)], gt, "p.json", selected={2})
    assert len(results) == 1 and results[0]["image_id"] == 2 and with_masks
    assert "1 predictions on images outside the evaluated split" in notes[0]


def test_read_predictions_errors(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        read_predictions(str(tmp_path / "missing.json"))
    (tmp_path / "bad.json").write_text("[{")
    with pytest.raises(DatasetError, match="cannot read the predictions file as JSON"):
        read_predictions(str(tmp_path / "bad.json"))
