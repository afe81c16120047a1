"""ONNX export: metadata, parity with the torch model on CPU, and `predict --engine onnx`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from instaseg.cli import main
from instaseg.images import load_image
from instaseg.masks import rle_to_mask
from instaseg.model.onnx_engine import OnnxModelError
from instaseg.model.onnx_export import export_onnx, parity_check
from instaseg.model.predictor import Predictor

from .conftest import CLASS_NAMES, IMAGE_SIZE


@pytest.fixture(scope="module")
def onnx_model(checkpoint, tmp_path_factory):
    return export_onnx(checkpoint, tmp_path_factory.mktemp("onnx") / "model.onnx")


def test_metadata_carries_classes_and_settings(onnx_model):
    predictor = Predictor(onnx_model)
    assert predictor.engine_name == "onnx"
    assert predictor.class_names == tuple(CLASS_NAMES)
    assert predictor.image_size == IMAGE_SIZE and predictor.mask_threshold == 0.5
    assert predictor.engine.proposals == 1000


def test_parity_with_torch_on_real_images(checkpoint, onnx_model, nuclei_paths, photo):
    """Different sizes and aspect ratios than the one traced: the graph's sizes are dynamic."""
    images = [load_image(str(p)) for p in nuclei_paths[:2]] + [photo, np.ascontiguousarray(photo[:90])]
    report = parity_check(checkpoint, onnx_model, images)
    assert report.detections == 4 * 20  # random weights: every image has the maximum detections
    assert report.passed, report


def test_predict_cli_with_onnx_engine_matches_torch(checkpoint, onnx_model, nuclei_paths, tmp_path):
    outputs = {}
    for engine, model in (("torch", checkpoint), ("onnx", onnx_model)):
        out = tmp_path / engine
        assert (
            main(
                [
                    "predict",
                    str(model),
                    str(nuclei_paths[0]),
                    "--out",
                    str(out),
                    "--save",
                    "json",
                    "--engine",
                    engine,
                    "--score-threshold",
                    "0.3",
                    "--threads",
                    "1",
                    "--precision",
                    "fp32",  # the export is float32; auto would be bf16 on CPUs with native bf16
                ]
            )
            == 0
        )
        outputs[engine] = json.loads((out / "predictions.json").read_text())
    assert len(outputs["onnx"]) == len(outputs["torch"]) > 0
    for a, b in zip(outputs["torch"], outputs["onnx"], strict=True):
        mask_a, mask_b = rle_to_mask(a["segmentation"]), rle_to_mask(b["segmentation"])
        assert (mask_a & mask_b).sum() >= 0.98 * (mask_a | mask_b).sum()
        assert abs(a["score"] - b["score"]) < 1e-3


def test_onnx_settings_it_cannot_honour(onnx_model, tmp_path):
    with pytest.raises(OnnxModelError, match="at most 20 detections"):
        Predictor(onnx_model, max_detections=50)
    not_onnx = tmp_path / "x.onnx"
    not_onnx.write_bytes(b"junk")
    with pytest.raises(OnnxModelError, match="not a loadable ONNX model"):
        Predictor(not_onnx)


def test_export_cli_prints_a_passing_parity_check(checkpoint, tmp_path, capsys):
    out = tmp_path / "cli.onnx"
    assert main(["export", str(checkpoint), "--format", "onnx", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert out.is_file() and "parity check passed on 8 image(s)" in printed
