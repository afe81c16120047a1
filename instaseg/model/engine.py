"""The model's forward pass without torchvision's pre- and post-processing, and box-local mask pasting.

torchvision's ``model([image])`` resizes the float image, runs the network, then pastes every 28x28 mask
into a full-size float ``(N, 1, H, W)`` tensor: on a 12-megapixel photo with 100 detections that alone is
4.8 GB. Here the caller resizes the uint8 image once, the network returns detections at the network's
input size with 28x28 mask probabilities (:class:`RawDetections`), and :func:`paste_masks` maps each mask
back to the original image inside its own box only (the same arithmetic as torchvision's
``paste_masks_in_image``, so the pixels agree).
"""

from __future__ import annotations

from . import vision  # noqa: F401  (first: torchvision without TorchDynamo)

# isort: split
import warnings
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.image_list import ImageList

from .precision import Precision, autocast
from .roi_heads import classify_boxes, detect_boxes, predict_masks, shared_levels

# ImageNet statistics that torchvision's GeneralizedRCNNTransform normalises with.
IMAGE_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGE_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
SIZE_DIVISIBLE = 32


@dataclass
class RawDetections:
    """The network's detections for one image, in the pixels of the network's (resized) input.

    Attributes:
        boxes: ``(N, 4)`` float32 xyxy at the resized image's size.
        labels: ``(N,)`` int64 1..K.
        scores: ``(N,)`` float32, decreasing.
        mask_probs: ``(N, M, M)`` float32 mask probabilities over each box (M = 28 for torchvision).
    """

    boxes: torch.Tensor
    labels: torch.Tensor
    scores: torch.Tensor
    mask_probs: torch.Tensor


@dataclass
class Features:
    """Backbone (FPN) features of a batch of prepared images (:meth:`TorchEngine.extract_features`).

    Attributes:
        maps: FPN level name -> ``(B, C, h_l, w_l)`` on the engine's device.
        image_sizes: each image's ``(h, w)`` at the network's input, before padding.
        padded_size: ``(H32, W32)``, the batch's padded size (multiples of 32).
    """

    maps: dict[str, torch.Tensor]
    image_sizes: list[tuple[int, int]]
    padded_size: tuple[int, int]


@dataclass
class BoxMasks:
    """The ROI heads' answer for given boxes of one image (:meth:`TorchEngine.masks_for_boxes`).

    Attributes:
        class_probs: ``(N, K + 1)`` float32 softmax over background + K classes.
        labels: ``(N,)`` int64 1..K, the class each mask was computed for.
        mask_probs: ``(N, M, M)`` float32 mask probabilities over each box.
    """

    class_probs: torch.Tensor
    labels: torch.Tensor
    mask_probs: torch.Tensor


class DetectorCore(nn.Module):
    """backbone -> RPN -> ROI heads of a torchvision Mask R-CNN, on one normalised image.

    ``forward(image)`` takes a float32 ``(1, 3, h, w)`` image already resized and normalised (ImageNet
    mean/std), pads it to a multiple of 32 and returns ``boxes (N, 4)``, ``labels (N,)``, ``scores (N,)``
    and ``mask_probs (N, 1, M, M)`` at the ``h x w`` input's pixels. Used for ONNX export.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.backbone, self.rpn, self.roi_heads = model.backbone, model.rpn, model.roi_heads

    def forward(self, image: torch.Tensor):
        height, width = image.shape[-2], image.shape[-1]
        pad_h = (SIZE_DIVISIBLE - height % SIZE_DIVISIBLE) % SIZE_DIVISIBLE
        pad_w = (SIZE_DIVISIBLE - width % SIZE_DIVISIBLE) % SIZE_DIVISIBLE
        padded = F.pad(image, (0, pad_w, 0, pad_h))
        images = ImageList(padded, [(height, width)])
        features = self.backbone(padded)
        proposals, _ = self.rpn(images, features)
        detections, _ = self.roi_heads(features, proposals, images.image_sizes)
        d = detections[0]
        return d["boxes"], d["labels"], d["scores"], d["masks"]


class TorchEngine:
    """Runs a torchvision Mask R-CNN on batches of prepared images (see :meth:`detect`).

    Args:
        model: a ``MaskRCNN``; its test-time settings are changed by :meth:`configure` (a model being
            trained keeps its training settings, which are separate). :meth:`detect` runs it in eval mode
            and gives it back in the mode it had.
        channels_last: store activations as NHWC, which oneDNN convolutions on CPUs run faster.
        precision: what the network computes in (:func:`~instaseg.model.precision.resolve_precision`);
            ``None``: float32. Under bf16/fp16 the outputs stay float32 (:func:`~instaseg.model.precision.autocast`).
    """

    def __init__(self, model: nn.Module, channels_last: bool = True, precision: Precision | None = None):
        self.model = model
        self.device = next(model.parameters()).device
        self.channels_last = channels_last
        self.precision = precision
        if channels_last:
            self.model.to(memory_format=torch.channels_last)

    def configure(self, score_threshold: float, max_detections: int, proposals: int | None) -> None:
        """Set the test-time settings (:func:`configure_test_time`)."""
        configure_test_time(self.model, score_threshold, max_detections, proposals)

    def detect(self, images: list[np.ndarray]) -> list[RawDetections]:
        """Detections for float32 ``(3, h, w)`` normalised images (one forward pass for all of them)."""
        return self.detect_features(self.extract_features(images))

    def extract_features(self, images: list[np.ndarray]) -> Features:
        """The backbone's FPN features of float32 ``(3, h, w)`` normalised images, padded together to a
        multiple of 32 (one batch). Reusable: the prompts of one image run on the same features."""
        sizes = [(int(im.shape[1]), int(im.shape[2])) for im in images]
        max_h = -(-max(h for h, _ in sizes) // SIZE_DIVISIBLE) * SIZE_DIVISIBLE
        max_w = -(-max(w for _, w in sizes) // SIZE_DIVISIBLE) * SIZE_DIVISIBLE
        batch = torch.zeros((len(images), 3, max_h, max_w), dtype=torch.float32)  # (B, 3, H32, W32)
        for i, im in enumerate(images):
            batch[i, :, : im.shape[1], : im.shape[2]] = torch.from_numpy(im)
        batch = batch.to(self.device)
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        with self._running():
            maps = self.model.backbone(batch)
        return Features(maps, sizes, (max_h, max_w))

    def propose(self, features: Features) -> list[torch.Tensor]:
        """The RPN's test-time proposals of each image: ``(P_i, 4)`` float32 xyxy, best first."""
        with self._running():
            # The RPN's anchors read only the padded batch's shape: a zero-stride stand-in, no copy kept.
            padded = torch.zeros(()).expand(len(features.image_sizes), 3, *features.padded_size)
            proposals, _ = self.model.rpn(ImageList(padded, features.image_sizes), features.maps)
        return [p.float() for p in proposals]

    def detect_features(self, features: Features) -> list[RawDetections]:
        """Detections from :meth:`extract_features`' features (RPN, box head, mask head)."""
        proposals = self.propose(features)
        heads = self.model.roi_heads
        with self._running():
            box_levels, mask_levels = shared_levels(heads, features.maps, features.image_sizes)
            found = detect_boxes(heads, features.maps, proposals, features.image_sizes, box_levels)
            masks = predict_masks(
                heads,
                features.maps,
                [boxes for boxes, _, _ in found],
                [labels for _, _, labels in found],
                features.image_sizes,
                mask_levels,
            )
        return [
            RawDetections(boxes.cpu(), labels.cpu(), scores.cpu(), mask_probs.cpu())
            for (boxes, scores, labels), mask_probs in zip(found, masks, strict=True)
        ]

    def masks_for_boxes(
        self, features: Features, boxes: list[torch.Tensor], labels: list[torch.Tensor | None]
    ) -> list[BoxMasks]:
        """Class probabilities and mask probabilities of given boxes (the ROI heads on these boxes, not on
        proposals), per image of ``features``.

        Args:
            boxes: per image ``(N_i, 4)`` float32 xyxy in the network input's pixels.
            labels: per image ``(N_i,)`` int64 1..K to compute each mask for, or ``None``: each box's most
                probable foreground class.
        """
        boxes = [b.to(self.device, torch.float32) for b in boxes]
        heads = self.model.roi_heads
        with self._running():
            box_levels, mask_levels = shared_levels(heads, features.maps, features.image_sizes)
            probabilities = classify_boxes(heads, features.maps, boxes, features.image_sizes, box_levels)
            chosen = [
                (p[:, 1:].argmax(dim=1) + 1) if given is None else given.to(self.device, torch.int64)
                for p, given in zip(probabilities, labels, strict=True)
            ]
            masks = predict_masks(heads, features.maps, boxes, chosen, features.image_sizes, mask_levels)
        return [
            BoxMasks(p.cpu(), label.cpu(), m.cpu())
            for p, label, m in zip(probabilities, chosen, masks, strict=True)
        ]

    @contextmanager
    def _running(self):
        """Eval mode, no autograd, the engine's precision; the model's mode is given back afterwards."""
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode(), autocast(self.model, self.precision):
                yield
        finally:
            self.model.train(was_training)


def configure_test_time(
    model: nn.Module, score_threshold: float, max_detections: int, proposals: int | None
) -> None:
    """Set a torchvision Mask R-CNN's ROI-head score threshold and detections per image, and the RPN's
    test-time proposals (before and after NMS; ``None`` keeps them)."""
    heads, rpn = model.roi_heads, model.rpn
    heads.score_thresh = float(score_threshold)
    heads.detections_per_img = int(max_detections)
    if proposals is not None:
        rpn._pre_nms_top_n["testing"] = int(proposals)
        rpn._post_nms_top_n["testing"] = int(proposals)


def check_fixed_settings(
    path,
    config,
    exported_proposals: int,
    score_threshold: float,
    max_detections: int,
    proposals: int | None,
    error: type[Exception],
) -> None:
    """For an export whose graph fixes the score threshold and detections (``config``, its ModelConfig) and
    the proposals: raise ``error`` for a lower threshold or more detections than the graph keeps (the
    Predictor filters a higher threshold and fewer detections itself), warn for other proposals."""
    if score_threshold < config.score_threshold:
        raise error(
            f"{path} keeps scores >= {config.score_threshold} only; a score threshold of "
            f"{score_threshold} needs a checkpoint or an export with a lower threshold"
        )
    if max_detections > config.detections_per_image:
        raise error(
            f"{path} returns at most {config.detections_per_image} detections per image;"
            f" {max_detections} were asked for"
        )
    if proposals is not None and proposals != exported_proposals:
        warnings.warn(
            f"{path} was exported with {exported_proposals} proposals; {proposals} ignored", stacklevel=3
        )


def prepare_image(image: np.ndarray, image_size: int, resize: str) -> np.ndarray:
    """Resize an RGB uint8 ``(H, W, 3)`` image as training did and normalise it: float32 ``(3, h, w)``.

    ``"keep"``: longest side = ``image_size`` (``h = floor(H * s)``, ``w = floor(W * s)``,
    ``s = image_size / max(H, W)``, torchvision's rounding); ``"square"``: ``image_size x image_size``.
    Bilinear resampling with OpenCV, as the training pipeline (albumentations) resizes.
    """
    import cv2

    height, width = image.shape[:2]
    if resize == "square":
        new_h = new_w = image_size
    else:
        scale = image_size / max(height, width)
        new_h, new_w = max(1, int(height * scale)), max(1, int(width * scale))
    if (new_h, new_w) != (height, width):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    x = image.astype(np.float32)
    x *= 1.0 / (255.0 * IMAGE_STD)
    x -= IMAGE_MEAN / IMAGE_STD
    return np.ascontiguousarray(x.transpose(2, 0, 1))  # (3, h, w)


def scale_boxes(boxes: torch.Tensor, resized: tuple[int, int], original: tuple[int, int]) -> torch.Tensor:
    """Boxes ``(N, 4)`` xyxy from the resized image's pixels to the original's (torchvision's arithmetic)."""
    ratio_h = torch.tensor(original[0], dtype=torch.float32) / torch.tensor(resized[0], dtype=torch.float32)
    ratio_w = torch.tensor(original[1], dtype=torch.float32) / torch.tensor(resized[1], dtype=torch.float32)
    x0, y0, x1, y1 = boxes.unbind(1)
    return torch.stack((x0 * ratio_w, y0 * ratio_h, x1 * ratio_w, y1 * ratio_h), dim=1)


def paste_masks(
    mask_probs: torch.Tensor, boxes: torch.Tensor, height: int, width: int, threshold: float
) -> tuple[list[np.ndarray], np.ndarray]:
    """Map ``(N, M, M)`` mask probabilities over boxes ``(N, 4)`` (original pixels) onto the image, per box.

    Each mask is padded by one pixel, its box grown by ``(M + 2) / M`` and truncated to integers, the mask
    resized bilinearly to the box and thresholded (``>= threshold``): torchvision's ``paste_masks_in_image``
    followed by a threshold, without the full-size canvas.

    Returns:
        ``(crops, origins)``: N bool arrays ``(h_i, w_i)`` (the part of each grown box inside the image) and
        ``(N, 2)`` int64 ``(y0, x0)`` of each crop.
    """
    n, m = mask_probs.shape[0], mask_probs.shape[-1]
    padded = F.pad(mask_probs, (1, 1, 1, 1))  # (N, M+2, M+2)
    scale = (m + 2) / m
    half_w = (boxes[:, 2] - boxes[:, 0]) * 0.5 * scale
    half_h = (boxes[:, 3] - boxes[:, 1]) * 0.5 * scale
    center_x = (boxes[:, 2] + boxes[:, 0]) * 0.5
    center_y = (boxes[:, 3] + boxes[:, 1]) * 0.5
    grown = torch.stack((center_x - half_w, center_y - half_h, center_x + half_w, center_y + half_h), 1)
    grown = grown.to(torch.int64).tolist()  # truncation toward zero, as torchvision
    crops, origins = [], np.zeros((n, 2), dtype=np.int64)
    for i, (x0, y0, x1, y1) in enumerate(grown):
        w, h = max(x1 - x0 + 1, 1), max(y1 - y0 + 1, 1)
        ya, yb = max(y0, 0), min(y1 + 1, height)
        xa, xb = max(x0, 0), min(x1 + 1, width)
        if ya >= yb or xa >= xb:
            crops.append(np.zeros((0, 0), dtype=bool))
            continue
        resized = F.interpolate(padded[i][None, None], size=(h, w), mode="bilinear", align_corners=False)[
            0, 0
        ]
        crops.append((resized[ya - y0 : yb - y0, xa - x0 : xb - x0] >= threshold).numpy())
        origins[i] = (ya, xa)
    return crops, origins
