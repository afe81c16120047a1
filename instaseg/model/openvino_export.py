"""INT8 export for OpenVINO (``instaseg export --format openvino-int8``): a checkpoint's
:class:`~instaseg.model.engine.DetectorCore` converted to OpenVINO (:func:`~.openvino_engine.convert_core`) and
quantized after training by NNCF (``nncf.quantize``: INT8 weights and activations, per-tensor activation
ranges from calibration images), written as OpenVINO IR (``.xml`` and ``.bin``) with instaseg's metadata
(:data:`METADATA`: class names, model config, proposals) in its ``rt_info``, which
:class:`~.openvino_ir_engine.OpenVinoIrEngine` reads back.

Input and outputs as :mod:`instaseg.model.onnx_export`'s graph: float32 ``(1, 3, h, w)`` resized and
normalised, any ``h``, ``w``; ``boxes (N, 4)``, ``labels (N,)``, ``scores (N,)``, ``mask_probs (N, 1, M, M)``.
The score threshold, detections per image and proposals are fixed in the graph. :data:`KEPT_FLOAT` names the
parts left unquantized; they run float32 by default, bf16 with ``--precision bf16`` where OpenVINO can (the
mask RoIAlign float32 then, as :class:`~.openvino_engine.OpenVinoEngine` does; see
:func:`~.openvino_ir_engine.rest_precision`). Needs ``pip install 'instaseg[openvino]'``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision

from .engine import configure_test_time, prepare_image
from .openvino_engine import FLOAT32_SCOPES, OpenVinoError, _import_openvino, convert_core, keep_float32

METADATA = ("class_names", "model_config", "proposals", "calibration_images")

# Op-name patterns (regular expressions matched at the start of the converted graph's op names, from the torch
# module paths) that NNCF leaves unquantized. Measured (issue 25; Intel Xeon with AMX, 2 cores, light model
# trained 15 min on the DSB sample, 20 held-out images, score >= 0.05, torch fp32 47.60 mask AP): everything
# quantized (94 quantizers) 47.53; the RPN's and predictors' output layers kept float 47.69; the RPN and ROI
# heads kept float 47.78; the mask head kept float 47.60; all within 0.2 points and 0.097-0.103 s/image,
# against 0.100 s for OpenVINO bf16. So nothing is kept float.
KEPT_FLOAT: tuple[str, ...] = ()


def _batched_nms(boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, iou_threshold: float):
    """torchvision's ``batched_nms`` (boxes of each class shifted apart, one NMS) without its scripted branch
    for no boxes, which traces to an ``If`` op NNCF 3.4 cannot quantize around ("Could not find a node ... in
    NNCFGraph"); the shift's maximum includes a 0, so no boxes give no boxes. Boxes ``(N, 4)`` x1y1x2y2."""
    top = torch.cat([boxes.flatten(), boxes.new_zeros(1)]).max()
    return torchvision.ops.nms(boxes + (classes.to(boxes) * (top + 1))[:, None], scores, iou_threshold)


@contextlib.contextmanager
def _nms_without_branches():
    """While tracing for the INT8 export: torchvision's RPN and ROI heads call :func:`_batched_nms` (they
    look ``torchvision.ops.boxes.batched_nms`` up at each call); restored afterwards, even on errors."""
    original = torchvision.ops.boxes.batched_nms
    torchvision.ops.boxes.batched_nms = _batched_nms
    try:
        yield
    finally:
        torchvision.ops.boxes.batched_nms = original


def _import_nncf():
    try:
        import nncf
    except ImportError:
        raise OpenVinoError(
            "the openvino-int8 export needs NNCF: pip install 'instaseg[openvino]' (it brings nncf)"
        ) from None
    return nncf


@dataclass(frozen=True)
class Int8Export:
    """What :func:`export_openvino_int8` wrote: ``path`` (the ``.xml``; its weights in the ``.bin`` beside
    it), the calibration images used and the ops NNCF quantized (FakeQuantize nodes inserted)."""

    path: Path
    calibration_images: int
    quantizers: int


def export_openvino_int8(
    checkpoint: str | Path,
    out: str | Path,
    calibration: Sequence[np.ndarray],
    proposals: int | None = None,
    score_threshold: float | None = None,
    kept_float: Sequence[str] = KEPT_FLOAT,
) -> Int8Export:
    """Quantize ``checkpoint``'s model to INT8 with ``calibration`` (RGB uint8 ``(H, W, 3)`` images, ideally
    the training images: NNCF measures activation ranges on them) and write it to ``out`` (``.xml``).

    ``proposals`` (default the Predictor's, 1000) and ``score_threshold`` (default the checkpoint's) are
    fixed in the graph, with the checkpoint's detections per image; ``kept_float``: op-name patterns left
    unquantized. Raises :class:`OpenVinoError` when OpenVINO or NNCF is missing or fails.
    """
    from .checkpoint import load_checkpoint
    from .predictor import DEFAULT_PROPOSALS

    if not calibration:
        raise OpenVinoError("the INT8 export needs at least one calibration image")
    ov, nncf = _import_openvino(), _import_nncf()
    proposals = DEFAULT_PROPOSALS if proposals is None else int(proposals)
    model, class_map, config = load_checkpoint(checkpoint, device="cpu")
    if score_threshold is not None:
        config = dataclasses.replace(config, score_threshold=float(score_threshold))
    configure_test_time(model, config.score_threshold, config.detections_per_image, proposals)
    batches = [prepare_image(image, config.image_size, config.resize)[None] for image in calibration]
    with _nms_without_branches():
        converted = convert_core(model, batches[0])
    scope = nncf.IgnoredScope(patterns=list(kept_float), validate=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            quantized = nncf.quantize(
                converted,
                nncf.Dataset(batches, lambda batch: {0: batch}),
                subset_size=len(batches),
                ignored_scope=scope,
            )
        except Exception as e:  # NNCF and OpenVINO raise their own exception types
            raise OpenVinoError(f"NNCF could not quantize the model ({str(e).splitlines()[0]})") from None
    quantizers = sum(op.get_type_name() == "FakeQuantize" for op in quantized.get_ops())
    quantized, _ = keep_float32(quantized, FLOAT32_SCOPES)  # honoured where the rest runs bf16
    values = (class_map.names, config.to_dict(), proposals, len(batches))
    for key, value in zip(METADATA, values, strict=True):
        quantized.set_rt_info(json.dumps(list(value) if key == "class_names" else value), ["instaseg", key])
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(quantized, out, compress_to_fp16=False)
    return Int8Export(out, len(batches), quantizers)


@dataclass(frozen=True)
class Agreement:
    """The INT8 export against the float32 checkpoint on the same images (instances matched by label and
    box IoU, :func:`~.onnx_export.match_instances`): ``median_mask_iou`` over the float32 instances, an
    unmatched one counting 0, and the detections each found."""

    images: int
    detections_float: int
    detections_int8: int
    median_mask_iou: float


def agreement(checkpoint: str | Path, xml: str | Path, images: Sequence[np.ndarray]) -> Agreement:
    """Predict ``images`` (RGB uint8 ``(H, W, 3)``) with the export and with the checkpoint in float32 at the
    export's settings, and compare."""
    from .onnx_export import mask_iou, match_instances
    from .predictor import Predictor

    exported = Predictor(xml, engine="openvino")
    reference = Predictor(
        checkpoint,
        device="cpu",
        proposals=exported.engine.proposals,
        score_threshold=exported.score_threshold,
        precision="fp32",
    )
    ious, found = [], 0
    for image in images:
        a, b = reference.predict_arrays([image])[0], exported.predict_arrays([image])[0]
        found += len(b)
        matched = dict(match_instances(a, b))
        for i in range(len(a)):
            if i not in matched:
                ious.append(0.0)
                continue
            ious.append(mask_iou(a.mask(i), b.mask(matched[i])))
    median = float(np.median(ious)) if ious else 1.0
    return Agreement(len(images), len(ious), found, median)
