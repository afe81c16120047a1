"""Configuration of a training run: :class:`TrainConfig` (the model's part is
:class:`~instaseg.model.config.ModelConfig`).

A plain dataclass of plain values: saved inside checkpoints as a dict and rebuilt with
:meth:`TrainConfig.from_dict`, so loading a checkpoint never unpickles code. Only the CLI turns flags into it.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

from ..model.config import DEVICES, PRECISIONS, check_choice, check_number, dataclass_from_dict

# Valid values of the string options; errors list them.
OPTIMIZERS = ("sgd", "adamw")
SCHEDULERS = ("cosine", "step")
AUGMENTATIONS = ("default", "scale-jitter", "copy-paste", "none")
SELECT_RULES = ("auto", "loss", "map", "last")


def default_workers() -> int:
    """DataLoader workers when none are asked for: one core is left to the training process itself (on a
    2-core CPU, two workers compete with training for the cores), at most 8."""
    return max(1, min(8, (os.cpu_count() or 2) - 1))


@dataclass
class TrainConfig:
    """Everything a training run depends on (the model part is :class:`ModelConfig`).

    Attributes:
        data, images, format: where the dataset is (as given to ``load_dataset``), kept for ``--resume``.
        weights: ``"coco"``, ``"none"`` or a path (torchvision state dict or instaseg checkpoint).
        epochs: passes over the training split.
        batch_size: images per forward pass; ``accumulate`` passes make one optimizer step.
        lr: peak learning rate (after warmup). ``momentum`` is SGD's; ``weight_decay`` both optimizers'.
        scheduler: ``"cosine"`` (to 0 at the last step) or ``"step"`` (times ``step_gamma`` every
            ``step_epochs`` epochs), after ``warmup_steps`` optimizer steps of linear warmup.
        grad_clip: max global gradient norm (0 disables clipping).
        amp: mixed precision on CUDA; ``False`` (``--no-amp``) means fp32 on CUDA whatever ``precision`` says.
        precision: ``"auto"`` (bf16 autocast on CPUs with native bf16, fp16 with gradient scaling on CUDA,
            fp32 elsewhere), ``"fp32"``, ``"bf16"`` or ``"fp16"``; resolved when the run starts
            (:func:`~instaseg.model.precision.resolve_precision`). Weights and checkpoints stay float32.
        device: ``"auto"`` (cuda, then mps, then cpu), ``"cpu"``, ``"cuda"`` or ``"mps"``.
        seed: seeds model init, shuffling, augmentation and the samplers of the heads.
        patience: stop after this many epochs without improvement of the selection metric (0: never).
        select: how ``best.pt`` is chosen (:mod:`instaseg.train.selection`): ``"loss"`` (lowest validation
            loss, the default here), ``"map"`` (highest mask mAP every epoch), ``"last"`` (the last epoch) or
            ``"auto"`` (``train``'s default: the latest epoch of the last quarter of the schedule whose mask
            mAP is at least 75 % of the best measured up to it); the mAP is computed by a callable the caller
            passes to ``fit``.
        keep_by_loss: also write ``best-by-loss.pt``, the epoch of the lowest validation loss, when
            ``select`` is another rule (to compare the rules on test images, as ``bench/quality.py`` does).
        ema: decay of an exponential moving average of the weights (:mod:`instaseg.train.ema`), used for
            validation and saved as the model; 0: none.
        workers: DataLoader worker processes (0: load in the main process).
        augment: ``"default"`` (the seed's pipeline), ``"scale-jitter"``, ``"copy-paste"`` (default plus
            objects pasted from another training image, :mod:`instaseg.train.copy_paste`) or ``"none"``
            (resize only).
        minutes: time budget; training stops at the first step past it, then validates and saves (0: none).
        splits: the split file used (JSON, see ``instaseg.splits``), or ``None`` to split by ``split_seed``.
    """

    data: str = ""
    images: str | None = None
    format: str | None = None
    weights: str = "coco"
    epochs: int = 20
    batch_size: int = 2
    accumulate: int = 1
    lr: float = 0.005
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 1e-4
    scheduler: str = "cosine"
    warmup_steps: int = 100
    step_epochs: int = 8
    step_gamma: float = 0.1
    grad_clip: float = 10.0
    amp: bool = True
    precision: str = "auto"
    device: str = "auto"
    seed: int = 0
    patience: int = 0
    select: str = "loss"
    keep_by_loss: bool = False
    ema: float = 0.0
    workers: int = field(default_factory=default_workers)
    augment: str = "default"
    minutes: float = 0.0
    splits: str | None = None
    split_seed: int = 0

    def __post_init__(self) -> None:
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("scheduler", self.scheduler, SCHEDULERS)
        check_choice("augmentation", self.augment, AUGMENTATIONS)
        check_choice("device", self.device, DEVICES)
        check_choice("precision", self.precision, PRECISIONS)
        check_choice("selection rule", self.select, SELECT_RULES)
        for name in ("epochs", "batch_size", "accumulate"):
            check_number(name, getattr(self, name), 1, 1_000_000, integer=True)
        for name in ("workers", "patience", "warmup_steps", "seed", "split_seed", "step_epochs"):
            check_number(name, getattr(self, name), 0, 2**31, integer=True)
        check_number("lr", self.lr, 1e-12, 10.0)
        for name, high in (("momentum", 1.0), ("weight_decay", 1.0), ("step_gamma", 1.0), ("grad_clip", 1e9)):
            check_number(name, getattr(self, name), 0.0, high)
        check_number("minutes", self.minutes, 0.0, 1e7)
        check_number("ema", self.ema, 0.0, 0.999999)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """Rebuild from :meth:`to_dict`; unknown keys (from a newer version) are ignored."""
        return dataclass_from_dict(cls, values)
