"""Predictor: same pixels as torchvision's path, original coordinates, EXIF orientation, input types."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.models.detection.roi_heads import paste_masks_in_image

from instaseg.core import ClassMap
from instaseg.images import load_image
from instaseg.masks import Masks
from instaseg.model.checkpoint import load_checkpoint
from instaseg.model.engine import paste_masks
from instaseg.model.predictor import Predictor
from instaseg.render import binary_mask

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
    pasted = Masks.from_crops(crops, origins, height, width)
    np.testing.assert_array_equal(pasted.to_dense(), reference.numpy())
    for i in range(n):  # RLE straight from the crop equals the RLE of the full-size mask
        assert pasted.rle(i) == Masks.from_dense(reference.numpy()).rle(i)


def _torchvision_forward(model, image: np.ndarray, mask_threshold: float = 0.5):
    """torchvision's own eager path, the reference: ``model([image])`` on a float image in [0, 1]."""
    model.eval()
    with torch.no_grad():
        (output,) = model([torch.from_numpy(image.transpose(2, 0, 1).copy()).float() / 255])
    return (
        output["boxes"].numpy(),
        output["labels"].numpy(),
        output["scores"].numpy(),
        (output["masks"][:, 0] >= mask_threshold).numpy(),
    )


def test_same_detections_as_torchvision_forward(checkpoint):
    """At the model's own size (no resize), the Predictor's pixels equal torchvision's model([img])."""
    image = load_image(str(_first_nuclei_png()))[:96, :IMAGE_SIZE]  # a real crop, longest side = 128
    predictor = Predictor(checkpoint, device="cpu", proposals=None, precision="fp32")
    model, _, _ = load_checkpoint(checkpoint)
    boxes, labels, scores, masks = _torchvision_forward(model, image)
    ours = predictor.predict(image)
    assert len(ours) == len(boxes) > 0
    np.testing.assert_allclose(ours.boxes, boxes, atol=1e-3)
    np.testing.assert_array_equal(ours.labels, labels)
    np.testing.assert_allclose(ours.scores, scores, atol=1e-5)
    np.testing.assert_array_equal(ours.dense_masks(), masks)


def test_a_model_in_memory_predicts_as_its_checkpoint_and_keeps_its_mode(checkpoint, photo):
    model, class_map, config = load_checkpoint(checkpoint)
    model.train()
    in_memory = Predictor.from_model(model, ClassMap(tuple(CLASS_NAMES)), config).predict(photo)
    assert model.training  # given back in the mode it had
    from_file = Predictor(checkpoint, device="cpu", channels_last=False).predict(photo)
    np.testing.assert_allclose(in_memory.boxes, from_file.boxes, atol=1e-4)
    np.testing.assert_array_equal(in_memory.dense_masks(), from_file.dense_masks())


def test_results_do_not_depend_on_batching(checkpoint, photo, nuclei_paths):
    """Images of different sizes never share a padded batch: each gets exactly what it gets alone (images of
    one size run as one batch, equal to float rounding)."""
    predictor = Predictor(checkpoint, device="cpu", precision="fp32")
    images = [photo, load_image(str(nuclei_paths[0])), photo[:150, :200], load_image(str(nuclei_paths[1]))]
    together = predictor.predict_arrays(images)
    for k, (image, batched) in enumerate(zip(images, together, strict=True)):
        alone = predictor.predict(image)
        assert batched.image_size == image.shape[:2] and len(batched) == len(alone)
        if k in (0, 2):  # sizes of their own
            np.testing.assert_array_equal(batched.boxes, alone.boxes)
            np.testing.assert_array_equal(batched.dense_masks(), alone.dense_masks())
        else:  # the two 256x256 nuclei images ran together
            np.testing.assert_allclose(batched.boxes, alone.boxes, atol=1e-2)


def _first_nuclei_png():
    from tests.conftest import DATASETS

    folder = DATASETS / "dsb2018_nuclei_sample" / "stage1_train"
    return next((sorted(folder.iterdir())[0] / "images").glob("*.png"))


def test_predictions_in_original_pixels(checkpoint, photo):
    predictor = Predictor(checkpoint, device="cpu")
    dense = predictor.predict(photo)
    height, width = photo.shape[:2]
    assert dense.image_size == (height, width) and len(dense) > 0 and not dense.masks.is_dense
    assert (dense.boxes[:, [0, 2]] <= width).all() and (dense.boxes[:, [1, 3]] <= height).all()
    assert dense.dense_masks().shape == (len(dense), height, width)
    # Masks lie within their (slightly grown) boxes, as torchvision pastes them.
    for box, mask in zip(dense.boxes, dense.dense_masks(), strict=True):
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
    assert (
        from_file.dense_masks().shape[1:] == photo.shape[:2]
    )  # original (displayed) orientation, not stored
    np.testing.assert_array_equal(from_file.dense_masks(), from_array.dense_masks())
    np.testing.assert_allclose(from_file.boxes, from_array.boxes)
    # A PIL image with the EXIF tag is rotated the same way.
    with Image.open(path) as pil:
        np.testing.assert_array_equal(predictor.predict(pil).dense_masks(), from_file.dense_masks())


def test_array_inputs(checkpoint, photo):
    predictor = Predictor(checkpoint, device="cpu", score_threshold=0.0)
    gray = photo[:, :, 1]
    as_gray = predictor.predict(gray)
    as_rgb = predictor.predict(np.repeat(gray[:, :, None], 3, axis=2))
    np.testing.assert_array_equal(as_gray.dense_masks(), as_rgb.dense_masks())
    rgba = np.dstack([photo, np.full(photo.shape[:2], 255, np.uint8)])
    np.testing.assert_array_equal(
        predictor.predict(rgba).dense_masks(), predictor.predict(photo).dense_masks()
    )
    with pytest.raises(ValueError, match="uint8"):
        predictor.predict(photo.astype(np.float32))
    with pytest.raises(ValueError, match="shape"):
        predictor.predict(photo[:, :, :2])


def test_thresholds_class_filter_and_max_detections(checkpoint, photo):
    everything = Predictor(checkpoint, device="cpu", score_threshold=0.0).predict(photo)
    assert len(everything) == 20  # the checkpoint's detections_per_image
    threshold = float(np.median(everything.scores))
    high = Predictor(checkpoint, device="cpu", score_threshold=threshold).predict(photo)
    assert len(high) and (high.scores >= threshold).all() and len(high) < len(everything)
    few = Predictor(checkpoint, device="cpu", max_detections=3).predict(photo)
    np.testing.assert_allclose(few.scores, everything.scores[:3])
    only = Predictor(checkpoint, device="cpu", classes=["debris"]).predict(photo)
    assert (only.labels == 2).all()
    strict = Predictor(checkpoint, device="cpu", mask_threshold=0.9).predict(photo)
    loose = Predictor(checkpoint, device="cpu", mask_threshold=0.1).predict(photo)
    assert binary_mask(strict).sum() < binary_mask(loose).sum()


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
    instances = Predictor(checkpoint, device="cpu").predict(large)
    assert instances.image_size == (3000, 4000)
    crop_pixels = sum(c.size for c in instances.masks.crops)
    assert crop_pixels < 0.5 * len(instances) * 3000 * 4000


def test_pil_encoded_bytes_roundtrip(checkpoint, photo):
    buffer = io.BytesIO()
    Image.fromarray(photo).save(buffer, format="PNG")
    with Image.open(io.BytesIO(buffer.getvalue())) as pil:
        np.testing.assert_array_equal(
            Predictor(checkpoint, device="cpu").predict(pil).dense_masks(),
            Predictor(checkpoint, device="cpu").predict(photo).dense_masks(),
        )
