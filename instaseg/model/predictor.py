""":class:`Predictor`: the one prediction path. A model loaded once; images in, :class:`~instaseg.core.Instances`
out in the image's own pixels, with box-local masks.

``instaseg predict``, ``evaluate CHECKPOINT``, training's ``--select map``, the web demo, the Label Studio
backend and the quickstart all predict through it, so the mAP in a report is measured on the code users run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..core import ClassMap, Instances
from ..images import load_image, pil_to_rgb
from ..masks import Masks
from .config import ENGINES, ModelConfig
from .device import resolve_device
from .engine import RawDetections, TorchEngine, paste_masks, prepare_image, scale_boxes
from .precision import cast_layer_weights, resolve_precision
from .tiling import TTA_MODES, parse_tile, predict_image

# Proposals kept after the RPN's NMS at test time: torchvision's 1000. Fewer are faster (the ROI heads
# score every proposal) but cost accuracy on dense images: on 20 held-out DSB nuclei images with a model
# trained 15 minutes, mask AP was 24.05 at 1000, 23.86 at 700, 23.21 at 500 and 22.73 at 300 proposals
# (0.30, 0.26, 0.22, 0.18 s/image). Lower it with --proposals for images with few objects.
DEFAULT_PROPOSALS = 1000


def to_rgb(image) -> np.ndarray:
    """RGB uint8 ``(H, W, 3)`` from a path/URL (EXIF applied), a PIL image (EXIF applied) or an array.

    Arrays may be uint8 ``(H, W, 3)`` RGB, ``(H, W, 4)`` RGBA (alpha dropped) or ``(H, W)`` grayscale.
    """
    if isinstance(image, str | Path):
        return load_image(str(image))
    if isinstance(image, Image.Image):
        return pil_to_rgb(image)
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ValueError(f"image arrays must be uint8, got {array.dtype}; scale to 0..255 first")
    if array.ndim == 2:
        return np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim == 3 and array.shape[2] in (3, 4):
        return np.ascontiguousarray(array[:, :, :3])
    raise ValueError(f"image arrays must be (H, W), (H, W, 3) or (H, W, 4), got shape {array.shape}")


def default_engine(model_path: str | Path) -> str:
    """The engine for a model file: ``"onnx"`` for ``.onnx``, ``"openvino"`` for an OpenVINO IR ``.xml``
    (``instaseg export --format openvino-int8``), else ``"torch"`` (a checkpoint)."""
    suffix = Path(str(model_path)).suffix.lower()
    return {".onnx": "onnx", ".xml": "openvino"}.get(suffix, "torch")


class Predictor:
    """Predicts instances with a trained checkpoint (``.pt``), its ONNX export (``.onnx``), its OpenVINO INT8
    export (``.xml``), or a model in memory (:meth:`from_model`).

    Args:
        model_path: an instaseg checkpoint, an ``.onnx`` file from ``instaseg export`` (``engine`` defaults
            to ``"onnx"`` for it) or an ``.xml`` from ``instaseg export --format openvino-int8`` (``engine``
            defaults to ``"openvino"``: :class:`~instaseg.model.openvino_ir_engine.OpenVinoIrEngine`).
        engine: ``"torch"``, ``"onnx"`` (ONNX Runtime) or ``"openvino"`` (a checkpoint compiled by OpenVINO
            for the CPU: :class:`~instaseg.model.openvino_engine.OpenVinoEngine`; the converted model is
            kept in :func:`~instaseg.model.openvino_engine.default_cache_dir` for later runs).
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"mps"`` (the torch engine; ONNX and OpenVINO run on the
            CPU).
        score_threshold: keep detections with score >= this; default the checkpoint's.
        mask_threshold: mask probability >= this is the object; default the checkpoint's (0.5).
        max_detections: at most this many instances per image (highest scores); default the checkpoint's.
        image_size: longest side the model sees; default the training size (a different size is allowed
            but changes accuracy).
        classes: keep only these class names (``ValueError`` listing the known ones for an unknown name).
        proposals: RPN proposals kept at test time (default :data:`DEFAULT_PROPOSALS`; torchvision: 1000).
        channels_last: NHWC activations for the torch engine (faster on CPUs with oneDNN).
        threads: ONNX Runtime's intra-op threads or OpenVINO's inference threads (default: their choice).
        tile: predict large images in tiles at native resolution, merged by mask overlap: a
            :class:`~instaseg.model.tiling.TileConfig` or its text (``"512"``, ``"512,64"``, ``"auto"``; see
            :func:`~instaseg.model.tiling.parse_tile`); ``None``: the whole image, resized.
        tta: ``"flip"``: also predict the mirror image and merge both (about twice the time).
        precision: ``"auto"`` (bf16 autocast on CPUs with native bf16, fp16 on CUDA, else fp32), ``"fp32"``,
            ``"bf16"`` or ``"fp16"`` (torch engine; see :func:`~instaseg.model.precision.resolve_precision`).
            :attr:`precision` says what runs and why. Boxes, scores and masks come out float32 either way.

    Thread counts are left to the caller (``torch.set_num_threads``), as library code must not set them.
    """

    def __init__(
        self,
        model_path: str | Path,
        device: str = "auto",
        score_threshold: float | None = None,
        mask_threshold: float | None = None,
        max_detections: int | None = None,
        image_size: int | None = None,
        classes: list[str] | None = None,
        proposals: int | None = DEFAULT_PROPOSALS,
        engine: str | None = None,
        channels_last: bool = True,
        threads: int | None = None,
        tile=None,
        tta: str | None = None,
        precision: str = "auto",
    ):
        model_path = str(model_path)
        engine = engine or default_engine(model_path)
        if engine not in ENGINES:
            raise ValueError(f"unknown engine {engine!r}; valid: {', '.join(ENGINES)}")
        if engine == "onnx":
            from .onnx_engine import OnnxEngine

            if precision not in ("auto", "fp32"):
                raise ValueError(
                    f"ONNX Runtime runs float32 only; --precision {precision} needs --engine torch"
                )
            runner = OnnxEngine(model_path, threads=threads)
            class_map, config = runner.class_map, runner.model_config
        elif engine == "openvino" and model_path.lower().endswith(".xml"):
            from .openvino_engine import default_cache_dir
            from .openvino_ir_engine import OpenVinoIrEngine, rest_precision

            runner = OpenVinoIrEngine(
                model_path,
                rest_precision(precision),
                threads=threads,
                cache_dir=default_cache_dir(),
            )
            class_map, config = runner.class_map, runner.model_config
        elif engine == "openvino":
            from .checkpoint import load_checkpoint
            from .openvino_engine import OpenVinoEngine, default_cache_dir

            model, class_map, config = load_checkpoint(model_path, device="cpu")
            runner = OpenVinoEngine(
                model, resolve_precision(precision, "cpu"), threads=threads, cache_dir=default_cache_dir()
            )
        else:
            from .checkpoint import load_checkpoint

            target = resolve_device(device)
            model, class_map, config = load_checkpoint(model_path, device=target)
            runner = TorchEngine(
                model,
                channels_last=channels_last and target.type == "cpu",
                precision=resolve_precision(precision, target),
            )
            cast_layer_weights(model, runner.precision)  # this model only predicts
        self._setup(engine, runner, class_map, config)
        self._configure(
            score_threshold,
            mask_threshold,
            max_detections,
            image_size,
            classes,
            proposals,
            tile=tile,
            tta=tta,
        )

    @classmethod
    def from_model(
        cls,
        model: torch.nn.Module,
        class_map: ClassMap,
        model_config: ModelConfig,
        channels_last: bool = False,
        precision: str = "auto",
        **settings,
    ) -> Predictor:
        """A predictor over a torchvision Mask R-CNN in memory (e.g. the model being trained).

        ``precision`` as in :class:`Predictor`, resolved for the model's device. ``settings`` are the
        test-time keywords of :class:`Predictor` (``score_threshold``...). The model's
        test-time settings (score threshold, detections, proposals) are set on it; its train/eval mode is
        restored after each prediction.
        """
        predictor = cls.__new__(cls)
        resolved = resolve_precision(precision, next(model.parameters()).device)
        engine = TorchEngine(model, channels_last=channels_last, precision=resolved)
        predictor._setup("torch", engine, class_map, model_config)
        predictor._configure(**{"proposals": DEFAULT_PROPOSALS, **settings})
        return predictor

    def _setup(self, engine_name: str, engine, class_map: ClassMap, config: ModelConfig) -> None:
        self.engine_name, self.engine = engine_name, engine
        self.class_map, self.model_config = class_map, config
        self.resize = config.resize

    def _configure(
        self,
        score_threshold: float | None = None,
        mask_threshold: float | None = None,
        max_detections: int | None = None,
        image_size: int | None = None,
        classes: list[str] | None = None,
        proposals: int | None = None,
        tile=None,
        tta: str | None = None,
    ) -> None:
        config = self.model_config
        self.score_threshold = config.score_threshold if score_threshold is None else float(score_threshold)
        self.mask_threshold = config.mask_threshold if mask_threshold is None else float(mask_threshold)
        self.max_detections = config.detections_per_image if max_detections is None else int(max_detections)
        self.image_size = config.image_size if image_size is None else int(image_size)
        if not 0 <= self.score_threshold <= 1 or not 0 < self.mask_threshold < 1:
            raise ValueError("score_threshold must be in [0, 1] and mask_threshold in (0, 1)")
        if self.max_detections < 1 or self.image_size < 32:
            raise ValueError("max_detections must be >= 1 and image_size >= 32")
        self.labels = None if classes is None else np.array([self.class_map.label(c) for c in classes])
        self.engine.configure(self.score_threshold, self.max_detections, proposals)
        self.tile = parse_tile(tile) if isinstance(tile, str) else tile
        if tta is not None and tta not in TTA_MODES:
            raise ValueError(f"unknown test-time augmentation {tta!r}; valid: {', '.join(TTA_MODES)}")
        self.tta = tta

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.class_map.names

    @property
    def precision(self):
        """The :class:`~instaseg.model.precision.Precision` the engine runs in (``.name``, ``.reason``)."""
        return getattr(self.engine, "precision", None)

    @property
    def model(self) -> torch.nn.Module | None:
        """The torch model (``None`` for an ONNX or OpenVINO IR file). In the torch engine of a checkpoint
        under bf16 or fp16, its convolution and linear weights are stored in that dtype
        (:func:`~instaseg.model.precision.cast_layer_weights`): run it under
        ``precision.autocast(model, predictor.precision)``; do not train it."""
        return getattr(self.engine, "model", None)

    def predict(self, image) -> Instances:
        """Instances of one image (path/URL, PIL image or uint8 array) at its original size.

        Boxes xyxy pixels, labels 1..K, scores decreasing, masks box-local (:class:`~instaseg.masks.Masks`
        crops: memory ~ the box areas; ``instances.dense_masks()`` gives ``(N, H, W)``), EXIF orientation
        applied as the image is displayed; ``image_size`` is the image's ``(H, W)``.
        """
        return self.predict_arrays([to_rgb(image)])[0]

    def predict_arrays(self, images: list[np.ndarray]) -> list[Instances]:
        """Predictions for RGB uint8 ``(H, W, 3)`` arrays, in order.

        Images that are the same size once resized run as one batch; images of different sizes run
        separately, so that no image's result depends on which others it was batched with (padding to a
        common size would change GroupNorm statistics and border pixels). With ``tile`` or ``tta`` set, each
        image runs on its own (its tiles batch together; :func:`~instaseg.model.tiling.predict_image`).
        """
        if self.tile is not None or self.tta is not None:
            return [predict_image(self, image, self.tile, self.tta) for image in images]
        return self.predict_whole(images)

    def predict_whole(self, images: list[np.ndarray]) -> list[Instances]:
        """:meth:`predict_arrays` without tiles or TTA: each image resized whole to the model's size."""
        prepared = [prepare_image(im, self.image_size, self.resize) for im in images]
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, p in enumerate(prepared):
            groups.setdefault(p.shape, []).append(i)
        results: list[Instances | None] = [None] * len(images)
        for indices in groups.values():
            raw = self.engine.detect([prepared[i] for i in indices])
            for i, detections in zip(indices, raw, strict=True):
                results[i] = self._finish(detections, tuple(prepared[i].shape[1:]), images[i].shape[:2])
        return results

    def _finish(self, raw: RawDetections, resized: tuple[int, int], original: tuple[int, int]) -> Instances:
        keep = raw.scores >= self.score_threshold
        if self.labels is not None:
            keep &= torch.from_numpy(np.isin(raw.labels.numpy(), self.labels))
        index = torch.nonzero(keep).flatten()[: self.max_detections]
        boxes = scale_boxes(raw.boxes[index], resized, original)
        height, width = original
        crops, origins = paste_masks(raw.mask_probs[index], boxes, height, width, self.mask_threshold)
        return Instances(
            boxes.numpy(),
            raw.labels[index].numpy(),
            Masks.from_crops(crops, origins, height, width),
            raw.scores[index].numpy(),
        )
