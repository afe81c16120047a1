"""Records -> torch samples: targets match the masks after augmentation; crowd, vanished and empty cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from instaseg.masks import masks_to_boxes
from instaseg.train.augment import build_eval_transform, build_train_transform, reseed
from instaseg.train.data import DetectionDataset, collate, make_loader
from tests.train.factories import dsb_records, rectangles, synthetic_record


def check_target(image: torch.Tensor, target: dict, num_classes: int) -> None:
    n = len(target["boxes"])
    assert image.dtype == torch.float32 and image.ndim == 3 and image.shape[0] == 3
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    assert target["boxes"].dtype == torch.float32 and target["boxes"].shape == (n, 4)
    assert target["labels"].dtype == torch.int64 and target["labels"].shape == (n,)
    assert target["masks"].dtype == torch.uint8 and target["masks"].shape == (n, *image.shape[1:])
    assert target["iscrowd"].tolist() == [0] * n
    if n:
        assert 1 <= int(target["labels"].min()) and int(target["labels"].max()) <= num_classes
        masks = target["masks"].numpy().astype(bool)
        assert masks.reshape(n, -1).any(axis=1).all(), "an empty mask survived"
        np.testing.assert_array_equal(target["boxes"].numpy(), masks_to_boxes(masks))
        np.testing.assert_array_equal(target["area"].numpy(), masks.reshape(n, -1).sum(axis=1))
        boxes = target["boxes"]
        assert bool(((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])).all())


@pytest.mark.parametrize("augment", ["default", "scale-jitter"])
@pytest.mark.parametrize("resize, size, expected_hw", [("keep", 40, (30, 40)), ("square", 48, (48, 48))])
def test_augmented_targets_follow_the_image(tmp_path, resize, size, expected_hw, augment):
    masks = rectangles(60, 80, [(5, 5, 30, 20), (40, 30, 70, 55), (0, 50, 12, 60)])
    record = synthetic_record(tmp_path, "a.png", masks, [1, 2, 1])
    dataset = DetectionDataset([record], build_train_transform(size, resize, augment), seed=3)
    flipped = 0
    for epoch in range(12):
        dataset.set_epoch(epoch)
        image, target = dataset[0]
        assert tuple(image.shape[1:]) == expected_hw
        check_target(image, target, 2)
        # Each instance is painted bright on a dark image: its mask must cover bright pixels (same transform).
        brightness = image.max(dim=0).values
        for mask in target["masks"].bool():
            assert float(brightness[mask].float().mean()) > 0.3
        # Instance 0 starts top-left; after a flip its box centre moves.
        x0, y0, x1, y1 = target["boxes"][0].tolist()
        flipped += (x0 + x1) / 2 > expected_hw[1] / 2 or (y0 + y1) / 2 > expected_hw[0] / 2
    assert 0 < flipped < 12, "flips never or always applied"


def test_scale_jitter_zooms_in_and_out_at_the_same_image_size(tmp_path):
    # one centred square: its area at the model's input is 16x16 without zoom
    record = synthetic_record(tmp_path, "a.png", rectangles(64, 64, [(24, 24, 40, 40)]), [1])
    dataset = DetectionDataset([record], build_train_transform(64, "keep", "scale-jitter"), seed=0)
    areas = []
    for epoch in range(40):
        dataset.set_epoch(epoch)
        image, target = dataset[0]
        assert tuple(image.shape[1:]) == (64, 64)
        check_target(image, target, 1)
        areas.append(float(target["area"][0]))
    assert min(areas) < 0.8 * 256 and max(areas) > 1.25 * 256, areas  # zoomed out and in (0.75..1.33 linear)
    assert sum(a == 256 for a in areas) >= 8, "every sample zoomed: the jitter should apply to about half"


def test_same_seed_same_augmentation():
    pipeline = build_train_transform(32, "keep", "default")
    image = np.random.default_rng(0).integers(0, 255, (24, 32, 3), dtype=np.uint8)
    reseed(pipeline, 0, 0, 7)
    first = pipeline(image=image)["image"]
    reseed(pipeline, 0, 0, 7)
    np.testing.assert_array_equal(first, pipeline(image=image)["image"])
    outputs = set()
    for epoch in range(8):
        reseed(pipeline, 0, epoch, 7)
        outputs.add(pipeline(image=image)["image"].tobytes())
    assert len(outputs) > 2, "epochs do not change the augmentation"


def test_flip_combinations_all_occur():
    pipeline = build_train_transform(8, "keep", "default")
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    image[:2, :2] = 255  # marker in the top-left corner
    corners = set()
    for index in range(60):
        reseed(pipeline, 1, 0, index)
        out = pipeline(image=image)["image"][:, :, 0]
        row, col = np.unravel_index(np.argmax(out), out.shape)
        corners.add((int(row) >= 4, int(col) >= 4))
    # horizontal and vertical flips are seeded apart (albumentations' own seeding would tie them together)
    assert corners == {(False, False), (False, True), (True, False), (True, True)}


def test_vanished_crowd_and_empty(tmp_path):
    masks = rectangles(64, 64, [(10, 10, 40, 40), (63, 63, 64, 64), (0, 0, 64, 20)])
    record = synthetic_record(tmp_path, "b.png", masks, [1, 1, 1], crowd=[False, False, True])
    # resizing 64 -> 16 makes the 1-pixel instance vanish; the crowd region is never a target
    image, target = DetectionDataset([record], build_eval_transform(16, "keep"))[0]
    check_target(image, target, 1)
    assert len(target["boxes"]) == 1
    np.testing.assert_allclose(target["boxes"][0].numpy(), [2.5, 2.5, 10, 10], atol=1)  # (10, 10, 40, 40) / 4

    empty = synthetic_record(tmp_path, "c.png", np.zeros((0, 50, 70), bool), [], image_id=2)
    image, target = DetectionDataset([empty], build_train_transform(35, "keep"))[0]
    assert tuple(image.shape) == (3, 25, 35)
    assert target["boxes"].shape == (0, 4) and target["masks"].shape == (0, 25, 35)
    assert int(target["image_id"]) == 2


def test_dsb_samples_through_the_loader():
    class_map, records = dsb_records()
    dataset = DetectionDataset(records[:4], build_train_transform(128, "keep"), seed=0)
    images, targets = next(iter(make_loader(dataset, 2, True, 0, epoch=1, seed=0)))
    assert len(images) == 2
    for image, target in zip(images, targets, strict=True):
        assert tuple(image.shape) == (3, 128, 128)
        check_target(image, target, class_map.num_classes)
        assert len(target["boxes"]) > 3  # nuclei survive the 2x downscale
    # same epoch, same seed: the same order and augmentations
    again = next(iter(make_loader(dataset, 2, True, 0, epoch=1, seed=0)))
    assert [int(t["image_id"]) for t in targets] == [int(t["image_id"]) for t in again[1]]
    torch.testing.assert_close(images[0], again[0][0])
    assert collate([dataset[0]])[0][0].shape == (3, 128, 128)
