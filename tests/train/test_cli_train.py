"""``instaseg train`` on the real DSB 2018 nuclei sample: bad input, and a short real run (slow)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from instaseg.cli import main
from instaseg.images import load_image
from instaseg.model.predictor import Predictor
from tests.train.factories import DSB, dsb_records


def subset_splits(tmp_path, train: int, val: int, test: int) -> str:
    """A split file naming a few DSB images (the others take no part)."""
    _, records = dsb_records()
    names = [r.file_name for r in records]
    path = tmp_path / "splits.json"
    path.write_text(
        json.dumps(
            {
                "train": names[:train],
                "val": names[train : train + val],
                "test": names[train + val : train + val + test],
            }
        )
    )
    return str(path)


def test_unknown_option_values_list_the_valid_ones(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", str(DSB), "--out", "x", "--arch", "resnet9000"])
    assert exit_info.value.code == 2
    assert "maskrcnn_resnet18_fpn" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", str(DSB), "--out", "x", "--optimizer", "lion"])
    err = capsys.readouterr().err
    assert "'sgd'" in err and "'adamw'" in err


def test_missing_coco_weights_say_how_to_get_them(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    splits = subset_splits(tmp_path, 2, 1, 0)
    code = main(
        [
            "train",
            str(DSB),
            "--out",
            str(tmp_path / "run"),
            "--no-download",
            "--weights",
            "coco",
            "--splits",
            splits,
            "--device",
            "cpu",
            "--image-size",
            "64",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth" in err and "--weights none" in err
    assert str(tmp_path / "torch" / "hub" / "checkpoints") in err
    assert "Traceback" not in err


def test_bad_weights_file_and_empty_split_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00" * 100)
    splits = subset_splits(tmp_path, 2, 1, 0)
    code = main(
        [
            "train",
            str(DSB),
            "--out",
            str(tmp_path / "run"),
            "--weights",
            str(bad),
            "--splits",
            splits,
            "--arch",
            "maskrcnn_resnet18_fpn",
            "--device",
            "cpu",
        ]
    )
    assert code == 2 and "bad.pt is not a readable checkpoint" in capsys.readouterr().err
    empty_val = subset_splits(tmp_path, 2, 0, 0)
    code = main(
        [
            "train",
            str(DSB),
            "--out",
            str(tmp_path / "run2"),
            "--weights",
            "none",
            "--splits",
            empty_val,
            "--arch",
            "maskrcnn_resnet18_fpn",
            "--device",
            "cpu",
        ]
    )
    assert code == 2 and "val split has no images" in capsys.readouterr().err


@pytest.mark.slow
def test_short_real_run_on_dsb_nuclei(tmp_path, capsys):
    run = tmp_path / "run"
    splits = subset_splits(tmp_path, 10, 2, 2)
    arguments = [
        "--arch",
        "maskrcnn_resnet18_fpn",
        "--image-size",
        "128",
        "--epochs",
        "4",
        "--batch-size",
        "2",
        "--optimizer",
        "adamw",
        "--lr",
        "0.001",
        "--warmup-steps",
        "3",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--splits",
        splits,
    ]
    code = main(["train", str(DSB), "--out", str(run), *arguments])
    captured = capsys.readouterr()
    out = captured.out
    assert code == 0, out
    assert "epoch 4/4" in out
    # --select auto: mask mAP on the 2 validation images at epoch 4 only (the last quarter of 4 epochs)
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [r["val_map"] != "" for r in rows] == [False, False, False, True]
    assert "best.pt: epoch 4 (mask mAP on 2 validation images" in out, out
    assert "it/s" not in captured.err and "\r" not in captured.err  # no progress bar off a terminal
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert len(rows) == 4
    first, last = float(rows[0]["train_loss"]), float(rows[-1]["train_loss"])
    assert last <= 0.5 * first, f"training loss went from {first} to {last}"
    for name in ("best.pt", "last.pt", "loss_curve.png", "config.yaml", "splits.json"):
        assert (run / name).is_file(), name
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert (run / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"

    payload = torch.load(run / "best.pt", weights_only=True)
    assert payload["class_names"] == ["object"] and payload["model_config"]["image_size"] == 128
    _, records = dsb_records()
    image = load_image(records[30].image)  # not among the 14 used
    instances = Predictor(run / "best.pt", device="cpu").predict(image)
    assert instances.dense_masks().shape == (len(instances), 256, 256)
    assert len(instances) > 0 and np.all(np.diff(instances.scores) <= 0)
