"""What the Gradio app and the Label Studio backend share: the model loaded once, and checked image input.

:class:`ModelService` wraps a :class:`~instaseg.model.predictor.Predictor` (a checkpoint or an ONNX file) behind a
lock (one prediction at a time: the engine's buffers are not shared safely between threads, and a CPU is
saturated by one image anyway). :func:`decode_upload` turns untrusted bytes into an RGB image or raises
:class:`InputError` with a message for the person who sent them.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from ..images import ImageError, decode_image, read_header

DEFAULT_MAX_PIXELS = 50_000_000


class InputError(ValueError):
    """An input image that cannot be used: not an image, corrupt, or over the size limit."""


def decode_upload(data: bytes, name: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """RGB uint8 ``(H, W, 3)`` of an uploaded file (EXIF applied).

    Raises:
        InputError: empty, not an image, corrupt or truncated, or more than ``max_pixels`` pixels (the
            header is checked before the pixels are decoded, so a huge image costs no memory).
    """
    try:
        header = read_header(data, name)
    except ImageError as e:
        raise InputError(str(e)) from None
    width, height = header.width, header.height
    if width * height > max_pixels:
        raise InputError(
            f"{name}: {width}x{height} = {width * height / 1e6:.1f} megapixels is over this server's limit of "
            f"{max_pixels / 1e6:g} megapixels; downscale the image (or start the server with a higher "
            "--max-megapixels)"
        )
    try:
        return decode_image(data, name)
    except ImageError as e:
        raise InputError(str(e)) from None


class ModelService:
    """A model loaded once; :meth:`predict` is thread-safe.

    Args:
        model_path: an instaseg checkpoint (``.pt``) or an ONNX export (``.onnx``).
        device: ``"cpu"``, ``"cuda"``, ``"auto"``... (torch engine only).
        score_threshold: the lowest score the model returns; callers filter higher. Default: the
            checkpoint's.
        tile: tiled prediction of large images (a :class:`~instaseg.model.tiling.TileConfig` or its text,
            e.g. ``"512"`` or ``"auto"``); ``None``: whole images.
        precision: ``"auto"``, ``"fp32"``, ``"bf16"`` or ``"fp16"`` (:class:`~instaseg.model.predictor.Predictor`).
        pre_annotation_threshold: the lowest score of a region shown to a person as a whole-image
            pre-annotation (:meth:`pre_annotations`); default the model's ``score_threshold``. The labelling
            loop sets the one its round chose (:attr:`pre_annotation_threshold`, a plain attribute).
    """

    def __init__(
        self,
        model_path: str | Path,
        device: str = "cpu",
        score_threshold: float | None = None,
        tile=None,
        precision: str = "auto",
        pre_annotation_threshold: float | None = None,
    ):
        from ..model.predictor import Predictor

        self.path = Path(model_path)
        self.predictor = Predictor(
            model_path, device=device, score_threshold=score_threshold, tile=tile, precision=precision
        )
        self.class_map = self.predictor.class_map
        self.min_score = self.predictor.score_threshold
        self.pre_annotation_threshold = (
            self.min_score if pre_annotation_threshold is None else float(pre_annotation_threshold)
        )
        stat = self.path.stat()
        # Changes whenever the file does, so Label Studio can tell predictions of different weights apart.
        self.version = f"instaseg-{self.path.stem}-{int(stat.st_mtime)}"
        self._lock = threading.Lock()

    def predict(self, image: np.ndarray, tile=..., tta=...):
        """:class:`~instaseg.core.Instances` (box-local masks) of an RGB uint8 ``(H, W, 3)`` image, scores
        decreasing. ``tile`` (a :class:`~instaseg.model.tiling.TileConfig` or ``None``) and ``tta`` (``"flip"``
        or ``None``) replace the service's own settings for this call when given."""
        from ..model.tiling import predict_image

        with self._lock:
            if tile is ... and tta is ...:
                return self.predictor.predict_arrays([image])[0]
            tile = self.predictor.tile if tile is ... else tile
            tta = self.predictor.tta if tta is ... else tta
            return predict_image(self.predictor, image, tile, tta)

    def pre_annotations(self, instances):
        """The instances shown to a person as pre-annotations: those scoring >= :attr:`pre_annotation_threshold`."""
        if instances.scores is None or not len(instances):
            return instances
        return instances[instances.scores >= self.pre_annotation_threshold]
