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

HELP = "Run the whole pipeline on the bundled sample: import, split, train, evaluate, masked images."

# Dense images (a sample image holds up to ~200 nuclei): the model keeps this many detections per image,
# and evaluation counts as many (COCO's default of 100 would cut the densest images short).
DETECTIONS = 300
# Training recipes. With COCO weights, fine-tune the seed's ResNet-50 Mask R-CNN (small nuclei: upscale
# the 256-pixel images to 512); without them, train the light ResNet-18 model from scratch.
_PRETRAINED = ["--arch", "maskrcnn_resnet50_fpn", "--weights", "coco", "--image-size", "512"]
_PRETRAINED += ["--optimizer", "sgd", "--lr", "0.01", "--batch-size", "2"]
_FROM_SCRATCH = ["--arch", "maskrcnn_resnet18_fpn", "--weights", "none", "--image-size", "256"]
_FROM_SCRATCH += ["--optimizer", "adamw", "--lr", "0.001", "--batch-size", "2"]
_TEST_TIME = ["--detections-per-image", str(DETECTIONS)]


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
    parser.add_argument(
        "--serve", action="store_true", help="start the web demo on the trained model at the end"
    )
    parser.add_argument("--port", type=int, default=7860, help="port of the web demo with --serve")


def coco_weights_available() -> bool:
    """True when torchvision's COCO Mask R-CNN weights are in the cache or can be downloaded now."""
    from ..model.weights import WeightsError, load_coco_state_dict

    try:
        load_coco_state_dict("maskrcnn_resnet50_fpn", download=True)
    except WeightsError:
        return False
    return True


def run(args: argparse.Namespace) -> int:
    from ..formats.load import load_dataset
    from ..splits import SplitConfig, assign_splits, save_splits
    from .check import print_summary, summarize

    started = time.monotonic()
    source = sample_dataset_dir()
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
            ["--out", paths["evaluation"], "--max-dets", str(DETECTIONS), "--device", args.device],
        )
    if status == 0:
        _step(5, "write masked images of the test images")
        test_images = [r.image for r in dataset.records if r.split == "test"]
        status = _command(
            ["predict", paths["checkpoint"], *test_images, "--out", paths["masked"]],
            ["--save", "overlay,binary,rgb,json", "--device", args.device],
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
    ]
    _print_summary(report, paths, (time.monotonic() - started) / 60, serve)
    return _command(serve, []) if args.serve else 0


def _train(args: argparse.Namespace, source: str, paths: dict[str, str]) -> int:
    """Step 3: ``instaseg train`` with the pretrained recipe when COCO weights can be had, else the light one."""
    use_coco = args.weights == "coco" or (args.weights == "auto" and coco_weights_available())
    if use_coco:
        recipe = _PRETRAINED
        _step(3, f"fine-tune the COCO-pretrained ResNet-50 Mask R-CNN for {args.minutes:g} minutes")
    else:
        recipe = _FROM_SCRATCH
        _step(3, f"train the light ResNet-18 model from scratch for {args.minutes:g} minutes")
        if args.weights == "auto":
            print(
                "  notice: COCO-pretrained weights are not available (offline, not cached), so the light "
                "model trains from scratch; see README 'COCO weights on an offline machine'"
            )
    # 12 epochs: the cosine schedule then decays within the default budget on a 2-core CPU (a GPU finishes
    # them sooner); --minutes stops training early on slower machines.
    return _command(
        [
            "train",
            source,
            "--out",
            paths["run"],
            "--splits",
            paths["splits"],
            *recipe,
            *_TEST_TIME,
            "--epochs",
            "12",
        ],
        ["--minutes", str(args.minutes), "--warmup-steps", "20", "--device", args.device],
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
