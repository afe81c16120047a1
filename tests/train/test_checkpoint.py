"""Checkpoints: weights_only loading, atomic writes under SIGKILL, clear errors for bad files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from fractions import Fraction

import pytest
import torch

from instaseg.model.architectures import build_model
from instaseg.model.checkpoint import (
    CheckpointMismatchError,
    CorruptCheckpointError,
    load_checkpoint,
    save_atomic,
)
from instaseg.model.config import ModelConfig
from instaseg.model.weights import apply_weights
from tests.conftest import REPO

CONFIG = ModelConfig(arch="maskrcnn_resnet18_fpn", num_classes=2, image_size=64, pretrained_backbone=False)


def write_checkpoint(path, config=CONFIG, names=("a", "b")):
    torch.manual_seed(0)
    model = build_model(config)
    save_atomic(
        {
            "format": "instaseg-checkpoint",
            "format_version": 1,
            "model": model.state_dict(),
            "class_names": list(names),
            "model_config": config.to_dict(),
            "train_config": {"lr": 0.01},
            "epoch": 3,
            "metrics": {"val_loss": 1.5},
            "versions": {"torch": str(torch.__version__)},
        },
        path,
    )
    return model


def test_round_trip_with_weights_only(tmp_path):
    model = write_checkpoint(tmp_path / "best.pt")
    payload = torch.load(tmp_path / "best.pt", weights_only=True)
    assert payload["class_names"] == ["a", "b"] and payload["metrics"]["val_loss"] == 1.5
    loaded, class_map, config = load_checkpoint(tmp_path / "best.pt")
    assert class_map.names == ("a", "b") and config == CONFIG and not loaded.training
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor)
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]  # no temporary file left


def test_bad_checkpoints_get_clear_errors(tmp_path):
    write_checkpoint(tmp_path / "ok.pt")
    (tmp_path / "truncated.pt").write_bytes((tmp_path / "ok.pt").read_bytes()[:5000])
    with pytest.raises(CorruptCheckpointError, match="truncated.pt is not a readable checkpoint"):
        load_checkpoint(tmp_path / "truncated.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(CorruptCheckpointError):
        load_checkpoint(tmp_path / "text.pt")
    with pytest.raises(CheckpointMismatchError, match="is a maskrcnn_resnet18_fpn checkpoint, expected"):
        load_checkpoint(tmp_path / "ok.pt", arch="maskrcnn_resnet50_fpn")
    with pytest.raises(CheckpointMismatchError, match=r"trained on classes \['a', 'b'\]"):
        load_checkpoint(tmp_path / "ok.pt", class_names=("cat",))
    other = build_model(ModelConfig(arch="maskrcnn_resnet18_fpn", num_classes=2, pretrained_backbone=False))
    with pytest.raises(CheckpointMismatchError, match="--arch maskrcnn_resnet18_fpn"):
        apply_weights(other, "maskrcnn_resnet50_fpn", str(tmp_path / "ok.pt"), ("a", "b"))
    with pytest.raises(CheckpointMismatchError, match="this dataset has"):
        apply_weights(other, "maskrcnn_resnet18_fpn", str(tmp_path / "ok.pt"), ("a", "c"))
    # a pickled object (code) is refused by weights_only loading
    torch.save({"format": "instaseg-checkpoint", "bad": Fraction(1, 3)}, tmp_path / "code.pt")
    with pytest.raises(CorruptCheckpointError):
        load_checkpoint(tmp_path / "code.pt")


WRITER = """
import sys, torch
from instaseg.model.checkpoint import save_atomic
i = 0
while True:
    i += 1
    save_atomic({"step": i, "big": torch.full((40_000_000,), float(i))}, sys.argv[1])
"""


def test_sigkill_during_write_leaves_previous_file_loadable(tmp_path):
    target = tmp_path / "best.pt"
    process = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], cwd=REPO)
    try:
        deadline = time.monotonic() + 120
        while not target.exists():  # first complete write
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.05)
        while not any(p.name.endswith(".tmp") for p in tmp_path.iterdir()):  # the next write in progress
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.005)
        time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert any(p.name.endswith(".tmp") for p in tmp_path.iterdir()), "killed outside a write"
    payload = torch.load(target, weights_only=True)
    assert payload["step"] >= 1 and float(payload["big"][-1]) == payload["step"]
