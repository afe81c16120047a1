"""Reading images: their header (:func:`read_header`, no pixels decoded) and their pixels in the one format
the rest of instaseg uses, RGB uint8 ``(H, W, 3)`` as displayed (EXIF orientation applied)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from . import storage


class ImageError(ValueError):
    """An image that cannot be decoded (empty, not an image, corrupt, truncated)."""


@dataclass(frozen=True)
class ImageHeader:
    """What an image header says: displayed size (EXIF orientation applied), PIL mode, orientation tag."""

    width: int
    height: int
    mode: str
    orientation: int


def read_header(source: bytes | BinaryIO, name: str = "image") -> ImageHeader:
    """The header of an encoded image (bytes or a binary file object), without decoding its pixels.

    Raises:
        ImageError: empty, not an image, a corrupt header, or over PIL's decompression-bomb limit.
    """
    if isinstance(source, bytes | bytearray):
        if not source:
            raise ImageError(f"{name}: empty file (0 bytes)")
        source = io.BytesIO(source)
    try:
        with Image.open(source) as img:
            width, height = img.size
            orientation, mode = _orientation(img), img.mode
    except Image.DecompressionBombError:
        raise ImageError(
            f"{name}: the image is far too large (PIL refuses it as a decompression bomb)"
        ) from None
    except UnidentifiedImageError:
        raise ImageError(
            f"{name}: not an image PIL can read (PNG, JPEG, TIFF, BMP, WebP... expected)"
        ) from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{name}: corrupt or truncated image ({e})") from None
    if orientation in (5, 6, 7, 8):  # rotated by 90 or 270 degrees: the displayed size is transposed
        width, height = height, width
    return ImageHeader(width, height, mode, orientation)


def _orientation(img: Image.Image) -> int:
    """EXIF orientation tag (1 = upright) without decoding pixels.

    For PNG, ``getexif()`` decodes the whole image when the eXIf chunk is absent from the header, so only
    an eXIf chunk placed before the pixel data is read.
    """
    if img.format == "PNG":
        raw = img.info.get("exif")
        return int(Image.Exif().load(raw).get(0x0112, 1) or 1) if raw else 1
    return int(img.getexif().get(0x0112, 1) or 1)


def pil_to_rgb(img: Image.Image) -> np.ndarray:
    """RGB uint8 ``(H, W, 3)`` of a PIL image, EXIF orientation applied.

    16-bit and 32-bit grayscale are scaled to 0..255 by their maximum possible value (65535), not
    stretched per image; grayscale, palette, CMYK and alpha images are converted (alpha is dropped).
    """
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(img, dtype=np.float64)
        array = np.clip(array / 65535.0 * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(array[:, :, None], 3, axis=2)
    if img.mode == "F":
        array = np.clip(np.asarray(img, dtype=np.float64) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(array[:, :, None], 3, axis=2)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def decode_image(data: bytes, name: str = "image") -> np.ndarray:
    """RGB uint8 ``(H, W, 3)`` from encoded bytes; ``ImageError`` naming ``name`` when undecodable."""
    if not data:
        raise ImageError(f"{name}: empty file (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as img:
            return pil_to_rgb(img)
    except Image.DecompressionBombError:
        raise ImageError(f"{name}: the image is far too large (PIL refuses it as a decompression bomb)") from None
    except MemoryError:
        raise ImageError(f"{name}: not enough memory to decode this image") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image PIL can read") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{name}: corrupt or truncated image ({e})") from None


def load_image(location: str) -> np.ndarray:
    """Read and decode an image from a path or URL: RGB uint8 ``(H, W, 3)`` as displayed (EXIF applied)."""
    try:
        data = storage.read_bytes(location)
    except (OSError, FileNotFoundError) as e:
        raise ImageError(f"{location}: cannot read ({e})") from None
    return decode_image(data, location)
