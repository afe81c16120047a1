"""``instaseg quickstart``: the whole pipeline on the bundled sample, in about ten minutes on a laptop CPU.

Import (the sample is a Label Studio COCO export) -> split -> train -> evaluate on the held-out images ->
masked images -> the command that serves the model. Each step is the same command a user runs on their own
data; this module only chains them, so what the demo shows is what the tool does.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from importlib import resources

from ._common import add_precision_argument

HELP = "Run the whole pipeline on the bundled sample: import, split, train, evaluate, masked images."


def sample_dataset_dir() -> str:
    """Folder of the bundled sample: a Label Studio COCO export (``result.json`` + ``images/``)."""
    return str(resources.files("instaseg") / "sample_data" / "nuclei")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", default="runs/quickstart", help="folder for everything the quickstart writes"
    )
    parser.add_argument(
        "--minutes",
        type=float,
        default=8.0,
        help="training time budget in minutes (the rest of the pipeline takes about a minute)",
    )
    parser.add_argument(
        "--weights",
        choices=["auto", "coco", "none"],
        default="auto",
        help="auto: COCO-pretrained ResNet-50 when its weights are cached or downloadable, "
        "otherwise the light model from scratch",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    add_precision_argument(parser)  # passed on to train, evaluate, predict and serve
    parser.add_argument(
        "--serve", action="store_true", help="start the web demo on the trained model at the end"
    )
    parser.add_argument("--port", type=int, default=7860, help="port of the web demo with --serve")


def run(args: argparse.Namespace) -> int:
    from ..formats.load import load_dataset
    from ..splits import SplitConfig, assign_splits, save_splits
    from .check import print_summary, summarize

    started = time.monotonic()
    source = sample_dataset_dir()
    out = free_out_folder(args.out)
    if out != args.out:
        print(f"{args.out} holds an earlier quickstart (kept); this one writes to {out}")
        args.out = out
    os.makedirs(args.out, exist_ok=True)
    paths = {
        "run": os.path.join(args.out, "model"),
        "checkpoint": os.path.join(args.out, "model", "best.pt"),
        "splits": os.path.join(args.out, "splits.json"),
        "evaluation": os.path.join(args.out, "evaluation"),
        "masked": os.path.join(args.out, "masked"),
    }

    _step(1, f"import the bundled sample (a Label Studio COCO export): {source}")
    dataset = load_dataset(source)
    print_summary(summarize(dataset))

    _step(2, "split 70/15/15 with seed 0")
    splits = assign_splits(dataset.records, SplitConfig())
    save_splits(splits, paths["splits"], SplitConfig())
    print(
        "  " + ", ".join(f"{name} {len(files)}" for name, files in splits.items()) + f" -> {paths['splits']}"
    )

    status = _train(args, source, paths)
    if status == 0:
        _step(4, "evaluate best.pt on the held-out test images")
        status = _command(
            ["evaluate", paths["checkpoint"], source, "--split", "test", "--splits", paths["splits"]],
            ["--out", paths["evaluation"], "--device", args.device],  # max-dets: the model's (recipe's)
            ["--precision", args.precision],
        )
    if status == 0:
        _step(5, "write masked images of the test images")
        test_images = [r.image for r in dataset.records if r.split == "test"]
        status = _command(
            ["predict", paths["checkpoint"], *test_images, "--out", paths["masked"]],
            ["--save", "overlay,binary,rgb,json", "--device", args.device],
            ["--precision", args.precision],
        )
    if status != 0:
        return status
    with open(os.path.join(paths["evaluation"], "report.json")) as f:
        report = json.load(f)
    serve = [
        "serve",
        paths["checkpoint"],
        "--port",
        str(args.port),
        "--examples",
        os.path.join(source, "images"),
        *(["--precision", args.precision] if args.precision != "auto" else []),
    ]
    _print_summary(report, paths, (time.monotonic() - started) / 60, serve)
    return _command(serve, []) if args.serve else 0


def free_out_folder(out: str) -> str:
    """``out``, or the first of ``out-2``, ``out-3``... whose ``model/`` holds no run (``train``'s rule), so
    that running the quickstart again (a second ``make demo``) works beside the first run's outputs."""
    from .train_setup import holds_run

    base, number, folder = out.rstrip("/\\") or out, 1, out
    while holds_run(os.path.join(folder, "model")):
        number += 1
        folder = f"{base}-{number}"
    return folder


def _train(args: argparse.Namespace, source: str, paths: dict[str, str]) -> int:
    """Step 3: ``instaseg train`` with its automatic recipe for the budget (``--arch auto``: COCO
    fine-tuning when the weights can be had, else the light model from scratch)."""
    _step(3, f"train with the automatic recipe for {args.minutes:g} minutes (the schedule fits the budget)")
    weights = [] if args.weights == "auto" else ["--weights", args.weights]
    if args.weights == "none":
        weights += ["--arch", "maskrcnn_resnet18_fpn"]
    if args.weights == "auto":
        print(
            "  COCO-pretrained weights are used when cached or downloadable, otherwise the light model trains "
            "from scratch (see README 'COCO weights on an offline machine')"
        )
    return _command(
        ["train", source, "--out", paths["run"], "--splits", paths["splits"], *weights],
        ["--minutes", str(args.minutes), "--device", args.device, "--precision", args.precision],
    )


def _command(*parts: list[str]) -> int:
    """Run one ``instaseg`` command in this process (the same code a user's command line runs)."""
    from . import main

    return main([a for part in parts for a in part])


def _print_summary(report: dict, paths: dict[str, str], minutes: float, serve: list[str]) -> None:
    print()
    print(f"quickstart finished in {minutes:.1f} minutes")
    print(f"  mask mAP (test) {_ap(report, 'segm')}   box mAP (test) {_ap(report, 'bbox')}")
    print(f"  model:          {paths['checkpoint']}")
    curve = os.path.join(paths["run"], "loss_curve.png")
    print(f"  training log:   {os.path.join(paths['run'], 'metrics.csv')}, {curve}")
    print(f"  evaluation:     {os.path.join(paths['evaluation'], 'report.md')}")
    print(f"  masked images:  {paths['masked']}/")
    print(f"  web demo:       instaseg {' '.join(serve)}")


def _ap(report: dict, kind: str) -> str:
    value = report.get(kind, {}).get("AP") if isinstance(report.get(kind), dict) else None
    return f"{100 * value:.1f}" if isinstance(value, int | float) else "n/a"


def _step(number: int, text: str) -> None:
    print(f"\n[{number}/5] {text}", flush=True)
