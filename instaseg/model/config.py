"""What a model is (:class:`ModelConfig`) and the choice lists the command line shows without loading torch.

A plain dataclass of plain values: saved inside checkpoints as a dict (:func:`dataclasses.asdict`) and
rebuilt with :meth:`ModelConfig.from_dict`, so loading a checkpoint never unpickles code.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

# Valid values of the string options; errors list them. ARCH_NAMES are the keys of
# instaseg.model.architectures.ARCHITECTURES (a test checks), kept here so that `--help` needs no torch.
ARCH_NAMES = ("maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2", "maskrcnn_resnet18_fpn")
RESIZE_MODES = ("keep", "square")
DEVICES = ("auto", "cpu", "cuda", "mps")
ENGINES = ("torch", "onnx", "openvino")
# Numeric precision of the forward (and backward) pass; instaseg.model.precision.resolve_precision turns the
# request into what runs. auto: bf16 autocast on CPUs with native bf16, fp16 AMP on CUDA, fp32 elsewhere.
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def dataclass_from_dict(cls, values: dict):
    """``cls(**values)`` with the keys ``cls`` does not have (written by a newer version) left out;
    ``ValueError`` when ``values`` is not a dict with string keys."""
    if not isinstance(values, dict):
        raise ValueError(f"{cls.__name__} must be a mapping of names to values, got {type(values).__name__}")
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names})


def check_choice(name: str, value: str, valid: tuple[str, ...]) -> None:
    """``ValueError`` listing the valid values when ``value`` is not one of them."""
    if not isinstance(value, str) or value not in valid:
        raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(valid)}")


def check_number(name: str, value, low: float, high: float, integer: bool = False) -> None:
    """``ValueError`` unless ``value`` is a real number (an int when ``integer``; bools are not numbers)
    with ``low <= value <= high``: a checkpoint or config file is not trusted to hold the right types."""
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        kind = "a whole number" if integer else "a number"
        raise ValueError(f"{name} must be {kind}, got {type(value).__name__} {value!r:.40}")
    if not low <= value <= high:  # NaN fails this too
        raise ValueError(f"{name} must be in {low:g}..{high:g}, got {value!r}")


# Largest image side a model may work at: 8192 px is a 64-megapixel square (a few GB of activations); a
# larger value in a config or checkpoint is a mistake, not a model.
MAX_IMAGE_SIZE = 8192


@dataclass(frozen=True)
class ModelConfig:
    """What is needed to rebuild a model and to run it at test time.

    Attributes:
        arch: one of :data:`ARCH_NAMES` (the builders are :data:`instaseg.model.architectures.ARCHITECTURES`).
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
        anchor_sizes: the RPN's anchor size (pixels at the model's input) for each of the 5 FPN levels,
            e.g. chosen from the data (:mod:`instaseg.train.recipe`); ``None`` for the architecture's own
            (32..512 for the ResNet-50 models, 16..256 for the light one).
        crop_size: the model was trained on random ``crop_size x crop_size`` crops of the images at their
            native resolution (``train --crop``; ``image_size`` is then the crop size), so it knows objects at
            their pixel size and large images are best predicted in tiles (``predict --tile auto``);
            ``None``: trained on whole images resized to ``image_size``.
        mask_head_channels: the widths of the light model's mask-head convolutions (the last one also
            its mask predictor's upsampling), e.g. ``(64, 64)``; ``None``: the architecture's own (two of 128
            for ``maskrcnn_resnet18_fpn``, as in every checkpoint written before the field existed). The
            ResNet-50 models keep torchvision's head (``None`` only).
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
    anchor_sizes: tuple[int, ...] | None = None
    crop_size: int | None = None
    mask_head_channels: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        check_choice("architecture", self.arch, ARCH_NAMES)
        check_choice("resize mode", self.resize, RESIZE_MODES)
        check_number("num_classes", self.num_classes, 1, 100_000, integer=True)
        check_number("image_size (pixels)", self.image_size, 32, MAX_IMAGE_SIZE, integer=True)
        if self.trainable_backbone_layers is not None:
            check_number("trainable_backbone_layers", self.trainable_backbone_layers, 0, 5, integer=True)
        if not isinstance(self.pretrained_backbone, bool):
            raise ValueError(
                f"pretrained_backbone must be true or false, got {self.pretrained_backbone!r:.40}"
            )
        check_number("score_threshold", self.score_threshold, 0.0, 1.0)
        check_number("nms_threshold", self.nms_threshold, 0.0, 1.0)
        check_number("detections_per_image", self.detections_per_image, 1, 100_000, integer=True)
        check_number("mask_threshold", self.mask_threshold, 1e-6, 1 - 1e-6)
        if self.anchor_sizes is not None:
            if not isinstance(self.anchor_sizes, list | tuple) or len(self.anchor_sizes) != 5:
                raise ValueError(
                    f"anchor_sizes must be 5 sizes (one per FPN level), got {self.anchor_sizes!r:.60}"
                )
            for size in self.anchor_sizes:
                check_number("anchor size (pixels)", size, 2, 4 * MAX_IMAGE_SIZE, integer=True)
            object.__setattr__(self, "anchor_sizes", tuple(self.anchor_sizes))
        if self.crop_size is not None:
            check_number("crop_size (pixels)", self.crop_size, 32, MAX_IMAGE_SIZE, integer=True)
        if self.mask_head_channels is not None:
            self._check_mask_head()

    def _check_mask_head(self) -> None:
        widths = self.mask_head_channels
        if self.arch != "maskrcnn_resnet18_fpn":
            raise ValueError(f"mask_head_channels applies to maskrcnn_resnet18_fpn only, not {self.arch}")
        if not isinstance(widths, list | tuple) or not 1 <= len(widths) <= 8:
            raise ValueError(f"mask_head_channels must be 1 to 8 widths, got {widths!r:.60}")
        for width in widths:
            check_number("mask head width (channels)", width, 32, 1024, integer=True)
            if width % 32:  # GroupNorm's 32 groups
                raise ValueError(f"mask head widths must be multiples of 32, got {width}")
        object.__setattr__(self, "mask_head_channels", tuple(widths))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> ModelConfig:
        """Rebuild from :meth:`to_dict`; unknown keys (from a newer version) are ignored."""
        return dataclass_from_dict(cls, values)
