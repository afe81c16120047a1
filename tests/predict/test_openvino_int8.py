"""`instaseg export --format openvino-int8`: an NNCF-quantized OpenVINO IR with instaseg's metadata, read back by
`Predictor` and `predict`, and the errors a person meets on the way."""

from __future__ import annotations

import json

import numpy as np
import pytest

from instaseg.cli import main
from instaseg.images import load_image
from instaseg.model.predictor import Predictor

from .conftest import CLASS_NAMES, IMAGE_SIZE

openvino = pytest.importorskip("openvino")
pytest.importorskip("nncf")

from instaseg.model.openvino_ir_engine import OpenVinoIrError  # noqa: E402


@pytest.fixture(autouse=True)
def _own_model_cache(tmp_path, monkeypatch):
    """OpenVINO's compiled-model cache in the test's folder, not the person's ``~/.cache``."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def int8_export(checkpoint, nuclei_paths, tmp_path_factory):
    """The export CLI's INT8 model of the random-weight checkpoint, its score threshold raised to 0.3 in the
    graph, calibrated on 3 real nuclei images and checked on the fourth; returns (xml, printed text)."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("int8") / "model-int8.xml"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(
            [
                "export", str(checkpoint), "--format", "openvino-int8", "--out", str(out),
                "--score-threshold", "0.3", "--calibration-images", *map(str, nuclei_paths[:3]),
                "--check-images", str(nuclei_paths[3]),
            ]
        )  # fmt: skip
    assert code == 0, printed.getvalue()
    return out, printed.getvalue()


@pytest.mark.slow  # conversion, calibration and quantization: ~30-60 s on 2 cores
def test_int8_export_is_quantized_and_carries_classes_and_settings(int8_export):
    xml, printed = int8_export
    assert xml.is_file() and xml.with_suffix(".bin").is_file()
    graph = openvino.Core().read_model(str(xml))
    quantizers = sum(op.get_type_name() == "FakeQuantize" for op in graph.get_ops())
    assert quantizers > 20  # the backbone's, FPN's and heads' convolutions and matmuls
    assert f"{quantizers} INT8 quantizers, calibrated on 3 image(s)" in printed
    assert "agreement with the float32 checkpoint on 1 image(s)" in printed
    predictor = Predictor(xml)
    assert predictor.engine_name == "openvino" and predictor.class_names == tuple(CLASS_NAMES)
    assert predictor.image_size == IMAGE_SIZE and predictor.engine.proposals == 1000
    assert predictor.score_threshold == pytest.approx(0.3)  # the export's threshold is the default
    assert predictor.precision.reason.startswith("INT8 with the other ops in OpenVINO f32")
    assert predictor.precision.name == "fp32"  # auto: the unquantized ops in float32 on every CPU


@pytest.mark.slow
def test_int8_rest_runs_bf16_when_asked_where_openvino_can(int8_export):
    if "BF16" not in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        pytest.skip("OpenVINO reports no bf16 on this CPU")
    xml, _ = int8_export
    predictor = Predictor(xml, precision="bf16")
    assert predictor.precision.name == "bf16"
    assert predictor.precision.reason.startswith("INT8 with the other ops in OpenVINO bf16")


@pytest.mark.slow
def test_int8_predictions_stay_close_to_float32(checkpoint, int8_export, nuclei_paths, photo):
    """On real images of other sizes than the traced one: the same number of detections (random weights
    score ~0.5 everywhere: every image has the maximum, 20) with scores near the float32 model's; a broken
    calibration (ranges from other preprocessing, saturated activations) moves them far."""
    xml, _ = int8_export
    exported = Predictor(xml)
    reference = Predictor(checkpoint, device="cpu", precision="fp32", score_threshold=0.3)
    for image in (load_image(str(nuclei_paths[3])), photo):
        a, b = reference.predict(image), exported.predict(image)
        assert len(a) == len(b) == 20
        assert b.image_size == image.shape[:2] and b.boxes.dtype == np.float32
        assert abs(float(a.scores.mean()) - float(b.scores.mean())) < 0.05
        assert float(np.abs(np.sort(a.scores) - np.sort(b.scores)).max()) < 0.1


@pytest.mark.slow
def test_predict_cli_reads_the_int8_export_and_refuses_what_it_cannot_honour(
    int8_export, nuclei_paths, tmp_path
):
    xml, _ = int8_export
    out = tmp_path / "out"
    command = ["predict", str(xml), str(nuclei_paths[0]), "--out", str(out), "--save", "json"]
    assert main([*command, "--score-threshold", "0.3"]) == 0
    payload = json.loads((out / "predictions.json").read_text())
    assert len(payload) == 20  # COCO results of the image: random weights give the maximum
    with pytest.raises(OpenVinoIrError, match="keeps scores >= 0.3 only"):
        Predictor(xml, score_threshold=0.1)
    with pytest.raises(OpenVinoIrError, match="at most 20 detections"):
        Predictor(xml, max_detections=50)


def test_an_xml_that_is_not_an_instaseg_export_is_refused(tmp_path):
    import torch

    example = torch.randn(1, 3, 8, 8)
    traced = torch.jit.trace(torch.nn.Conv2d(3, 3, 1).eval(), example)
    xml = tmp_path / "other.xml"
    openvino.save_model(openvino.convert_model(traced, example_input=example), str(xml))
    with pytest.raises(OpenVinoIrError, match="was not exported by `instaseg export`"):
        Predictor(xml)
    with pytest.raises(OpenVinoIrError, match="not found"):
        Predictor(tmp_path / "missing.xml")


def test_int8_export_without_calibration_images_or_training_data_says_what_to_pass(
    checkpoint, tmp_path, capsys
):
    """The random checkpoint records no training data: the default calibration set cannot be found."""
    out = tmp_path / "m-int8.xml"
    assert main(["export", str(checkpoint), "--format", "openvino-int8", "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert "does not say which data it was trained on; pass --calibration-images" in error
    assert len(error.strip().splitlines()) == 1 and not out.exists()
    assert (
        main(["export", str(checkpoint), "--format", "openvino-int8", "--out", str(tmp_path / "m.bin")]) == 2
    )
    assert "must end in .xml" in capsys.readouterr().err


def test_default_calibration_set_is_the_runs_training_split(datasets, tmp_path):
    """A checkpoint that records its dataset, with the run's splits.json beside it: the training split's
    images, not the validation or test ones (calibrating on test images would flatter an evaluation)."""
    import torch

    from instaseg.cli.export import _training_images

    from ..checkpoints import save_light_checkpoint

    data = datasets / "dsb2018_nuclei_sample"
    (tmp_path / "run").mkdir()
    path = save_light_checkpoint(tmp_path / "run" / "best.pt", ["nucleus"])
    payload = torch.load(path, weights_only=False)
    payload["train_config"]["data"] = str(data)
    torch.save(payload, path)
    names = sorted(d.name for d in (data / "stage1_train").iterdir())
    split = {"train": [], "val": [], "test": []}
    from instaseg.formats.load import load_dataset

    records = load_dataset(str(data)).records
    for i, record in enumerate(records):
        split[("train", "val", "test")[i % 3]].append(record.file_name)
    (tmp_path / "run" / "splits.json").write_text(json.dumps(split))
    found = _training_images(str(path))
    assert len(found) == len(split["train"]) and len(records) == len(names)
    wanted = {r.image for r in records if r.file_name in set(split["train"])}
    assert set(found) == wanted


def test_branch_free_batched_nms_keeps_what_torchvision_keeps():
    """The INT8 export's batched NMS (no scripted branch for NMS of no boxes) against torchvision's, on
    overlapping boxes of two classes, and on no boxes."""
    import torch
    import torchvision

    from instaseg.model.openvino_export import _batched_nms

    generator = torch.Generator().manual_seed(0)
    corners = torch.rand(200, 2, generator=generator) * 100
    boxes = torch.cat([corners, corners + 5 + torch.rand(200, 2, generator=generator) * 30], dim=1)
    scores, classes = torch.rand(200, generator=generator), torch.randint(1, 3, (200,), generator=generator)
    expected = torchvision.ops.batched_nms(boxes, scores, classes, 0.5)
    assert 20 < len(expected) < 200
    assert torch.equal(_batched_nms(boxes, scores, classes, 0.5), expected)
    none = _batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.5)
    assert none.shape == (0,)
