"""Copy-paste augmentation: pasted objects bring their pixels and masks, covered objects lose theirs."""

from __future__ import annotations

import numpy as np

from instaseg.train.augment import build_train_transform
from instaseg.train.copy_paste import paste_objects
from instaseg.train.data import DetectionDataset
from tests.train.factories import dsb_records, rectangles


def test_pasted_objects_cover_the_sample_and_keep_their_own_pixels():
    image = np.full((40, 50, 3), 10, np.uint8)
    masks = rectangles(40, 50, [(0, 0, 20, 20), (30, 30, 40, 40)]).astype(np.uint8)
    source = np.full((30, 30, 3), 200, np.uint8)  # smaller: placed at a random offset
    source_masks = rectangles(30, 30, [(10, 10, 30, 30)]).astype(np.uint8)
    out, out_masks, out_labels = paste_objects(
        image, masks, np.array([1, 2]), source, source_masks, np.array([3]), np.random.default_rng(0)
    )
    assert out_masks.shape == (3, 40, 50) and out_labels.tolist() == [1, 2, 3]
    pasted = out_masks[2].astype(bool)
    assert pasted.sum() == 400  # the 20x20 object fits wholly (the source lies inside the sample)
    assert (out[pasted] == 200).all() and (out[~pasted] == 10).all()
    assert not (out_masks[:2].astype(bool) & pasted).any()  # the sample's objects lose the covered pixels
    assert (out_masks[:2].astype(bool) | pasted).sum() >= masks.astype(bool).sum()
    assert (image == 10).all() and masks.sum() == 500  # the arguments are left as they were
    empty = paste_objects(image, masks, np.array([1, 2]), source, source_masks[:0], np.array([]), None)
    assert empty[1] is masks


def test_the_dataset_pastes_objects_of_other_real_images(tmp_path):
    class_map, records = dsb_records()
    records = records[:4]
    plain = DetectionDataset(records, build_train_transform(128, "keep", "none"), seed=3)
    pasting = DetectionDataset(records, build_train_transform(128, "keep", "none"), seed=3, copy_paste=True)
    more = 0
    for index in range(len(records)):
        _, before = plain[index]
        image, after = pasting[index]
        assert after["masks"].shape[1:] == image.shape[1:] and len(after["boxes"]) == len(after["masks"])
        assert (after["masks"].flatten(1).sum(1) > 0).all()  # wholly covered objects were dropped
        more += len(after["labels"]) > len(before["labels"])
    assert more >= 3  # most samples gained pasted nuclei
    again = pasting[0][1]["masks"]
    assert (again == pasting[0][1]["masks"]).all()  # the same (seed, epoch, index): the same paste
