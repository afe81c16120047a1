"""Render outputs on a real DSB nuclei image with its real masks (given scores, as predictions would have)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from instaseg.core import ClassMap, Instances
from instaseg.formats.load import load_dataset
from instaseg.images import load_image
from instaseg.masks import Masks
from instaseg.render import (
    OverlayStyle,
    binary_mask,
    draw_overlay,
    encode_png,
    instance_colors,
    instance_id_image,
    instance_mask_images,
    label_rectangle,
    label_text,
    mask_pieces,
    rgb_masked_image,
)

CLASSES = ClassMap(("nucleus",))


@pytest.fixture(scope="module", params=["dense", "crops"])
def nuclei(datasets, request):
    """(image (H, W, 3) uint8, Instances with masks and scores) of the first DSB image with >= 10 nuclei;
    the masks stored dense, or as box-local crops as predictions store them (the pictures must not differ)."""
    dataset = load_dataset(str(datasets / "dsb2018_nuclei_sample"))
    record = next(r for r in dataset.records if len(r.annotations) >= 10)
    truth = record.instances()
    rng = np.random.default_rng(0)
    scores = rng.uniform(0.5, 1.0, len(truth)).astype(np.float32)
    masks = truth.masks
    if request.param == "crops":
        pieces = [truth.mask_crop(i) for i in range(len(truth))]
        masks = Masks.from_crops([c for _, _, c in pieces], [(y, x) for y, x, _ in pieces], *truth.image_size)
    return load_image(record.image), Instances(truth.boxes, truth.labels, masks, scores)


def test_binary_mask_is_the_union(nuclei):
    image, instances = nuclei
    h, w = image.shape[:2]
    out = binary_mask(instances)
    assert out.dtype == np.uint8 and out.shape == (h, w)
    assert set(np.unique(out)) <= {0, 255}
    np.testing.assert_array_equal(out == 255, instances.dense_masks().any(axis=0))


def test_id_image_has_one_id_per_instance(nuclei):
    image, instances = nuclei
    h, w = image.shape[:2]
    ids = instance_id_image(instances)
    assert ids.dtype == np.uint8
    present = set(np.unique(ids)) - {0}
    assert present == set(range(1, len(instances) + 1))
    assert np.array_equal(ids > 0, instances.dense_masks().any(axis=0))
    # Where two masks overlap the higher-scored instance's id is shown.
    for i in range(len(instances)):
        own = ids == i + 1
        assert instances.mask(i)[own].all()


def test_id_image_overlap_keeps_best_score():
    masks = np.zeros((2, 10, 10), bool)
    masks[0, 2:8, 2:8] = True
    masks[1, 4:9, 4:9] = True
    instances = Instances([[2, 2, 8, 8], [4, 4, 9, 9]], [1, 1], masks, [0.3, 0.9])
    ids = instance_id_image(instances)
    assert ids[5, 5] == 2 and ids[2, 2] == 1 and ids[8, 8] == 2


def test_id_image_is_16_bit_over_255_instances():
    n = 300
    masks = np.zeros((n, 20, 20), bool)
    for i in range(n):
        masks[i].flat[i] = True
    instances = Instances(np.tile([0, 0, 1, 1], (n, 1)), np.ones(n), masks)
    ids = instance_id_image(instances)
    assert ids.dtype == np.uint16 and ids.max() == n and len(np.unique(ids)) == n + 1
    decoded = cv2.imdecode(np.frombuffer(encode_png(ids), np.uint8), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(decoded, ids)


def test_rgb_masked_image_colours_instances_on_black(nuclei):
    image, instances = nuclei
    h, w = image.shape[:2]
    out = rgb_masked_image(instances)
    union = instances.dense_masks().any(axis=0)
    assert (out[~union] == 0).all()
    assert (out[union].max(axis=1) > 0).all()
    colors = instance_colors(len(instances))
    ids = instance_id_image(instances)
    for i in range(len(instances)):
        assert (out[ids == i + 1] == colors[i]).all()


def test_instance_mask_images_one_per_instance(nuclei):
    image, instances = nuclei
    h, w = image.shape[:2]
    images = list(instance_mask_images(instances))
    assert len(images) == len(instances)
    for mask, out in zip(instances.dense_masks(), images, strict=True):
        np.testing.assert_array_equal(out == 255, mask)


def _allowed_region(instances, style, h, w, boxes=True, labels=True):
    allowed = instances.dense_masks().any(axis=0).copy()
    t = style.thickness
    for i, box in enumerate(instances.boxes):
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        if boxes:  # the outline is `t` wide, centred on the edges
            outer = np.zeros((h, w), bool)
            outer[max(0, y0 - t) : y1 + t, max(0, x0 - t) : x1 + t] = True
            inner = np.zeros((h, w), bool)
            inner[y0 + t : max(y0 + t, y1 - t), x0 + t : max(x0 + t, x1 - t)] = True
            allowed |= outer & ~inner
        if labels:
            text = label_text(instances.labels[i], float(instances.scores[i]), CLASSES)
            rx0, ry0, rx1, ry1 = label_rectangle(box, text, style, h, w)
            allowed[ry0:ry1, rx0:rx1] = True
    return allowed


@pytest.mark.parametrize("boxes,labels", [(False, False), (True, False), (True, True)])
def test_overlay_changes_only_masks_boxes_and_labels(nuclei, boxes, labels):
    image, instances = nuclei
    before = image.copy()
    h, w = image.shape[:2]
    style = OverlayStyle.for_size(h, w)
    out = draw_overlay(image, instances, CLASSES, style, boxes=boxes, labels=labels)
    np.testing.assert_array_equal(image, before)  # the caller's array is not drawn on
    changed = (out != image).any(axis=2)
    allowed = _allowed_region(instances, style, h, w, boxes, labels)
    assert not (changed & ~allowed).any()
    # Every instance is visibly tinted: most of its pixels changed.
    for mask in instances.dense_masks():
        assert changed[mask].mean() > 0.5


def test_overlay_style_scales_with_image_size():
    small, large = OverlayStyle.for_size(256, 256), OverlayStyle.for_size(3000, 4000)
    assert small.thickness == 1 and large.thickness >= 6
    assert large.font_scale > 2 * small.font_scale
    # A label on a large photo is tall enough to read (> 40 px), on a small one it fits the image.
    box = np.array([100, 200, 300, 400], np.float32)
    _, y0, _, y1 = label_rectangle(box, "nucleus 0.93", large, 3000, 4000)
    assert y1 - y0 > 40
    x0, y0, x1, y1 = label_rectangle(np.array([0, 0, 5, 5], np.float32), "nucleus 0.93", small, 256, 256)
    assert 0 <= x0 < x1 <= 256 and 0 <= y0 < y1 <= 256


def test_crop_pieces_match_dense_masks(nuclei):
    image, instances = nuclei
    h, w = image.shape[:2]
    for (y0, x0, crop), mask in zip(mask_pieces(instances), instances.dense_masks(), strict=True):
        full = np.zeros((h, w), bool)
        full[y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]] = crop
        np.testing.assert_array_equal(full, mask)


def test_overlay_rejects_non_rgb():
    with pytest.raises(ValueError, match="RGB uint8"):
        draw_overlay(np.zeros((4, 4), np.uint8), Instances.empty(4, 4))


def test_empty_instances_give_blank_outputs():
    image = np.full((8, 8, 3), 7, np.uint8)
    empty = Instances.empty(8, 8)
    np.testing.assert_array_equal(draw_overlay(image, empty), image)
    assert binary_mask(empty).max() == 0 and instance_id_image(empty).max() == 0
    assert rgb_masked_image(empty).max() == 0
