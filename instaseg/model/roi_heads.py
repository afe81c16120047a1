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
import torch
from torch import nn
from torchvision.models.detection.roi_heads import maskrcnn_inference

FeatureMaps = dict[str, torch.Tensor]  # FPN level name -> (B, C, h_l, w_l)
ImageSizes = list[tuple[int, int]]  # each image's (h, w) before padding


def detect_boxes(
    heads: nn.Module, features: FeatureMaps, proposals: list[torch.Tensor], image_sizes: ImageSizes
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Detections from RPN proposals, as torchvision's eval-mode ``RoIHeads`` computes them.

    Args:
        heads: the model's ``roi_heads`` (its ``score_thresh``, ``nms_thresh`` and ``detections_per_img``
            apply).
        proposals: per image, ``(P_i, 4)`` proposal boxes.

    Returns:
        Per image ``(boxes (N, 4) float32, scores (N,) float32 decreasing, labels (N,) int64 1..K)``.
    """
    box_features = heads.box_roi_pool(features, proposals, image_sizes)  # (sum P_i, C, 7, 7)
    box_features = heads.box_head(box_features)  # (sum P_i, R)
    class_logits, box_regression = heads.box_predictor(box_features)
    boxes, scores, labels = heads.postprocess_detections(
        class_logits.float(), box_regression.float(), proposals, image_sizes
    )
    return [(b.float(), s.float(), lab) for b, s, lab in zip(boxes, scores, labels, strict=True)]


def classify_boxes(
    heads: nn.Module, features: FeatureMaps, boxes: list[torch.Tensor], image_sizes: ImageSizes
) -> list[torch.Tensor]:
    """Class probabilities of the given boxes from the box head: per image ``(N_i, K + 1)`` float32
    (column 0 is the background), softmax over the classes. The boxes are not regressed."""
    box_features = heads.box_roi_pool(features, boxes, image_sizes)
    class_logits, _ = heads.box_predictor(heads.box_head(box_features))  # (sum N_i, K + 1)
    probabilities = torch.softmax(class_logits.float(), dim=-1)
    return list(probabilities.split([len(b) for b in boxes]))


def predict_masks(
    heads: nn.Module,
    features: FeatureMaps,
    boxes: list[torch.Tensor],
    labels: list[torch.Tensor],
    image_sizes: ImageSizes,
) -> list[torch.Tensor]:
    """Mask probabilities of the given boxes, each for its label: per image ``(N_i, M, M)`` float32 over
    the box (M = 28 for torchvision's head), to be pasted with :func:`~instaseg.model.engine.paste_masks`."""
    if sum(len(b) for b in boxes) == 0:
        size = heads.mask_roi_pool.output_size[0] * 2
        return [torch.zeros((0, size, size)) for _ in boxes]
    mask_features = heads.mask_roi_pool(features, boxes, image_sizes)  # (sum N_i, C, 14, 14)
    mask_logits = heads.mask_predictor(heads.mask_head(mask_features))  # (sum N_i, K + 1, M, M)
    probabilities = maskrcnn_inference(mask_logits.float(), labels)  # per image (N_i, 1, M, M)
    return [p[:, 0].float() for p in probabilities]
