"""Predictor: same pixels as torchvision's path, original coordinates, EXIF orientation, input types."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.models.detection.roi_heads import paste_masks_in_image

from instaseg.images import load_image
from instaseg.predict import CroppedInstances, Predictor
from instaseg.predict.engine import paste_masks
from instaseg.render import binary_mask
from instaseg.train.checkpoint import load_checkpoint
from instaseg.train.model import predict_batch

from .conftest import CLASS_NAMES, IMAGE_SIZE


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_box_local_paste_equals_torchvision_full_canvas(seed):
    rng = np.random.default_rng(seed)
    height, width, n = 90, 130, 12
    probs = torch.from_numpy(rng.uniform(0, 1, (n, 28, 28)).astype(np.float32))
    x0, y0 = rng.uniform(-30, width, n), rng.uniform(-30, height, n)
    boxes = np.stack([x0, y0, x0 + rng.uniform(0.5, 80, n), y0 + rng.uniform(0.5, 60, n)], 1)
    # Clipped to the image as the ROI heads clip detections: some touch the edges, some are tiny.
    boxes = torch.from_numpy(np.clip(boxes, 0, [width, height, width, height]).astype(np.float32))
    reference = paste_masks_in_image(probs[:, None], boxes, (height, width))[:, 0] >= 0.5  # (N, H, W)
    crops, origins = paste_masks(probs, boxes, height, width, 0.5)
    pasted = CroppedInstances(
        boxes.numpy(), np.ones(n), np.ones(n), crops, origins, height, width
    ).to_instances()
    np.testing.assert_array_equal(pasted.masks, reference.numpy())


def test_same_detections_as_torchvision_forward(checkpoint):
    """At the model's own size (no resize), the Predictor's pixels equal torchvision's model([img])."""
    image = load_image(str(_first_nuclei_png()))[:96, :IMAGE_SIZE]  # a real crop, longest side = 128
    predictor = Predictor(checkpoint, device="cpu", proposals=None)
    model, _, _ = load_checkpoint(checkpoint)
    reference = predict_batch(model, [image])[0]
    ours = predictor.predict(image)
    assert len(ours) == len(reference) > 0
    np.testing.assert_allclose(ours.boxes, reference.boxes, atol=1e-3)
    np.testing.assert_array_equal(ours.labels, reference.labels)
    np.testing.assert_allclose(ours.scores, reference.scores, atol=1e-5)
    np.testing.assert_array_equal(ours.masks, reference.masks)


def _first_nuclei_png():
    from tests.conftest import DATASETS

    folder = DATASETS / "dsb2018_nuclei_sample" / "stage1_train"
    return next((sorted(folder.iterdir())[0] / "images").glob("*.png"))


def test_predictions_in_original_pixels(checkpoint, photo):
    predictor = Predictor(checkpoint, device="cpu")
    instances = predictor.predict_cropped(photo)
    height, width = photo.shape[:2]
    assert (instances.height, instances.width) == (height, width) and len(instances) > 0
    assert (instances.boxes[:, [0, 2]] <= width).all() and (instances.boxes[:, [1, 3]] <= height).all()
    dense = instances.to_instances()
    assert dense.masks.shape == (len(instances), height, width)
    # Masks lie within their (slightly grown) boxes, as torchvision pastes them.
    for box, mask in zip(dense.boxes, dense.masks, strict=True):
        rows, cols = np.nonzero(mask)
        if len(rows):
            grow_x, grow_y = (box[2] - box[0]) / 28 + 1, (box[3] - box[1]) / 28 + 1
            assert cols.min() >= box[0] - grow_x and cols.max() <= box[2] + grow_x
            assert rows.min() >= box[1] - grow_y and rows.max() <= box[3] + grow_y


def test_exif_rotated_jpeg_is_predicted_as_displayed(checkpoint, photo, tmp_path):
    """A JPEG stored sideways with EXIF orientation 6 (display rotated 90 degrees clockwise)."""
    stored = np.ascontiguousarray(np.rot90(photo, k=1))  # the sensor's pixels: displayed = rot90 clockwise
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "sideways.jpg"
    Image.fromarray(stored).save(path, quality=95, exif=exif)
    displayed = load_image(str(path))
    assert displayed.shape == photo.shape  # orientation applied on load

    predictor = Predictor(checkpoint, device="cpu")
    from_file = predictor.predict(str(path))
    from_array = predictor.predict(displayed)
    assert from_file.masks.shape[1:] == photo.shape[:2]  # original (displayed) orientation, not stored
    np.testing.assert_array_equal(from_file.masks, from_array.masks)
    np.testing.assert_allclose(from_file.boxes, from_array.boxes)
    # A PIL image with the EXIF tag is rotated the same way.
    with Image.open(path) as pil:
        np.testing.assert_array_equal(predictor.predict(pil).masks, from_file.masks)


def test_array_inputs(checkpoint, photo):
    predictor = Predictor(checkpoint, device="cpu", score_threshold=0.0)
    gray = photo[:, :, 1]
    as_gray = predictor.predict(gray)
    as_rgb = predictor.predict(np.repeat(gray[:, :, None], 3, axis=2))
    np.testing.assert_array_equal(as_gray.masks, as_rgb.masks)
    rgba = np.dstack([photo, np.full(photo.shape[:2], 255, np.uint8)])
    np.testing.assert_array_equal(predictor.predict(rgba).masks, predictor.predict(photo).masks)
    with pytest.raises(ValueError, match="uint8"):
        predictor.predict(photo.astype(np.float32))
    with pytest.raises(ValueError, match="shape"):
        predictor.predict(photo[:, :, :2])


def test_thresholds_class_filter_and_max_detections(checkpoint, photo):
    everything = Predictor(checkpoint, device="cpu", score_threshold=0.0).predict_cropped(photo)
    assert len(everything) == 20  # the checkpoint's detections_per_image
    threshold = float(np.median(everything.scores))
    high = Predictor(checkpoint, device="cpu", score_threshold=threshold).predict_cropped(photo)
    assert len(high) and (high.scores >= threshold).all() and len(high) < len(everything)
    few = Predictor(checkpoint, device="cpu", max_detections=3).predict_cropped(photo)
    np.testing.assert_allclose(few.scores, everything.scores[:3])
    only = Predictor(checkpoint, device="cpu", classes=["debris"]).predict_cropped(photo)
    assert (only.labels == 2).all()
    strict = Predictor(checkpoint, device="cpu", mask_threshold=0.9).predict_cropped(photo)
    loose = Predictor(checkpoint, device="cpu", mask_threshold=0.1).predict_cropped(photo)
    h, w = photo.shape[:2]
    assert binary_mask(strict, h, w).sum() < binary_mask(loose, h, w).sum()


def test_bad_arguments_name_the_valid_values(checkpoint):
    with pytest.raises(KeyError, match="cell, debris"):
        Predictor(checkpoint, device="cpu", classes=["dog"])
    with pytest.raises(ValueError, match="torch, onnx"):
        Predictor(checkpoint, device="cpu", engine="tensorrt")
    with pytest.raises(ValueError, match="auto, cpu"):
        Predictor(checkpoint, device="gpu")


def test_class_names_come_from_the_checkpoint(checkpoint):
    assert Predictor(checkpoint, device="cpu").class_names == tuple(CLASS_NAMES)


def test_large_photo_stays_box_local(checkpoint, photo):
    """A 4000x3000 photo: crops hold far fewer pixels than N full-size masks would."""
    import cv2

    large = cv2.resize(photo, (4000, 3000), interpolation=cv2.INTER_LINEAR)
    instances = Predictor(checkpoint, device="cpu").predict_cropped(large)
    assert (instances.height, instances.width) == (3000, 4000)
    crop_pixels = sum(c.size for c in instances.crops)
    assert crop_pixels < 0.5 * len(instances) * 3000 * 4000


def test_pil_encoded_bytes_roundtrip(checkpoint, photo):
    buffer = io.BytesIO()
    Image.fromarray(photo).save(buffer, format="PNG")
    with Image.open(io.BytesIO(buffer.getvalue())) as pil:
        np.testing.assert_array_equal(
            Predictor(checkpoint, device="cpu").predict(pil).masks,
            Predictor(checkpoint, device="cpu").predict(photo).masks,
        )
