"""Which torch device a run computes on: :func:`resolve_device`, the one place that decides it."""

from __future__ import annotations

import torch

from .config import DEVICES


def mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA when available, then Apple's MPS, else the CPU; ``"cpu"``, ``"cuda"``,
    ``"cuda:N"`` and ``"mps"`` are checked.

    Raises:
        ValueError: an unknown name (the message lists the valid ones) or an accelerator torch cannot see.
    """
    name = str(name)
    if name not in DEVICES and not name.startswith("cuda:"):
        raise ValueError(f"unknown device {name!r}; valid: {', '.join(DEVICES)} (or cuda:N)")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if mps_available() else torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(
                f"--device {name} asked for, but torch sees no CUDA GPU; use --device cpu or auto"
            )
        index = name.partition(":")[2]
        if index and not (index.isdigit() and int(index) < torch.cuda.device_count()):
            raise ValueError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    if name == "mps" and not mps_available():
        raise ValueError("--device mps asked for, but MPS is not available; use --device cpu or auto")
    return torch.device(name)
