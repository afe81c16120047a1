"""Training on crops at native resolution: RLE decoded inside a window, instances cut by the crop (clipped,
slivers dropped), object-centred windows, the crop suggestion, and ``train --crop`` end to end."""

from __future__ import annotations

import json

import numpy as np
import torch
from PIL import Image

from instaseg.cli import main
from instaseg.core import Annotation, ClassMap, Record
from instaseg.formats.coco_export import records_to_coco
from instaseg.masks import mask_to_rle, masks_to_boxes, rle_to_crop, rle_to_mask
from instaseg.train.augment import build_eval_transform, build_train_transform
from instaseg.train.crops import MIN_VISIBLE, crop_window, crops_per_image, suggest_crop
from instaseg.train.data import DetectionDataset, record_to_crop_arrays
from tests.train.factories import DSB
from tests.train.test_data import check_target


def _dsb_image_and_masks(index: int) -> tuple[np.ndarray, np.ndarray]:
    """A real DSB image RGB ``(256, 256, 3)`` and its nucleus masks bool ``(N, 256, 256)``."""
    folder = sorted((DSB / "stage1_train").iterdir())[index]
    image = np.asarray(Image.open(next((folder / "images").glob("*.png"))).convert("RGB"))
    masks = np.array([np.asarray(Image.open(p)) > 0 for p in sorted((folder / "masks").glob("*.png"))])
    return image, masks


def canvas_record(folder, name: str, height: int, width: int, pastes, image_id: int = 1) -> Record:
    """A dark ``height x width`` canvas with real DSB images pasted at native size at ``pastes`` =
    ``[(dsb index, y, x), ...]``, their nuclei as annotations (COCO RLE at the canvas' size)."""
    canvas = np.full((height, width, 3), 3, dtype=np.uint8)
    annotations = []
    for index, y, x in pastes:
        image, masks = _dsb_image_and_masks(index)
        h, w = image.shape[:2]
        canvas[y : y + h, x : x + w] = image
        for mask in masks:
            full = np.zeros((height, width), dtype=bool)
            full[y : y + h, x : x + w] = mask
            box = tuple(float(v) for v in masks_to_boxes(full[None])[0])
            annotations.append(Annotation(label=1, box=box, rle=mask_to_rle(full)))
    path = folder / name
    Image.fromarray(canvas).save(path)
    return Record(str(path), name, width, height, annotations, image_id=image_id)


def test_rle_to_crop_equals_the_decoded_mask_cut():
    _, masks = _dsb_image_and_masks(0)
    tall = np.zeros((40, 30), dtype=bool)
    tall[:, 5:9] = True  # runs that continue from one column into the next
    tall[10:, 20:] = True
    rng = np.random.default_rng(0)
    for mask in [*masks[:12], tall, np.zeros((7, 5), bool), np.ones((7, 5), bool)]:
        rle = mask_to_rle(mask)
        full = rle_to_mask(rle)
        h, w = mask.shape
        for _ in range(6):
            y0, y1 = sorted(rng.integers(0, h + 1, 2))
            x0, x1 = sorted(rng.integers(0, w + 1, 2))
            np.testing.assert_array_equal(rle_to_crop(rle, y0, x0, y1, x1), full[y0:y1, x0:x1])
        np.testing.assert_array_equal(rle_to_crop(rle, 0, 0, h, w), full)


def test_a_crop_clips_masks_and_drops_slivers(tmp_path):
    record = canvas_record(tmp_path, "c.png", 500, 600, [(0, 100, 150)])
    window = (180, 230, 308, 358)  # 128 x 128, cuts many nuclei of the pasted image
    image, masks, labels = record_to_crop_arrays(record, window, 128)
    assert image.shape == (128, 128, 3) and masks.shape == (len(labels), 128, 128)
    canvas = np.asarray(Image.open(record.image).convert("RGB"))
    np.testing.assert_array_equal(image, canvas[180:308, 230:358])
    expected, clipped, slivers = [], 0, 0
    for a in record.annotations:
        part = rle_to_mask(a.rle)[180:308, 230:358]
        if part.sum() and part.sum() >= MIN_VISIBLE * a.area:
            expected.append(part)
            clipped += part.sum() < a.area
        elif part.sum():
            slivers += 1
    assert slivers >= 1 and clipped >= 1 and len(expected) >= 5
    np.testing.assert_array_equal(masks.astype(bool), np.array(expected))
    # A window at the canvas' corner smaller than the crop is padded with black and empty masks.
    image, masks, _ = record_to_crop_arrays(record, (400, 500, 500, 600), 128)
    assert image.shape == (128, 128, 3) and not image[100:].any() and not image[:, 100:].any()


def test_crop_windows_hold_the_chosen_object_and_stay_inside():
    rng = np.random.default_rng(0)
    boxes = np.array([[10, 20, 30, 40], [950, 700, 999, 749]], np.float32)
    held = 0
    for _ in range(200):
        y0, x0, y1, x1 = crop_window(750, 1000, 256, boxes, rng)
        assert (y1 - y0, x1 - x0) == (256, 256) and 0 <= y0 and y1 <= 750 and 0 <= x0 and x1 <= 1000
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        held += any(x0 <= cx < x1 and y0 <= cy < y1 for cx, cy in centres)
    assert 0.7 <= held / 200 <= 0.95  # 80 % object-centred, a few uniform ones hit an object too
    assert crop_window(100, 80, 256, boxes[:0], rng) == (0, 0, 100, 80)
    assert crops_per_image(3000, 4000, 256) == 46 and crops_per_image(256, 256, 256) == 1


def _records_like(width: int, height: int, object_side: float, count: int = 20) -> list[Record]:
    annotations = [Annotation(1, (0.0, 0.0, object_side, object_side)) for _ in range(10)]
    return [Record(None, f"{i}.jpg", width, height, list(annotations)) for i in range(count)]


def test_suggest_crop_only_when_shrinking_hides_the_objects():
    # DSB originals at 256 px: nothing is shrunk.
    assert suggest_crop(_records_like(256, 256, 12), 256)[0] is None
    # 4000x3000 photos of 12-px objects at 1024: 3 px wide -> crops of 1024 at native size.
    crop, reason = suggest_crop(_records_like(4000, 3000, 12), 1024)
    assert crop == 1024 and "3.1 px" in reason
    # Large objects stay visible when shrunk: whole images.
    assert suggest_crop(_records_like(4000, 3000, 400), 1024)[0] is None
    # Objects too big for the crop: a crop that holds them twice (multiple of 32).
    records = _records_like(4000, 3000, 12) + _records_like(4000, 3000, 300, count=1)
    assert suggest_crop(records, 256)[0] == 256
    assert suggest_crop(_records_like(4000, 3000, 40) + _records_like(4000, 3000, 300, 40), 256)[0] == 608
    assert suggest_crop([], 256)[0] is None


def test_crop_dataset_samples_are_consistent(tmp_path):
    record = canvas_record(tmp_path, "c.png", 600, 700, [(16, 40, 30), (20, 300, 400)])
    pipeline = build_train_transform(128, "keep", "default")
    dataset = DetectionDataset([record], pipeline, seed=1, crop=128)
    assert len(dataset) == crops_per_image(600, 700, 128) == 7
    with_objects = 0
    for epoch in range(3):
        dataset.set_epoch(epoch)
        for i in range(len(dataset)):
            image, target = dataset[i]
            assert tuple(image.shape) == (3, 128, 128)
            check_target(image, target, 1)
            with_objects += len(target["boxes"]) > 0
    assert with_objects >= 0.6 * 3 * len(dataset)
    fixed = DetectionDataset([record], build_eval_transform(128), seed=1, crop=128, random_crops=False)
    fixed.set_epoch(0)
    first = fixed[2][1]["boxes"]
    fixed.set_epoch(5)
    assert torch.equal(fixed[2][1]["boxes"], first)  # validation windows do not move


def test_train_with_crop_auto_records_the_crop(tmp_path, capsys):
    records = [
        canvas_record(tmp_path, f"c{i}.png", 300, 320, [(16 + i, 20 * i, 30)], i + 1) for i in range(3)
    ]
    coco = records_to_coco(records, ClassMap(("nucleus",)), mask_format="rle")
    (tmp_path / "data.json").write_text(json.dumps(coco))
    (tmp_path / "splits.json").write_text(
        json.dumps({"train": ["c0.png", "c1.png"], "val": ["c2.png"], "test": []})
    )
    options = ["--arch", "maskrcnn_resnet18_fpn", "--image-size", "128", "--epochs", "1", "--workers", "0"]
    options += ["--device", "cpu", "--splits", str(tmp_path / "splits.json"), "--warmup-steps", "2"]
    code = main(
        ["train", str(tmp_path / "data.json"), "--out", str(tmp_path / "run"), "--crop", "auto", *options]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "crops of 128 px at native size" in out  # the recipe says why it crops
    config = torch.load(tmp_path / "run" / "best.pt", weights_only=True)["model_config"]
    assert config["crop_size"] == 128 and config["image_size"] == 128
    code = main(
        ["train", str(tmp_path / "data.json"), "--out", str(tmp_path / "bad"), "--crop", "big", *options]
    )
    assert code == 2 and "--crop must be a size in pixels" in capsys.readouterr().err
