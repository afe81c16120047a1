"""Initial weights of a model: torchvision's COCO weights, a local state dict, or an instaseg checkpoint.

COCO weights are read from torch.hub's cache, ``$TORCH_HOME/hub/checkpoints/<file name>`` (``TORCH_HOME``
defaults to ``~/.cache/torch``), and downloaded there when allowed and online. The new box and mask
predictors (K+1 classes) are never taken from COCO's 91-class heads: they stay freshly initialised.
"""

from __future__ import annotations

from . import vision  # noqa: F401  (first: torchvision without TorchDynamo)

# isort: split
import os
from pathlib import Path

import torch
from torch import nn
from torchvision.models.detection import MaskRCNN_ResNet50_FPN_V2_Weights, MaskRCNN_ResNet50_FPN_Weights

from .checkpoint import CHECKPOINT_FORMAT, CheckpointMismatchError, check_header, read_checkpoint

# Architecture -> torchvision's COCO weights. Architectures not listed have none (train with --weights none).
COCO_WEIGHTS = {
    "maskrcnn_resnet50_fpn": MaskRCNN_ResNet50_FPN_Weights.COCO_V1,
    "maskrcnn_resnet50_fpn_v2": MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1,
}
# The heads that depend on the number of classes; replaced, never transferred from another class set.
PREDICTOR_PREFIXES = ("roi_heads.box_predictor.", "roi_heads.mask_predictor.")


class WeightsError(Exception):
    """Initial weights that cannot be had or do not fit the model; the CLI prints it and exits with 2."""


def coco_cache_path(arch: str) -> Path:
    """Where torch.hub keeps (and torchvision looks for) the COCO weights of ``arch``."""
    if arch not in COCO_WEIGHTS:
        raise WeightsError(
            f"architecture {arch!r} has no COCO weights (those exist for: "
            f"{', '.join(COCO_WEIGHTS)}); train it with --weights none or --weights PATH"
        )
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(COCO_WEIGHTS[arch].url)


def load_coco_state_dict(arch: str, download: bool = True) -> dict[str, torch.Tensor]:
    """COCO state dict of ``arch`` from the cache, or downloaded into it when ``download`` and online.

    The cached file is loaded as is (no hash check), so a file copied there by hand works.
    """
    path = coco_cache_path(arch)
    if path.is_file():
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise WeightsError(
                f"cannot read the cached COCO weights {path} ({e}); delete the file and download it again"
            ) from None
    url = COCO_WEIGHTS[arch].url
    how = (
        f"Download {url} on a machine with internet access and copy it to {path} "
        f"(TORCH_HOME={os.environ.get('TORCH_HOME', '~/.cache/torch')}), or train from scratch with "
        "--weights none"
    )
    if not download:
        raise WeightsError(f"COCO weights for {arch} are not in the cache ({path}). {how}")
    try:
        return torch.hub.load_state_dict_from_url(
            url, map_location="cpu", progress=False, check_hash=True, weights_only=True
        )
    except Exception as e:
        raise WeightsError(
            f"COCO weights for {arch} are not cached and could not be downloaded ({e}). {how}"
        ) from None


def coco_weights_available(arch: str = "maskrcnn_resnet50_fpn", download: bool = True) -> tuple[bool, str]:
    """Whether COCO weights for ``arch`` are in the cache (not read here: training reads them once) or can
    be downloaded into it now (a download is tried when ``download``), and why not."""
    if coco_cache_path(arch).is_file():
        return True, "cached"
    try:
        load_coco_state_dict(arch, download=download)
    except WeightsError as e:
        return False, str(e)
    return True, "downloaded"


def transfer_state_dict(
    model: nn.Module,
    state: dict[str, torch.Tensor],
    source: str,
    fresh_prefixes: tuple[str, ...] = PREDICTOR_PREFIXES,
) -> list[str]:
    """Copy ``state`` into ``model``, leaving the parameters under ``fresh_prefixes`` as initialised.

    Every other parameter/buffer of the model must be in ``state`` with the same shape (BatchNorm's
    ``num_batches_tracked`` may be absent); otherwise ``WeightsError`` listing the first mismatches.
    Returns the names left freshly initialised.
    """
    own = model.state_dict()
    problems, fresh, update = [], [], {}
    for name, tensor in own.items():
        if name.startswith(fresh_prefixes):
            fresh.append(name)
        elif name not in state:
            if not name.endswith("num_batches_tracked"):
                problems.append(f"{name} missing")
        elif tuple(state[name].shape) != tuple(tensor.shape):
            problems.append(f"{name} has shape {tuple(state[name].shape)}, model needs {tuple(tensor.shape)}")
        else:
            update[name] = state[name]
    if problems:
        raise WeightsError(
            f"{source} does not fit this architecture ({len(problems)} problems: "
            f"{'; '.join(problems[:3])}); pick the --arch it was made for"
        )
    own.update(update)
    model.load_state_dict(own)
    return fresh


def apply_weights(
    model: nn.Module, arch: str, weights: str, class_names: tuple[str, ...], download: bool = True
) -> str:
    """Initialise ``model`` (built for ``arch``) from ``weights``: ``"coco"``, ``"none"`` or a file path.

    A file may be a torchvision state dict (optionally under a ``"model"`` key, as torchvision's reference
    scripts save it; predictors are taken only when their shapes fit) or an instaseg checkpoint of the same
    architecture and classes (loaded entirely). Returns a one-line description for the log.
    """
    if weights == "none":
        return "from scratch (random initialisation)"
    if weights == "coco":
        fresh = transfer_state_dict(model, load_coco_state_dict(arch, download), f"COCO weights of {arch}")
        if arch == "maskrcnn_resnet50_fpn":
            # Legacy v1 weights were trained with FrozenBatchNorm eps=0, as torchvision restores them.
            for module in model.modules():
                if hasattr(module, "eps") and type(module).__name__ == "FrozenBatchNorm2d":
                    module.eps = 0.0
        return f"COCO weights of {arch} ({len(fresh)} predictor tensors freshly initialised)"
    path = Path(weights)
    if not path.is_file():
        raise WeightsError(f"weights file {weights} not found; valid --weights: coco, none, or a file path")
    payload = read_checkpoint(path)
    if payload.get("format") == CHECKPOINT_FORMAT:
        class_map, config = check_header(payload, path)
        if config.arch != arch:
            raise CheckpointMismatchError(
                f"{path} is a {config.arch} checkpoint, not {arch}; pass --arch {config.arch}"
            )
        if class_map.names != tuple(class_names):
            raise CheckpointMismatchError(
                f"{path} was trained on classes {list(class_map.names)}, this "
                f"dataset has {list(class_names)}; use --weights coco or none"
            )
        model.load_state_dict(payload["model"])
        return f"instaseg checkpoint {path} (epoch {payload.get('epoch', '?')})"
    state = payload.get("model", payload)
    own = model.state_dict()
    unfit = tuple(
        n
        for n in own
        if n.startswith(PREDICTOR_PREFIXES)
        and (n not in state or tuple(state[n].shape) != tuple(own[n].shape))
    )
    fresh = transfer_state_dict(model, state, str(path), fresh_prefixes=unfit)
    return f"state dict {path} ({len(fresh)} predictor tensors freshly initialised)"
