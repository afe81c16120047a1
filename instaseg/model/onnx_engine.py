"""The ONNX Runtime engine of :class:`~instaseg.model.predictor.Predictor` (the interface of
:class:`~instaseg.model.engine.TorchEngine`): runs a graph written by :func:`instaseg.model.onnx_export.export_onnx`.

The graph is :class:`~instaseg.model.engine.DetectorCore`; its metadata holds the class names, the model
config, and the test-time settings baked into it (score threshold, detections, proposals).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..core import ClassMap
from .config import ModelConfig
from .engine import RawDetections, check_fixed_settings
from .precision import Precision


class OnnxModelError(ValueError):
    """An ``.onnx`` file that is not an instaseg export, or settings it cannot honour."""


class OnnxEngine:
    """Runs an exported model with ONNX Runtime on the CPU (the engine interface of :class:`TorchEngine`)."""

    def __init__(self, path: str | Path, threads: int | None = None):
        import onnxruntime as ort

        if not Path(path).is_file():
            raise OnnxModelError(f"ONNX model {path} not found")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise OnnxModelError(f"{path} is not a loadable ONNX model ({str(e).splitlines()[0]})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if "instaseg_class_names" not in meta:
            raise OnnxModelError(f"{path} was not exported by `instaseg export` (no instaseg metadata)")
        self.class_map = ClassMap(tuple(json.loads(meta["instaseg_class_names"])))
        self.model_config = ModelConfig.from_dict(json.loads(meta["instaseg_model_config"]))
        self.proposals = int(meta["instaseg_proposals"])
        self.path = str(path)
        self.precision = Precision("fp32", "cpu", "fp32: ONNX Runtime runs the exported graph in float32")

    def configure(self, score_threshold: float, max_detections: int, proposals: int | None) -> None:
        """Check that the graph's fixed settings allow these (the Predictor filters the rest)."""
        check_fixed_settings(
            self.path,
            self.model_config,
            self.proposals,
            score_threshold,
            max_detections,
            proposals,
            OnnxModelError,
        )

    def detect(self, images: list[np.ndarray]) -> list[RawDetections]:
        """Detections for float32 ``(3, h, w)`` normalised images, one session run per image."""
        results = []
        for image in images:
            boxes, labels, scores, masks = self.session.run(None, {"image": image[None]})
            results.append(
                RawDetections(
                    torch.from_numpy(boxes),
                    torch.from_numpy(labels).long(),
                    torch.from_numpy(scores),
                    torch.from_numpy(masks[:, 0]),
                )
            )
        return results
