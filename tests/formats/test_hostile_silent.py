"""Cases that used to pass silently: a Label Studio ``result`` that is a string or ``annotations`` that is
an object, one image imported twice, a gradient read as a mask, a PNG whose EXIF chunk follows the
pixels. Each is now reported, and the data that is kept is right."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from instaseg.images import decode_image, load_image, read_header

from .hostile import FORMATS, has, problems_of, write_dataset, write_image


@pytest.mark.parametrize(
    "mutate, message",
    [
        (
            lambda t: t[0]["annotations"][0].update(result="[{'type': 'polygonlabels'}]"),
            "'result' must be a list",
        ),
        (lambda t: t[0].update(annotations={"id": 10, "result": []}), "'annotations' must be a list"),
        (
            lambda t: t[0]["annotations"].insert(0, "oops"),
            "annotations[0] is a str, not an annotation object",
        ),
        (lambda t: t[0]["annotations"][0]["result"].append(42), "result[1] is a int, not a region object"),
    ],
    ids=["result-string", "annotations-object", "annotation-string", "region-number"],
)
def test_unreadable_label_studio_annotations_are_reported(tmp_path, mutate, message):
    tasks = FORMATS["labelstudio-json"][0]()
    mutate(tasks)
    records, problems = problems_of(write_dataset(tmp_path, "labelstudio-json", tasks), "labelstudio-json")
    assert has(problems, "error", message), problems
    # Never an image without objects: the task is left out, or keeps the region that could be read.
    assert records == [] or len(records[0].annotations) == 1


def test_a_duplicated_label_studio_task_is_imported_once(tmp_path):
    tasks = FORMATS["labelstudio-json"][0]()
    tasks.append({**tasks[0], "id": 2})  # the same image imported twice into the project
    tasks.append(
        {**tasks[0], "id": 3, "data": {"image": "/data/upload/4/2f4821cd-a.png"}}
    )  # same file, other name
    records, problems = problems_of(write_dataset(tmp_path, "labelstudio-json", tasks), "labelstudio-json")
    assert [r.image_id for r in records] == [1] and len(records[0].annotations) == 1
    assert sum("image listed twice" in p and "imported once" in p for p in problems) == 2, problems


def test_one_file_under_two_coco_image_ids_is_imported_once(tmp_path):
    document = FORMATS["coco"][0]()
    document["images"].append({"id": 2, "file_name": "./a.png", "width": 40, "height": 30})
    document["annotations"].append({**document["annotations"][0], "id": 8, "image_id": 2})
    records, problems = problems_of(write_dataset(tmp_path, "coco", document), "coco")
    assert len(records) == 1 and len(records[0].annotations) == 1
    assert has(problems, "warning", "image listed twice (the same file as a.png", "1 objects are left out")


def _gradient(height: int = 30, width: int = 40) -> np.ndarray:
    return np.tile(np.linspace(0, 255, width).astype(np.uint8), (height, 1))  # (H, W) 0..255


def test_a_gradient_is_not_one_per_instance_mask(tmp_path):
    sample = tmp_path / "data" / "s1"
    write_image(sample / "images" / "s1.png")
    (sample / "masks").mkdir()
    Image.fromarray(_gradient()).save(sample / "masks" / "m1.png")
    blob = np.zeros((30, 40), np.uint8)
    blob[5:10, 5:10] = 255
    Image.fromarray(blob).save(sample / "masks" / "m2.png")
    records, problems = problems_of(tmp_path / "data", "mask-png")
    assert has(problems, "error", "per-instance mask must be binary", "40 values (0..255)", "mask not used")
    assert [len(r.annotations) for r in records] == [1]  # m2 only
    assert records[0].annotations[0].box == (5.0, 5.0, 10.0, 10.0)


def test_a_gradient_is_not_an_instance_id_mask(tmp_path):
    folder = tmp_path / "data"
    write_image(folder / "PNGImages" / "x.png")
    write_image(folder / "PNGImages" / "y.png")
    (folder / "PedMasks").mkdir()
    Image.fromarray(_gradient()).save(folder / "PedMasks" / "x_mask.png")
    ids = np.zeros((30, 40), np.uint8)
    ids[2:10, 2:10], ids[12:20, 12:30] = 1, 2
    Image.fromarray(ids).save(folder / "PedMasks" / "y_mask.png")
    records, problems = problems_of(folder, "mask-png")
    assert has(
        problems,
        "error",
        "change in small steps between neighbouring pixels",
        "not instance ids",
        "image skipped",
    )
    assert [(r.file_name, len(r.annotations)) for r in records] == [("PNGImages/y.png", 2)]


def _png_with_exif(orientation: int, before_pixels: bool) -> bytes:
    """A 40x30 RGB PNG with an eXIf chunk (orientation tag) before or after its pixel data."""
    pixels = (np.arange(30 * 40 * 3) % 251).astype(np.uint8).reshape(30, 40, 3)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    data = buffer.getvalue()
    exif = Image.Exif()
    exif[0x0112] = orientation
    payload = exif.tobytes()
    chunk = struct.pack(">I", len(payload)) + b"eXIf" + payload
    chunk += struct.pack(">I", zlib.crc32(b"eXIf" + payload) & 0xFFFFFFFF)
    at = 8 + 25 if before_pixels else data.rfind(b"IEND") - 4  # after IHDR, or before IEND
    return data[:at] + chunk + data[at:]


def test_header_and_pixels_agree_on_png_exif_orientation():
    trailing, leading = _png_with_exif(6, before_pixels=False), _png_with_exif(6, before_pixels=True)
    # An eXIf chunk after the pixels is ignored by both (as browsers do), one before them applied by both.
    assert (read_header(trailing).width, read_header(trailing).height) == (40, 30)
    assert decode_image(trailing).shape == (30, 40, 3)
    assert (read_header(leading).width, read_header(leading).height, read_header(leading).orientation) == (
        30,
        40,
        6,
    )
    assert decode_image(leading).shape == (40, 30, 3)


def test_masks_fit_the_image_of_a_png_with_trailing_exif(tmp_path):
    """At evaluation the ground-truth masks (record size, from the header) and the decoded image agree."""
    (tmp_path / "a.png").write_bytes(_png_with_exif(6, before_pixels=False))
    records, problems = problems_of(
        write_dataset(tmp_path, "coco", FORMATS["coco"][0](), image=False), "coco"
    )
    assert problems == [] and len(records[0].annotations) == 1
    masks = records[0].instances().dense_masks()
    assert masks.shape[1:] == load_image(records[0].image).shape[:2] == (30, 40)


def test_a_png_with_leading_exif_rotation_is_reported_not_a_crash(tmp_path):
    (tmp_path / "a.png").write_bytes(_png_with_exif(6, before_pixels=True))
    records, problems = problems_of(
        write_dataset(tmp_path, "coco", FORMATS["coco"][0](), image=False), "coco"
    )
    assert has(problems, "error", "annotations declare 40x30 but the image is displayed at 30x40", "EXIF")
    assert records[0].image is None
