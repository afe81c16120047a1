"""Core types: validation, indexing, RLE/polygon converters."""

from __future__ import annotations

import numpy as np
import pytest

from instaseg.core import Annotation, ClassMap, Instances, Record
from instaseg.masks import mask_to_polygons, mask_to_rle, masks_to_boxes, polygons_to_rle, rle_to_mask


def test_class_map_labels_are_one_based():
    cm = ClassMap(("cat", "dog"))
    assert cm.label("dog") == 2 and cm.name(1) == "cat" and cm.name(0) == "background"
    with pytest.raises(KeyError, match="known classes: cat, dog"):
        cm.label("cow")
    with pytest.raises(ValueError, match="unique"):
        ClassMap(("a", "a"))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"boxes": np.zeros((2, 4)), "labels": [1]}, "2 boxes but 1 labels"),
        ({"boxes": np.zeros((1, 4)), "labels": [0]}, "labels must be 1..K"),
        ({"boxes": [[5, 5, 1, 1]], "labels": [1]}, "x_max >= x_min"),
        ({"boxes": [[0, 0, np.nan, 1]], "labels": [1]}, "NaN"),
        ({"boxes": np.zeros((1, 4)), "labels": [1], "masks": np.zeros((2, 3, 3))}, "1 boxes but 2 masks"),
        ({"boxes": np.zeros((1, 4)), "labels": [1], "scores": [0.1, 0.2]}, "scores"),
    ],
)
def test_instances_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Instances(**kwargs)


def test_instances_boolean_and_integer_indexing():
    masks = np.zeros((3, 4, 4), bool)
    masks[1, 1:3, 1:3] = True
    inst = Instances(np.arange(12).reshape(3, 4) * [1, 1, 2, 2], [1, 2, 3], masks, [0.9, 0.5, 0.1])
    kept = inst[inst.scores > 0.3]
    assert (
        len(kept) == 2 and kept.labels.tolist() == [1, 2] and kept.mask(1).sum() == 4 and kept.masks.is_dense
    )
    assert inst[[2]].labels.tolist() == [3]


def test_masks_to_boxes_is_tight_and_exclusive():
    masks = np.zeros((2, 10, 10), bool)
    masks[0, 2:5, 3:9] = True
    assert masks_to_boxes(masks).tolist() == [[3, 2, 9, 5], [0, 0, 0, 0]]


def test_rle_round_trip_and_polygons_rasterise():
    rng = np.random.default_rng(0)
    mask = rng.random((17, 23)) > 0.5
    assert (rle_to_mask(mask_to_rle(mask)) == mask).all()
    square = rle_to_mask(polygons_to_rle([[2, 2, 6, 2, 6, 6, 2, 6]], 10, 10))
    assert square.sum() == 16 and square[2:6, 2:6].all()


def test_mask_to_polygons_traces_pixel_edges_exactly():
    mask = np.zeros((20, 20), bool)
    mask[3:8, 4:6] = True
    mask[10:18, 10:19] = True
    mask[12, 19] = True
    polygons = mask_to_polygons(mask)
    assert len(polygons) == 2
    assert (rle_to_mask(polygons_to_rle(polygons, 20, 20)) == mask).all()


def test_record_instances_decodes_masks_and_skips_crowd_unless_asked():
    mask = np.zeros((6, 8), bool)
    mask[1:3, 2:5] = True
    record = Record(
        "x.png",
        "x.png",
        8,
        6,
        [
            Annotation(1, (2, 1, 5, 3), mask_to_rle(mask)),
            Annotation(2, (0, 0, 8, 6), mask_to_rle(np.ones((6, 8), bool)), iscrowd=True),
            Annotation(1, (4, 4, 6, 6)),  # box only: filled as mask when others have masks
        ],
    )
    inst = record.instances()
    assert len(inst) == 2 and (inst.mask(0) == mask).all() and inst.mask(1).sum() == 4
    assert len(record.instances(crowd=True)) == 3
    assert record.annotations[0].area == 6 and record.annotations[2].area == 4
