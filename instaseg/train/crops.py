"""Training on random crops at native resolution (``train --crop SIZE``), for large images with small objects.

Shrinking a 4000x3000 photo to the model's 1024 (or 256) pixels makes a 20-pixel object 5 (or 1) pixels
wide: too small for the network. With a crop size, each training sample is a ``crop x crop`` window of the
image at its own resolution instead (padded with black where the image is smaller), so the model learns the
objects at the pixel size that tiled prediction (``predict --tile``) shows it; the model's ``image_size`` is
the crop size and its ``ModelConfig.crop_size`` records the choice.

- :func:`crop_window` picks the window: most crops (:data:`OBJECT_CENTRED`) hold a randomly chosen object's
  centre, the others are anywhere (background is learned too); a 4000x3000 image with a few dozen objects
  would otherwise give mostly empty crops.
- Instances cut by the window keep their clipped mask when at least :data:`MIN_VISIBLE` of their pixels are
  inside, and are dropped otherwise (a sliver is not a recognisable object); boxes are recomputed from the
  clipped masks (:func:`~instaseg.train.data.arrays_to_sample`).
- :func:`crops_per_image` draws several crops of a large image per epoch, so that an epoch sees about a
  quarter of each image's area and ``--epochs`` keeps its meaning.
- :func:`suggest_crop` says whether the objects call for crops at all (``train --crop auto``).
"""

from __future__ import annotations

import math

import numpy as np

from ..core import Record

# An instance cut by the crop is kept when at least this share of its mask is inside the crop.
MIN_VISIBLE = 0.25
# Share of crops chosen to hold a random object's centre (the rest are uniform over the image).
OBJECT_CENTRED = 0.8
# The network should see the small objects (10th percentile) at least this wide; the same floor as the
# training recipe's (instaseg.train.recipe.MIN_OBJECT_PIXELS): the FPN's finest stride is 4 px.
MIN_OBJECT_PIXELS = 14.0


def crop_window(
    height: int,
    width: int,
    crop: int,
    boxes: np.ndarray,
    rng: np.random.Generator,
    object_centred: float = OBJECT_CENTRED,
) -> tuple[int, int, int, int]:
    """A random window ``(y0, x0, y1, x1)`` of ``min(crop, height) x min(crop, width)`` pixels.

    With probability ``object_centred`` (when ``boxes``, ``(N, 4)`` xyxy, is not empty) the window holds
    the centre of a box drawn at random, at a uniform position among those that do; otherwise it is
    uniform over the image.
    """
    h, w = min(crop, height), min(crop, width)
    if len(boxes) and rng.random() < object_centred:
        x_min, y_min, x_max, y_max = boxes[rng.integers(len(boxes))]
        cy, cx = int((y_min + y_max) / 2), int((x_min + x_max) / 2)
        cy, cx = min(max(cy, 0), height - 1), min(max(cx, 0), width - 1)
        y0 = int(rng.integers(max(0, cy - h + 1), min(cy, height - h) + 1))
        x0 = int(rng.integers(max(0, cx - w + 1), min(cx, width - w) + 1))
    else:
        y0, x0 = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
    return y0, x0, y0 + h, x0 + w


def crops_per_image(height: int, width: int, crop: int) -> int:
    """Crops of one image per epoch: a quarter of its area in crops, at least one (1 for an image no larger
    than twice the crop side)."""
    return max(1, math.ceil(height * width / (4 * crop * crop)))


def suggest_crop(
    records: list[Record], image_size: int, min_object_pixels: float = MIN_OBJECT_PIXELS
) -> tuple[int | None, str]:
    """``(crop size or None, reason)``: whether training at ``image_size`` should use crops at native size.

    Crops when the images are larger than ``image_size`` and shrinking them to it would make the small
    objects (10th percentile of the square root of the mask areas) narrower than ``min_object_pixels``.
    The crop is ``image_size``, or larger so that the large objects (90th percentile) fit twice, a
    multiple of 32, at most the images' longest side. No pixel is read: sizes come from the annotations.
    """
    sizes = [math.sqrt(max(a.area, 1.0)) for r in records for a in r.annotations if not a.iscrowd]
    if not sizes:
        return None, "no objects to measure: whole images"
    longest = float(np.median([max(r.width, r.height) for r in records]))
    p10, p90 = (float(v) for v in np.percentile(sizes, [10, 90]))
    shrunk = p10 * min(1.0, image_size / longest)
    if longest <= image_size or shrunk >= min_object_pixels:
        return None, (
            f"whole images: at {image_size} px the small objects are {shrunk:.0f} px wide "
            f"(>= {min_object_pixels:g}) or the images ({longest:.0f} px) are not larger"
        )
    crop = max(image_size, 32 * math.ceil(2 * p90 / 32))
    crop = min(crop, max(32, 32 * math.floor(longest / 32)))
    return crop, (
        f"crops of {crop} px at native size: the images ({longest:.0f} px) resized to {image_size} px would "
        f"make the small objects {shrunk:.1f} px wide (< {min_object_pixels:g}); at native size they are "
        f"{p10:.0f} px"
    )
