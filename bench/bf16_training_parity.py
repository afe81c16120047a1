"""Does bf16 training reach fp32's accuracy in the same number of steps, and how many more steps per minute?

    .venv/bin/python bench/bf16_training_parity.py [--epochs 20] [--out runs/bf16_parity] [--threads 2]
        [--precisions fp32,bf16] [--arch maskrcnn_resnet18_fpn] [--image-size 256]

Runs ``instaseg train`` once per precision with everything else equal (the DSB nuclei sample, the split
``bench/dsb_split_36_4_20.json``: 36 train, 4 val, 20 test images; ``--weights none``, AdamW lr 1e-3, batch 2,
seed 0, a fixed number of epochs, no time budget), one after the other, then scores each run's ``last.pt``
(the same number of steps) on the val and test images with the same fp32 predictor, so that the difference
is the training's. Prints, per precision: steps, training minutes (from ``metrics.csv``: train + the
per-epoch validation losses), steps/minute, val and test mask AP (val is 4 images: the test AP on 20 is the
steadier figure), and the differences to fp32.

On a CPU without native bf16, bf16 is emulated and far slower (the run says so in its log): the comparison
of accuracies still holds, the one of speed does not.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DSB = REPO.parent / "shared" / "datasets" / "dsb2018_nuclei_sample"
SPLITS = REPO / "bench" / "dsb_split_36_4_20.json"
DETECTIONS = 300  # dense images: as the README's DSB runs


def train(args, precision: str, run_dir: Path) -> float:
    """``instaseg train`` in a subprocess; returns its wall seconds."""
    command = [sys.executable, "-m", "instaseg", "train", str(args.data), "--out", str(run_dir)]
    command += [
        "--arch",
        args.arch,
        "--weights",
        "none",
        "--image-size",
        str(args.image_size),
        "--crop",
        "none",
    ]
    command += ["--epochs", str(args.epochs), "--optimizer", "adamw", "--lr", "1e-3", "--batch-size", "2"]
    command += ["--warmup-steps", "20", "--splits", str(args.splits), "--workers", "0", "--seed", "0"]
    command += ["--device", "cpu", "--precision", precision, "--detections-per-image", str(DETECTIONS)]
    print("$", " ".join(command), flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    started = time.perf_counter()
    subprocess.run(command, check=True, env=env, cwd=REPO)
    return time.perf_counter() - started


def training_minutes(run_dir: Path) -> tuple[int, float]:
    """(epochs, minutes) from the run's ``metrics.csv`` (each epoch's seconds: training + validation losses)."""
    rows = list(csv.DictReader(open(run_dir / "metrics.csv")))
    return len(rows), sum(float(r["seconds"]) for r in rows) / 60


def mask_aps(checkpoint: Path, args) -> dict[str, float]:
    """Mask AP (percent) of ``checkpoint`` on the val and test images, predicted in fp32."""
    import torch

    from instaseg.evaluate.evaluator import mask_map, predict_records
    from instaseg.formats.load import load_dataset
    from instaseg.model.predictor import Predictor
    from instaseg.splits import load_splits, records_of_split

    torch.set_num_threads(args.threads)
    dataset = load_dataset(str(args.data))
    load_splits(dataset.records, str(args.splits))
    predictor = Predictor(checkpoint, device="cpu", precision="fp32")
    aps = {}
    for split in ("val", "test"):
        records = records_of_split(dataset.records, split)
        predictions = predict_records(predictor, records)
        value = mask_map(records, dataset.class_map, predictions, max_dets=DETECTIONS)
        aps[split] = 100 * (value or 0.0)
    return aps


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DSB)
    parser.add_argument("--splits", type=Path, default=SPLITS)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bf16_parity")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--arch", default="maskrcnn_resnet18_fpn")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of the training runs")
    parser.add_argument("--precisions", default="fp32,bf16", help="the first is the reference")
    args = parser.parse_args()
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    rows = {}
    for precision in precisions:
        run_dir = args.out / precision
        if (run_dir / "last.pt").exists():
            print(f"{run_dir} holds a finished run: scored as it is (delete it to train again)")
            wall = float("nan")
        else:
            wall = train(args, precision, run_dir)
        epochs, minutes = training_minutes(run_dir)
        train_images = len(json.loads(args.splits.read_text())["train"])
        steps = epochs * math.ceil(train_images / 2)  # batch 2
        rows[precision] = {
            "steps": steps,
            "minutes": minutes,
            "wall": wall,
            **mask_aps(run_dir / "last.pt", args),
        }
    reference = rows[precisions[0]]
    print(
        f"\n{'precision':10s} {'steps':>6s} {'minutes':>8s} {'steps/min':>9s} {'val AP':>7s} {'test AP':>8s}"
    )
    print("(minutes: training + per-epoch validation losses, from metrics.csv; wall: the whole command)")
    for precision, row in rows.items():
        print(
            f"{precision:10s} {row['steps']:6d} {row['minutes']:8.2f} {row['steps'] / row['minutes']:9.2f} "
            f"{row['val']:7.2f} {row['test']:8.2f}   (vs {precisions[0]}: val {row['val'] - reference['val']:+.2f}, "
            f"test {row['test'] - reference['test']:+.2f}, speed {reference['minutes'] / row['minutes']:.2f}x; "
            f"wall {row['wall'] / 60:.1f} min)"
        )


if __name__ == "__main__":
    main()
