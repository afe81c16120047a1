"""The ROI heads of a torchvision Mask R-CNN at test time, cut into the three things callers need.

torchvision's ``RoIHeads.forward`` (eval mode) runs the box head on every proposal, keeps the detections
(``postprocess_detections``) and runs the mask head on them, in one call. Here the same steps are named
functions over one image batch's FPN features, so that the prediction path (:class:`~instaseg.model.engine.TorchEngine`)
and the interactive prompts of the Label Studio backend (masks for boxes a person drew) share them:

- :func:`detect_boxes`: proposals -> detections (boxes, scores, labels), torchvision's box-head path;
- :func:`classify_boxes`: class probabilities of given boxes (no regression: the box stays as given);
- :func:`predict_masks`: mask probabilities of given boxes for given labels.

All boxes are ``(N, 4)`` float32 xyxy in the pixels of the network's (resized, unpadded) input. Callers run
these under the engine's precision (:func:`~instaseg.model.precision.autocast`); outputs are float32.
"""

from __future__ import annotations

from . import vision  # noqa: F401  (first: torchvision without TorchDynamo)

# isort: split
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.faster_rcnn import TwoMLPHead
from torchvision.models.detection.roi_heads import maskrcnn_inference
from torchvision.ops import MultiScaleRoIAlign, roi_align
from torchvision.ops.poolers import _convert_to_roi_format, _setup_scales

from .gather_roi_align import FeatureRows, feature_rows, gather_roi_align

FeatureMaps = dict[str, torch.Tensor]  # FPN level name -> (B, C, h_l, w_l)
ImageSizes = list[tuple[int, int]]  # each image's (h, w) before padding


class LevelMaps(NamedTuple):
    """The FPN levels a RoI pooler reads, converted once for the RoIAlign that runs on them
    (:func:`pool_features`), shared by the box and the mask RoIAlign of the same features.

    Attributes:
        maps: per level ``(B, C, h_l, w_l)`` float32 NCHW-contiguous, for torchvision's kernel (not on the
            CPU: ``None``).
        rows: on the CPU, the levels as channels-last rows for
            :func:`~instaseg.model.gather_roi_align.gather_roi_align` (elsewhere ``None``).
        dtype: the levels' own dtype (bf16 under bf16 autocast), which the pooled features are given back
            in, as torchvision's pooler does.
        sources: the levels as they were given (a pooler's scales are set from their sizes).
    """

    maps: list[torch.Tensor] | None
    rows: FeatureRows | None
    dtype: torch.dtype
    sources: list[torch.Tensor]


def set_level_scales(pooler: MultiScaleRoIAlign, levels: list[torch.Tensor], image_sizes: ImageSizes) -> None:
    """Set ``pooler.scales`` and ``pooler.map_levels`` from its levels' sizes when not set yet, as
    torchvision's pooler does on its first call."""
    if pooler.scales is None or pooler.map_levels is None:
        pooler.scales, pooler.map_levels = _setup_scales(
            levels, image_sizes, pooler.canonical_scale, pooler.canonical_level
        )


def pool_features(
    pooler: MultiScaleRoIAlign,
    features: FeatureMaps,
    image_sizes: ImageSizes,
    rows_dtype: torch.dtype | None = None,
) -> LevelMaps:
    """The levels of ``features`` that ``pooler`` reads, converted once into the layout the RoIAlign of
    their device reads. Sets the pooler's level scales from the maps' sizes on its first call, as
    torchvision's pooler does.

    On the CPU: channels-last rows in ``rows_dtype``; ``None``, the levels' own dtype: under bf16 autocast
    the gather reads the bf16 maps as they are (it sums in float32 and rounds the result to bf16, as
    torchvision's pooler gives it back; only the bilinear weights are rounded to bf16 too: on 20 held-out
    DSB images mask AP 47.27 against 47.24 with float32 rows, the same instances). Training passes
    ``torch.float32``, so that the gradients of the maps are summed in float32. Elsewhere: float32 NCHW
    maps for torchvision's kernel."""
    levels = [features[name] for name in features if name in pooler.featmap_names]
    set_level_scales(pooler, levels, image_sizes)
    if levels[0].device.type == "cpu" and pooler.sampling_ratio > 0:
        rows = feature_rows(levels, pooler.scales, rows_dtype or levels[0].dtype)
        return LevelMaps(None, rows, levels[0].dtype, levels)
    return LevelMaps([level.float().contiguous() for level in levels], None, levels[0].dtype, levels)


def roi_features(
    pooler: MultiScaleRoIAlign, levels: LevelMaps, boxes: list[torch.Tensor], image_sizes: ImageSizes
) -> torch.Tensor:
    """``pooler(features, boxes, image_sizes)`` on :func:`pool_features`' levels: torchvision's level
    mapping and scales, and its RoIAlign numbers. On the CPU all RoIs are pooled in one
    :func:`~instaseg.model.gather_roi_align.gather_roi_align` (a vectorised gather, equal to torchvision's
    scalar CPU kernel up to float32 rounding); elsewhere, or with an adaptive sampling ratio, each level's
    by torchvision's ``roi_align``.

    Args:
        boxes: per image ``(N_i, 4)`` xyxy in the network input's pixels.

    Returns:
        ``(sum N_i, C, S, S)`` (S: the pooler's output size) in ``levels.dtype``; channels-last on the CPU.
    """
    set_level_scales(pooler, levels.sources, image_sizes)
    rois = _convert_to_roi_format(boxes)  # (R, 5): image index, x0, y0, x1, y1
    size, count = tuple(pooler.output_size), len(pooler.scales)
    level_of = pooler.map_levels(boxes) if count > 1 else torch.zeros(len(rois), dtype=torch.int64)
    if levels.rows is not None:
        pooled = gather_roi_align(levels.rows, rois, level_of.to(rois.device), size, pooler.sampling_ratio)
        return pooled.to(levels.dtype).permute(0, 3, 1, 2)  # (R, C, S, S), channels-last
    maps = levels.maps
    result = torch.zeros((len(rois), maps[0].shape[1], *size), dtype=levels.dtype, device=rois.device)
    for level, (feature, scale) in enumerate(zip(maps, pooler.scales, strict=True)):
        index = torch.where(level_of == level)[0]
        with torch.autocast(rois.device.type, enabled=False):
            result[index] = roi_align(feature, rois[index], size, scale, pooler.sampling_ratio).to(
                levels.dtype
            )
    return result


class GatherRoIAlign(MultiScaleRoIAlign):
    """torchvision's ``MultiScaleRoIAlign`` (same settings, level mapping and numbers) whose CPU forward
    pools with :func:`roi_features`' vectorised gather, differentiable: the training step's RoIAlign,
    forward and backward, which torchvision runs in scalar CPU kernels. On other devices, while a model is
    traced for export (ONNX's and OpenVINO's own RoIAlign ops), or with an adaptive sampling ratio, it is
    torchvision's pooler. It has no parameters: state dicts are unchanged."""

    def forward(self, x: FeatureMaps, boxes: list[torch.Tensor], image_shapes: ImageSizes) -> torch.Tensor:
        first = next(iter(x.values()))
        if first.device.type != "cpu" or self.sampling_ratio <= 0 or torch.jit.is_tracing():
            return super().forward(x, boxes, image_shapes)
        levels = pool_features(self, x, image_shapes, rows_dtype=torch.float32)
        return roi_features(self, levels, boxes, image_shapes)

    @classmethod
    def like(cls, pooler: MultiScaleRoIAlign) -> GatherRoIAlign:
        """The same pooler (feature maps, output size, sampling ratio, canonical scale and level)."""
        return cls(
            list(pooler.featmap_names),
            pooler.output_size,
            pooler.sampling_ratio,
            canonical_scale=pooler.canonical_scale,
            canonical_level=pooler.canonical_level,
        )


def use_gather_roi_align(model: nn.Module) -> nn.Module:
    """Give a torchvision Mask R-CNN's ROI heads :class:`GatherRoIAlign` poolers in place of torchvision's
    ``MultiScaleRoIAlign`` (same settings; a no-op for other poolers and for ones already swapped), so that
    its own forward, the training step's, pools with the vectorised gather on the CPU. Returns ``model``."""
    heads = model.roi_heads
    for name in ("box_roi_pool", "mask_roi_pool"):
        pooler = getattr(heads, name, None)
        if type(pooler) is MultiScaleRoIAlign:
            setattr(heads, name, GatherRoIAlign.like(pooler))
    return model


def _pool(
    pooler: nn.Module,
    features: FeatureMaps,
    levels: LevelMaps | None,
    boxes: list[torch.Tensor],
    image_sizes: ImageSizes,
) -> torch.Tensor:
    """RoI features of ``boxes``: :func:`roi_features` for torchvision's ``MultiScaleRoIAlign`` (on
    ``levels`` when given), else the pooler itself."""
    if not isinstance(pooler, MultiScaleRoIAlign):
        return pooler(features, boxes, image_sizes)
    if levels is None:
        levels = pool_features(pooler, features, image_sizes)
    return roi_features(pooler, levels, boxes, image_sizes)


def run_box_head(box_head: nn.Module, pooled: torch.Tensor) -> torch.Tensor:
    """``box_head(pooled)`` on ``(R, C, S, S)`` RoI features. torchvision's ``TwoMLPHead`` flattens them
    NCHW (a copy of every proposal's features when they are channels-last, as the CPU gather gives them:
    ~3 ms for 1000 proposals); here it reads channels-last features as they lie, its first layer's weight
    reordered to ``(y, x, c)`` instead (the same products: a copy of one weight matrix)."""
    channels_last = pooled.dim() == 4 and pooled.is_contiguous(memory_format=torch.channels_last)
    if not isinstance(box_head, TwoMLPHead) or not channels_last or pooled.is_contiguous():
        return box_head(pooled)
    count, channels, height, width = pooled.shape
    rows = pooled.permute(0, 2, 3, 1).reshape(count, -1)  # (R, S * S * C): a view
    weight = box_head.fc6.weight  # (D, C * S * S), NCHW order
    weight = weight.view(-1, channels, height, width).permute(0, 2, 3, 1).reshape(weight.shape[0], -1)
    hidden = F.relu(F.linear(rows, weight, box_head.fc6.bias))
    return F.relu(box_head.fc7(hidden))


def detect_boxes(
    heads: nn.Module,
    features: FeatureMaps,
    proposals: list[torch.Tensor],
    image_sizes: ImageSizes,
    levels: LevelMaps | None = None,
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Detections from RPN proposals, as torchvision's eval-mode ``RoIHeads`` computes them.

    Args:
        heads: the model's ``roi_heads`` (its ``score_thresh``, ``nms_thresh`` and ``detections_per_img``
            apply).
        proposals: per image, ``(P_i, 4)`` proposal boxes.
        levels: ``pool_features(heads.box_roi_pool, features)``, when the caller shares it with the mask
            head (:func:`shared_levels`); ``None``: converted here.

    Returns:
        Per image ``(boxes (N, 4) float32, scores (N,) float32 decreasing, labels (N,) int64 1..K)``.
    """
    box_features = _pool(heads.box_roi_pool, features, levels, proposals, image_sizes)  # (sum P_i, C, 7, 7)
    box_features = run_box_head(heads.box_head, box_features)  # (sum P_i, D)
    class_logits, box_regression = heads.box_predictor(box_features)
    boxes, scores, labels = heads.postprocess_detections(
        class_logits.float(), box_regression.float(), proposals, image_sizes
    )
    return [(b.float(), s.float(), lab) for b, s, lab in zip(boxes, scores, labels, strict=True)]


def classify_boxes(
    heads: nn.Module,
    features: FeatureMaps,
    boxes: list[torch.Tensor],
    image_sizes: ImageSizes,
    levels: LevelMaps | None = None,
) -> list[torch.Tensor]:
    """Class probabilities of the given boxes from the box head: per image ``(N_i, K + 1)`` float32
    (column 0 is the background), softmax over the classes. The boxes are not regressed. ``levels`` as in
    :func:`detect_boxes`."""
    box_features = _pool(heads.box_roi_pool, features, levels, boxes, image_sizes)
    class_logits, _ = heads.box_predictor(run_box_head(heads.box_head, box_features))  # (sum N_i, K + 1)
    probabilities = torch.softmax(class_logits.float(), dim=-1)
    return list(probabilities.split([len(b) for b in boxes]))


def predict_masks(
    heads: nn.Module,
    features: FeatureMaps,
    boxes: list[torch.Tensor],
    labels: list[torch.Tensor],
    image_sizes: ImageSizes,
    levels: LevelMaps | None = None,
) -> list[torch.Tensor]:
    """Mask probabilities of the given boxes, each for its label: per image ``(N_i, M, M)`` float32 over
    the box (M = 28 for torchvision's head), to be pasted with :func:`~instaseg.model.engine.paste_masks`.
    ``levels``: ``pool_features(heads.mask_roi_pool, features)`` when the caller has it (``None``:
    converted here)."""
    if sum(len(b) for b in boxes) == 0:
        size = heads.mask_roi_pool.output_size[0] * 2
        return [torch.zeros((0, size, size)) for _ in boxes]
    mask_features = _pool(heads.mask_roi_pool, features, levels, boxes, image_sizes)  # (sum N_i, C, 14, 14)
    mask_logits = heads.mask_predictor(heads.mask_head(mask_features))  # (sum N_i, K + 1, M, M)
    probabilities = maskrcnn_inference(mask_logits.float(), labels)  # per image (N_i, 1, M, M)
    return [p[:, 0].float() for p in probabilities]


def shared_levels(
    heads: nn.Module, features: FeatureMaps, image_sizes: ImageSizes
) -> tuple[LevelMaps | None, LevelMaps | None]:
    """The box and mask poolers' :func:`pool_features`, converted once when both read the same levels the
    same way (torchvision's Mask R-CNN: both pool ``"0".."3"`` with 2 samples per bin); ``None`` for a
    pooler that is not a ``MultiScaleRoIAlign`` (it runs on the features as they are)."""
    box, mask = heads.box_roi_pool, getattr(heads, "mask_roi_pool", None)
    box_levels = pool_features(box, features, image_sizes) if isinstance(box, MultiScaleRoIAlign) else None
    if not isinstance(mask, MultiScaleRoIAlign):
        return box_levels, None
    same = list(mask.featmap_names) == list(box.featmap_names)
    if box_levels is not None and same and (mask.sampling_ratio > 0) == (box.sampling_ratio > 0):
        return box_levels, box_levels
    return box_levels, pool_features(mask, features, image_sizes)
