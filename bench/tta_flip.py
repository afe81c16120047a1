"""Flip test-time augmentation on the bench split: mask AP with and without ``--tta flip``, and its time.

    .venv/bin/python bench/tta_flip.py CHECKPOINT [--domain dsb|pennfudan] [--threads 2]

Predicts the split file's 20 (DSB) or 50 (PennFudan) test images with ``CHECKPOINT`` (e.g. the
``bench/quality.py`` model, or ``runs/quickstart/model/best.pt`` on DSB), once plainly and once with
``tta="flip"`` (the image and its mirror, merged by mask overlap: :func:`instaseg.model.tiling.predict_image`),
both through :class:`~instaseg.model.predictor.Predictor` with the checkpoint's score threshold and
detections per image, and prints COCO mask AP@[.50:.95], AP50 and seconds per image of each. AP does
not depend on the machine's load; the seconds do (run it alone for those).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from instaseg.evaluate import coco_evaluate
from instaseg.formats.coco_export import instances_to_coco_results, records_to_coco
from instaseg.formats.load import load_dataset
from instaseg.images import load_image
from instaseg.model.predictor import Predictor
from instaseg.splits import load_splits, records_of_split

REPO = Path(__file__).resolve().parents[1]
DATASETS = REPO.parent / "shared" / "datasets"
DOMAINS = {
    "dsb": (DATASETS / "dsb2018_nuclei_sample", "mask-png", REPO / "bench" / "dsb_split_36_4_20.json"),
    "pennfudan": (DATASETS / "PennFudanPed", None, REPO / "bench" / "pennfudan_split_100_20_50.json"),
}


def measure(predictor: Predictor, records, class_map) -> dict:
    """Mask AP, AP50 (percent) and seconds per image of ``predictor`` on ``records``."""
    predictions, seconds = [], 0.0
    for record in records:
        image = load_image(record.image)
        start = time.perf_counter()
        predictions.append(predictor.predict_arrays([image])[0])
        seconds += time.perf_counter() - start
    results = [
        r
        for record, found in zip(records, predictions, strict=True)
        for r in instances_to_coco_results(found, record.image_id)
    ]
    gt = records_to_coco(records, class_map)
    summary = coco_evaluate(gt, results, "segm", predictor.max_detections).summary
    return {
        "mask_ap": round(100 * float(summary["AP"]), 2),
        "mask_ap50": round(100 * float(summary["AP50"]), 2),
        "seconds_per_image": round(seconds / len(records), 3),
        "predictions": sum(len(p) for p in predictions),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--domain", default="dsb", choices=list(DOMAINS))
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--out", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data, format, splits = DOMAINS[args.domain]
    dataset = load_dataset(str(data), format=format)
    load_splits(dataset.records, str(splits))
    test = records_of_split(dataset.records, "test")
    results = {}
    for name, tta in (("plain", None), ("tta flip", "flip")):
        predictor = Predictor(args.checkpoint, device="cpu", tta=tta)
        results[name] = measure(predictor, test, dataset.class_map)
        row = results[name]
        print(
            f"{name:10s} mask AP {row['mask_ap']:6.2f}  AP50 {row['mask_ap50']:6.2f}  "
            f"{row['seconds_per_image']:6.3f} s/image  {row['predictions']} predictions ({len(test)} images)",
            flush=True,
        )
    plain, flip = results["plain"], results["tta flip"]
    print(
        f"tta flip: {flip['mask_ap'] - plain['mask_ap']:+.2f} mask AP points, "
        f"x{flip['seconds_per_image'] / max(plain['seconds_per_image'], 1e-9):.2f} time"
    )
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
