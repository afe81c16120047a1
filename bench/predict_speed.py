"""CPU prediction speed and mask AP: the seed's way vs instaseg's default path vs ONNX Runtime.

    .venv/bin/python bench/predict_speed.py CHECKPOINT [--data DIR] [--first 40] [--count 20] [--threads 2]

On the same checkpoint (trained on real data: the number of detections drives the cost) and the same
images (by default the DSB nuclei sample's images 41..60, held out from a model trained on 1..40):

  (a)  the seed's way: torchvision eager ``model([image])`` at torchvision's default size (min 800 px,
       max 1333), 1000 proposals, full-size float mask pasting;
  (a2) the same eager call at the checkpoint's training size (to separate the size from the rest);
  (b)  instaseg's default CPU path: ``Predictor`` (uint8 resize to the training size, channels-last,
       inference mode, 1000 proposals, box-local mask pasting);
  (b2) as (b) with 300 proposals (faster; does AP move with fewer proposals?);
  (c)  ONNX Runtime: ``Predictor`` on the ``instaseg export`` of the checkpoint.

Prints seconds per image, the ratio of (a)'s time to each, mask AP / AP50 of each against the ground
truth of the same images, and where (a) and (b) spend their time (stages summed over the images).
All at the checkpoint's score threshold (0.05 by default), as COCO AP wants low thresholds.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from instaseg.core import Instances
from instaseg.evaluate.cocoeval import coco_evaluate
from instaseg.formats.coco_export import instances_to_coco_results, records_to_coco
from instaseg.formats.load import load_dataset
from instaseg.images import load_image
from instaseg.model.checkpoint import load_checkpoint
from instaseg.model.engine import prepare_image
from instaseg.model.onnx_export import export_onnx
from instaseg.model.predictor import Predictor

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "dsb2018_nuclei_sample"


def seed_way(checkpoint: str, min_size: int | None, max_size: int | None):
    """A predict function doing what the seed did: ``model([tensor])``, masks > 0.5 at full size."""
    model, _, config = load_checkpoint(checkpoint, device="cpu")
    if min_size is not None:
        model.transform.min_size, model.transform.max_size = (min_size,), max_size
    model.eval()
    stages: dict[str, float] = defaultdict(float)

    def predict(image: np.ndarray) -> Instances:
        with torch.no_grad():
            t0 = time.perf_counter()
            tensor = torch.from_numpy(image.transpose(2, 0, 1).copy()).float() / 255
            images, _ = model.transform([tensor])
            t1 = time.perf_counter()
            features = model.backbone(images.tensors)
            t2 = time.perf_counter()
            proposals, _ = model.rpn(images, features)
            t3 = time.perf_counter()
            detections, _ = model.roi_heads(features, proposals, images.image_sizes)
            t4 = time.perf_counter()
            detections = model.transform.postprocess(detections, images.image_sizes, [image.shape[:2]])
            out = detections[0]
            masks = (out["masks"][:, 0] > 0.5).numpy()
            t5 = time.perf_counter()
        for name, seconds in zip(
            ("pre", "backbone", "rpn", "roi_heads", "paste+post"),
            (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4),
            strict=True,
        ):
            stages[name] += seconds
        return Instances(out["boxes"].numpy(), out["labels"].numpy(), masks, out["scores"].numpy())

    return predict, stages


def instaseg_way(predictor: Predictor):
    """Predictor.predict_arrays with per-stage timing (the same calls, split apart)."""
    stages: dict[str, float] = defaultdict(float)
    engine = predictor.engine

    def predict(image: np.ndarray) -> Instances:
        t0 = time.perf_counter()
        prepared = prepare_image(image, predictor.image_size, predictor.resize)
        t1 = time.perf_counter()
        raw = engine.detect([prepared])[0]
        t2 = time.perf_counter()
        instances = predictor._finish(raw, tuple(prepared.shape[1:]), image.shape[:2])
        t3 = time.perf_counter()
        stages["pre"] += t1 - t0
        stages["network"] += t2 - t1
        stages["paste+post"] += t3 - t2
        return instances

    return predict, stages


def profile_network(predictor: Predictor, images: list[np.ndarray]) -> dict[str, float]:
    """Seconds in backbone / RPN / ROI heads of the torch engine over ``images``."""
    model, stages = predictor.engine.model, defaultdict(float)
    from torchvision.models.detection.image_list import ImageList

    for image in images:
        x = torch.from_numpy(prepare_image(image, predictor.image_size, predictor.resize))[None]
        pad = [(32 - s % 32) % 32 for s in x.shape[-2:]]
        x = torch.nn.functional.pad(x, (0, pad[1], 0, pad[0])).contiguous(memory_format=torch.channels_last)
        sizes = [tuple(prepare_image(image, predictor.image_size, predictor.resize).shape[1:])]
        with torch.inference_mode():
            t0 = time.perf_counter()
            features = model.backbone(x)
            t1 = time.perf_counter()
            proposals, _ = model.rpn(ImageList(x, sizes), features)
            t2 = time.perf_counter()
            model.roi_heads(features, proposals, sizes)
            t3 = time.perf_counter()
        stages["backbone"] += t1 - t0
        stages["rpn"] += t2 - t1
        stages["roi_heads"] += t3 - t2
    return stages


def run_all(
    paths: list[tuple[str, object]], images: list[np.ndarray], records, class_map, warmup: int = 2
) -> list[dict]:
    """Time every path on every image, interleaved image by image so that a busy machine slows all alike."""
    for _, predict in paths:
        for image in images[:warmup]:
            predict(image)
    seconds = [0.0] * len(paths)
    outputs: list[list[Instances]] = [[] for _ in paths]
    for image in images:
        for k, (_, predict) in enumerate(paths):
            start = time.perf_counter()
            outputs[k].append(predict(image))
            seconds[k] += time.perf_counter() - start
    rows = []
    gt = records_to_coco(records, class_map)
    for (name, _), total, predictions in zip(paths, seconds, outputs, strict=True):
        results = []
        for record, instances in zip(records, predictions, strict=True):
            results.extend(instances_to_coco_results(instances, record.image_id))
        metrics = coco_evaluate(gt, results, "segm", max_dets=100)
        rows.append(
            {
                "name": name,
                "seconds": total / len(images),
                "ap": metrics.summary["AP"],
                "ap50": metrics.summary["AP50"],
                "detections": len(results) / len(images),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoint")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="dataset with ground truth (any format)")
    parser.add_argument("--first", type=int, default=40, help="index of the first image used (0-based)")
    parser.add_argument("--count", type=int, default=20, help="number of images")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    dataset = load_dataset(args.data)
    records = dataset.records[args.first : args.first + args.count]
    images = [load_image(r.image) for r in records]
    print(
        f"{len(images)} images of {args.data} ({images[0].shape[1]}x{images[0].shape[0]} first), "
        f"{sum(len(r.annotations) for r in records)} ground-truth instances, {args.threads} threads"
    )

    profiles, paths = {}, []
    predict, profiles["(a)"] = seed_way(args.checkpoint, 800, 1333)
    paths.append(("(a) seed: eager model([img]), min 800 px", predict))
    paths.append(("(a2) eager model([img]) at training size", seed_way(args.checkpoint, None, None)[0]))
    predictor = Predictor(args.checkpoint, device="cpu")
    predict, profiles["(b)"] = instaseg_way(predictor)
    paths.append(("(b) instaseg default CPU path", predict))
    paths.append(
        (
            "(b2) instaseg path, 300 proposals",
            instaseg_way(Predictor(args.checkpoint, device="cpu", proposals=300))[0],
        )
    )
    with tempfile.TemporaryDirectory() as folder:
        onnx_path = export_onnx(args.checkpoint, Path(folder) / "model.onnx")
        onnx_predictor = Predictor(onnx_path, engine="onnx", threads=args.threads)
    paths.append(("(c) ONNX Runtime", instaseg_way(onnx_predictor)[0]))
    rows = run_all(paths, images, records, dataset.class_map)
    profiles["(b) network"] = profile_network(predictor, images)

    base = rows[0]["seconds"]
    print(f"\n{'path':44s} {'s/image':>8s} {'speed-up':>9s} {'mask AP':>8s} {'AP50':>6s} {'dets/img':>8s}")
    for row in rows:
        print(
            f"{row['name']:44s} {row['seconds']:8.3f} {base / row['seconds']:8.2f}x "
            f"{100 * row['ap']:8.2f} {100 * row['ap50']:6.2f} {row['detections']:8.1f}"
        )
    print("\nwhere the time goes (seconds per image):")
    for name, stages in profiles.items():
        total = sum(stages.values()) / len(images)
        parts = ", ".join(f"{k} {v / len(images):.3f}" for k, v in stages.items())
        print(
            f"  {name:12s} {parts} (sum {total:.3f}; includes warm-up images)"
            if "network" not in name
            else f"  {name:12s} {parts}"
        )


if __name__ == "__main__":
    main()
