"""The OpenVINO engine: parity with the torch engine on real images of several sizes, and what it says it runs."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from instaseg.images import load_image
from instaseg.model.precision import resolve_precision
from instaseg.model.predictor import Predictor

openvino = pytest.importorskip("openvino")

from instaseg.model.openvino_engine import openvino_precision  # noqa: E402


@pytest.fixture(autouse=True)
def _own_model_cache(tmp_path, monkeypatch):
    """OpenVINO's compiled-model cache in the test's folder, not the person's ``~/.cache``."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


@pytest.mark.slow  # OpenVINO converts and compiles the model once: ~30-60 s on 2 cores
def test_openvino_matches_torch_on_real_images_of_other_sizes(checkpoint, nuclei_paths, photo):
    torch_predictor = Predictor(checkpoint, device="cpu", precision="fp32")
    openvino_predictor = Predictor(checkpoint, engine="openvino", precision="fp32", threads=2)
    assert openvino_predictor.engine_name == "openvino" and openvino_predictor.precision.name == "fp32"
    # the graph is converted at the first image's size; the others have other sizes and aspect ratios
    images = [load_image(str(nuclei_paths[0])), photo, np.ascontiguousarray(photo[:90])]
    for image in images:
        a, b = torch_predictor.predict(image), openvino_predictor.predict(image)
        assert len(a) == len(b) == 20  # random weights, score threshold 0: the most detections
        assert b.boxes.dtype == np.float32 and b.image_size == image.shape[:2]
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)
        np.testing.assert_allclose(a.boxes, b.boxes, atol=0.05)
        assert min(mask_iou(a.mask(i), b.mask(i)) for i in range(len(a))) >= 0.98


def test_openvino_says_whether_it_runs_bf16():
    core = openvino.Core()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the emulated-bf16 warning of CPUs without bf16
        asked = resolve_precision("bf16", "cpu")
    chosen = openvino_precision(asked, core)
    if "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        assert chosen.name == "bf16"
    else:  # OpenVINO would silently compute in float32: the engine says so instead
        assert chosen.name == "fp32" and "without BF16" in chosen.reason
    fp32 = openvino_precision(resolve_precision("fp32", "cpu"), core)
    assert fp32.name == "fp32" and fp32.reason.startswith("OpenVINO f32")


def test_marked_ops_stay_float32_under_bf16_and_the_mark_survives_saving(tmp_path):
    """keep_float32 marks the ops of the named scopes (and only those) with OpenVINO's ``precise``
    attribute, the mark is kept by save_model, and on a CPU with bf16 the compiled model runs the marked
    convolution in float32 and the other one in bf16."""
    import torch
    from torch import nn

    from instaseg.model.openvino_engine import keep_float32

    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.kept, self.other = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)

        def forward(self, x):
            return self.other(torch.relu(self.kept(x)))

    example = torch.randn(1, 8, 16, 16)
    traced = torch.jit.trace(Two().eval(), example)
    converted = openvino.convert_model(traced, example_input=example)
    marked, count = keep_float32(converted, ("__module.kept",))
    assert count >= 1

    def is_marked(model):
        return {
            op.get_friendly_name(): "DisablePrecisionConversion_0" in op.get_rt_info()
            for op in model.get_ops()
            if op.get_type_name() == "Convolution"
        }

    names = is_marked(marked)
    assert sorted(names.values()) == [False, True]
    assert all(flag == name.startswith("__module.kept") for name, flag in names.items())
    openvino.save_model(marked, tmp_path / "m.xml", compress_to_fp16=False)
    assert is_marked(openvino.Core().read_model(tmp_path / "m.xml")) == names
    core = openvino.Core()
    if "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        return
    compiled = core.compile_model(marked, "CPU", {"INFERENCE_PRECISION_HINT": "bf16"})
    runtime = {
        op.get_rt_info()["originalLayersNames"].astype(str): op.get_rt_info()["runtimePrecision"].astype(str)
        for op in compiled.get_runtime_model().get_ops()
        if op.get_rt_info()["layerType"].astype(str) == "Convolution"
    }
    kept = [p for layers, p in runtime.items() if "__module.kept" in layers]
    other = [
        p for layers, p in runtime.items() if "__module.other" in layers and "__module.kept" not in layers
    ]
    assert kept == ["f32"] and other == ["bf16"], runtime
    reference = traced(example).detach().numpy()
    np.testing.assert_allclose(compiled(example.numpy())[0], reference, atol=0.1)
