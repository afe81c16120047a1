"""The OpenVINO IR engine of :class:`~instaseg.model.predictor.Predictor` (the interface of
:class:`~instaseg.model.engine.TorchEngine`): runs an ``.xml`` written by
:func:`~instaseg.model.openvino_export.export_openvino_int8`, reading the class names, model config and
proposals from its ``rt_info``. Like the ONNX engine, the graph's score threshold, detections per image and
proposals are fixed: :meth:`OpenVinoIrEngine.configure` accepts a higher threshold and fewer detections
(the Predictor filters them) and refuses the rest. Compiled for the CPU with the ops NNCF left unquantized
in float32 by default, bf16 on request where OpenVINO can run it (:func:`rest_precision`), the compiled blob
kept in ``cache_dir`` for later runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..core import ClassMap
from .config import ModelConfig
from .engine import RawDetections, check_fixed_settings
from .openvino_engine import OpenVinoError, _import_openvino, infer_detections, openvino_precision
from .precision import Precision, resolve_precision


def rest_precision(requested: str) -> Precision:
    """What the ops an INT8 export leaves unquantized (RoIAlign, NMS, the normalisations, the box decoding)
    are asked to run in, for ``--precision requested``: ``auto`` is float32 on every CPU, ``bf16``/``fp32``
    as asked (:func:`~.precision.resolve_precision`; OpenVINO then decides, see
    :func:`~.openvino_engine.openvino_precision`).

    Why float32 for ``auto``: the quantized convolutions and matmuls run INT8 either way, so bf16 only
    rounds the rest. Measured (issue 25; AMD EPYC Zen 4 with avx512_bf16 and VNNI, 2 cores, light model
    trained 15 min on the DSB sample, 20 held-out images, ``bench/predict_speed.py``): at score >= 0.5
    float32 rest 0.103 s/image, median mask IoU 0.986 against the seed's instances, bf16 rest 0.102 s,
    IoU 0.950; at score >= 0.05 float32 rest 0.129 s, mask AP 48.49 (torch fp32 48.84), bf16 rest 0.145 s,
    48.15. On an Intel Xeon with AMX the bf16 rest had moved instances as far (IoU 0.939).
    """
    if requested == "auto":
        return Precision(
            "fp32", "cpu", "auto: the quantized ops are the fast part, bf16 would only round the rest"
        )
    return resolve_precision(requested, "cpu")


class OpenVinoIrError(OpenVinoError):
    """An ``.xml`` that is missing, unreadable, not an instaseg export, or asked for settings it lacks."""


def _metadata(model, path: Path, key: str):
    if not model.has_rt_info(["instaseg", key]):
        raise OpenVinoIrError(f"{path} was not exported by `instaseg export` (no instaseg {key} in it)")
    return json.loads(model.get_rt_info(["instaseg", key]).astype(str))


class OpenVinoIrEngine:
    """Runs an exported OpenVINO IR on the CPU, one image per inference.

    Args:
        path: the ``.xml`` (its ``.bin`` beside it).
        precision: what the unquantized ops are asked to run in (:func:`rest_precision`): bf16 runs them in
            bf16 when OpenVINO can, anything else float32 (the quantized ops run INT8 either way).
        threads: OpenVINO's inference threads (default: all cores).
        cache_dir: where OpenVINO keeps the compiled blob (``None``: compile every time).
    """

    def __init__(
        self,
        path: str | Path,
        precision: Precision,
        threads: int | None = None,
        cache_dir: str | Path | None = None,
    ):
        ov = _import_openvino()
        core = ov.Core()
        self.path = Path(path)
        if not self.path.is_file() or not self.path.with_suffix(".bin").is_file():
            raise OpenVinoIrError(f"OpenVINO model {self.path} (with its .bin beside it) not found")
        try:
            model = core.read_model(str(self.path))
        except Exception as e:  # OpenVINO raises its own exception types
            raise OpenVinoIrError(
                f"{path} is not a readable OpenVINO IR ({str(e).splitlines()[0]})"
            ) from None
        self.class_map = ClassMap(tuple(_metadata(model, self.path, "class_names")))
        self.model_config = ModelConfig.from_dict(_metadata(model, self.path, "model_config"))
        self.proposals = int(_metadata(model, self.path, "proposals"))
        resolved = openvino_precision(precision, core)
        hint = "bf16" if resolved.name == "bf16" else "f32"
        self.precision = Precision(resolved.name, "cpu", f"INT8 with the other ops in {resolved.reason}")
        properties = {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            properties["INFERENCE_NUM_THREADS"] = int(threads)
        if cache_dir is not None:
            properties["CACHE_DIR"] = str(Path(cache_dir) / "compiled")
        try:
            self._compiled = core.compile_model(model, "CPU", properties)
        except Exception as e:
            raise OpenVinoIrError(f"OpenVINO could not compile {path} ({str(e).splitlines()[0]})") from None
        self._request = self._compiled.create_infer_request()

    def configure(self, score_threshold: float, max_detections: int, proposals: int | None) -> None:
        """Check that the graph's fixed settings allow these (the Predictor filters the rest)."""
        check_fixed_settings(
            self.path,
            self.model_config,
            self.proposals,
            score_threshold,
            max_detections,
            proposals,
            OpenVinoIrError,
        )

    def detect(self, images: list[np.ndarray]) -> list[RawDetections]:
        """Detections for float32 ``(3, h, w)`` normalised images, one inference per image."""
        return [
            infer_detections(self._compiled, self._request, np.ascontiguousarray(image[None]))
            for image in images
        ]
