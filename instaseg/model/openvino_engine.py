"""The OpenVINO engine of :class:`~instaseg.model.predictor.Predictor` (the interface of
:class:`~instaseg.model.engine.TorchEngine`): the torch model's :class:`~instaseg.model.engine.DetectorCore`
(backbone, RPN, ROI heads) converted to OpenVINO and compiled for the CPU.

The test-time settings (score threshold, detections per image, proposals) are fixed in the converted
graph, so the model is converted when :meth:`OpenVinoEngine.detect` first runs after
:meth:`~OpenVinoEngine.configure` (half a minute to a minute on a 2-core CPU, once per setting; later images
of other sizes reuse it: the graph's height and width are dynamic). With a ``cache_dir`` (``predict`` uses
:func:`default_cache_dir`) the converted model is saved there as OpenVINO IR under a digest of the weights,
the architecture, the settings, the precision (and, under bf16, the :data:`FLOAT32_SCOPES`) and the
OpenVINO and torch versions, and OpenVINO keeps its compiled blob next to it (``CACHE_DIR``): a later run
with the same checkpoint and settings reads both instead of converting again. OpenVINO runs bf16 when the
precision is bf16 and OpenVINO reports ``BF16`` among the CPU's capabilities (``INFERENCE_PRECISION_HINT``),
float32 otherwise (it would fall back to float32 silently; :attr:`OpenVinoEngine.precision` says what
runs). Under bf16 the mask head's RoIAlign stays float32 (:data:`FLOAT32_SCOPES`, :func:`keep_float32`).
Outputs are float32 either way. Needs the ``openvino`` package (``pip install 'instaseg[openvino]'``).

Parity (measured with ``openvino`` 2026.4 on a light model trained on DSB nuclei, 4 held-out images and 4
other sizes and aspect ratios, float32 on an AVX2 CPU): the same detections as the torch engine, median
mask IoU 1.0, scores within 2e-6.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .engine import DetectorCore, RawDetections, configure_test_time
from .precision import Precision

# The parts of the converted graph (op-name prefixes, from the torch module paths) that run in float32 when
# OpenVINO runs bf16. Measured (issue 25; AMD EPYC Zen 4 with avx512_bf16, light ResNet-18 model trained
# 15 min on the DSB sample, 20 held-out images, score >= 0.05, `bench/predict_speed.py`): all bf16 gave mask
# AP 45.53 against 46.15 for torch fp32 (median IoU 0.958); the mask RoIAlign in float32, 46.06 (IoU 0.977)
# for 10 % more time (0.177 -> 0.194 s/image); the RPN in float32 changed nothing; the box RoIAlign as well
# 46.19 but 0.288 s/image (it pools 1000 proposals). torch's own bf16 path keeps RoIAlign float32 too.
FLOAT32_SCOPES = ("__module.roi_heads.mask_roi_pool",)


class OpenVinoError(ValueError):
    """OpenVINO is not installed or cannot convert or compile the model."""


def _import_openvino():
    try:
        import openvino
    except ImportError:
        raise OpenVinoError(
            "the openvino engine needs the openvino package: pip install 'instaseg[openvino]' (or use "
            "--engine torch)"
        ) from None
    return openvino


def openvino_precision(requested: Precision, core) -> Precision:
    """What OpenVINO runs for ``requested`` (resolved for the CPU): bf16 when it asks for bf16 and ``core``
    (an ``openvino.Core``) lists ``BF16`` in the CPU's ``OPTIMIZATION_CAPABILITIES``, else float32."""
    if requested.name != "bf16":
        why = "" if requested.name == "fp32" else f"; OpenVINO runs {requested.name} as float32"
        return Precision("fp32", "cpu", f"OpenVINO f32 ({requested.reason}{why})")
    capabilities = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    if "BF16" not in capabilities:
        return Precision(
            "fp32",
            "cpu",
            f"OpenVINO f32: bf16 was asked for ({requested.reason}) but OpenVINO's CPU capabilities are "
            f"{', '.join(capabilities)}, without BF16",
        )
    return Precision("bf16", "cpu", f"OpenVINO bf16 ({requested.reason})")


def keep_float32(model, scopes: tuple[str, ...]):
    """``model`` (an ``openvino.Model``) with the ops whose names start with one of ``scopes`` marked to run
    in float32 under a bf16 ``INFERENCE_PRECISION_HINT`` (OpenVINO's ``precise`` runtime attribute, which
    its CPU plugin honours for bf16 as for fp16); returns a new model and the number of ops marked.

    OpenVINO's Python API cannot create that attribute on a node, so the model is written as IR, the
    attribute added to the marked layers' ``<rt_info>``, and the IR read back (weights kept in memory)."""
    import xml.etree.ElementTree as ET

    ov = _import_openvino()
    with tempfile.TemporaryDirectory(prefix="instaseg-ov-") as folder:
        xml = Path(folder) / "model.xml"
        ov.save_model(model, xml, compress_to_fp16=False)
        tree, marked = ET.parse(xml), 0
        for layer in tree.getroot().iter("layer"):
            if not layer.get("name", "").startswith(scopes):
                continue
            info = layer.find("rt_info")
            if info is None:
                info = ET.SubElement(layer, "rt_info")
            ET.SubElement(info, "attribute", {"name": "precise", "version": "0"})
            marked += 1
        weights = ov.Tensor(np.fromfile(xml.with_suffix(".bin"), dtype=np.uint8))
        return ov.Core().read_model(ET.tostring(tree.getroot()), weights), marked


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/instaseg/openvino`` (``~/.cache/instaseg/openvino`` without it): where ``predict``
    keeps converted and compiled OpenVINO models."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "instaseg" / "openvino"


def model_digest(model: nn.Module, properties: dict, openvino_version: str) -> str:
    """A hex digest naming a converted model: its weights and buffers, its structure (``repr``), its
    test-time settings, the compile properties and the OpenVINO and torch versions."""
    digest = hashlib.sha256()
    heads, rpn = model.roi_heads, model.rpn
    settings = (
        heads.score_thresh,
        heads.nms_thresh,
        heads.detections_per_img,
        rpn._pre_nms_top_n["testing"],
        rpn._post_nms_top_n["testing"],
        rpn.nms_thresh,
        rpn.score_thresh,
    )
    for part in (
        repr(model),
        repr(settings),
        repr(sorted(properties.items())),
        repr(FLOAT32_SCOPES) if properties.get("INFERENCE_PRECISION_HINT") == "bf16" else "",
        openvino_version,
        torch.__version__,
    ):
        digest.update(part.encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:32]


class OpenVinoEngine:
    """Runs a torchvision Mask R-CNN with OpenVINO on the CPU, one image per inference.

    Args:
        model: a ``MaskRCNN`` on the CPU (its test-time settings are changed by :meth:`configure`, as
            :class:`~instaseg.model.engine.TorchEngine` does).
        precision: bf16 compiles with ``INFERENCE_PRECISION_HINT=bf16`` when OpenVINO can run bf16 on this CPU;
            anything else (and bf16 on a CPU OpenVINO runs in float32 only) float32.
        threads: OpenVINO's inference threads (default: OpenVINO's choice, all cores).
        cache_dir: a folder for converted (IR) and compiled models, reused across runs; ``None``: convert
            and compile in memory every time.
    """

    def __init__(
        self,
        model: nn.Module,
        precision: Precision,
        threads: int | None = None,
        cache_dir: str | Path | None = None,
    ):
        self.openvino = _import_openvino()
        self.model = model.eval()
        self.precision = openvino_precision(precision, self.openvino.Core())
        hint = "bf16" if self.precision.name == "bf16" else "f32"
        self.properties = {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            self.properties["INFERENCE_NUM_THREADS"] = int(threads)
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.converted_from_cache = False  # whether the last compile read a saved model (for tests, logs)
        self._request = None

    def configure(self, score_threshold: float, max_detections: int, proposals: int | None) -> None:
        """Set the test-time settings on the torch model; the graph is converted again at the next detect."""
        configure_test_time(self.model, score_threshold, max_detections, proposals)
        self._request = None

    def _compile(self, example: np.ndarray):
        """The compiled model: from ``cache_dir`` when this model and settings were saved there, else
        converted (:meth:`_convert`), saved there, and compiled."""
        ov = self.openvino
        if self.cache_dir is None:
            return self._compile_model(self._convert(example), self.properties)
        folder = self.cache_dir / model_digest(self.model, self.properties, ov.__version__)
        xml = folder / "model.xml"
        self.converted_from_cache = xml.is_file()
        if not self.converted_from_cache:
            converted = self._convert(example)
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(dir=self.cache_dir, prefix=".saving-"))
            try:  # weights kept float32 (save_model would compress them to fp16); renamed when complete
                ov.save_model(converted, staging / "model.xml", compress_to_fp16=False)
                staging.rename(folder)
            except OSError:  # another process saved the same model first, or the folder is read-only
                shutil.rmtree(staging, ignore_errors=True)
                if not xml.is_file():
                    return self._compile_model(converted, self.properties)
        properties = {**self.properties, "CACHE_DIR": str(folder / "compiled")}
        return self._compile_model(str(xml), properties, f"; delete {folder} to convert it again")

    def _compile_model(self, model, properties: dict, advice: str = ""):
        """``model`` (an OpenVINO model or the path of its IR) compiled for the CPU, and a request."""
        try:
            compiled = self.openvino.Core().compile_model(model, "CPU", properties)
        except Exception as e:  # OpenVINO raises its own exception types
            raise OpenVinoError(
                f"OpenVINO could not compile the model ({str(e).splitlines()[0]}){advice}"
            ) from None
        return compiled, compiled.create_infer_request()

    def _convert(self, example: np.ndarray):
        """:func:`convert_core` on ``example``, with :data:`FLOAT32_SCOPES` kept float32 under bf16."""
        converted = convert_core(self.model, example)
        if self.precision.name == "bf16":
            converted, _ = keep_float32(converted, FLOAT32_SCOPES)
        return converted

    def detect(self, images: list[np.ndarray]) -> list[RawDetections]:
        """Detections for float32 ``(3, h, w)`` normalised images, one inference per image."""
        results = []
        for image in images:
            batch = np.ascontiguousarray(image[None])  # (1, 3, h, w)
            if self._request is None:
                self._compiled, self._request = self._compile(batch)
            results.append(infer_detections(self._compiled, self._request, batch))
        return results


def convert_core(model: nn.Module, example: np.ndarray):
    """The :class:`DetectorCore` of ``model`` (a ``MaskRCNN`` on the CPU, its test-time settings fixed in
    the graph) traced on ``example`` (float32 ``(1, 3, h, w)``, any height and width) and converted to a
    float32 ``openvino.Model`` whose input height and width are dynamic."""
    ov = _import_openvino()
    core = DetectorCore(model.eval()).eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's warnings about torchvision's data-dependent shapes
        try:
            # Traced here without torch's trace check (which runs the model again and compares): the
            # conversion then takes half the time of ov.convert_model tracing the module itself.
            example_tensor = torch.from_numpy(example)
            traced = torch.jit.trace(core, example_tensor, check_trace=False)
            return ov.convert_model(
                traced, example_input=example_tensor, input=[ov.PartialShape([1, 3, -1, -1])]
            )
        except Exception as e:  # OpenVINO raises its own exception types
            raise OpenVinoError(f"OpenVINO could not convert the model ({str(e).splitlines()[0]})") from None


def infer_detections(compiled, request, batch: np.ndarray) -> RawDetections:
    """One inference of ``request`` (of the compiled :class:`DetectorCore` graph ``compiled``) on a float32
    ``(1, 3, h, w)`` ``batch``: float32 boxes ``(N, 4)`` (x1, y1, x2, y2 in the input's pixels), int64
    labels, float32 scores and mask probabilities ``(N, M, M)``."""
    outputs = request.infer({0: batch})
    boxes, labels, scores, masks = (outputs[o] for o in compiled.outputs)
    return RawDetections(
        torch.from_numpy(np.array(boxes, dtype=np.float32)),
        torch.from_numpy(np.array(labels)).long(),
        torch.from_numpy(np.array(scores, dtype=np.float32)),
        torch.from_numpy(np.array(masks[:, 0], dtype=np.float32)),
    )
