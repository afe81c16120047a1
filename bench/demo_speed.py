"""The web demo on a 12-megapixel JPEG: time from upload to the picture, and from a threshold change to the
redrawn picture (goal: <= 0.5 s), through the demo's own event functions (:mod:`instaseg.app.demo_handlers`,
what the page calls; Gradio's transport and the browser's decode are not included).

    .venv/bin/python bench/demo_speed.py [--checkpoint CKPT] [--photo JPEG] [--runs 5] [--threads 2]

- The photo: by default the real balloon photo upscaled to 4000x3000 (``bench/photo_speed.py``'s
  ``make_photo``), JPEG.
- The model: by default the light architecture with seeded random weights, score threshold 0 and 50
  detections (as ``bench/photo_speed.py``); ``--checkpoint`` for a trained one.
- Printed: upload (decode + display copy), segment (model + first drawing), and each redraw after a
  threshold change (median of ``--runs``), plus the baseline of the same run: one full-size overlay of
  all instances (what a redraw without the display copy would draw), as a ratio.

Run it alone on the machine: times depend on what else runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--photo", default=None, help="a JPEG (default: a 4000x3000 one made for the run)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from photo_speed import make_photo

    from instaseg import render
    from instaseg.app.demo_handlers import DemoHandlers
    from instaseg.app.service import ModelService
    from tests.checkpoints import save_light_checkpoint

    work = Path(tempfile.mkdtemp(prefix="demo-speed-"))
    photo = Path(args.photo) if args.photo else work / "photo.jpg"
    if not args.photo:
        make_photo(photo)
    checkpoint = args.checkpoint or save_light_checkpoint(
        work / "light.pt", ["object"], 256, score_threshold=0.0, detections_per_image=50
    )
    handlers = DemoHandlers(ModelService(checkpoint), 50_000_000, work / "out")

    started = time.perf_counter()
    session = handlers.load(str(photo))[0]
    upload = time.perf_counter() - started
    started = time.perf_counter()
    handlers.segment(session, 0.0, "overlay", [], "class", "off", False, progress=None)
    segment = time.perf_counter() - started
    scores = session.instances.scores
    redraws = []
    for run in range(args.runs):
        threshold = float(scores[min(len(scores) - 1, (run + 1) * len(scores) // (args.runs + 2))])
        started = time.perf_counter()
        handlers.redraw(session, threshold, "overlay", [], "class", None)
        redraws.append(time.perf_counter() - started)
    started = time.perf_counter()
    render.draw_overlay(session.photo, session.instances, handlers.class_map)
    full_size = time.perf_counter() - started
    height, width = session.photo.shape[:2]
    redraw = statistics.median(redraws)
    print(
        f"photo {width}x{height}, {len(session.instances)} instances, display {session.display.shape[1]}x"
        f"{session.display.shape[0]}"
    )
    print(f"upload -> photo shown (decode + display copy): {upload:.3f} s")
    print(f"Segment -> picture (model + drawing): {segment:.3f} s")
    print(
        f"threshold change -> redrawn picture: median {redraw:.3f} s over {args.runs} "
        f"(goal <= 0.5 s: {'met' if redraw <= 0.5 else 'NOT met'})"
    )
    print(f"baseline, one full-size overlay: {full_size:.3f} s; redraw / baseline = {redraw / full_size:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
