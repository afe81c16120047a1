"""A light Mask R-CNN checkpoint with seeded random weights, for tests that need a model but no training."""

from __future__ import annotations

from pathlib import Path

import torch

from instaseg.model.architectures import build_model
from instaseg.model.checkpoint import checkpoint_header, save_atomic
from instaseg.model.config import ModelConfig
from instaseg.train.config import TrainConfig


def save_light_checkpoint(
    path: str | Path,
    class_names: list[str],
    image_size: int = 128,
    seed: int = 0,
    **model_options,
) -> Path:
    """Write an untrained ``maskrcnn_resnet18_fpn`` checkpoint; ``model_options`` go to :class:`ModelConfig`
    (e.g. ``score_threshold=0.0`` so that random weights give detections everywhere)."""
    torch.manual_seed(seed)
    config = ModelConfig(
        arch="maskrcnn_resnet18_fpn",
        num_classes=len(class_names),
        image_size=image_size,
        pretrained_backbone=False,
        **model_options,
    )
    payload = checkpoint_header(class_names, config, TrainConfig().to_dict())
    payload.update(model=build_model(config).state_dict(), epoch=0, metrics={})
    save_atomic(payload, path)
    return Path(path)
