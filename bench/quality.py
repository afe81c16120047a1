"""Quality per CPU-minute: instaseg's default recipe from scratch for a time budget, scored on held-out images.

    .venv/bin/python bench/quality.py --minutes 15                       # DSB nuclei, bench split
    .venv/bin/python bench/quality.py --minutes 15 --runs 2              # twice (seeds 0, 1), with the spread
    .venv/bin/python bench/quality.py --minutes 15 --first-seed 1        # once, with seed 1
    .venv/bin/python bench/quality.py --minutes 15 --baseline            # also torchvision's default recipe
    .venv/bin/python bench/quality.py --minutes 15 --domain pennfudan    # another domain: large, few objects
    .venv/bin/python bench/quality.py --minutes 15 -- --image-size 384   # extra `instaseg train` flags

Trains ``instaseg train DATA --minutes M --keep-by-loss`` with nothing else chosen (the automatic recipe) on
the split file's train/val images (its test images left out of training, so no budget goes to them), with
the whole CPU, and scores on the split file's test images with ``instaseg evaluate`` (images never used for
training or selection) three checkpoints of each run: ``best.pt`` (the ``--select`` rule, ``auto`` unless
given), ``best-by-loss.pt`` (the lowest validation loss of the same run: the rule before ``auto``) and
``last.pt`` (the model at the end of the schedule). For each it prints mask AP, AP50, box AP, the steps
and epochs the budget bought and the minutes it took; with ``--runs N`` (seeds 0..N-1, or from
``--first-seed``) a closing table of the mask AP of each checkpoint per run, their mean and their spread
(max - min). ``--baseline`` runs
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
            if line.startswith(("recipe", "precision", "time budget", "weights", "best.pt:"))
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


CHECKPOINTS = (("best.pt", "best.pt"), ("best-by-loss.pt", "  (lowest val loss)"), ("last.pt", "  (last.pt)"))


def one_run(data: Path, splits: Path, args, seed: int, out: Path) -> dict[str, float]:
    """Train once with ``seed`` and score its checkpoints; returns each checkpoint's test mask AP."""
    extra = list(args.extra)
    if "--select" not in extra or "loss" not in extra:
        extra.append("--keep-by-loss")
    run = train_instaseg(data, splits, args.minutes, out, [*extra, "--seed", str(seed)])
    for text in run["log"]:
        print(text)
    name = "instaseg " + (" ".join(args.extra) or "default") + f" (seed {seed})"
    scores = {}
    for file, label in CHECKPOINTS:
        if (out / file).exists():
            report = evaluate(out / file, data, splits)
            scores[file] = 100 * report["segm"]["AP"]
            print(line(name if file == "best.pt" else label, report, run), flush=True)
    return scores


def spread_table(per_run: list[dict[str, float]]) -> list[str]:
    """Mask AP of each checkpoint kind per run, with the mean and the spread (max - min)."""
    rows = [
        "| checkpoint | " + " | ".join(f"run {i + 1}" for i in range(len(per_run))) + " | mean | spread |"
    ]
    rows.append("|---" * (len(per_run) + 3) + "|")
    for file, _ in CHECKPOINTS:
        values = [scores[file] for scores in per_run if file in scores]
        if len(values) != len(per_run):
            continue
        cells = " | ".join(f"{v:.1f}" for v in values)
        rows.append(
            f"| {file} | {cells} | {sum(values) / len(values):.2f} | {max(values) - min(values):.1f} |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--domain", choices=list(DOMAINS), default="dsb")
    parser.add_argument("--runs", type=int, default=1, help="training runs, with seeds 0..N-1")
    parser.add_argument("--first-seed", type=int, default=0, help="seeds K..K+N-1 instead (default 0)")
    parser.add_argument("--baseline", action="store_true", help="also train torchvision's default recipe")
    parser.add_argument("--out", default="runs/quality")
    parser.add_argument("extra", nargs="*", help="flags passed on to `instaseg train` (after --)")
    args = parser.parse_args()
    data, splits = DOMAINS[args.domain]
    out = Path(args.out) / args.domain
    seeds = range(args.first_seed, args.first_seed + args.runs)
    per_run = [
        one_run(data, splits, args, seed, out / ("instaseg" if seeds == range(1) else f"instaseg-seed{seed}"))
        for seed in seeds
    ]
    print(f"\nmask AP on {args.domain}'s test images, {args.minutes:g} min each:")
    print("\n".join(spread_table(per_run)))
    if args.baseline:
        base = train_baseline(data, splits, args.minutes, out / "torchvision")
        print(line("torchvision default", evaluate(out / "torchvision" / "best.pt", data, splits), base))


if __name__ == "__main__":
    main()
