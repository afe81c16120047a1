"""report.json, report.md and the PNGs."""

from __future__ import annotations

import json

from PIL import Image

from instaseg.evaluate import evaluate_instances, write_report

from .factories import class_map, ground_truth_as_predictions, shift, two_class


def test_report_files(pennfudan, tmp_path):
    records = two_class(pennfudan[:12])
    predictions = [shift(p, 3, 2) for p in ground_truth_as_predictions(records)]
    evaluation = evaluate_instances(records, class_map(2), predictions)
    evaluation.source = {"checkpoint": "run/best.pt", "data": "PennFudanPed", "split": "test"}
    written = write_report(evaluation, str(tmp_path))
    for name in ("pr_segm", "pr_bbox", "confusion"):
        with Image.open(written[name]) as image:
            assert image.format == "PNG" and image.width > 200
    report = json.loads((tmp_path / "report.json").read_text())
    assert 0 < report["segm"]["AP"] < 1 and report["images"] == 12
    assert set(report["per_class"]) == {"person", "other"}
    assert report["losses"] == "n/a"
    text = (tmp_path / "report.md").read_text()
    for expected in (
        "# Evaluation report",
        "## In plain words",
        "the model found",
        "| person | ",
        "| AR, at most 100 detections per image |",
        "| **background** | – |",
        "![Precision-recall, masks](pr_segm.png)",
        "Losses",
    ):
        assert expected in text, expected
