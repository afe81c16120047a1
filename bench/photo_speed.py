"""One 12-megapixel photo through ``instaseg predict --save overlay,binary,json``: wall time, peak RSS, and
where the time goes.

    .venv/bin/python bench/photo_speed.py [--checkpoint CKPT] [--photo JPEG] [--runs 3] [--threads 2]
    .venv/bin/python bench/photo_speed.py --size 8000x6000 --tile 512 --runs 1 --no-stages   # peak RSS
    .venv/bin/python bench/photo_speed.py --size 8000x6000 --make-photo big.jpg   # just write the photo

- The photo: by default a real balloon photo (``../shared/datasets/balloon/val/6810773040_...jpg``,
  2048x1536) upscaled to ``--size`` (4000x3000) and saved as JPEG (quality 92).
- The model: by default the light architecture (ResNet-18 FPN, 256 px like the quickstart's from-scratch
  model) with seeded random weights, score threshold 0 and 50 detections, so every run writes 50
  instances whatever the photo shows; pass ``--checkpoint runs/quickstart/model/best.pt`` for a trained one.
- ``--runs`` times the real command in fresh processes (imports included; peak RSS from ``wait4``, the
  figure ``/usr/bin/time -v`` reports as "Maximum resident set size"), then a fresh process times each
  stage of the same path one after the other (no threads), to show where the time goes. ``--tile`` is
  passed to ``predict`` (the stages then time the tiled prediction as one). ``--source DIR`` runs another
  copy of the package (before/after comparisons: ``git archive HEAD instaseg | tar -x -C DIR``).

Run it alone on the machine: the times (not the outputs) depend on what else runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BALLOON = REPO / ".." / "shared" / "datasets" / "balloon" / "val" / "6810773040_3d81036d05_k.jpg"

# Stage timing in a fresh interpreter: the CLI's own functions, serially.
STAGES = r"""
import json, sys, time
times = {}
start = time.perf_counter()
def mark(name):
    global start
    now = time.perf_counter(); times[name] = round(now - start, 3); start = now
import instaseg.cli.predict, tqdm; mark("import instaseg cli (+ fsspec, PIL)")
import torch; mark("import torch")
try:
    from instaseg.model import vision  # torchvision without TorchDynamo, as the command imports it
except ImportError:  # an older tree (--source)
    import torchvision
mark("import torchvision")
from instaseg.model.predictor import Predictor
from instaseg.predict.outputs import OutputWriter; mark("import predictor, outputs (+ cv2)")
checkpoint, photo, out, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
tile = sys.argv[5] if len(sys.argv) > 5 else None
threshold = float(sys.argv[6]) if len(sys.argv) > 6 else None
torch.set_num_threads(threads)
extra = {"tile": tile} if tile else {}  # (code before tiling has no such keyword: --source)
predictor = Predictor(checkpoint, device="cpu", score_threshold=threshold, **extra); mark("load checkpoint")
from instaseg import render, storage
from instaseg.images import decode_image, read_header
data = storage.read_bytes(photo); read_header(data, photo); mark("read file + header")
pixels = decode_image(data, photo); mark("decode (EXIF applied)")
if tile:
    instances = predictor.predict_arrays([pixels])[0]; mark(f"tiled prediction ({tile}) + merge")
else:
    from instaseg.model.engine import prepare_image
    x = prepare_image(pixels, predictor.image_size, predictor.resize); mark("resize + normalise")
    raw = predictor.engine.detect([x]); mark("network")
    instances = predictor._finish(raw[0], tuple(x.shape[1:]), pixels.shape[:2]); mark("paste masks")
overlay = render.draw_overlay(pixels, instances, predictor.class_map); mark("draw overlay")
jpeg = render.encode_jpeg(overlay); mark("encode overlay JPEG")
png = render.encode_png(render.binary_mask(instances)); mark("binary mask + PNG")
from instaseg.formats.coco_export import instances_to_coco_results
results = instances_to_coco_results(instances); mark("COCO results (RLE)")
storage.write_bytes(out + "/o.jpg", jpeg); storage.write_bytes(out + "/b.png", png)
storage.write_json(out + "/p.json", results); mark("write files")
print(json.dumps({"instances": len(instances), "stages": times}))
"""


def make_photo(path: Path, width: int = 4000, height: int = 3000) -> None:
    import cv2

    image = cv2.imread(str(BALLOON))
    cv2.imwrite(
        str(path),
        cv2.resize(image, (width, height), interpolation=cv2.INTER_CUBIC),
        [cv2.IMWRITE_JPEG_QUALITY, 92],
    )


def make_checkpoint(path: Path) -> None:
    sys.path.insert(0, str(REPO))
    from tests.checkpoints import save_light_checkpoint

    save_light_checkpoint(path, ["object"], 256, 0, score_threshold=0.0, detections_per_image=50)


def timed_run(command: list[str], source: str | None = None) -> tuple[float, float, str]:
    """``(wall seconds, peak RSS in MB, stdout)`` of one child process; ``source``: a folder holding another
    ``instaseg`` package to run instead of this checkout's (``PYTHONPATH``; the child runs in the temporary
    folder, as ``-m``/``-c`` would put the current folder, maybe this checkout, first on ``sys.path``)."""
    env = {**os.environ, "PYTHONPATH": str(Path(source).resolve())} if source else None
    start = time.perf_counter()
    child = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=tempfile.gettempdir(),
    )
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    out = child.stdout.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{out}")
    return wall, usage.ru_maxrss / 1024, out


def predict_command(checkpoint: Path, photo: Path, out: Path, args) -> list[str]:
    command = [sys.executable, "-m", "instaseg", "predict", str(checkpoint), str(photo), "--out", str(out)]
    command += ["--save", args.save, "--threads", str(args.threads)]
    command += ["--tile", args.tile] if args.tile else []
    return command + (["--score-threshold", "0"] if not args.checkpoint else [])


def print_stages(checkpoint: Path, photo: Path, folder: Path, args) -> None:
    (folder / "stages").mkdir()
    command = [sys.executable, "-c", STAGES, str(checkpoint), str(photo), str(folder / "stages")]
    command += [str(args.threads), args.tile or "", "0" if not args.checkpoint else "0.5"]
    _, _, out = timed_run(command, args.source)
    report = json.loads(out.strip().splitlines()[-1])
    print(f"stages, serially in one fresh process ({report['instances']} instances):")
    for name, seconds in report["stages"].items():
        print(f"  {name:40s} {seconds:6.3f} s")
    print(f"  {'total':40s} {sum(report['stages'].values()):6.3f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None, help="default: the light model, random weights")
    parser.add_argument("--photo", default=None, help="default: the balloon photo upscaled to --size")
    parser.add_argument("--size", default="4000x3000", help="WIDTHxHEIGHT of the generated photo")
    parser.add_argument("--make-photo", default=None, metavar="PATH", help="write the photo there and exit")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--save", default="overlay,binary,json")
    parser.add_argument("--tile", default=None, help="predict --tile value (default: whole image)")
    parser.add_argument("--no-stages", action="store_true", help="skip the per-stage breakdown")
    parser.add_argument(
        "--source",
        default=None,
        metavar="DIR",
        help="run the instaseg package in DIR instead (e.g. HEAD's: git archive HEAD instaseg | tar -x -C DIR)",
    )
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    if args.make_photo:
        make_photo(Path(args.make_photo), width, height)
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        photo = Path(args.photo).resolve() if args.photo else folder / "photo.jpg"
        checkpoint = Path(args.checkpoint).resolve() if args.checkpoint else folder / "light.pt"
        if not args.photo:
            make_photo(photo, width, height)
        if not args.checkpoint:
            make_checkpoint(checkpoint)
        walls = []
        for run in range(args.runs):
            wall, rss, _ = timed_run(
                predict_command(checkpoint, photo, folder / f"out{run}", args), args.source
            )
            walls.append(wall)
            print(f"run {run + 1}: {wall:.2f} s wall, peak RSS {rss:.0f} MB", flush=True)
        if walls:
            print(f"median wall {sorted(walls)[len(walls) // 2]:.2f} s over {args.runs} runs")
        if not args.no_stages:
            print_stages(checkpoint, photo, folder, args)


if __name__ == "__main__":
    main()
