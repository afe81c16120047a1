"""``instaseg evaluate`` end to end on real data (predictions route) and its bad-input messages."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from instaseg.cli import main
from instaseg.cli.evaluate import _label_mapping
from instaseg.core import ClassMap
from instaseg.problems import DatasetError

from .factories import jittered_results


@pytest.fixture()
def pennfudan_predictions(pennfudan, tmp_path):
    path = tmp_path / "preds.json"
    path.write_text(json.dumps(jittered_results(pennfudan, 1, seed=3)))
    return path


def test_predictions_route_json(datasets, pennfudan_predictions, tmp_path, capsys):
    out = tmp_path / "report"
    code = main(
        [
            "evaluate",
            "--predictions",
            str(pennfudan_predictions),
            str(datasets / "PennFudanPed"),
            "--format",
            "mask-png",
            "--split",
            "all",
            "--out",
            str(out),
            "--json",
            "--max-dets",
            "50",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0
    report = json.loads(captured.out)  # exactly one JSON object on stdout
    assert report["images"] == 170 and report["instances"] == 423
    for kind in ("segm", "bbox"):
        assert 0.1 < report[kind]["AP"] < 0.95 and {"AP50", "AP75", "AR50"} <= set(report[kind])
    assert report["losses"] == "n/a" and any("Losses need a model" in n for n in report["notes"])
    assert report["per_class"]["object"]["instances"] == 423
    assert {p.name for p in out.iterdir()} >= {"report.json", "report.md", "pr_segm.png", "confusion.png"}


def test_predictions_route_on_a_split(datasets, pennfudan_predictions, tmp_path, capsys):
    code = main(
        [
            "evaluate",
            "--predictions",
            str(pennfudan_predictions),
            str(datasets / "PennFudanPed"),
            "--format",
            "mask-png",
            "--split",
            "test",
            "--out",
            str(tmp_path / "r"),
            "--json",
        ]
    )
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and 15 <= report["images"] <= 35
    assert any("outside the evaluated split" in n for n in report["notes"])
    assert any("default 70/15/15" in n for n in report["notes"])


@pytest.mark.parametrize(
    "content, message",
    [
        ("[]", "holds no predictions"),
        (
            '[{"image_id": 5000, "category_id": 1, "score": 0.5, "bbox": [0, 0, 1, 1]}]',
            "images the dataset does not have",
        ),
        (
            '[{"image_id": 1, "category_id": 7, "score": 0.5, "bbox": [0, 0, 1, 1]}]',
            "valid category_id: 1=object",
        ),
    ],
)
def test_bad_prediction_files_exit_2_with_a_message(datasets, tmp_path, capsys, content, message):
    path = tmp_path / "preds.json"
    path.write_text(content)
    code = main(
        [
            "evaluate",
            "--predictions",
            str(path),
            str(datasets / "PennFudanPed"),
            "--format",
            "mask-png",
            "--split",
            "all",
            "--out",
            str(tmp_path / "r"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


def test_box_only_dataset_reports_segm_na(tmp_path, capsys):
    for name in ("a.png", "b.png"):
        Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(tmp_path / name)
    coco = {
        "images": [
            {"id": 1, "file_name": "a.png", "width": 60, "height": 40},
            {"id": 2, "file_name": "b.png", "width": 60, "height": 40},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [5, 5, 20, 10], "area": 200, "iscrowd": 0},
            {"id": 2, "image_id": 2, "category_id": 1, "bbox": [30, 20, 20, 15], "area": 300, "iscrowd": 0},
        ],
        "categories": [{"id": 1, "name": "box"}],
    }
    (tmp_path / "annotations.json").write_text(json.dumps(coco))
    (tmp_path / "preds.json").write_text(
        json.dumps(
            [
                {"image_id": 1, "category_id": 1, "score": 0.9, "bbox": [5, 5, 20, 10]},
                {"image_id": 2, "category_id": 1, "score": 0.8, "bbox": [32, 20, 20, 15]},
            ]
        )
    )
    code = main(
        [
            "evaluate",
            "--predictions",
            str(tmp_path / "preds.json"),
            str(tmp_path / "annotations.json"),
            "--split",
            "all",
            "--out",
            str(tmp_path / "r"),
            "--json",
        ]
    )
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["segm"] == "n/a" and 0 < report["bbox"]["AP"] < 1
    assert report["matching"]["mean_mask_iou"] == "n/a" and report["matching"]["iou_type"] == "bbox"
    assert "boxes only" in " ".join(report["notes"])
    assert "n/a" in (tmp_path / "r" / "report.md").read_text()


def test_usage_errors(datasets, tmp_path, capsys):
    assert main(["evaluate", str(datasets / "PennFudanPed")]) == 2
    assert "either a CHECKPOINT or --predictions" in capsys.readouterr().err


def test_class_names_must_match_the_checkpoint():
    data = ClassMap(("cat", "dog"))
    assert _label_mapping(("dog", "cat"), data, "best.pt") == {1: 2, 2: 1}
    with pytest.raises(
        DatasetError, match=r"only in the checkpoint: \['bird'\]; only in the dataset: \['dog'\]"
    ):
        _label_mapping(("cat", "bird"), data, "best.pt")
