"""ONNX export of a checkpoint (:func:`export_onnx`) and its parity check against torch (:func:`parity_check`).

The exported graph is :class:`~instaseg.model.engine.DetectorCore` (backbone, RPN, ROI heads): input
``image`` float32 ``(1, 3, h, w)`` resized and normalised (any ``h``, ``w``), outputs ``boxes (N, 4)``,
``labels (N,)``, ``scores (N,)`` and ``mask_probs (N, 1, 28, 28)`` in the input's pixels. Resizing,
normalisation and mask pasting stay in Python (:mod:`instaseg.model.engine`), shared with the torch engine, so both
engines give the same pixels. The file's metadata holds the class names, the model config, the input
size and the test-time settings baked into the graph (score threshold, detections, proposals).
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .engine import DetectorCore, configure_test_time, prepare_image
from .predictor import DEFAULT_PROPOSALS, Predictor

OPSET = 17


def export_onnx(
    checkpoint: str | Path,
    out: str | Path,
    proposals: int | None = None,
    opset: int = OPSET,
    score_threshold: float | None = None,
) -> Path:
    """Export a checkpoint's model to ``out`` (ONNX, one file) with its metadata; returns ``out``.

    ``proposals`` (default the Predictor's default), ``score_threshold`` (default the checkpoint's) and the
    checkpoint's detections per image are fixed in the graph; a Predictor on the file can raise the
    threshold and lower the count only.
    """
    import onnx

    from .checkpoint import load_checkpoint

    proposals = DEFAULT_PROPOSALS if proposals is None else int(proposals)
    model, class_map, config = load_checkpoint(checkpoint, device="cpu")
    if score_threshold is not None:
        config = dataclasses.replace(config, score_threshold=float(score_threshold))
    configure_test_time(model, config.score_threshold, config.detections_per_image, proposals)
    core = DetectorCore(model).eval()
    # Trace on a real-looking size (not square) so no size is mistaken for a constant.
    sample = np.random.default_rng(0).integers(
        0, 255, (config.image_size * 3 // 4, config.image_size, 3), np.uint8
    )
    image = torch.from_numpy(prepare_image(sample, config.image_size, config.resize))[None]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    per_detection = {0: "detections"}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the tracer's warnings about torchvision's ONNX branches
        torch.onnx.export(
            core,
            (image,),
            str(out),
            dynamo=False,
            opset_version=opset,
            input_names=["image"],
            output_names=["boxes", "labels", "scores", "mask_probs"],
            dynamic_axes={
                "image": {2: "height", 3: "width"},
                "boxes": per_detection,
                "labels": per_detection,
                "scores": per_detection,
                "mask_probs": per_detection,
            },
        )
    graph = onnx.load(str(out))
    metadata = {
        "instaseg_class_names": json.dumps(list(class_map.names)),
        "instaseg_model_config": json.dumps(config.to_dict()),
        "instaseg_image_size": str(config.image_size),
        "instaseg_resize": config.resize,
        "instaseg_score_threshold": str(config.score_threshold),
        "instaseg_mask_threshold": str(config.mask_threshold),
        "instaseg_detections_per_image": str(config.detections_per_image),
        "instaseg_proposals": str(proposals),
    }
    for key, value in metadata.items():
        entry = graph.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(graph, str(out))
    return out


@dataclass
class ParityReport:
    """Torch model vs ONNX Runtime on the same images, instances matched by label and box IoU.

    Attributes:
        images: images compared. detections: torch detections in total.
        count_mismatches: images where the two engines found a different number of instances.
        min_box_iou, min_mask_iou: worst IoU of matched boxes / masks (1.0 when there are none).
        max_score_difference: largest absolute score difference of matched instances.
    """

    images: int
    detections: int
    count_mismatches: int
    min_box_iou: float
    min_mask_iou: float
    max_score_difference: float

    @property
    def passed(self) -> bool:
        """Same counts, boxes IoU >= 0.99, masks IoU >= 0.98, scores within 1e-3."""
        return (
            self.count_mismatches == 0
            and self.min_box_iou >= 0.99
            and self.min_mask_iou >= 0.98
            and self.max_score_difference <= 1e-3
        )


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return float(w * h / union) if union > 0 else 1.0


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean masks of one image (1.0 when both are empty)."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def match_instances(a, b) -> list[tuple[int, int]]:
    """Pairs ``(i, j)``: each instance of ``a`` in score order with the unmatched instance of ``b`` of the same
    label and highest box IoU (the order of near-equal scores may differ between engines)."""
    pairs, free = [], set(range(len(b)))
    for i in range(len(a)):
        candidates = [j for j in free if b.labels[j] == a.labels[i]]
        if candidates:
            j = max(candidates, key=lambda j: box_iou(a.boxes[i], b.boxes[j]))
            pairs.append((i, j))
            free.discard(j)
    return pairs


def parity_check(checkpoint: str | Path, onnx_path: str | Path, images: list[np.ndarray]) -> ParityReport:
    """Predict ``images`` (RGB uint8 ``(H, W, 3)``) with both engines at the export's settings and compare."""
    onnx_predictor = Predictor(onnx_path, engine="onnx")
    torch_predictor = Predictor(
        checkpoint,
        device="cpu",
        engine="torch",
        proposals=onnx_predictor.engine.proposals,
        score_threshold=onnx_predictor.score_threshold,
        channels_last=False,
        precision="fp32",  # the export runs float32: compare with float32, not with auto's bf16
    )
    count_mismatches = detections = 0
    box_ious, mask_ious, score_differences = [1.0], [1.0], [0.0]
    for image in images:
        a = torch_predictor.predict_arrays([image])[0]
        b = onnx_predictor.predict_arrays([image])[0]
        detections += len(a)
        if len(a) != len(b):
            count_mismatches += 1
        for i, j in match_instances(a, b):
            box_ious.append(box_iou(a.boxes[i], b.boxes[j]))
            mask_ious.append(mask_iou(a.mask(i), b.mask(j)))
            score_differences.append(abs(float(a.scores[i]) - float(b.scores[j])))
    return ParityReport(
        len(images), detections, count_mismatches, min(box_ious), min(mask_ious), max(score_differences)
    )
