"""Does the uncertainty score pick the images a partly trained model gets wrong? On the bundled nuclei sample.

1. A partly trained model: ``--checkpoint``, or (default) the light ResNet-18 Mask R-CNN trained from scratch
   for ``--epochs`` epochs (seed 0; ``--minutes`` caps the time) on the first ``--train-images`` sample images
   (``instaseg train``, 256 px). A number of epochs rather than a time budget: the model, and so the numbers,
   do not depend on how fast or how loaded the machine is.
2. For every other sample image (held out from that training): the model's uncertainty
   (:func:`instaseg.app.uncertainty.predict_with_uncertainty`, with the mirror image unless ``--no-flip``)
   and its quality: the mean mask IoU against the ground truth, where each ground-truth object counts with
   the best IoU of a prediction scoring >= ``--score`` (0 when none overlaps it, so missed objects count).
3. Images sorted by uncertainty: the mean IoU of the most uncertain third vs the least uncertain third
   (the loop's claim: the first is lower), and the Spearman rank correlation of uncertainty and IoU.

Run: ``.venv/bin/python bench/uncertainty_order.py`` (about 10 minutes on 2 CPU cores with the defaults;
``--epochs 1 --limit 6`` checks that it runs). ``--json FILE`` saves the per-image numbers;
``--workdir DIR`` keeps the trained model (``DIR/run/best.pt``) for another run with ``--checkpoint``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "instaseg" / "sample_data" / "nuclei"


def train_partly(
    out: Path, train_names: list[str], held_out: list[str], epochs: int, minutes: float | None
) -> Path:
    """``instaseg train`` from scratch on ``train_names`` for ``epochs`` (val: 4 held-out images)."""
    splits = out / "splits.json"
    splits.write_text(json.dumps({"train": train_names, "val": held_out[:4], "test": []}))
    command = [sys.executable, "-m", "instaseg", "train", str(SAMPLE), "--out", str(out / "run")]
    command += ["--splits", str(splits), "--arch", "maskrcnn_resnet18_fpn", "--weights", "none"]
    command += ["--image-size", "256", "--optimizer", "adamw", "--lr", "0.001", "--warmup-steps", "20"]
    command += ["--epochs", str(epochs), "--seed", "0", "--device", "cpu"]
    command += ["--detections-per-image", "300", "--workers", "0"]
    if minutes:
        command += ["--minutes", str(minutes)]
    print(f"training the partly trained model for {epochs} epochs on {len(train_names)} images", flush=True)
    subprocess.run(command, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    return out / "run" / "best.pt"


def ground_truth_iou(predicted, truth, min_score: float) -> float:
    """Mean over ground-truth objects of the best mask IoU of a prediction scoring >= ``min_score``."""
    from instaseg.app.uncertainty import mask_ious

    if not len(truth):
        return float("nan")
    kept = predicted[predicted.scores >= min_score]
    if not len(kept):
        return 0.0
    return float(mask_ious(truth, kept).max(axis=1).mean())


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ranks_a, ranks_b = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ranks_a, ranks_b)[0, 1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="a partly trained checkpoint (default: train one)")
    parser.add_argument("--epochs", type=int, default=15, help="training epochs of the default model")
    parser.add_argument(
        "--minutes", type=float, default=None, help="cap on its training time (default: none)"
    )
    parser.add_argument("--train-images", type=int, default=20, help="sample images it trains on")
    parser.add_argument("--limit", type=int, default=None, help="measure only this many held-out images")
    parser.add_argument("--score", type=float, default=0.5, help="lowest score of a prediction counted")
    parser.add_argument("--no-flip", action="store_true", help="uncertainty from the scores alone")
    parser.add_argument("--json", help="write the per-image numbers here")
    parser.add_argument("--workdir", help="train the default model here and keep it (default: a temp dir)")
    args = parser.parse_args()

    from instaseg.app.uncertainty import predict_with_uncertainty
    from instaseg.formats.load import load_dataset
    from instaseg.images import load_image
    from instaseg.model.predictor import Predictor

    records = sorted(load_dataset(str(SAMPLE)).records, key=lambda r: r.file_name)
    train, held_out = records[: args.train_images], records[args.train_images :][: args.limit]
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(args.workdir or scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        checkpoint = args.checkpoint or train_partly(
            workdir, [r.file_name for r in train], [r.file_name for r in held_out], args.epochs, args.minutes
        )
        predictor = Predictor(checkpoint, device="cpu")
        rows, started = [], time.monotonic()
        for record in held_out:
            image = load_image(record.image)
            instances, uncertainty = predict_with_uncertainty(predictor.predict, image, flip=not args.no_flip)
            iou = ground_truth_iou(instances, record.instances(), args.score)
            rows.append({"image": record.file_name, "uncertainty": uncertainty.value, "iou": iou})
    seconds = (time.monotonic() - started) / max(len(rows), 1)
    rows.sort(key=lambda r: -r["uncertainty"])
    third = max(1, len(rows) // 3)
    top, bottom = rows[:third], rows[-third:]
    uncertainty = np.array([r["uncertainty"] for r in rows])
    iou = np.array([r["iou"] for r in rows])
    summary = {
        "checkpoint": str(args.checkpoint or f"trained {args.epochs} epochs on {len(train)} images"),
        "images": len(rows),
        "flip": not args.no_flip,
        "mean_iou_most_uncertain_third": float(np.mean([r["iou"] for r in top])),
        "mean_iou_least_uncertain_third": float(np.mean([r["iou"] for r in bottom])),
        "mean_iou_all": float(iou.mean()),
        "spearman_uncertainty_vs_iou": spearman(uncertainty, iou),
        "seconds_per_image": seconds,
    }
    for key, value in summary.items():
        print(f"{key:32s} {value:.4f}" if isinstance(value, float) else f"{key:32s} {value}")
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "images": rows}, indent=1))
    ok = summary["mean_iou_most_uncertain_third"] < summary["mean_iou_least_uncertain_third"]
    print("the most uncertain third is worse" if ok else "NOT ORDERED: the most uncertain third is not worse")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
