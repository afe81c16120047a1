"""Quality per CPU-minute: instaseg's default recipe from scratch for a time budget, scored on held-out images.

    .venv/bin/python bench/quality.py --minutes 15                       # DSB nuclei, bench split
    .venv/bin/python bench/quality.py --minutes 15 --baseline            # also torchvision's default recipe
    .venv/bin/python bench/quality.py --minutes 15 --domain pennfudan    # another domain: large, few objects
    .venv/bin/python bench/quality.py --minutes 15 -- --image-size 384   # extra `instaseg train` flags

Trains ``instaseg train DATA --minutes M`` with nothing else chosen (the automatic recipe) on the split
file's train/val images, with the whole CPU, evaluates ``best.pt`` on the split file's test images with
``instaseg evaluate`` (images never used for training or selection), and prints mask AP, AP50, box AP, the
steps and epochs the budget bought and the minutes it took, and the same for ``last.pt`` (the model at
the end of the schedule). ``--baseline`` runs
``bench/torchvision_baseline.py`` for the same minutes and scores it the same way. Run it alone on the
machine: the budget is wall time.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATASETS = REPO.parent / "shared" / "datasets"
DOMAINS = {
    "dsb": (DATASETS / "dsb2018_nuclei_sample", REPO / "bench" / "dsb_split_36_4_20.json"),
    "pennfudan": (DATASETS / "PennFudanPed", REPO / "bench" / "pennfudan_split_100_20_50.json"),
}


def instaseg(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "instaseg", *args], capture_output=True, text=True)


def evaluate(checkpoint: Path, data: Path, splits: Path) -> dict:
    """Test-split report of ``checkpoint`` (max-dets: evaluate's default, the checkpoint's detections per
    image)."""
    done = instaseg(
        "evaluate", str(checkpoint), str(data), "--split", "test", "--splits", str(splits),
        "--no-losses", "--json", "--out", str(checkpoint.parent / f"eval-test-{checkpoint.stem}"),
    )  # fmt: skip
    if done.returncode != 0:
        sys.exit(f"evaluate failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout)


def without_test(splits: Path, out: Path) -> Path:
    """The split file with its test images left out of every split: training never sees them, not even to
    report test losses each epoch (which would spend the budget on them)."""
    payload = json.loads(splits.read_text())
    out.mkdir(parents=True, exist_ok=True)
    path = out / "train_val_splits.json"
    path.write_text(json.dumps({"train": payload["train"], "val": payload["val"], "test": []}))
    return path


def train_instaseg(data: Path, splits: Path, minutes: float, out: Path, extra: list[str]) -> dict:
    started = time.monotonic()
    training_splits = without_test(splits, out.parent)
    done = instaseg(
        "train", str(data), "--splits", str(training_splits), "--minutes", str(minutes), "--out", str(out),
        *extra,
    )  # fmt: skip
    if done.returncode != 0:
        sys.exit(f"train failed:\n{done.stderr[-3000:]}")
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    last = rows[-1]
    return {
        "minutes": (time.monotonic() - started) / 60,
        "epochs": len(rows),
        "steps": int(float(last.get("steps", 0) or 0)),
        "final_lr": float(last.get("lr_end", last["lr"])),
        "log": [
            line
            for line in done.stdout.splitlines()
            if line.startswith(("recipe", "precision", "time budget", "weights"))
        ],
    }


def train_baseline(data: Path, splits: Path, minutes: float, out: Path) -> dict:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "torchvision_baseline.py"), "--data", str(data), "--splits",
         str(splits), "--minutes", str(minutes), "--out", str(out)],
        capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode != 0:
        sys.exit(f"baseline failed:\n{done.stderr[-3000:]}")
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "minutes": (time.monotonic() - started) / 60}


def line(name: str, report: dict, run: dict) -> str:
    segm, bbox = report["segm"], report["bbox"]
    return (
        f"{name:22s} mask AP {100 * segm['AP']:5.1f}  AP50 {100 * segm['AP50']:5.1f}  box AP {100 * bbox['AP']:5.1f}"
        f"  steps {run.get('steps', '?')}  epochs {run.get('epochs', 0):.1f}  {run['minutes']:.1f} min"
        + (f"  final lr {run['final_lr']:.2e}" if "final_lr" in run else "")
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--domain", choices=list(DOMAINS), default="dsb")
    parser.add_argument("--baseline", action="store_true", help="also train torchvision's default recipe")
    parser.add_argument("--out", default="runs/quality")
    parser.add_argument("extra", nargs="*", help="flags passed on to `instaseg train` (after --)")
    args = parser.parse_args()
    data, splits = DOMAINS[args.domain]
    out = Path(args.out) / args.domain
    run = train_instaseg(data, splits, args.minutes, out / "instaseg", args.extra)
    for text in run["log"]:
        print(text)
    name = "instaseg " + (" ".join(args.extra) or "default")
    print(line(name, evaluate(out / "instaseg" / "best.pt", data, splits), run))
    # the last epoch's model too: whether selecting by a few validation images cost or bought AP
    print(line("  (its last.pt)", evaluate(out / "instaseg" / "last.pt", data, splits), run))
    if args.baseline:
        base = train_baseline(data, splits, args.minutes, out / "torchvision")
        print(line("torchvision default", evaluate(out / "torchvision" / "best.pt", data, splits), base))


if __name__ == "__main__":
    main()
