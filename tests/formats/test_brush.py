"""Label Studio brush RLE codec, checked against a real Label Studio 1.23 server's exports."""

from __future__ import annotations

import io
import json
import re
import zipfile

import numpy as np
import pytest
from label_studio_sdk.converter.brush import encode_rle
from PIL import Image

from instaseg.formats.brush import brush_rle_to_mask, mask_to_brush_rle

EXPORTS = "label_studio_1.23_exports"


def brush_regions(datasets) -> list[tuple[int, int, dict]]:
    """(task id, annotation id, result) of every brush region in the server's JSON export."""
    tasks = json.loads((datasets / EXPORTS / "brush_JSON.json").read_text())
    return [(t["id"], a["id"], r) for t in tasks for a in t["annotations"] for r in a["result"]]


def server_pngs(datasets) -> dict[tuple[int, int, str, int], np.ndarray]:
    """BRUSH_TO_PNG masks keyed by (task, annotation, label, n), as uint8 (H, W)."""
    pngs = {}
    with zipfile.ZipFile(datasets / EXPORTS / "brush_PNG_3tasks.zip") as z:
        for name in z.namelist():
            m = re.fullmatch(r"task-(\d+)-annotation-(\d+)-by-\w+-tag-(\w+)-(\d+)\.png", name)
            assert m, name
            key = (int(m[1]), int(m[2]), m[3], int(m[4]))
            pngs[key] = np.array(Image.open(io.BytesIO(z.read(name))))
    return pngs


def test_decode_matches_server_brush_to_png_pixel_for_pixel(datasets):
    pngs = server_pngs(datasets)
    seen = {}
    for task, annotation, result in brush_regions(datasets):
        label = result["value"]["brushlabels"][0]
        n = seen.setdefault((task, annotation, label), 0)
        seen[(task, annotation, label)] += 1
        png = pngs.pop((task, annotation, label, n))
        mask = brush_rle_to_mask(result["value"]["rle"], result["original_height"], result["original_width"])
        assert mask.dtype == bool and mask.shape == png.shape
        assert set(np.unique(png)) == {0, 255}
        np.testing.assert_array_equal(mask, png > 0)
        assert mask.sum() > 0
    assert pngs == {}, "every PNG of the export has its region"


def test_real_rle_round_trip(datasets):
    for _, _, result in brush_regions(datasets):
        h, w = result["original_height"], result["original_width"]
        mask = brush_rle_to_mask(result["value"]["rle"], h, w)
        again = brush_rle_to_mask(mask_to_brush_rle(mask), h, w)
        np.testing.assert_array_equal(again, mask)


@pytest.mark.parametrize("shape", [(1, 1), (7, 13), (300, 257)])
def test_random_mask_round_trip(shape):
    rng = np.random.default_rng(0)
    mask = rng.random(shape) < 0.3
    mask[0, 0] = True  # long runs and single pixels both occur
    rle = mask_to_brush_rle(mask)
    assert all(isinstance(v, int) and 0 <= v <= 255 for v in rle)
    np.testing.assert_array_equal(brush_rle_to_mask(rle, *shape), mask)


def test_large_mask_round_trip_with_runs_over_65536():
    mask = np.zeros((400, 400), dtype=bool)  # 640,000 RGBA bytes of zeros: runs longer than 2**16
    mask[100:300, 50:60] = True
    np.testing.assert_array_equal(brush_rle_to_mask(mask_to_brush_rle(mask), 400, 400), mask)


def test_threshold_on_anti_aliased_alpha():
    alpha = np.array([[0, 1, 127, 128, 200, 255]], dtype=np.uint8)
    rgba = np.zeros((1, 6, 4), dtype=np.uint8)
    rgba[..., 3] = alpha
    rle = encode_rle(rgba.ravel())
    np.testing.assert_array_equal(brush_rle_to_mask(rle, 1, 6), [[False, False, False, True, True, True]])
    np.testing.assert_array_equal(
        brush_rle_to_mask(rle, 1, 6, threshold=1), [[False, True, True, True, True, True]]
    )


def test_wrong_length_names_both_sizes(datasets):
    _, _, result = brush_regions(datasets)[0]  # an 80x60 region
    with pytest.raises(ValueError, match=r"holds 19200 values but a 64x48 RGBA image needs 12288"):
        brush_rle_to_mask(result["value"]["rle"], 48, 64)


@pytest.mark.parametrize(
    "rle, message",
    [
        ([], "non-empty list"),
        ("abc", "non-empty list"),
        ([0, 0, 300, 0], "integers 0..255"),
        ([0, 0], "truncated"),
        ([0, 0, 0, 4, 7], "cannot be decoded"),  # header says 4 values, the bit stream ends early
    ],
)
def test_malformed_rle(rle, message):
    with pytest.raises(ValueError, match=message):
        brush_rle_to_mask(rle, 1, 1)


def test_mask_to_brush_rle_rejects_non_2d():
    with pytest.raises(ValueError, match="2-D"):
        mask_to_brush_rle(np.zeros((2, 2, 2), dtype=bool))
