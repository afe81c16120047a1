"""Prediction: a :class:`Predictor` (checkpoint or ONNX file -> instances), inputs, outputs and ONNX export.

- :mod:`.predictor`: :class:`Predictor`, images (path, URL, PIL, array) -> instances in original pixels;
- :mod:`.engine`: the network's forward pass and box-local mask pasting;
- :mod:`.crops`: :class:`CroppedInstances`, predictions whose masks are kept per box;
- :mod:`.inputs`: INPUT arguments (files, folders, globs, bucket URLs) -> image locations;
- :mod:`.outputs`: overlay/binary/rgb/ids PNGs, COCO results and Label Studio pre-annotations;
- :mod:`.onnx`: export to ONNX, the ONNX Runtime engine, and the parity check.
"""

from .crops import CroppedInstances
from .predictor import Predictor

__all__ = ["CroppedInstances", "Predictor"]
