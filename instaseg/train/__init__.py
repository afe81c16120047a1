"""Training Mask R-CNN on imported records (transfer learning from COCO, or from scratch).

Modules, by stage: :mod:`.config` (TrainConfig, ModelConfig), :mod:`.augment` (albumentations pipelines),
:mod:`.data` (records -> torch samples), :mod:`.model` (architectures, losses/predictions),
:mod:`.weights` (COCO / file initialisation), :mod:`.engine` (one epoch), :mod:`.checkpoint`,
:mod:`.logs`, :mod:`.fit` (a whole run).

Public API for the later stages (evaluation, prediction, the demo)::

    from instaseg.train import load_checkpoint, predict_batch
    model, class_map, model_config = load_checkpoint("run/best.pt", device="cpu")
    instances = predict_batch(model, [rgb_uint8_image], mask_threshold=model_config.mask_threshold)
    # -> list of instaseg.core.Instances at each image's size: boxes xyxy float32, labels 1..K,
    #    masks bool (N, H, W), scores float32
    losses = compute_dataset_losses(model, records, model_config)  # {"loss": ..., "loss_mask": ...}

Importing this package loads torch and torchvision.
"""

from .checkpoint import CheckpointError, CheckpointMismatchError, CorruptCheckpointError, load_checkpoint
from .config import ModelConfig, TrainConfig
from .fit import FitResult, compute_dataset_losses, fit
from .model import ARCHITECTURES, build_model, compute_losses, predict, predict_batch
from .weights import WeightsError

__all__ = [
    "ARCHITECTURES",
    "CheckpointError",
    "CheckpointMismatchError",
    "CorruptCheckpointError",
    "FitResult",
    "ModelConfig",
    "TrainConfig",
    "WeightsError",
    "build_model",
    "compute_dataset_losses",
    "compute_losses",
    "fit",
    "load_checkpoint",
    "predict",
    "predict_batch",
]
