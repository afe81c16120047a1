"""Mask R-CNN architectures and the training face of torchvision's ``forward``.

- :func:`build_model` ``(ModelConfig) -> MaskRCNN`` with K+1-class box **and** mask predictors;
- :func:`compute_losses` ``(model, images, targets) -> dict[str, Tensor]`` (the model in train mode).

The other face, detections, is :class:`instaseg.model.engine.TorchEngine` (used through
:class:`instaseg.model.predictor.Predictor`): it runs backbone, RPN and ROI heads on images resized once
by the caller, so torchvision's own resize and full-size mask pasting never run.

Image size: the model's ``GeneralizedRCNNTransform`` gets ``min_size = max_size = image_size`` (see
:class:`~instaseg.model.config.ModelConfig`), so images resized by the data pipeline are not resized again
(torchvision's default would rescale them to 800 pixels) when losses are computed.
"""

from __future__ import annotations

from . import vision  # noqa: F401  (first: torchvision without TorchDynamo)

# isort: split
import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet18, resnet50
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN, _resnet_fpn_extractor
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops import misc as misc_ops
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from .config import ModelConfig

LOSS_NAMES = ("loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg")


def _anchors(config: ModelConfig, smallest: int) -> AnchorGenerator:
    """One anchor size per FPN level (``config.anchor_sizes``, else ``smallest`` doubling over the 5 levels),
    three aspect ratios each: the number of anchors per location, hence the RPN head's shape, is the same
    whatever the sizes, so COCO weights still fit."""
    sizes = config.anchor_sizes or tuple(smallest * 2**k for k in range(5))
    return AnchorGenerator(tuple((int(s),) for s in sizes), ((0.5, 1.0, 2.0),) * 5)


def _trainable_layers(config: ModelConfig) -> int:
    if config.trainable_backbone_layers is not None:
        return config.trainable_backbone_layers
    return 3 if config.pretrained_backbone else 5


def _resnet50_fpn(config: ModelConfig) -> MaskRCNN:
    # Pretrained backbones keep ImageNet/COCO BatchNorm statistics frozen, as torchvision does.
    norm = misc_ops.FrozenBatchNorm2d if config.pretrained_backbone else nn.BatchNorm2d
    backbone = _resnet_fpn_extractor(resnet50(weights=None, norm_layer=norm), _trainable_layers(config))
    return MaskRCNN(backbone, num_classes=config.num_classes + 1, rpn_anchor_generator=_anchors(config, 32))


def _resnet50_fpn_v2(config: ModelConfig) -> MaskRCNN:
    # torchvision's v2 recipe (Li et al. 2021): BatchNorm in FPN and heads, a deeper RPN head.
    backbone = _resnet_fpn_extractor(
        resnet50(weights=None), _trainable_layers(config), norm_layer=nn.BatchNorm2d
    )
    anchors = _anchors(config, 32)
    return MaskRCNN(
        backbone,
        num_classes=config.num_classes + 1,
        rpn_anchor_generator=anchors,
        rpn_head=RPNHead(backbone.out_channels, 3, conv_depth=2),
        box_head=FastRCNNConvFCHead(
            (backbone.out_channels, 7, 7), [256] * 4, [1024], norm_layer=nn.BatchNorm2d
        ),
        mask_head=MaskRCNNHeads(backbone.out_channels, [256] * 4, 1, norm_layer=nn.BatchNorm2d),
    )


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels)


class RoiGroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` for RoI features, many small maps (N RoIs of 14x14), computed on NCHW-contiguous
    input: torch's channels-last GroupNorm kernel is slow for that shape (2-core Zen 4, bf16, 128 channels in
    32 groups: 3.5 ms against 0.25 ms NCHW for 40 RoIs forward; 33 against 12 ms forward and backward for
    128 RoIs), while for the backbone's few large maps both layouts run alike. The same parameters and
    numbers as ``nn.GroupNorm``: checkpoints are unchanged."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.group_norm(x.contiguous(), self.num_groups, self.weight, self.bias, self.eps)


def _roi_group_norm(channels: int) -> nn.GroupNorm:
    return RoiGroupNorm(32, channels)


def _resnet18_fpn(config: ModelConfig) -> MaskRCNN:
    """A light model that trains from scratch on a CPU: ResNet-18, a 128-channel FPN, slim heads (the mask
    head's widths ``config.mask_head_channels``, else two of 128), and anchors half torchvision's size
    (16..256 pixels) for small objects at small image sizes.

    From scratch it uses GroupNorm (32 groups) instead of BatchNorm: detection batches are a few images,
    too few for batch statistics, and GroupNorm behaves the same in training and validation (Wu & He 2018).
    """
    norm = misc_ops.FrozenBatchNorm2d if config.pretrained_backbone else _group_norm
    body = resnet18(weights=None, norm_layer=norm)
    trainable = ["layer4", "layer3", "layer2", "layer1", "conv1"][: _trainable_layers(config)]
    if len(trainable) == 5:
        trainable.append("bn1")
    for name, parameter in body.named_parameters():
        if not any(name.startswith(layer) for layer in trainable):
            parameter.requires_grad_(False)
    channels = 128
    widths = list(config.mask_head_channels or (channels, channels))
    backbone = BackboneWithFPN(
        body,
        {"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"},
        [64, 128, 256, 512],
        channels,
        extra_blocks=LastLevelMaxPool(),
    )
    anchors = _anchors(config, 16)
    return MaskRCNN(
        backbone,
        num_classes=None,
        rpn_anchor_generator=anchors,
        rpn_head=RPNHead(channels, 3),
        box_head=TwoMLPHead(channels * 7 * 7, 256),
        box_predictor=FastRCNNPredictor(256, config.num_classes + 1),
        mask_head=MaskRCNNHeads(
            channels, widths, 1, norm_layer=None if config.pretrained_backbone else _roi_group_norm
        ),
        mask_predictor=MaskRCNNPredictor(widths[-1], widths[-1], config.num_classes + 1),
        box_batch_size_per_image=256,
    )


# Architecture name -> builder. Explicit; its keys are model.config.ARCH_NAMES (a test checks), which
# ModelConfig validates against, so an unknown name gets the list of valid ones.
ARCHITECTURES: dict[str, Callable[[ModelConfig], MaskRCNN]] = {
    "maskrcnn_resnet50_fpn": _resnet50_fpn,
    "maskrcnn_resnet50_fpn_v2": _resnet50_fpn_v2,
    "maskrcnn_resnet18_fpn": _resnet18_fpn,
}


def build_model(config: ModelConfig) -> MaskRCNN:
    """A freshly initialised Mask R-CNN for ``config.num_classes`` + 1 (background) classes.

    Box predictor: ``cls_score`` K+1 outputs, ``bbox_pred`` 4(K+1); mask predictor ``mask_fcn_logits``
    K+1 channels. Uses torch's global RNG for initialisation (seed it for reproducible runs).
    """
    model = ARCHITECTURES[config.arch](config)  # config.arch is checked by ModelConfig
    model.transform.min_size = (config.image_size,)
    model.transform.max_size = config.image_size
    model.roi_heads.score_thresh = config.score_threshold
    model.roi_heads.nms_thresh = config.nms_threshold
    model.roi_heads.detections_per_img = config.detections_per_image
    return model


def compute_losses(
    model: MaskRCNN, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]]
) -> dict[str, torch.Tensor]:
    """The five scalar losses of :data:`LOSS_NAMES`; puts the model in train mode (BatchNorm updates)."""
    model.train()
    return model(images, targets)


@contextlib.contextmanager
def frozen_statistics(model: nn.Module) -> Iterator[None]:
    """Train mode (so the model returns losses) with BatchNorm and Dropout in eval mode, for validation
    losses that neither update running statistics nor depend on dropout; restores the modes on exit."""
    modes = {m: m.training for m in model.modules()}
    model.train()
    for module in model.modules():
        if isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.Dropout)):
            module.eval()
    try:
        yield
    finally:
        for module, mode in modes.items():
            module.training = mode
