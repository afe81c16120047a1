"""Tiled prediction and flip TTA: the tile grid, merging by mask overlap on real nuclei masks (one instance
per object across tile borders, no full-size allocation), the Predictor's tiled path, --tile parsing."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from instaseg.core import Instances
from instaseg.masks import Masks, tight_crop
from instaseg.model.config import ModelConfig
from instaseg.model.merging import flip_instances, merge_instances
from instaseg.model.predictor import Predictor
from instaseg.model.tiling import TileConfig, parse_tile, resolve_tile, tile_grid

from ..checkpoints import save_light_checkpoint

NUCLEI = Path(__file__).resolve().parents[2] / ".." / "shared" / "datasets" / "dsb2018_nuclei_sample"


def _nuclei_masks(images=range(2)) -> list[np.ndarray]:
    """Tight bool crops of the real nucleus masks of DSB images (by index in name order; one PNG each)."""
    folders = sorted((NUCLEI / "stage1_train").iterdir())
    crops = []
    for folder in (folders[i] for i in images):
        for path in sorted((folder / "masks").glob("*.png")):
            _, _, crop = tight_crop(np.asarray(Image.open(path)) > 0)
            if crop.size:
                crops.append(crop.copy())
    return crops


def _place(crops: list[np.ndarray], height: int, width: int, rng, across: np.ndarray | None = None):
    """Masks placed without overlap on a ``height x width`` canvas, near the pixel lines in ``across``
    (both axes) when given, so that they straddle tile borders. Returns ``(origins (N, 2), crops)``."""
    taken = np.zeros((height, width), dtype=bool)  # test bookkeeping only, not the code under test
    origins, placed = [], []
    for crop in crops:
        h, w = crop.shape
        for _ in range(50):
            if across is not None:
                y = int(np.clip(rng.choice(across) - rng.integers(1, h + 1), 0, height - h))
                x = int(np.clip(rng.choice(across) - rng.integers(1, w + 1), 0, width - w))
            else:
                y, x = int(rng.integers(0, height - h)), int(rng.integers(0, width - w))
            if not taken[max(0, y - 2) : y + h + 2, max(0, x - 2) : x + w + 2].any():
                taken[y : y + h, x : x + w] |= crop
                origins.append((y, x))
                placed.append(crop)
                break
    return np.array(origins, dtype=np.int64).reshape(-1, 2), placed


def _tile_predictions(origins, crops, grid, height, width, rng, min_visible=0.25):
    """What a tile predictor that sees every object does: per tile, each mask cut to the tile (kept when at
    least ``min_visible`` of it is inside; the pixels along the cut lost half of the time), and a score."""
    parts = []
    for y0t, x0t, y1t, x1t in grid:
        boxes, kept_crops, kept_origins, scores = [], [], [], []
        for (y, x), crop in zip(origins, crops, strict=True):
            h, w = crop.shape
            ya, yb, xa, xb = max(y, y0t), min(y + h, y1t), max(x, x0t), min(x + w, x1t)
            if ya >= yb or xa >= xb:
                continue
            piece = crop[ya - y : yb - y, xa - x : xb - x].copy()
            if piece.sum() < min_visible * crop.sum():
                continue
            if rng.random() < 0.5:  # a model is unsure at a cut: the row or column along it goes missing
                piece[0 if ya > y else -1 if yb < y + h else slice(0, 0)] = False
                piece[:, 0 if xa > x else -1 if xb < x + w else slice(0, 0)] = False
            py, px, piece = tight_crop(piece)
            if not piece.size:
                continue
            kept_origins.append((ya + py, xa + px))
            kept_crops.append(piece)
            boxes.append((xa + px, ya + py, xa + px + piece.shape[1], ya + py + piece.shape[0]))
            scores.append(rng.uniform(0.5, 1.0))
        parts.append(
            Instances(
                np.array(boxes, np.float32).reshape(-1, 4),
                np.ones(len(boxes), np.int64),
                Masks.from_crops(kept_crops, np.array(kept_origins).reshape(-1, 2), height, width),
                np.array(scores, np.float32),
            )
        )
    return parts


def _iou_with(instances: Instances, i: int, y: int, x: int, crop: np.ndarray) -> float:
    """IoU of predicted mask ``i`` with a mask given as a crop at ``(y, x)``, computed on their boxes."""
    py, px, pred = instances.mask_crop(i)
    y0, x0 = min(y, py), min(x, px)
    y1, x1 = max(y + crop.shape[0], py + pred.shape[0]), max(x + crop.shape[1], px + pred.shape[1])
    a, b = np.zeros((y1 - y0, x1 - x0), bool), np.zeros((y1 - y0, x1 - x0), bool)
    a[y - y0 : y - y0 + crop.shape[0], x - x0 : x - x0 + crop.shape[1]] = crop
    b[py - y0 : py - y0 + pred.shape[0], px - x0 : px - x0 + pred.shape[1]] = pred
    return (a & b).sum() / max(1, (a | b).sum())


@pytest.mark.parametrize("overlap", [48, 16])
def test_nuclei_across_tile_borders_come_out_once_each(overlap):
    """Real nuclei (the sample's largest, ~27 px) placed across the borders of 128-px tiles: one instance
    each, IoU >= 0.9 with the whole mask. With a 16-px overlap many are cut in every tile that holds them
    (merged as the union of the pieces); with 48 px most lie whole in some tile."""
    rng = np.random.default_rng(0)
    height, width = 128 + 3 * (128 - overlap), 128 + 4 * (128 - overlap)  # overlaps exactly `overlap`
    grid = tile_grid(height, width, 128, overlap)
    borders = np.unique(np.concatenate([grid[:, 0], grid[:, 2], grid[:, 1], grid[:, 3]]))
    origins, crops = _place(_nuclei_masks((16, 20, 25, 27, 37)), height, width, rng, across=borders[1:-1])
    assert len(crops) >= 40
    whole_in_a_tile = [
        any(y0 <= y and y + c.shape[0] <= y1 and x0 <= x and x + c.shape[1] <= x1 for y0, x0, y1, x1 in grid)
        for (y, x), c in zip(origins, crops, strict=True)
    ]
    if overlap == 16:
        assert sum(not w for w in whole_in_a_tile) >= 10
    parts = _tile_predictions(origins, crops, grid, height, width, rng)
    assert sum(len(p) for p in parts) > 1.5 * len(crops)  # objects were seen by several tiles
    merged = merge_instances(parts, grid, (height, width))
    assert len(merged) == len(crops)
    for (y, x), crop in zip(origins, crops, strict=True):
        best = max(_iou_with(merged, i, y, x, crop) for i in range(len(merged)))
        assert best >= 0.9


def _instances(placed: list[tuple[int, int, np.ndarray]], scores, height: int, width: int) -> Instances:
    """Scored instances (label 1) of ``(y, x, crop)`` masks."""
    boxes = [(x, y, x + c.shape[1], y + c.shape[0]) for y, x, c in placed]
    return Instances(
        np.array(boxes, np.float32).reshape(-1, 4),
        np.ones(len(placed), np.int64),
        Masks.from_crops([c for *_, c in placed], [(y, x) for y, x, _ in placed], height, width),
        np.array(scores, np.float32),
    )


def test_one_source_never_gives_two_pieces_to_one_object():
    """A weak model's two overlapping detections of one view (IoU < 0.5, both kept by its NMS) and one
    detection of the other view between them, agreeing with both (IoU >= 0.5): the middle one joins the
    better match only; chaining all three into one object would lose a detection (flip TTA lost 2.5
    points of mask AP on the DSB bench split that way)."""
    nucleus = max(_nuclei_masks(range(1)), key=lambda c: c.sum())
    shift = 2 * (nucleus.shape[1] // 5)  # the middle one is shifted by a fifth of the width from both
    left, middle, right = (10, 10, nucleus), (10, 10 + shift // 2, nucleus), (10, 10 + shift, nucleus)
    height, width = 40 + nucleus.shape[0], 40 + 2 * nucleus.shape[1]
    one = _instances([left, right], [0.9, 0.8], height, width)
    other = _instances([middle], [0.7], height, width)
    whole = [(0, 0, height, width)] * 2
    assert _iou_with(one, 0, *middle) >= 0.5 and _iou_with(one, 1, *middle) >= 0.5
    assert _iou_with(one, 0, *right) < 0.5
    merged = merge_instances([one, other], whole, (height, width), merge_ios=None, score_rule="mean")
    assert len(merged) == 2
    np.testing.assert_allclose(sorted(merged.scores), sorted([(0.9 + 0.7) / 2, 0.8 / 2]), atol=1e-6)
    # Tiles: the same three pieces seen by two tiles that both hold them.
    tiles = [(0, 0, height, width - 5), (0, 5, height, width)]
    assert len(merge_instances([one, other], tiles, (height, width))) == 2


def test_merging_on_a_large_canvas_allocates_no_full_size_mask():
    """8000x6000 canvas, 512-px tiles: merging ~1,000 pieces allocates a few MB (a full-size bool mask
    alone is 48 MB)."""
    rng = np.random.default_rng(1)
    height, width = 6000, 8000
    grid = tile_grid(height, width, 512, 128)
    borders = np.unique(np.concatenate([grid[:, 0], grid[:, 2], grid[:, 1], grid[:, 3]]))
    origins, crops = _place(_nuclei_masks(range(8)) * 2, height, width, rng, across=borders[1:-1])
    parts = _tile_predictions(origins, crops, grid, height, width, rng)
    tracemalloc.start()
    merged = merge_instances(parts, grid, (height, width))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(merged) == len(crops) > 300
    assert peak < 8e6, f"merging allocated {peak / 1e6:.1f} MB"


@pytest.mark.parametrize(("height", "width", "size", "overlap"), [(3000, 4000, 512, 128), (300, 900, 256, 0)])
def test_tile_grid_covers_the_image_with_equal_tiles(height, width, size, overlap):
    grid = tile_grid(height, width, size, overlap)
    shapes = {(int(y1 - y0), int(x1 - x0)) for y0, x0, y1, x1 in grid}
    assert shapes == {(min(size, height), min(size, width))}
    covered = np.zeros((height, width), dtype=np.int32)
    for y0, x0, y1, x1 in grid:
        covered[y0:y1, x0:x1] += 1
    assert covered.min() >= 1
    for axis in (0, 1):  # any object of at most `overlap` pixels lies whole in some tile
        starts = np.unique(grid[:, axis])
        ends = starts + min(size, (height, width)[axis])
        assert ((ends[:-1] - starts[1:]) >= overlap).all()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512", TileConfig(512, 128)),
        ("512,64", TileConfig(512, 64)),
        (" 640 , 16 ", TileConfig(640, 16)),
        ("512,64,whole", TileConfig(512, 64, whole_image=True)),
        ("auto", TileConfig(None)),
        ("AUTO,whole", TileConfig(None, whole_image=True)),
    ],
)
def test_parse_tile(text, expected):
    assert parse_tile(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("big", "expected SIZE[,OVERLAP]"),
        ("512,64,32", "expected SIZE[,OVERLAP]"),
        ("-512", "expected SIZE[,OVERLAP]"),
        ("512.5", "expected SIZE[,OVERLAP]"),
        ("", "expected SIZE[,OVERLAP]"),
        ("16", "tile size must be 64..8192"),
        ("512,300", "tile overlap must be 16..256"),
        ("512,0", "tile overlap must be 16..256"),
    ],
)
def test_parse_tile_errors_say_what_is_expected(text, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace(".", r"\.")):
        parse_tile(text)


def test_auto_tiles_only_large_images_of_crop_trained_models():
    cropped = ModelConfig(arch="maskrcnn_resnet18_fpn", image_size=256, crop_size=256)
    whole = ModelConfig(arch="maskrcnn_resnet18_fpn", image_size=256)
    auto = parse_tile("auto")
    assert resolve_tile(auto, whole, 3000, 4000) is None
    assert resolve_tile(auto, cropped, 256, 480) is None
    assert resolve_tile(auto, cropped, 3000, 4000) == TileConfig(512, 128)
    assert resolve_tile(parse_tile("300"), whole, 100, 100) == TileConfig(300, 75)
    # Old checkpoints (no crop_size) load unchanged; a bad crop size is refused.
    assert ModelConfig.from_dict({"arch": "maskrcnn_resnet18_fpn"}).crop_size is None
    with pytest.raises(ValueError, match="crop_size"):
        ModelConfig(crop_size=8)


@pytest.fixture(scope="module")
def random_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiling") / "random.pt"
    return save_light_checkpoint(path, ["nucleus"], 128, 0, score_threshold=0.0, detections_per_image=20)


@pytest.fixture(scope="module")
def nuclei_image():
    folder = sorted((NUCLEI / "stage1_train").iterdir())[0]
    return np.asarray(Image.open(next((folder / "images").glob("*.png"))).convert("RGB"))


def test_tiles_run_at_native_size_in_batches_and_land_in_place(random_checkpoint, nuclei_image):
    """The tiled path equals predicting each tile on its own at native size (the public API, one at a time),
    shifting it into place by hand and merging; batching tiles changes nothing."""
    height, width = 128, 230
    image = np.ascontiguousarray(nuclei_image[:height, :width])
    grid = tile_grid(height, width, 128, 32)  # 3 tiles in a row
    fast = {"device": "cpu", "proposals": 100, "precision": "fp32"}  # bitwise comparisons
    one_by_one = Predictor(random_checkpoint, image_size=128, **fast)  # 128-px tiles: scale 1
    parts = []
    for y0, x0, y1, x1 in grid:
        found = one_by_one.predict(image[y0:y1, x0:x1])
        crops = [found.mask_crop(i) for i in range(len(found))]
        parts.append(
            Instances(
                found.boxes + np.array([x0, y0, x0, y0], np.float32),
                found.labels,
                Masks.from_crops(
                    [c for _, _, c in crops], [(y + y0, x + x0) for y, x, _ in crops], height, width
                ),
                found.scores,
            )
        )
    expected = merge_instances(parts, grid, (height, width), priorities=[1.0] * len(grid))
    assert len(expected) > 20
    for batch_size in (1, 3):
        tile = TileConfig(128, 32, batch_size=batch_size)
        tiled = Predictor(random_checkpoint, tile=tile, **fast).predict(image)
        assert tiled.image_size == (height, width) and len(tiled) == len(expected)
        # Equal up to float rounding: oneDNN picks other kernels for other batch sizes.
        np.testing.assert_allclose(tiled.boxes, expected.boxes, atol=1e-2)
        np.testing.assert_allclose(tiled.scores, expected.scores, atol=1e-4)
        assert (tiled.dense_masks() != expected.dense_masks()).mean() < 1e-4


def test_flip_tta_is_symmetric(random_checkpoint, nuclei_image):
    """The merge does not depend on which view comes first: TTA of the mirror image is the mirror of TTA."""
    fast = {"device": "cpu", "proposals": 100, "score_threshold": 0.1}
    predictor = Predictor(random_checkpoint, tta="flip", **fast)
    image = nuclei_image[:, :200]
    direct = predictor.predict(image)
    mirrored = flip_instances(predictor.predict(np.ascontiguousarray(image[:, ::-1])))
    assert len(direct) == len(mirrored) > 0
    np.testing.assert_allclose(direct.scores, mirrored.scores, atol=1e-6)
    np.testing.assert_allclose(direct.boxes, mirrored.boxes, atol=1e-3)
    np.testing.assert_array_equal(direct.dense_masks(), mirrored.dense_masks())
    plain = Predictor(random_checkpoint, **fast).predict(image)
    mirror = Predictor(random_checkpoint, **fast).predict(image[:, ::-1])
    views = [plain, flip_instances(mirror)]
    whole = [(0, 0, *image.shape[:2])] * 2
    forward = merge_instances(views, whole, image.shape[:2], score_rule="mean")
    backward = merge_instances(views[::-1], whole, image.shape[:2], score_rule="mean")
    np.testing.assert_array_equal(forward.scores, backward.scores)
    np.testing.assert_array_equal(forward.dense_masks(), backward.dense_masks())


def test_predict_cli_tiles_and_flips_and_refuses_a_bad_tile(random_checkpoint, tmp_path, capsys):
    from instaseg.cli import main

    folder = sorted((NUCLEI / "stage1_train").iterdir())[0]
    image = str(next((folder / "images").glob("*.png")))
    out = tmp_path / "out"
    bad = main(["predict", str(random_checkpoint), image, "--out", str(out), "--tile", "512,300"])
    assert bad == 2
    assert "--tile: tile overlap must be 16..256 pixels" in capsys.readouterr().err
    assert not out.exists()  # refused before any work
    options = ["--tile", "160,32", "--tta", "flip", "--score-threshold", "0.2", "--proposals", "100"]
    code = main(["predict", str(random_checkpoint), image, "--out", str(out), "--save", "json", *options])
    assert code == 0, capsys.readouterr().err
    results = json.loads((out / "predictions.json").read_text())
    assert results and all(r["score"] >= 0.2 for r in results)
    assert all(r["segmentation"]["size"] == [256, 256] for r in results)
    assert all(0 <= r["bbox"][0] and r["bbox"][0] + r["bbox"][2] <= 256 + 1e-3 for r in results)


def test_serve_and_the_label_studio_backend_take_tile(random_checkpoint, nuclei_image):
    """``--tile`` reaches the model behind ``serve`` and ``label-studio-backend`` (load_service), whose
    predictions are then the tiled ones; a bad value is refused before the model loads."""
    import argparse

    from instaseg.cli import UsageError, label_studio_backend, serve

    for command in (serve, label_studio_backend):
        parser = argparse.ArgumentParser()
        command.add_arguments(parser)
        assert "--tile" in parser.format_help()
    service = serve.load_service(str(random_checkpoint), "cpu", "128,32")
    assert service.predictor.tile == TileConfig(128, 32)
    image = np.ascontiguousarray(nuclei_image[:128, :230])
    tiled = Predictor(random_checkpoint, device="cpu", tile="128,32").predict(image)
    served = service.predict(image)
    assert len(served) == len(tiled) > 0
    np.testing.assert_array_equal(served.dense_masks(), tiled.dense_masks())
    with pytest.raises(UsageError, match="--tile: tile overlap"):
        serve.load_service(str(random_checkpoint), "cpu", "512,300")
