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
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import torch
from torch import nn
from torchvision.models.detection.roi_heads import maskrcnn_inference
from torchvision.ops import MultiScaleRoIAlign, roi_align
from torchvision.ops.poolers import _convert_to_roi_format, _setup_scales

FeatureMaps = dict[str, torch.Tensor]  # FPN level name -> (B, C, h_l, w_l)
ImageSizes = list[tuple[int, int]]  # each image's (h, w) before padding

# RoIs per thread below which RoIAlign runs in the calling thread (a thread's start costs ~0.1 ms; one RoI
# of 128 channels at 7x7, ~2 us).
ROIS_PER_THREAD = 64


class LevelMaps(NamedTuple):
    """The FPN levels a RoI pooler reads, ready for torchvision's CPU ``roi_align`` kernel
    (:func:`pool_features`): ``maps`` float32 NCHW-contiguous, ``dtype`` the levels' own dtype (bf16 under
    bf16 autocast), which the pooled features are given back in, as torchvision's pooler does."""

    maps: list[torch.Tensor]
    dtype: torch.dtype


def pool_features(pooler: MultiScaleRoIAlign, features: FeatureMaps) -> LevelMaps:
    """The levels of ``features`` that ``pooler`` reads, converted once to what torchvision's CPU
    ``roi_align`` computes on: it has no bf16 kernel (under autocast each call casts a bf16 map to float32)
    and copies a channels-last map to NCHW on every call. Converted once, they serve the box and the mask
    RoIAlign of the same image (both poolers read the same levels in torchvision's Mask R-CNN)."""
    levels = [features[name] for name in features if name in pooler.featmap_names]
    return LevelMaps([level.float().contiguous() for level in levels], levels[0].dtype)


def roi_features(
    pooler: MultiScaleRoIAlign, levels: LevelMaps, boxes: list[torch.Tensor], image_sizes: ImageSizes
) -> torch.Tensor:
    """``pooler(features, boxes, image_sizes)`` on :func:`pool_features`' levels, the same numbers
    (torchvision's kernel, level mapping and scales), with the RoIs of each level split over
    ``torch.get_num_threads()`` threads on the CPU: torchvision's CPU kernel runs on one core (it releases
    the GIL, so Python threads run it in parallel).

    Args:
        boxes: per image ``(N_i, 4)`` xyxy in the network input's pixels.

    Returns:
        ``(sum N_i, C, S, S)`` (S: the pooler's output size) in ``levels.dtype``.
    """
    maps = levels.maps
    if pooler.scales is None or pooler.map_levels is None:  # as torchvision does on its first call
        pooler.scales, pooler.map_levels = _setup_scales(
            maps, image_sizes, pooler.canonical_scale, pooler.canonical_level
        )
    rois = _convert_to_roi_format(boxes)  # (R, 5): image index, x0, y0, x1, y1
    dtype, size = levels.dtype, pooler.output_size
    result = torch.zeros((len(rois), maps[0].shape[1], *size), dtype=dtype, device=rois.device)
    level_of = pooler.map_levels(boxes) if len(maps) > 1 else torch.zeros(len(rois), dtype=torch.int64)
    jobs = []  # (indices into rois, level's map, level's scale)
    threads = max(1, torch.get_num_threads()) if rois.device.type == "cpu" else 1
    for level, (feature, scale) in enumerate(zip(maps, pooler.scales, strict=True)):
        index = torch.where(level_of == level)[0]
        parts = min(threads, max(1, len(index) // ROIS_PER_THREAD))
        jobs.extend((chunk, feature, scale) for chunk in index.tensor_split(parts) if len(chunk))

    def align(job):
        index, feature, scale = job
        with torch.autocast("cpu", enabled=False):
            return roi_align(feature, rois[index], size, scale, pooler.sampling_ratio)

    if len(jobs) > 1 and threads > 1:
        with ThreadPoolExecutor(min(threads, len(jobs))) as pool:
            outputs = list(pool.map(align, jobs))
    else:
        outputs = [align(job) for job in jobs]
    for (index, _, _), output in zip(jobs, outputs, strict=True):
        result[index] = output.to(dtype)
    return result


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
        levels = pool_features(pooler, features)
    return roi_features(pooler, levels, boxes, image_sizes)


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
    box_features = heads.box_head(box_features)  # (sum P_i, R)
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
    class_logits, _ = heads.box_predictor(heads.box_head(box_features))  # (sum N_i, K + 1)
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


def shared_levels(heads: nn.Module, features: FeatureMaps) -> tuple[LevelMaps | None, LevelMaps | None]:
    """The box and mask poolers' :func:`pool_features`, converted once when both read the same levels
    (torchvision's Mask R-CNN: both pool ``"0".."3"``); ``None`` for a pooler that is not a
    ``MultiScaleRoIAlign`` (it runs on the features as they are)."""
    box, mask = heads.box_roi_pool, getattr(heads, "mask_roi_pool", None)
    box_levels = pool_features(box, features) if isinstance(box, MultiScaleRoIAlign) else None
    if not isinstance(mask, MultiScaleRoIAlign):
        return box_levels, None
    if box_levels is not None and list(mask.featmap_names) == list(box.featmap_names):
        return box_levels, box_levels
    return box_levels, pool_features(mask, features)
