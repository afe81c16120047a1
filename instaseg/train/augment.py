"""Augmentation pipelines (albumentations 2.x) for training and for validation/test.

Pipelines take and return RGB uint8 ``(H, W, 3)`` images and uint8 masks ``(N, H, W)`` (geometric transforms
are applied to the masks with nearest-neighbour interpolation). They never normalise: torchvision's
``GeneralizedRCNNTransform`` inside the model normalises with the ImageNet mean/std, and doing it twice
would be a bug.

Randomness: :func:`reseed` gives every transform of a pipeline its own seed derived from
``(seed, epoch, index)``, so a sample's augmentation does not depend on worker processes or on the order
samples are drawn in, and a resumed run sees the same augmentations as an uninterrupted one.
"""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np

from ..model.config import RESIZE_MODES, check_choice
from .config import AUGMENTATIONS


def scale_jitter(low: float = 0.75, high: float = 1.33) -> A.BasicTransform:
    """Zoom of the content by ``low..high`` keeping the image size (nearest-neighbour for masks, black
    borders), applied to half the samples, zooming in as often as out."""
    return A.Affine(
        scale=(low, high), keep_ratio=True, balanced_scale=True, border_mode=cv2.BORDER_CONSTANT, p=0.5
    )


def resize_transform(image_size: int, resize: str) -> A.BasicTransform:
    """Longest side to ``image_size`` keeping the aspect ratio (``"keep"``), or ``image_size`` square."""
    check_choice("resize mode", resize, RESIZE_MODES)
    if resize == "square":
        return A.Resize(
            image_size, image_size, interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST
        )
    return A.LongestMaxSize(
        max_size=image_size, interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST
    )


def build_train_transform(image_size: int, resize: str = "keep", augment: str = "default") -> A.Compose:
    """The training pipeline.

    ``"default"`` is the seed's: horizontal flip, vertical flip, random brightness/contrast, then one of
    JPEG compression / random gamma / blur / histogram equalisation, then the resize. ``"scale-jitter"``
    adds, after the resize, a zoom of the content by 0.75..1.33 (half the samples; as likely in as out)
    that keeps the image size: zooming in cuts objects at the border (empty ones are dropped later),
    zooming out pads with black. ``"copy-paste"``: the default pipeline here; the dataset then pastes
    objects of another sample (:mod:`instaseg.train.copy_paste`). ``"none"``: resize only.
    """
    check_choice("augmentation", augment, AUGMENTATIONS)
    if augment == "none":
        return build_eval_transform(image_size, resize)
    jitter = [scale_jitter()] if augment == "scale-jitter" else []
    return A.Compose(
        [
            A.HorizontalFlip(p=0.5),
            A.VerticalFlip(p=0.5),
            A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.5),
            A.OneOf(
                [
                    A.ImageCompression(compression_type="jpeg", quality_range=(50, 95)),
                    A.RandomGamma(gamma_limit=(80, 120)),
                    A.Blur(blur_limit=(3, 5)),
                    A.Equalize(mode="cv", by_channels=True),
                ],
                p=0.5,
            ),
            resize_transform(image_size, resize),
            *jitter,
        ]
    )


def build_eval_transform(image_size: int, resize: str = "keep") -> A.Compose:
    """Validation/test pipeline: the resize only, no randomness."""
    return A.Compose([resize_transform(image_size, resize)])


def _nodes(transform) -> list:
    """The transform and all nested transforms, depth first."""
    nodes = [transform]
    for child in getattr(transform, "transforms", []):
        nodes.extend(_nodes(child))
    return nodes


def reseed(pipeline: A.Compose, seed: int, epoch: int, index: int) -> None:
    """Seed every transform of ``pipeline`` with a distinct value derived from ``(seed, epoch, index)``.

    Distinct per transform on purpose: albumentations' ``Compose.set_random_seed`` gives all children the
    same seed, which makes e.g. the horizontal and the vertical flip always fire together.
    """
    nodes = _nodes(pipeline)
    states = np.random.SeedSequence([seed, epoch, index]).generate_state(len(nodes))
    # Parents first: BaseCompose.set_random_seed overwrites its children, which are re-seeded after it.
    for node, state in zip(nodes, states, strict=True):
        node.set_random_seed(int(state))
