"""Copy-paste augmentation (``train --augment copy-paste``; Ghiasi et al. 2021, "Simple Copy-Paste is a
Strong Data Augmentation Method for Instance Segmentation"): objects of another training image, with their
masks, pasted onto the sample; the sample's own objects lose the pixels the pasted ones now cover.

Both images have been through the training pipeline (flips, colour, resize) with their own random draws,
so the pasted objects arrive at a random orientation and colour. The paper finds the simple paste (no
blending of the edges) as good as a blended one, and that is what :func:`paste_objects` does.
"""

from __future__ import annotations

import numpy as np

# Each object of the source image is pasted with this probability (at least one is).
PASTE_PROBABILITY = 0.5


def _place(source: np.ndarray, height: int, width: int, dy: int, dx: int) -> np.ndarray:
    """``source`` ``(h, w, ...)`` moved by ``(dy, dx)`` into a zero array ``(height, width, ...)``,
    cut where it overhangs."""
    out = np.zeros((height, width, *source.shape[2:]), dtype=source.dtype)
    h, w = source.shape[:2]
    y0, x0 = max(0, dy), max(0, dx)
    y1, x1 = min(height, dy + h), min(width, dx + w)
    if y1 > y0 and x1 > x0:
        out[y0:y1, x0:x1] = source[y0 - dy : y1 - dy, x0 - dx : x1 - dx]
    return out


def paste_objects(
    image: np.ndarray,
    masks: np.ndarray,
    labels: np.ndarray,
    source_image: np.ndarray,
    source_masks: np.ndarray,
    source_labels: np.ndarray,
    rng: np.random.Generator,
    probability: float = PASTE_PROBABILITY,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Paste a random subset of the source's objects onto the sample. Returns new arrays (no argument is
    changed).

    Args:
        image, masks, labels: the sample: RGB uint8 ``(H, W, 3)``, uint8 masks ``(N, H, W)``, int64 ``(N,)``.
        source_image, source_masks, source_labels: another sample, ``(h, w, 3)``, ``(M, h, w)``, ``(M,)``;
            a size other than the sample's is placed at a random offset (cut where it overhangs).
        rng: the random draws (which objects, where).
        probability: the chance each source object is pasted (at least one is, when there are any).

    Returns:
        ``(image, masks, labels)``: ``(H, W, 3)``; the sample's masks minus the pasted pixels followed by
        the pasted objects' masks ``(N + K, H, W)`` (an object now wholly covered has an empty mask, which
        :func:`~instaseg.train.data.arrays_to_sample` drops), and their labels.
    """
    height, width = image.shape[:2]
    if len(source_masks) == 0:
        return image, masks, labels
    chosen = rng.random(len(source_masks)) < probability
    if not chosen.any():
        chosen[rng.integers(len(source_masks))] = True
    h, w = source_image.shape[:2]
    dy = int(rng.integers(min(0, height - h), max(0, height - h) + 1))
    dx = int(rng.integers(min(0, width - w), max(0, width - w) + 1))
    placed = _place(source_masks[chosen].transpose(1, 2, 0), height, width, dy, dx)  # (H, W, K)
    pasted_masks = np.ascontiguousarray(placed.transpose(2, 0, 1))  # (K, H, W)
    visible = pasted_masks.any(axis=(1, 2))
    pasted_masks, pasted_labels = pasted_masks[visible], source_labels[chosen][visible]
    if len(pasted_masks) == 0:
        return image, masks, labels
    cover = pasted_masks.any(axis=0)  # (H, W) pixels now showing a pasted object
    out_image = image.copy()
    out_image[cover] = _place(source_image, height, width, dy, dx)[cover]
    kept = masks * ~cover[None]  # the sample's objects behind the pasted ones
    out_masks = np.concatenate([kept.astype(np.uint8), pasted_masks.astype(np.uint8)])
    out_labels = np.concatenate([labels, pasted_labels]).astype(np.int64)
    return out_image, out_masks, out_labels
