"""`instaseg quickstart` (what `make demo` runs), end to end on the bundled sample with a short budget."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from PIL import Image


@pytest.mark.slow
def test_quickstart_runs_the_whole_pipeline(tmp_path):
    out = tmp_path / "qs"
    env = {"TORCH_HOME": str(tmp_path / "torch"), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "instaseg",
            "quickstart",
            "--out",
            str(out),
            "--minutes",
            "0.3",
            "--weights",
            "none",
        ],  # never reach for the network in a test
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "train the light ResNet-18 model from scratch" in result.stdout
    assert "mask mAP (test)" in result.stdout and "instaseg serve" in result.stdout
    report = json.loads((out / "evaluation" / "report.json").read_text())
    assert report["images"] == 9 and isinstance(report["segm"]["AP"], float)
    splits = json.loads((out / "splits.json").read_text())
    overlays = sorted((out / "masked" / "overlay").iterdir())
    assert len(overlays) == len(splits["test"]) == 9
    assert Image.open(overlays[0]).size == (256, 256)
    assert (out / "model" / "best.pt").is_file() and (out / "model" / "loss_curve.png").is_file()
