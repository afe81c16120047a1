"""decode_image: OpenCV's fast path gives PIL's pixels (EXIF orientation included); what it does not take,
and damaged files, still go through PIL and its errors."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from instaseg.images import ImageError, _decode_with_opencv, decode_image, pil_to_rgb


def _pil_pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return pil_to_rgb(img)


def _encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _takes_fast_path(data: bytes) -> bool:
    with Image.open(io.BytesIO(data)) as img:
        return _decode_with_opencv(data, img) is not None


@pytest.fixture(scope="module")
def photo(datasets) -> Image.Image:
    path = sorted((datasets / "balloon" / "val").glob("*.jpg"))[3]
    with Image.open(path) as img:
        return img.convert("RGB").crop((0, 0, 301, 207))  # odd sizes: transposes must not be symmetric


def test_real_files_decode_to_pil_pixels(datasets):
    files = sorted((datasets / "balloon" / "val").glob("*.jpg"))[:6]
    files += sorted((datasets / "dsb2018_nuclei_sample" / "stage1_train").glob("*/images/*.png"))[:4]
    files += sorted((datasets / "PennFudanPed").rglob("*.png"))[:3]
    for path in files:
        data = path.read_bytes()
        assert _takes_fast_path(data), path
        np.testing.assert_array_equal(decode_image(data, str(path)), _pil_pixels(data))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_as_pil_does(photo, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _encoded(photo, "JPEG", quality=90, exif=exif.tobytes())
    assert _takes_fast_path(data)
    decoded = decode_image(data)
    np.testing.assert_array_equal(decoded, _pil_pixels(data))
    assert decoded.flags["C_CONTIGUOUS"]
    assert decoded.shape[:2] == ((207, 301) if orientation < 5 else (301, 207))


@pytest.mark.parametrize(
    ("mode", "fmt", "fast"),
    [
        ("L", "JPEG", True),
        ("L", "PNG", True),
        ("RGBA", "PNG", True),
        ("P", "PNG", False),
        ("I;16", "PNG", False),
    ],
)
def test_other_modes_give_pil_pixels(photo, mode, fmt, fast):
    image = photo.convert("L").convert("I;16") if mode == "I;16" else photo.convert(mode)
    data = _encoded(image, fmt)
    assert _takes_fast_path(data) == fast
    np.testing.assert_array_equal(decode_image(data), _pil_pixels(data))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_files_are_still_errors(photo, fmt):
    data = _encoded(photo, fmt)
    with pytest.raises(ImageError, match="x.img"):
        decode_image(data[: len(data) // 2], "x.img")
