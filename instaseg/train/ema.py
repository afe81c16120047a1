"""An exponential moving average of a model's weights (``train --ema``), as Ultralytics' ``ModelEMA`` and
detectron2's ``EMAHook`` keep it: updated after every optimizer step, used for validation and saved as the
model of ``best.pt`` and ``last.pt`` (the raw weights go on training, and ``last.pt`` keeps them to resume).

The decay warms up with the number of updates ``n``: ``decay * (1 - exp(-n / warmup))``, so the average
follows the fast-changing weights of the first steps and smooths more as training settles (a short CPU
budget is a few hundred steps: Ultralytics' 2,000-step warmup would leave the average a copy of the raw
weights there, hence :data:`EMA_WARMUP_STEPS`). Floating-point parameters are averaged; buffers
(BatchNorm running statistics, counters) are copied from the trained model, as GroupNorm has none.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

# Updates over which the decay rises towards its value (1 - 1/e of it after this many).
EMA_WARMUP_STEPS = 100


class WeightAverage:
    """The averaged copy of ``model`` (:attr:`module`, in eval mode, no gradients).

    Args:
        model: the trained model (the unwrapped one under DDP); its weights start the average.
        decay: the final decay per update, in (0, 1) (0.999: about the last 1,000 steps weigh).
        warmup: updates over which the decay rises (see the module doc).
        updates: updates already made (a resumed run).
    """

    def __init__(self, model: nn.Module, decay: float, warmup: int = EMA_WARMUP_STEPS, updates: int = 0):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"the EMA decay must be in (0, 1), got {decay}")
        self.module = copy.deepcopy(model).eval()
        for parameter in self.module.parameters():
            parameter.requires_grad_(False)
        self.decay, self.warmup, self.updates = float(decay), int(warmup), int(updates)

    def current_decay(self) -> float:
        """The decay the next update uses."""
        return self.decay * (1.0 - math.exp(-(self.updates + 1) / max(1, self.warmup)))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the weights of ``model`` (same architecture) into the average; copy its buffers."""
        decay = self.current_decay()
        self.updates += 1
        trained = dict(model.named_parameters())
        averaged = [p for _, p in self.module.named_parameters()]
        sources = [trained[name].detach() for name, _ in self.module.named_parameters()]
        floats = [(a, s) for a, s in zip(averaged, sources, strict=True) if a.is_floating_point()]
        if floats:  # average = decay * average + (1 - decay) * weights, one fused call for all tensors
            torch._foreach_lerp_([a for a, _ in floats], [s for _, s in floats], 1.0 - decay)
        buffers = dict(model.named_buffers())
        for name, buffer in self.module.named_buffers():
            buffer.copy_(buffers[name])

    def state_dict(self) -> dict:
        """What ``last.pt`` keeps to resume the average: its weights and the update count."""
        return {"updates": self.updates, "decay": self.decay, "weights": self.module.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["weights"])
        self.updates = int(state["updates"])
