"""Large photos, small objects: crop training + tiled prediction vs whole-image prediction, on real nuclei.

    .venv/bin/python bench/large_images.py --out runs/large_images [--epochs 15] [--threads 2]

1. Builds synthetic 4000x3000 canvases from the real DSB 2018 nuclei sample (``../shared/datasets/
   dsb2018_nuclei_sample``, one mask PNG per nucleus): whole 256x256 images pasted at native size at random
   non-overlapping places on a dark background (value 3, the images' typical background), so nuclei fall
   across tile borders; the ground truth is their masks, moved. Train canvases come from the train images
   of ``bench/dsb_split_36_4_20.json`` (each used twice, the second time flipped/rotated), the val canvas
   from its 4 val images, the test canvases from its 20 test images (each once, unchanged). Written as COCO
   (RLE) under ``OUT/canvases`` with a split file.
2. Trains the light model (ResNet-18, from scratch) on the train canvases with ``--crop 256``: random
   256-px crops at native resolution (the README's light recipe otherwise), unless ``--checkpoint`` is given.
   The budget is in epochs (an epoch: 46 crops of the 4000x3000 train canvas, 23 steps), so that the model,
   hence the AP, does not depend on the machine's load; 15 epochs (345 steps) is about the README's
   15-minute light run on an idle core.
3. Predicts the test canvases whole (resized to the model's 256 px, as without tiles) and tiled
   (``--tile``, default 512-px tiles overlapping 128 px at native resolution: what ``--tile auto`` picks
   for this model), and the 20 original
   256x256 test images whole; with and without ``--tta flip`` on the originals. Prints mask AP (COCO
   AP@[.50:.95], all detections kept) and seconds per image of each, and checks the acceptance: tiled >= 2x
   whole-image, and tiled within 5 points of the originals.

AP does not depend on the machine's load; the times do. ``--canvas 1600x1200 --epochs 1`` is a quick run;
``--checkpoint CKPT`` evaluates a model trained elsewhere (e.g. on the original 256x256 images, which are
their native resolution) without training.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from instaseg.core import Annotation, ClassMap, Record
from instaseg.evaluate import mask_map
from instaseg.formats.coco_export import records_to_coco
from instaseg.formats.load import load_dataset
from instaseg.images import load_image
from instaseg.masks import crop_to_rle, rle_to_mask, tight_crop
from instaseg.model.predictor import Predictor
from instaseg.splits import load_splits, records_of_split

REPO = Path(__file__).resolve().parents[1]
DSB = REPO / ".." / "shared" / "datasets" / "dsb2018_nuclei_sample"
SPLITS = REPO / "bench" / "dsb_split_36_4_20.json"
BACKGROUND = 3  # the DSB images' typical background (median of their 10th percentiles)
GAP = 16  # pixels kept free between pasted images
MAX_DETS = 10_000  # COCO AP counts every detection of a canvas (hundreds of nuclei)


def _transformed(image: np.ndarray, masks: list[np.ndarray], k: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """The image and masks rotated by ``k % 4`` quarter turns, mirrored when ``k >= 4``."""

    def move(a: np.ndarray) -> np.ndarray:
        a = np.rot90(a, k % 4)
        return np.ascontiguousarray(a[:, ::-1] if k >= 4 else a)

    return move(image), [move(m) for m in masks]


def _places(count: int, size: tuple[int, int], height: int, width: int, rng) -> list[tuple[int, int]]:
    """Top-left corners of ``count`` non-overlapping ``size`` rectangles (``GAP`` apart), by rejection."""
    placed: list[tuple[int, int]] = []
    h, w = size
    for _ in range(count * 500):
        if len(placed) == count:
            break
        y, x = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
        if all(abs(y - py) >= h + GAP or abs(x - px) >= w + GAP for py, px in placed):
            placed.append((y, x))
    if len(placed) < count:
        raise ValueError(
            f"cannot place {count} images of {w}x{h} on a {width}x{height} canvas; lower the count"
        )
    return placed


def build_canvas(sources, height: int, width: int, rng, path: Path, image_id: int) -> Record:
    """A canvas of the ``sources`` (``(record, transform k)``) written to ``path``, its nuclei as annotations."""
    canvas = np.full((height, width, 3), BACKGROUND, dtype=np.uint8)
    annotations = []
    corners = _places(len(sources), (256, 256), height, width, rng)
    for (record, k), (y, x) in zip(sources, corners, strict=True):
        image = load_image(record.image)
        masks = [rle_to_mask(a.rle) for a in record.annotations if not a.iscrowd]
        image, masks = _transformed(image, masks, k)
        canvas[y : y + image.shape[0], x : x + image.shape[1]] = image
        for mask in masks:
            dy, dx, crop = tight_crop(mask)
            if not crop.size:
                continue
            y0, x0 = y + dy, x + dx
            box = (float(x0), float(y0), float(x0 + crop.shape[1]), float(y0 + crop.shape[0]))
            annotations.append(Annotation(1, box, crop_to_rle(crop, y0, x0, height, width)))
    cv2.imwrite(str(path), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    return Record(str(path), path.name, width, height, annotations, image_id=image_id)


def build_canvases(out: Path, height: int, width: int, seed: int) -> tuple[Path, Path]:
    """Canvases of every split under ``out``; returns ``(COCO JSON, split file)``."""
    dataset = load_dataset(str(DSB), format="mask-png")
    load_splits(dataset.records, str(SPLITS))
    rng = np.random.default_rng(seed)
    capacity = max(1, (height // (256 + GAP)) * (width // (256 + GAP)) // 2)  # half full at most
    plan = {
        "train": [
            (r, k) for r in records_of_split(dataset.records, "train") for k in (0, int(rng.integers(1, 8)))
        ],
        "val": [(r, 0) for r in records_of_split(dataset.records, "val")],
        "test": [(r, 0) for r in records_of_split(dataset.records, "test")],
    }
    out.mkdir(parents=True, exist_ok=True)
    records, names = [], {}
    for split, sources in plan.items():
        order = rng.permutation(len(sources))
        count = math.ceil(len(sources) / capacity)
        per_canvas = math.ceil(len(sources) / count)
        names[split] = []
        for c in range(count):
            chosen = [sources[i] for i in order[c * per_canvas : (c + 1) * per_canvas]]
            path = out / f"{split}_{c}.png"
            records.append(build_canvas(chosen, height, width, rng, path, len(records) + 1))
            names[split].append(path.name)
    coco = records_to_coco(records, ClassMap(("nucleus",)), mask_format="rle")
    (out / "annotations.json").write_text(json.dumps(coco))
    (out / "splits.json").write_text(json.dumps(names, indent=1))
    counts = {s: sum(len(r.annotations) for r in records if r.file_name in n) for s, n in names.items()}
    print(
        f"canvases {width}x{height}: " + ", ".join(f"{len(names[s])} {s} ({counts[s]} nuclei)" for s in names)
    )
    return out / "annotations.json", out / "splits.json"


def train(data: Path, splits: Path, run: Path, epochs: int, minutes: float, crop: int, workers: int) -> Path:
    command = [
        sys.executable,
        "-m",
        "instaseg",
        "train",
        str(data),
        "--out",
        str(run),
        "--splits",
        str(splits),
    ]
    command += ["--crop", str(crop), "--arch", "maskrcnn_resnet18_fpn", "--weights", "none"]
    command += ["--epochs", str(epochs), "--minutes", str(minutes), "--optimizer", "adamw", "--lr", "1e-3"]
    command += ["--batch-size", "2", "--warmup-steps", "20", "--workers", str(workers), "--device", "cpu"]
    command += ["--detections-per-image", "300"]
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True)
    return run / "best.pt"


def measure(predictor: Predictor, records: list[Record], class_map: ClassMap, max_dets: int):
    """``(mask AP in percent, seconds per image)`` of ``predictor`` on ``records``."""
    predictions, seconds = [], 0.0
    for record in records:
        image = load_image(record.image)
        start = time.perf_counter()
        predictions.append(predictor.predict_arrays([image])[0])
        seconds += time.perf_counter() - start
    ap = mask_map(records, class_map, predictions, max_dets=max_dets)
    return 100.0 * float(ap or 0.0), seconds / len(records), sum(len(p) for p in predictions)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/large_images", help="folder for canvases, run and results")
    parser.add_argument("--canvas", default="4000x3000", help="canvas WIDTHxHEIGHT")
    parser.add_argument("--epochs", type=int, default=15, help="training epochs (23 steps each)")
    parser.add_argument("--minutes", type=float, default=0.0, help="training time cap (0: none)")
    parser.add_argument("--crop", type=int, default=256, help="train --crop size (the model's input size)")
    parser.add_argument("--tile", default="512,128", help="predict --tile value for the tiled run")
    parser.add_argument("--checkpoint", default=None, help="skip training: evaluate this checkpoint")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for prediction")
    parser.add_argument("--workers", type=int, default=1, help="training DataLoader workers")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    width, height = (int(v) for v in args.canvas.lower().split("x"))
    out = Path(args.out)
    data, splits = build_canvases(out / "canvases", height, width, args.seed)
    checkpoint = args.checkpoint or train(
        data, splits, out / "run", args.epochs, args.minutes, args.crop, args.workers
    )
    torch.set_num_threads(args.threads)

    canvases = load_dataset(str(data))
    load_splits(canvases.records, str(splits))
    originals = load_dataset(str(DSB), format="mask-png")
    load_splits(originals.records, str(SPLITS))
    test_canvases = records_of_split(canvases.records, "test")
    test_originals = records_of_split(originals.records, "test")
    settings = {"device": "cpu", "max_detections": 300}
    rows = {
        "whole-image, test canvases": (Predictor(checkpoint, **settings), test_canvases, MAX_DETS),
        f"tiled ({args.tile}), test canvases": (
            Predictor(checkpoint, tile=args.tile, **settings),
            test_canvases,
            MAX_DETS,
        ),
        "original 256x256 test images": (Predictor(checkpoint, **settings), test_originals, 300),
        "original test images, --tta flip": (
            Predictor(checkpoint, tta="flip", **settings),
            test_originals,
            300,
        ),
    }
    results = {}
    for name, (predictor, records, max_dets) in rows.items():
        class_map = canvases.class_map if records is test_canvases else originals.class_map
        ap, seconds, count = measure(predictor, records, class_map, max_dets)
        results[name] = {
            "mask_ap": round(ap, 2),
            "seconds_per_image": round(seconds, 3),
            "predictions": count,
        }
        print(f"{name:40s} mask AP {ap:6.2f}   {seconds:7.2f} s/image   {count} predictions", flush=True)
    whole, tiled, original = (results[k]["mask_ap"] for k in list(rows)[:3])
    checks = {
        "tiled >= 2x whole-image": tiled >= 2 * whole,
        "tiled within 5 points of the originals": abs(tiled - original) <= 5,
    }
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}: {name}")
    results["checks"] = checks
    results["checkpoint"] = str(checkpoint)
    (out / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
