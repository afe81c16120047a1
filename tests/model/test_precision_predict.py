"""Prediction in bf16 vs fp32 on real DSB nuclei images: same instances, float32 outputs; fp32 is unchanged."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from instaseg.images import load_image
from instaseg.model.engine import TorchEngine, prepare_image
from instaseg.model.predictor import Predictor

from ..checkpoints import save_light_checkpoint
from ..conftest import DATASETS


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return float(w * h / union) if union > 0 else 1.0


def matched_mask_ious(a, b) -> list[float]:
    """Mask IoU of each instance of ``a`` with its match in ``b`` (same label, best box IoU >= 0.5; 0 if none)."""
    ious, free = [], set(range(len(b)))
    for i in range(len(a)):
        j = max(
            (j for j in free if b.labels[j] == a.labels[i]),
            key=lambda j: box_iou(a.boxes[i], b.boxes[j]),
            default=None,
        )
        if j is None or box_iou(a.boxes[i], b.boxes[j]) < 0.5:
            ious.append(0.0)
            continue
        free.discard(j)
        union = np.logical_or(a.mask(i), b.mask(j)).sum()
        ious.append(float(np.logical_and(a.mask(i), b.mask(j)).sum() / union) if union else 1.0)
    return ious


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A light model with seeded random weights at the nuclei images' own size (256 px): it finds blobs with
    scores ~0.7, a realistic number of detections for the parity to be tested on."""
    path = tmp_path_factory.mktemp("model") / "light.pt"
    return save_light_checkpoint(path, ["nucleus"], 256, score_threshold=0.05, detections_per_image=50)


@pytest.fixture(scope="module")
def nuclei():
    folder = DATASETS / "dsb2018_nuclei_sample" / "stage1_train"
    return [load_image(str(next((d / "images").glob("*.png")))) for d in sorted(folder.iterdir())[40:42]]


def test_bf16_predictions_match_fp32_on_real_images(checkpoint, nuclei):
    fp32 = Predictor(checkpoint, device="cpu", precision="fp32")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # emulated on CPUs without bf16 (slow): the numbers are bf16's
        bf16 = Predictor(checkpoint, device="cpu", precision="bf16")
    assert fp32.precision.name == "fp32" and bf16.precision.name == "bf16"
    ious, differs = [], False
    for image in nuclei:
        a, b = fp32.predict(image), bf16.predict(image)
        assert len(a) > 20 and abs(len(a) - len(b)) <= 0.05 * len(a)
        assert b.boxes.dtype == np.float32 and b.scores.dtype == np.float32
        ious += matched_mask_ious(a, b)
        differs |= not np.array_equal(a.scores, b.scores)  # bf16 did run
    assert differs
    assert np.median(ious) >= 0.95 and np.mean(np.array(ious) >= 0.5) >= 0.9, np.percentile(ious, [10, 50])


def test_fp32_is_the_plain_float32_forward(checkpoint, nuclei):
    predictor = Predictor(checkpoint, device="cpu", precision="fp32")
    plain = TorchEngine(predictor.model, channels_last=True, precision=None)  # no autocast, no hooks
    prepared = [prepare_image(nuclei[0], 256, "keep")]
    a, b = predictor.engine.detect(prepared)[0], plain.detect(prepared)[0]
    assert {a.boxes.dtype, a.scores.dtype, a.mask_probs.dtype} == {torch.float32}
    for name in ("boxes", "labels", "scores", "mask_probs"):
        assert getattr(a, name).equal(getattr(b, name)), name


def test_onnx_engine_refuses_bf16(tmp_path):
    with pytest.raises(ValueError, match="ONNX Runtime runs float32 only"):
        Predictor(tmp_path / "model.onnx", engine="onnx", precision="bf16")


def test_bf16_predictor_keeps_bf16_weights_with_the_same_numbers(checkpoint, nuclei):
    """A Predictor's own model stores its convolution and linear weights in bf16 once (autocast would convert
    them on every image); the detections are those of autocast over the float32 weights, bit for bit."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # emulated on CPUs without bf16 (slow)
        predictor = Predictor(checkpoint, device="cpu", precision="bf16")
        reference = Predictor(checkpoint, device="cpu", precision="fp32")
    model = predictor.model
    assert model.backbone.body.conv1.weight.dtype == torch.bfloat16
    assert model.roi_heads.box_head.fc6.weight.dtype == torch.bfloat16
    assert model.roi_heads.mask_predictor.mask_fcn_logits.weight.dtype == torch.bfloat16
    norms = [m for m in model.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert norms and all(m.weight.dtype == torch.float32 for m in norms)
    float_weights = TorchEngine(reference.model, channels_last=True, precision=predictor.precision)
    assert next(reference.model.parameters()).dtype == torch.float32
    prepared = [prepare_image(nuclei[0], 256, "keep")]  # one image: emulated bf16 is slow on AVX2 CPUs
    for a, b in zip(predictor.engine.detect(prepared), float_weights.detect(prepared), strict=True):
        assert len(a.boxes) > 20
        for name in ("boxes", "labels", "scores", "mask_probs"):
            assert getattr(a, name).equal(getattr(b, name)), name
