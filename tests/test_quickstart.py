"""`instaseg quickstart` (what `make demo` runs), end to end on the bundled sample with a short budget."""

from __future__ import annotations

import json
import re
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
    assert "recipe: architecture maskrcnn_resnet18_fpn from scratch" in result.stdout
    # The sample's 256-px images hold 7-px nuclei: from scratch on a CPU the size is what a step-time probe
    # on this machine affords within its share of the budget (256 px when only the unscaled size was timed).
    size = re.search(r"recipe: image size (\d+) px", result.stdout)
    assert size and int(size[1]) in (256, 384, 512), result.stdout[-3000:]
    assert "from a step-time probe on this machine" in result.stdout or (
        size[1] == "256" and "step-time probe's share of the budget ran out" in result.stdout
    )
    assert "time budget: 0.3 minutes" in result.stdout
    assert "mask mAP (test)" in result.stdout and "instaseg serve" in result.stdout
    report = json.loads((out / "evaluation" / "report.json").read_text())
    assert report["images"] == 9 and isinstance(report["segm"]["AP"], float)
    splits = json.loads((out / "splits.json").read_text())
    overlays = sorted((out / "masked" / "overlay").iterdir())
    assert len(overlays) == len(splits["test"]) == 9
    assert Image.open(overlays[0]).size == (256, 256)
    assert (out / "model" / "best.pt").is_file() and (out / "model" / "loss_curve.png").is_file()
    _check_predict_then_evaluate_scores_as_evaluate(out, report, splits, tmp_path)


def _check_predict_then_evaluate_scores_as_evaluate(out, report: dict, splits: dict, tmp_path) -> None:
    """The quickstart's trained model: `predict --save json` on the test images, then `evaluate
    --predictions`, gives the AP `evaluate CHECKPOINT` reported (one prediction path, one converter)."""
    from instaseg.cli import main
    from instaseg.cli.quickstart import sample_dataset_dir

    sample = sample_dataset_dir()
    checkpoint = str(out / "model" / "best.pt")
    header = torch_load_header(checkpoint)["model_config"]
    threshold = str(header["score_threshold"])  # as evaluate uses
    max_dets = str(max(100, header["detections_per_image"]))  # evaluate CHECKPOINT's default
    images = [f"{sample}/{name}" for name in splits["test"]]
    predicted = tmp_path / "predicted"
    common = ["--score-threshold", threshold, "--threads", "2"]
    assert main(["predict", checkpoint, *images, "--out", str(predicted), "--save", "json", *common]) == 0
    evaluation = tmp_path / "by-file"
    arguments = ["--split", "test", "--splits", str(out / "splits.json"), "--max-dets", max_dets]
    predictions = str(predicted / "predictions.json")
    assert main(["evaluate", "--predictions", predictions, sample, *arguments, "--out", str(evaluation)]) == 0
    by_file = json.loads((evaluation / "report.json").read_text())
    assert by_file["predictions"] == report["predictions"] > 0
    for kind in ("segm", "bbox"):
        for name in ("AP", "AP50", "AP75"):
            assert by_file[kind][name] == pytest.approx(report[kind][name], abs=1e-6), (kind, name)


def torch_load_header(path: str) -> dict:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def test_a_second_quickstart_writes_beside_the_first(tmp_path):
    """`make demo` twice: the second run takes out-2 (then out-3) instead of stopping on the first's model."""
    from instaseg.cli.quickstart import free_out_folder

    out = tmp_path / "quickstart"
    assert free_out_folder(str(out)) == str(out)
    (out / "model").mkdir(parents=True)
    assert free_out_folder(str(out)) == str(out)  # an interrupted run before any checkpoint: reused
    (out / "model" / "last.pt").write_bytes(b"")
    assert free_out_folder(str(out)) == f"{out}-2"
    assert free_out_folder(f"{out}/") == f"{out}-2"
    (tmp_path / "quickstart-2" / "model").mkdir(parents=True)
    (tmp_path / "quickstart-2" / "model" / "last.pt").write_bytes(b"")
    assert free_out_folder(str(out)) == f"{out}-3"
