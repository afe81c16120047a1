"""Decoding images to the one pixel format the rest of instaseg uses: RGB uint8 ``(H, W, 3)``."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from . import storage


class ImageError(ValueError):
    """An image that cannot be decoded (empty, not an image, corrupt, truncated)."""


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
