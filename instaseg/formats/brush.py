"""Label Studio brush masks: its bit-packed RLE of an RGBA image <-> boolean masks.

A ``brushlabels`` result stores ``value.rle``: a list of byte values (0..255) that Label Studio's codec
(``label_studio_sdk.converter.brush``, a port of thi.ng's ``rle-pack``) unpacks into the flat RGBA bytes
of an ``original_height x original_width`` image, row-major, 4 bytes per pixel. The mask is the alpha
channel. The server's BRUSH_TO_PNG export writes that alpha channel unchanged as an 8-bit PNG; the
browser's brush draws anti-aliased edges, so alpha may hold values between 0 and 255 and we threshold it.
"""

from __future__ import annotations

import numpy as np
from label_studio_sdk.converter import brush as ls_brush


def brush_rle_to_mask(rle: list[int], height: int, width: int, threshold: int = 128) -> np.ndarray:
    """Decode a Label Studio brush RLE into a boolean mask.

    Args:
        rle: ``value.rle`` of a ``brushlabels`` result: byte values 0..255.
        height, width: ``original_height``/``original_width`` of the result, in pixels.
        threshold: alpha values ``>= threshold`` are inside the mask (128: at least half opaque).

    Returns:
        ``(height, width)`` bool array; pixel ``[y, x]`` is true where the RGBA image's alpha
        ``>= threshold``. On the server's 0/255 masks this equals ``png > 0`` of its BRUSH_TO_PNG export.

    Raises:
        ValueError: ``rle`` is not a list of bytes, cannot be decoded, or does not hold ``4*height*width``
            values (the RLE was drawn on an image of another size).
    """
    if not isinstance(rle, list | tuple) or not rle:
        raise ValueError(f"brush RLE must be a non-empty list of byte values, got {type(rle).__name__}")
    if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in rle):
        raise ValueError("brush RLE must contain only integers 0..255")
    expected = 4 * height * width
    if len(rle) < 4:
        raise ValueError(f"brush RLE is truncated ({len(rle)} bytes; its 4-byte header is incomplete)")
    # The first 32 bits give the number of decoded values: check before decoding so that a wrong (or
    # garbage) header never allocates a huge array.
    declared = int.from_bytes(bytes(rle[:4]), "big")
    if declared != expected:
        raise ValueError(
            f"brush RLE holds {declared} values but a {width}x{height} RGBA image needs {expected} "
            f"(4*{height}*{width}); the mask was drawn on an image of another size"
        )
    try:
        flat = ls_brush.decode_rle(bytes(rle))
    # A truncated bit stream ends in int('', 2) or an index error; a word size over 8 bits in a value
    # that does not fit a byte (OverflowError).
    except (ValueError, IndexError, OverflowError) as e:
        raise ValueError(f"brush RLE cannot be decoded (truncated or corrupt): {e}") from None
    if len(flat) != expected:
        raise ValueError(f"brush RLE decoded to {len(flat)} values, expected {expected} (4*{height}*{width})")
    alpha = flat.reshape(height, width, 4)[:, :, 3]  # (H, W) uint8
    return alpha >= threshold


def mask_to_brush_rle(mask: np.ndarray) -> list[int]:
    """Encode a boolean mask ``(H, W)`` as a Label Studio brush RLE (``value.rle``).

    Pixels inside the mask become opaque white RGBA ``(255, 255, 255, 255)``, others ``(0, 0, 0, 0)``,
    as the SDK's ``mask2rle`` writes them; pass ``original_height = H`` and ``original_width = W`` with it.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W), got shape {mask.shape}")
    return [int(v) for v in ls_brush.mask2rle(mask.astype(bool).astype(np.uint8) * 255)]
