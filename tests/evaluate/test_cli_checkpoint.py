"""``instaseg evaluate CHECKPOINT DATA`` through the training module, with an untrained light model."""

from __future__ import annotations

import json
import math

import pytest

from instaseg.cli import main

from ..checkpoints import save_light_checkpoint


def _checkpoint(path, class_names):
    return save_light_checkpoint(path, list(class_names), 128)


@pytest.mark.slow  # ~40 s on a shared 2-core CPU: predictions and losses of 9 images
def test_checkpoint_route_reports_metrics_and_losses(datasets, tmp_path, capsys):
    checkpoint = _checkpoint(tmp_path / "best.pt", ("object",))
    code = main(
        [
            "evaluate",
            str(checkpoint),
            str(datasets / "dsb2018_nuclei_sample"),
            "--format",
            "mask-png",
            "--split",
            "test",
            "--json",
            "--max-dets",
            "300",
            "--device",
            "cpu",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads(captured.out)
    assert report["images"] == 9 and report["instances"] > 100
    assert 0.0 <= report["bbox"]["AP"] < 0.05  # untrained: (almost) nothing right, but measured
    assert set(report["losses"]) == {"test"}
    assert math.isfinite(report["losses"]["test"]["loss"]) and report["losses"]["test"]["loss"] > 0
    text = (tmp_path / "eval-test" / "report.md").read_text()  # default folder beside the checkpoint
    assert "| test | " in text and "the model found" in text


def test_checkpoint_with_other_classes_is_refused(datasets, tmp_path, capsys):
    checkpoint = _checkpoint(tmp_path / "best.pt", ("cat",))
    code = main(
        [
            "evaluate",
            str(checkpoint),
            str(datasets / "dsb2018_nuclei_sample"),
            "--format",
            "mask-png",
            "--no-losses",
            "--device",
            "cpu",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "only in the checkpoint: ['cat']; only in the dataset: ['object']" in err
    assert "Traceback" not in err


def test_corrupt_checkpoint_is_a_message(datasets, tmp_path, capsys):
    (tmp_path / "best.pt").write_bytes(b"not a checkpoint")
    code = main(
        [
            "evaluate",
            str(tmp_path / "best.pt"),
            str(datasets / "dsb2018_nuclei_sample"),
            "--format",
            "mask-png",
            "--device",
            "cpu",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "not a readable checkpoint" in err


def test_the_run_split_file_applies_only_to_the_run_dataset(tmp_path, capsys):
    """A model evaluated on data it was not trained on: the split file beside it names other images."""
    from instaseg.cli.quickstart import sample_dataset_dir

    checkpoint = save_light_checkpoint(tmp_path / "best.pt", ["nucleus"], 64, detections_per_image=5)
    other = {"train": ["PNGImages/FudanPed00001.png"], "val": [], "test": ["PNGImages/FudanPed00002.png"]}
    (tmp_path / "splits.json").write_text(json.dumps(other))
    base = ["evaluate", str(checkpoint), sample_dataset_dir(), "--no-losses", "--device", "cpu", "--json"]
    assert main([*base, "--split", "all", "--out", str(tmp_path / "all")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["images"] == 60 and any("describes another dataset" in n for n in report["notes"])
    assert main([*base, "--split", "test", "--out", str(tmp_path / "test")]) == 2
    err = capsys.readouterr().err
    assert "split file beside the checkpoint describes another dataset" in err and "--split all" in err


def test_max_dets_defaults_to_the_checkpoints_detections_per_image(datasets, tmp_path, capsys):
    # a dense-scene model keeps 250 detections per image: COCO AP must not cut them at 100
    checkpoint = save_light_checkpoint(tmp_path / "best.pt", ["object"], 128, detections_per_image=250)
    data = str(datasets / "dsb2018_nuclei_sample")
    args = ["evaluate", str(checkpoint), data, "--format", "mask-png", "--no-losses", "--json"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["max_dets"] == 250
