"""Checkpoints: self-contained, loadable with ``torch.load(weights_only=True)``, written atomically.

A checkpoint is a dict of tensors and plain values only (so loading never unpickles code):

- ``format``: ``"instaseg-checkpoint"``, ``format_version``: 1;
- ``model``: the state dict; ``class_names``: list of K names (label i+1 is ``class_names[i]``);
- ``model_config``: :class:`ModelConfig` as a dict; ``train_config``: the run's
  :class:`~instaseg.train.config.TrainConfig` as a dict;
- ``epoch`` (1-based, last finished), ``metrics`` (that epoch's losses), ``versions`` (libraries);
- ``last.pt`` also holds what ``--resume`` needs: ``optimizer``, ``scheduler``, ``scaler`` state dicts,
  ``rng`` (torch CPU/CUDA generator states as uint8 tensors), ``history`` (list of per-epoch metric
  dicts), ``best_score``, ``best_epoch``, ``bad_epochs``.
"""

from __future__ import annotations

from . import vision  # noqa: F401  (first: torchvision without TorchDynamo)

# isort: split
import os
import pickle
import platform
from pathlib import Path

import torch
import torchvision

from ..core import ClassMap
from .config import ModelConfig

CHECKPOINT_FORMAT = "instaseg-checkpoint"
CHECKPOINT_VERSION = 1


class CheckpointError(Exception):
    """A checkpoint that cannot be used; the CLI prints it and exits with status 2."""


class CorruptCheckpointError(CheckpointError):
    """Not a readable checkpoint: truncated, not a torch file, or containing code objects."""


class CheckpointMismatchError(CheckpointError):
    """A valid checkpoint made for another architecture or other classes."""


def library_versions() -> dict[str, str]:
    import importlib.metadata

    import albumentations

    try:
        instaseg_version = importlib.metadata.version("instaseg")
    except importlib.metadata.PackageNotFoundError:
        instaseg_version = "unknown"
    return {
        "instaseg": instaseg_version,
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
        "albumentations": str(albumentations.__version__),
        "python": platform.python_version(),
    }


def checkpoint_header(class_names: list[str], model_config: ModelConfig, train_config: dict) -> dict:
    """The entries every checkpoint carries besides its tensors: format, classes, configs, versions."""
    return {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "class_names": list(class_names),
        "model_config": model_config.to_dict(),
        "train_config": train_config,
        "versions": library_versions(),
    }


def save_atomic(payload: dict, path: str | Path) -> None:
    """Write ``payload`` with ``torch.save`` to a temporary file beside ``path``, fsync, then rename.

    A crash or kill at any moment leaves either the previous file or the new one, never a partial one.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """``torch.load(path, weights_only=True)``; ``CorruptCheckpointError`` for anything unreadable.

    Loading never unpickles code. A file holding other Python objects is refused with a message that says
    so, never with torch's advice to retry with ``weights_only=False`` (which would run its code).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {path} not found" + (" (it is not a regular file)" if path.exists() else "")
        )
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "allowed global" not in str(e) and "Unsupported global" not in str(e):
            raise CorruptCheckpointError(
                f"{path} is not a readable checkpoint (not a torch file, or damaged); use another "
                "checkpoint (e.g. last.pt) or retrain"
            ) from None
        raise CorruptCheckpointError(
            f"{path} holds Python objects other than tensors and plain values, which instaseg checkpoints "
            "never do: it was not written by instaseg or was altered. It was not loaded; do not load it "
            "with weights_only=False unless you trust whoever made it"
        ) from None
    except Exception as e:
        reason = type(e).__name__ if isinstance(e, MemoryError | RecursionError) else _first_line(e)
        raise CorruptCheckpointError(
            f"{path} is not a readable checkpoint ({reason}); it may be truncated "
            "or not a torch file. Use another checkpoint (e.g. last.pt) or retrain"
        ) from None
    if not isinstance(payload, dict):
        raise CorruptCheckpointError(f"{path} holds a {type(payload).__name__}, not a checkpoint dict")
    return payload


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__


def check_header(payload: dict, path: str | Path) -> tuple[ClassMap, ModelConfig]:
    """Validate an instaseg checkpoint's header as a whole before a model is built from it.

    Checks the format marker, the class names (a non-empty list of unique non-empty strings), the model
    config (types and ranges, :class:`ModelConfig`), that the config's class count matches, and that the
    weights are a dict of tensors.

    Raises:
        CheckpointMismatchError: not an instaseg checkpoint (e.g. a bare state dict).
        CorruptCheckpointError: a damaged header, naming the field and what is wrong with it.
    """
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointMismatchError(
            f"{path} is not an instaseg checkpoint (a bare state dict?); pass it to "
            "`instaseg train --weights` instead"
        )
    missing = [k for k in ("model", "class_names", "model_config") if k not in payload]
    if missing:
        raise CorruptCheckpointError(f"{path} lacks {', '.join(missing)}: an incomplete checkpoint; retrain")
    names = payload["class_names"]
    try:
        if not isinstance(names, list | tuple):
            raise ValueError(f"must be a list of names, got {type(names).__name__}")
        class_map = ClassMap(tuple(names))
        if not class_map.names:
            raise ValueError("the list is empty")
    except ValueError as e:
        raise CorruptCheckpointError(f"{path}: damaged header: class_names {e}") from None
    try:
        config = ModelConfig.from_dict(payload["model_config"])
    except (TypeError, ValueError) as e:
        raise CorruptCheckpointError(f"{path}: damaged header: model_config: {e}") from None
    if config.num_classes != class_map.num_classes:
        raise CorruptCheckpointError(
            f"{path}: damaged header: model_config has {config.num_classes} classes but class_names lists "
            f"{class_map.num_classes}"
        )
    weights = payload["model"]
    if not isinstance(weights, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in weights.items()
    ):
        raise CorruptCheckpointError(f"{path}: damaged checkpoint: 'model' is not a dict of named tensors")
    return class_map, config


def load_checkpoint(
    path: str | Path,
    device: str | torch.device = "cpu",
    arch: str | None = None,
    class_names: tuple[str, ...] | None = None,
) -> tuple[torch.nn.Module, ClassMap, ModelConfig]:
    """Rebuild the model of an instaseg checkpoint, in eval mode on ``device``.

    Args:
        arch, class_names: when given, the checkpoint must match them (``CheckpointMismatchError`` if not).

    Returns:
        ``(model, class_map, model_config)``; :class:`instaseg.model.predictor.Predictor` predicts with it.
    """
    payload = read_checkpoint(path)
    class_map, config = check_header(payload, path)
    if arch is not None and config.arch != arch:
        raise CheckpointMismatchError(f"{path} is a {config.arch} checkpoint, expected {arch}")
    names = class_map.names
    if class_names is not None and names != tuple(class_names):
        raise CheckpointMismatchError(
            f"{path} was trained on classes {list(names)}, expected {list(class_names)}"
        )
    try:
        model = _model_with_weights(config, payload["model"])
    except RuntimeError as e:
        raise CheckpointMismatchError(f"{path}: weights do not fit {config.arch} ({str(e)[:300]})") from None
    model.to(device).eval()
    return model, ClassMap(names), config


def _model_with_weights(config: ModelConfig, weights: dict) -> torch.nn.Module:
    """``build_model(config)`` with ``weights`` loaded (``RuntimeError`` when they do not fit).

    Built the plain way (random initialisation, then the weights copied in): building on the meta device
    instead would skip the initialisation (0.1 s for the light model, 0.3 s for a ResNet-50) but runs
    torch's reference ops, whose first call imports TorchDynamo (1 s) that :mod:`.vision` keeps out.
    """
    from .architectures import build_model

    model = build_model(config)
    model.load_state_dict(weights)
    return model
