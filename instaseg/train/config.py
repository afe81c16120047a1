"""Configuration of a training run (:class:`TrainConfig`) and of a model (:class:`ModelConfig`).

Both are plain dataclasses of plain values: they are saved inside checkpoints as dicts
(:func:`dataclasses.asdict`) and rebuilt with :meth:`from_dict`, so loading a checkpoint never unpickles code.
Only the CLI turns flags into them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

# Valid values of the string options; errors list them.
OPTIMIZERS = ("sgd", "adamw")
SCHEDULERS = ("cosine", "step")
RESIZE_MODES = ("keep", "square")
AUGMENTATIONS = ("default", "none")
DEVICES = ("auto", "cpu", "cuda", "mps")
SELECT_RULES = ("loss", "map")


def check_choice(name: str, value: str, valid: tuple[str, ...]) -> None:
    """``ValueError`` listing the valid values when ``value`` is not one of them."""
    if value not in valid:
        raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(valid)}")


@dataclass(frozen=True)
class ModelConfig:
    """What is needed to rebuild a model and to run it at test time.

    Attributes:
        arch: a key of :data:`instaseg.train.model.ARCHITECTURES`.
        num_classes: K, object classes without background (the predictors have K+1 outputs).
        image_size: pixels of the longest side the model works at. The model's ``GeneralizedRCNNTransform``
            gets ``min_size = max_size = image_size``: an image already resized by the data pipeline (longest
            side = image_size, or square) passes through unchanged, and an image given at prediction time
            is scaled so that its longest side is ``image_size``, as in training.
        resize: ``"keep"`` (aspect ratio kept, longest side = image_size) or ``"square"``.
        trainable_backbone_layers: backbone stages (0..5, counted from the last) that train; ``None`` for
            the default (3 with pretrained weights, 5 from scratch).
        pretrained_backbone: whether the backbone was built for pretrained weights (frozen BatchNorm) or
            from scratch (trainable BatchNorm); decides the layer types, hence must be saved.
        score_threshold: detections below this score are dropped at test time.
        nms_threshold: IoU of the per-class non-maximum suppression at test time.
        detections_per_image: at most this many detections per image.
        mask_threshold: mask probabilities >= this are the object (0.5 by convention).
    """

    arch: str = "maskrcnn_resnet50_fpn"
    num_classes: int = 1
    image_size: int = 1024
    resize: str = "keep"
    trainable_backbone_layers: int | None = None
    pretrained_backbone: bool = True
    score_threshold: float = 0.05
    nms_threshold: float = 0.5
    detections_per_image: int = 100
    mask_threshold: float = 0.5

    def __post_init__(self) -> None:
        check_choice("resize mode", self.resize, RESIZE_MODES)
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")
        if self.image_size < 32:
            raise ValueError(f"image_size must be >= 32 pixels, got {self.image_size}")
        if self.trainable_backbone_layers is not None and not 0 <= self.trainable_backbone_layers <= 5:
            raise ValueError(f"trainable_backbone_layers must be 0..5, got {self.trainable_backbone_layers}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> ModelConfig:
        """Rebuild from :meth:`to_dict`; unknown keys (from a newer version) are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


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
        amp: mixed precision; only used on CUDA.
        device: ``"auto"`` (cuda, then mps, then cpu), ``"cpu"``, ``"cuda"`` or ``"mps"``.
        seed: seeds model init, shuffling, augmentation and the samplers of the heads.
        patience: stop after this many epochs without improvement of the selection metric (0: never).
        select: ``"loss"`` (lowest validation loss, the default) or ``"map"`` (highest mask mAP, computed by
            a callable the caller passes to ``fit``).
        workers: DataLoader worker processes (0: load in the main process).
        augment: ``"default"`` (the seed's pipeline) or ``"none"`` (resize only).
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
    device: str = "auto"
    seed: int = 0
    patience: int = 0
    select: str = "loss"
    workers: int = 2
    augment: str = "default"
    minutes: float = 0.0
    splits: str | None = None
    split_seed: int = 0

    def __post_init__(self) -> None:
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("scheduler", self.scheduler, SCHEDULERS)
        check_choice("augmentation", self.augment, AUGMENTATIONS)
        check_choice("device", self.device, DEVICES)
        check_choice("selection rule", self.select, SELECT_RULES)
        for name in ("epochs", "batch_size", "accumulate"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.workers < 0 or self.patience < 0 or self.warmup_steps < 0 or self.minutes < 0:
            raise ValueError("workers, patience, warmup_steps and minutes must be >= 0")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})
