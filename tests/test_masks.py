"""Mask storage and conversions: crops == dense, RLE straight from crops, one box rasterisation everywhere."""

from __future__ import annotations

import numpy as np
import pytest

from instaseg.core import Annotation, ClassMap, Instances, Record
from instaseg.formats.coco_export import records_to_coco
from instaseg.masks import Masks, box_pixels, box_to_mask, box_to_rle, crop_to_rle, mask_to_rle, rle_to_mask


def random_crops(rng, n: int, height: int, width: int):
    crops, origins, dense = [], [], np.zeros((n, height, width), bool)
    for i in range(n):
        h, w = rng.integers(0, height + 1), rng.integers(0, width + 1)
        if rng.random() < 0.3:
            h = height  # full-height crops make runs that continue into the next column
        y0, x0 = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
        crop = rng.random((h, w)) < rng.random()
        crops.append(crop)
        origins.append((y0, x0))
        dense[i, y0 : y0 + h, x0 : x0 + w] = crop
    return crops, origins, dense


@pytest.mark.parametrize("seed", range(5))
def test_crops_and_dense_storage_agree(seed):
    rng = np.random.default_rng(seed)
    height, width = int(rng.integers(1, 40)), int(rng.integers(1, 40))
    crops, origins, dense = random_crops(rng, 30, height, width)
    cropped, full = Masks.from_crops(crops, origins, height, width), Masks.from_dense(dense)
    np.testing.assert_array_equal(cropped.to_dense(), dense)
    np.testing.assert_array_equal(cropped.areas(), full.areas())
    for i in range(30):
        assert cropped.rle(i) == full.rle(i) == mask_to_rle(dense[i])
        np.testing.assert_array_equal(cropped.mask(i), dense[i])
        y0, x0, crop = full.crop(i)  # the tight crop of a dense mask holds all of it
        assert crop.sum() == dense[i].sum()
    keep = rng.random(30) < 0.5
    np.testing.assert_array_equal(cropped[keep].to_dense(), dense[keep])
    np.testing.assert_array_equal(cropped[[3, 1]].to_dense(), dense[[3, 1]])


def test_crop_rle_of_a_full_image_mask():
    crop = np.ones((5, 7), bool)
    assert crop_to_rle(crop, 0, 0, 5, 7) == mask_to_rle(crop)
    assert crop_to_rle(np.zeros((0, 0), bool), 0, 0, 5, 7) == mask_to_rle(np.zeros((5, 7), bool))


def test_masks_validate_their_crops():
    with pytest.raises(ValueError, match="leaves the 4x4 image"):
        Masks.from_crops([np.ones((3, 3), bool)], [(2, 2)], 4, 4)
    with pytest.raises(ValueError, match="bool"):
        Masks.from_crops([np.ones((2, 2), np.uint8)], [(0, 0)], 4, 4)
    with pytest.raises(ValueError, match="image_size"):
        Instances([[0, 0, 1, 1]], [1], np.zeros((1, 4, 4), bool), image_size=(5, 5))


@pytest.mark.parametrize(
    "box, pixels",
    [
        ((2.0, 3.0, 6.0, 8.0), (2, 3, 6, 8)),
        ((1.4, 1.6, 5.5, 7.49), (1, 2, 6, 7)),  # nearest pixel edge (Python rounds .5 to even)
        ((-3.0, -1.0, 4.0, 30.0), (0, 0, 4, 10)),  # clipped to the 12x10 image
        ((15.0, 2.0, 18.0, 5.0), (12, 2, 12, 5)),  # outside: empty
    ],
)
def test_box_pixels(box, pixels):
    assert box_pixels(box, 10, 12) == pixels
    mask = box_to_mask(box, 10, 12)
    x0, y0, x1, y1 = pixels
    assert mask.sum() == (x1 - x0) * (y1 - y0) and mask[y0:y1, x0:x1].all()
    assert box_to_rle(box, 10, 12) == mask_to_rle(mask)


def test_training_evaluation_and_import_rasterise_a_box_only_object_identically(tmp_path):
    """A box-only object among masked ones: the importer's instances, training's targets and evaluation's
    ground truth all hold the same filled box."""
    from PIL import Image

    from instaseg.train.data import record_to_arrays

    height, width = 20, 30
    Image.new("RGB", (width, height)).save(tmp_path / "a.png")
    mask = np.zeros((height, width), bool)
    mask[2:6, 3:9] = True
    box = (10.4, 4.6, 21.5, 17.2)  # fractional: the rounding rule decides
    record = Record(
        str(tmp_path / "a.png"),
        "a.png",
        width,
        height,
        [Annotation(1, (3, 2, 9, 6), mask_to_rle(mask)), Annotation(1, box)],
        image_id=1,
    )
    expected = box_to_mask(box, height, width)
    imported = record.instances().mask(1)
    _, trained, _ = record_to_arrays(record)
    coco = records_to_coco([record], ClassMap(("x",)))
    evaluated = rle_to_mask(coco["annotations"][1]["segmentation"])
    for m in (imported, trained[1].astype(bool), evaluated):
        np.testing.assert_array_equal(m, expected)
    assert coco["annotations"][1]["area"] == expected.sum()


def test_a_dataset_of_boxes_only_exports_empty_segmentations():
    record = Record("a.png", "a.png", 30, 20, [Annotation(1, (1.0, 2.0, 5.0, 9.0))], image_id=7)
    coco = records_to_coco([record], ClassMap(("x",)))
    assert coco["images"][0]["id"] == 7  # ids are the records' own
    (annotation,) = coco["annotations"]
    assert (
        annotation["segmentation"] == [] and annotation["area"] == 28 and annotation["bbox"] == [1, 2, 4, 7]
    )
