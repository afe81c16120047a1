"""Where prediction spends its time, by stage and by op, on a trained checkpoint (torch engine, CPU).

    .venv/bin/python bench/profile_predict.py CHECKPOINT [--data DIR] [--first 40] [--count 10]
        [--threads 2] [--precision auto|fp32|bf16] [--score-threshold 0.05] [--ops 25]

On the images ``first .. first + count`` of the dataset (default: the DSB nuclei sample's held-out 41..60)
it prints, for instaseg's default CPU path (:class:`~instaseg.model.predictor.Predictor`'s engine, in the
checkpoint's or the given precision and score threshold):

1. seconds per image by stage: backbone + FPN, RPN, box RoIAlign, box head (two linear layers and the
   predictor), box post-processing (decode, score threshold, NMS), mask RoIAlign, mask head + predictor,
   mask post-processing, and the box-local mask pasting of :func:`~instaseg.model.engine.paste_masks`;
2. torch.profiler's table of the ops that take the most time (self CPU time), with their input dtypes,
   so that the ops that run in float32 under bf16 autocast can be seen (RoIAlign, the gather of
   :mod:`~instaseg.model.gather_roi_align`, sums in float32);
3. the box head's cost at 1000 / 500 / 300 proposals of one image (its RoIAlign beside torchvision's
   pooler on the same features), and the mask head's cost per instance (the slope of its time over 10..200
   boxes);
4. seconds per image against the number of objects detected in it, image by image.

Timings are wall clock; on a machine other work is using they are loaded (say so when reporting them).
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile, record_function
from torchvision.ops import MultiScaleRoIAlign

from instaseg.formats.load import load_dataset
from instaseg.images import load_image
from instaseg.model.engine import paste_masks, prepare_image, scale_boxes
from instaseg.model.predictor import Predictor
from instaseg.model.roi_heads import pool_features, roi_features, run_box_head

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "dsb2018_nuclei_sample"


def staged_predict(predictor: Predictor, image: np.ndarray, stages: dict[str, float]) -> int:
    """One image through the engine's steps, each timed (and named for the profiler); returns the number
    of detections kept at the predictor's score threshold."""
    from torchvision.models.detection.roi_heads import maskrcnn_inference

    engine, heads = predictor.engine, predictor.engine.model.roi_heads
    marks = [("start", time.perf_counter())]

    def mark(name: str) -> None:
        marks.append((name, time.perf_counter()))

    prepared = prepare_image(image, predictor.image_size, predictor.resize)
    mark("prepare")
    with record_function("backbone"):
        features = engine.extract_features([prepared])
    mark("backbone+fpn")
    with record_function("rpn"):
        proposals = engine.propose(features)
    mark("rpn")
    with engine._running():
        pooled_maps = pool_features(heads.box_roi_pool, features.maps, features.image_sizes)
        with record_function("box_roi_align"):
            box_features = roi_features(heads.box_roi_pool, pooled_maps, proposals, features.image_sizes)
        mark("box roi_align")
        with record_function("box_head"):
            logits, regression = heads.box_predictor(run_box_head(heads.box_head, box_features))
        mark("box head")
        with record_function("box_postprocess"):
            boxes, scores, labels = heads.postprocess_detections(
                logits.float(), regression.float(), proposals, features.image_sizes
            )
        mark("box post")
        with record_function("mask_roi_align"):
            mask_features = roi_features(heads.mask_roi_pool, pooled_maps, boxes, features.image_sizes)
        mark("mask roi_align")
        with record_function("mask_head"):
            mask_logits = heads.mask_predictor(heads.mask_head(mask_features))
        mark("mask head")
        with record_function("mask_postprocess"):
            probabilities = maskrcnn_inference(mask_logits.float(), labels)[0][:, 0].float()
        mark("mask post")
    with record_function("paste"):
        keep = scores[0] >= predictor.score_threshold
        scaled = scale_boxes(boxes[0][keep].float(), tuple(prepared.shape[1:]), image.shape[:2])
        paste_masks(probabilities[keep], scaled, *image.shape[:2], predictor.mask_threshold)
    mark("paste")
    for (_, before), (name, after) in zip(marks, marks[1:], strict=False):
        stages[name] += after - before
    return int(keep.sum())


def time_call(function, repeat: int = 3) -> float:
    function()
    start = time.perf_counter()
    for _ in range(repeat):
        function()
    return (time.perf_counter() - start) / repeat


def head_costs(predictor: Predictor, image: np.ndarray) -> None:
    """The box head's time at several proposal counts and the mask head's time per instance."""
    engine, heads = predictor.engine, predictor.engine.model.roi_heads
    features = engine.extract_features([prepare_image(image, predictor.image_size, predictor.resize)])
    proposals = engine.propose(features)[0]
    print(f"\nbox head (RoIAlign + head + predictor) on one image, {len(proposals)} proposals available:")
    pooler = heads.box_roi_pool
    torchvision_pooler = MultiScaleRoIAlign(
        list(pooler.featmap_names), pooler.output_size, pooler.sampling_ratio
    )
    with engine._running():
        maps = pool_features(heads.box_roi_pool, features.maps, features.image_sizes)
        for count in (1000, 500, 300):
            chosen = [proposals[:count]]

            def align(chosen=chosen):
                return roi_features(heads.box_roi_pool, maps, chosen, features.image_sizes)

            def torchvision_align(chosen=chosen):  # its scalar CPU kernel, as torchvision's pooler runs it
                return torchvision_pooler(features.maps, chosen, features.image_sizes)

            pooled = align()
            seconds_align = time_call(align)
            seconds_torchvision = time_call(torchvision_align)
            seconds_head = time_call(
                lambda pooled=pooled: heads.box_predictor(run_box_head(heads.box_head, pooled))
            )
            print(
                f"  {len(chosen[0]):5d} proposals: RoIAlign {seconds_align:.4f} s (torchvision's pooler "
                f"{seconds_torchvision:.4f} s), head {seconds_head:.4f} s"
            )
        rows = []
        for count in (10, 50, 100, 200):
            boxes = [proposals[torch.arange(count) % len(proposals)]]

            def align(boxes=boxes):
                return roi_features(heads.mask_roi_pool, maps, boxes, features.image_sizes)

            pooled = align()
            seconds_align = time_call(align)
            seconds_head = time_call(lambda pooled=pooled: heads.mask_predictor(heads.mask_head(pooled)))
            rows.append((count, seconds_align, seconds_head))
    counts = np.array([r[0] for r in rows], dtype=float)
    print("mask head per instance (slope over 10..200 boxes):")
    for label, column in (("RoIAlign", 1), ("head + predictor", 2)):
        values = np.array([r[column] for r in rows])
        slope = np.polyfit(counts, values, 1)[0]
        print(
            f"  {label:17s} {1000 * slope:.3f} ms/instance  "
            + ", ".join(f"{int(c)}: {v:.4f} s" for c, v in zip(counts, values, strict=True))
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoint")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="dataset whose images are used")
    parser.add_argument("--first", type=int, default=40, help="index of the first image (0-based)")
    parser.add_argument("--count", type=int, default=10, help="number of images")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument(
        "--score-threshold", type=float, default=None, help="default: the checkpoint's (0.05 from train)"
    )
    parser.add_argument("--ops", type=int, default=25, help="rows of the op table")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    records = load_dataset(args.data).records[args.first : args.first + args.count]
    images = [load_image(r.image) for r in records]
    predictor = Predictor(
        args.checkpoint, device="cpu", precision=args.precision, score_threshold=args.score_threshold
    )
    print(
        f"{len(images)} images, {args.threads} threads, score >= {predictor.score_threshold:g}, "
        f"{predictor.precision.reason}"
    )
    for image in images[:2]:  # warm-up: oneDNN primitives, allocator
        staged_predict(predictor, image, defaultdict(float))

    stages: dict[str, float] = defaultdict(float)
    per_image = []
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as profiler:
        for image in images:
            start = time.perf_counter()
            found = staged_predict(predictor, image, stages)
            per_image.append((found, time.perf_counter() - start))
    total = sum(stages.values())
    print("\nseconds per image by stage (under the profiler, which adds a little to each op):")
    for name, seconds in stages.items():
        print(f"  {name:15s} {seconds / len(images):.4f}  ({100 * seconds / total:4.1f} %)")
    print(f"  {'total':15s} {total / len(images):.4f}")

    print("\nops by self CPU time (all images), with input dtypes:")
    table = profiler.key_averages(group_by_input_shape=False)
    events = sorted(table, key=lambda e: e.self_cpu_time_total, reverse=True)
    dtypes: dict[str, set[str]] = defaultdict(set)
    for event in profiler.events():
        kinds = [d for d in (getattr(event, "input_dtypes", None) or []) if d and d != "Scalar"]
        if kinds:
            dtypes[event.name].add(",".join(kinds[:2]))
    print(f"  {'op':38s} {'self s/img':>10s} {'calls':>7s}  input dtypes")
    for event in [e for e in events if not e.key.startswith(("backbone", "rpn", "box_", "mask_", "paste"))][
        : args.ops
    ]:
        kinds = "; ".join(sorted(dtypes.get(event.key, set())))[:60]
        print(
            f"  {event.key:38s} {event.self_cpu_time_total / 1e6 / len(images):10.4f} "
            f"{event.count:7d}  {kinds}"
        )

    head_costs(predictor, images[0])

    print("\nseconds per image against objects detected (score >= threshold), fewest first:")
    for found, seconds in sorted(per_image):
        print(f"  {found:5d} objects  {seconds:.3f} s")
    if len(per_image) > 2:
        counts, seconds = np.array(per_image, dtype=float).T
        slope, intercept = np.polyfit(counts, seconds, 1)
        print(f"  fit: {intercept:.3f} s + {1000 * slope:.2f} ms per object")


if __name__ == "__main__":
    main()
