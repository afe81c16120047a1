"""The model: what it is, how it is stored, and how it predicts. Used by training, evaluation, prediction
and the apps alike.

- :mod:`.config`: :class:`~.config.ModelConfig` and the choice lists (architectures, devices), torch-free;
- :mod:`.device`: :func:`~.device.resolve_device`, the one place that picks the torch device;
- :mod:`.architectures`: the Mask R-CNN builders and the training face (:func:`~.architectures.compute_losses`);
- :mod:`.weights`: initial weights (torchvision's COCO weights, a state dict, a checkpoint);
- :mod:`.checkpoint`: checkpoint files (``weights_only`` loading, atomic writes);
- :mod:`.engine`: the network's forward pass on resized images and box-local mask pasting;
- :mod:`.predictor`: :class:`~.predictor.Predictor`, the one prediction path (images -> ``Instances``);
- :mod:`.onnx_engine`, :mod:`.onnx_export`: the ONNX Runtime engine, export and parity check.

Importing this package loads nothing heavy; import the modules you need (all but ``config`` load torch).
"""

from .config import ARCH_NAMES, DEVICES, ModelConfig

__all__ = ["ARCH_NAMES", "DEVICES", "ModelConfig"]
