"""CPU prediction speed and mask AP: the seed's way vs instaseg's default path vs the other engines and precisions.

    .venv/bin/python bench/predict_speed.py CHECKPOINT [--data DIR] [--first 40] [--count 20] [--threads 2]
        [--bf16 auto|yes|no] [--clock wall|cpu] [--setting both|ap|user] [--user-threshold 0.5] [--torch-only]
        [--rounds 3]

Two settings. The user's setting (first): what ``instaseg predict`` gives by default, score >= 0.5 and the
checkpoint's detections per image: the seed's way at the training size (eager fp32 ``model([image])`` with
torchvision's internal threshold, the checkpoint's 0.05, filtered at 0.5 afterwards in Python) against
instaseg's default CPU path (threshold inside the ROI heads) and ``--engine openvino``, with the same-instances check (median mask
IoU >= 0.95, counts within 2 %) and the split by stage. Then the AP setting, below.

On the same checkpoint (trained on real data: the number of detections drives the cost) and the same
images (by default the DSB nuclei sample's images 41..60, held out from a model trained on 1..40):

  (a)  the seed's way: torchvision eager ``model([image])`` at torchvision's default size (min 800 px,
       max 1333), 1000 proposals, full-size float mask pasting;
  (a2) the same eager fp32 call at the checkpoint's training size: the EQUAL-INPUT-SIZE baseline;
  (b)  instaseg's default CPU path: ``Predictor`` defaults (uint8 resize to the training size, channels-last,
       inference mode, 1000 proposals, box-local mask pasting, ``precision="auto"``: bf16 autocast on CPUs
       with native bf16, else fp32);
  (b2) as (b) with 300 proposals (faster; does AP move with fewer proposals?);
  (b3) as (b) in fp32 (``precision="fp32"``), when (b) is not fp32 already;
  (c)  ONNX Runtime: ``Predictor`` on the ``instaseg export`` of the checkpoint (fp32);
  (d)  torch bf16 autocast (``precision="bf16"``), when (b) is not bf16 already;
  (e)  OpenVINO (``engine="openvino"``, ``precision="auto"``: bf16 on CPUs with native bf16, else f32);
  (e2) OpenVINO with ``precision="fp32"``, when (e) is not f32 already;
  (f)  OpenVINO INT8: ``instaseg export --format openvino-int8`` of the checkpoint (NNCF post-training
       quantization calibrated on the dataset's images before ``--first``, never on the measured ones),
       as ``predict`` runs it by default: the unquantized ops in float32 (what a CPU with VNNI and without
       bf16 runs too); in the user's setting exported with ``--score-threshold`` at the user's threshold.
       Needs ``nncf``; ``--no-int8`` leaves it out;
  (f2) the same export with its unquantized ops in bf16 (``--precision bf16``), where OpenVINO runs bf16.

The bf16 rows (d) run only on CPUs with native bf16 unless ``--bf16 yes`` (emulated bf16 is ~30x slower:
minutes per image for R50-FPN). OpenVINO rows need the ``openvino`` package. ``--torch-only`` leaves out
the ONNX Runtime and OpenVINO rows: with it, a CPU with native bf16 can stand in for one without, torch's
kernels capped at AVX2 (OpenVINO's CPU plugin crashes under these variables)::

    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 .venv/bin/python bench/predict_speed.py CKPT --torch-only

(torch's oneDNN then reports no bf16, so ``precision="auto"`` is fp32, as on an AVX2-only CPU.)

Each setting ends with the same images as one folder, as ``predict`` and ``evaluate`` run one: the seed's
loop (one ``model([img])`` after the other), instaseg one image at a time (``--lanes 1``) and instaseg's
default, two images at once with half the threads each (:mod:`instaseg.model.lanes`): throughput in wall
time, the median of ``--rounds`` rounds, the three loops alternating.

Prints seconds per image, the ratio of (a)'s and (a2)'s time to each (``vs a2`` is the speed-up at equal
input size), mask AP / AP50 of each against the ground truth of the same images, the AP differences to (a2)
and to instaseg's torch fp32 row ((b), or (b3) where (b) is not fp32), the median mask IoU of the fp32 row's
instances matched (label, box IoU) in each row, a parity verdict (AP within 0.5 points of the fp32 row and
median IoU >= 0.95: an engine or precision that fails it cannot be a default), and where (a) and (b) spend
their time (stages summed over the images). All at the checkpoint's score threshold (0.05 by default), as
COCO AP wants low thresholds. The paths run interleaved, image by image; ``--clock cpu`` counts process CPU
time instead of wall time (with ``--threads 1`` the ratios then hold on a machine other work is using).
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
import time
import warnings
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
from instaseg.model.lanes import in_lanes, lanes_for
from instaseg.model.onnx_export import export_onnx
from instaseg.model.precision import resolve_precision
from instaseg.model.predictor import Predictor
from instaseg.model.roi_heads import detect_boxes, predict_masks, shared_levels

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "dsb2018_nuclei_sample"


def seed_way(checkpoint: str, min_size: int | None, max_size: int | None, keep_score: float = 0.0):
    """A predict function doing what the seed did: ``model([tensor])`` (torchvision's internal score
    threshold: the checkpoint's), masks > 0.5 at full size, then instances scoring below ``keep_score``
    dropped in Python, as the seed's notebook filtered at its display threshold."""
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
            kept = out["scores"] >= keep_score
            out = {key: value[kept] for key, value in out.items()}
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
    """Seconds in backbone / RPN / box head / mask head of the torch engine's own steps over ``images``,
    in its precision and at its score threshold (bench/profile_predict.py splits them further)."""
    engine, stages = predictor.engine, defaultdict(float)
    heads = engine.model.roi_heads
    for image in images:
        prepared = prepare_image(image, predictor.image_size, predictor.resize)
        t0 = time.perf_counter()
        features = engine.extract_features([prepared])
        t1 = time.perf_counter()
        proposals = engine.propose(features)
        t2 = time.perf_counter()
        with engine._running():
            box_levels, mask_levels = shared_levels(heads, features.maps, features.image_sizes)
            found = detect_boxes(heads, features.maps, proposals, features.image_sizes, box_levels)
            t3 = time.perf_counter()
            predict_masks(
                heads, features.maps, [found[0][0]], [found[0][2]], features.image_sizes, mask_levels
            )
            t4 = time.perf_counter()
        stages["backbone"] += t1 - t0
        stages["rpn"] += t2 - t1
        stages["box head"] += t3 - t2
        stages["mask head"] += t4 - t3
    return stages


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return float(w * h / union) if union > 0 else 1.0


def matched_mask_ious(reference: list[Instances], other: list[Instances]) -> list[float]:
    """Mask IoU of each instance of ``reference`` (score order) matched to the unmatched instance of ``other``
    with the same label and the highest box IoU (at least 0.5); an unmatched instance counts 0."""
    ious = []
    for a, b in zip(reference, other, strict=True):
        free = set(range(len(b)))
        for i in range(len(a)):
            candidates = [j for j in free if b.labels[j] == a.labels[i]]
            j = max(candidates, key=lambda j: box_iou(a.boxes[i], b.boxes[j]), default=None)
            if j is None or box_iou(a.boxes[i], b.boxes[j]) < 0.5:
                ious.append(0.0)
                continue
            free.discard(j)
            mask_a, mask_b = a.mask(i), b.mask(j)
            union = np.logical_or(mask_a, mask_b).sum()
            ious.append(float(np.logical_and(mask_a, mask_b).sum() / union) if union else 1.0)
    return ious


def run_all(
    paths: list[tuple[str, object]],
    images: list[np.ndarray],
    records,
    class_map,
    clock,
    reference: int,
    warmup: int = 2,
) -> list[dict]:
    """Time every path on every image, interleaved image by image so that a busy machine slows all alike.
    ``paths[reference]`` (instaseg's torch fp32 path) is what the IoU column matches instances with."""
    for _, predict in paths:
        for image in images[:warmup]:
            predict(image)
    seconds = [0.0] * len(paths)
    outputs: list[list[Instances]] = [[] for _ in paths]
    for image in images:
        for k, (_, predict) in enumerate(paths):
            start = clock()
            outputs[k].append(predict(image))
            seconds[k] += clock() - start
    return [
        score_row(name, total / len(images), predictions, outputs[reference], records, class_map)
        for (name, _), total, predictions in zip(paths, seconds, outputs, strict=True)
    ]


def score_row(name: str, seconds: float, predictions, reference, records, class_map) -> dict:
    """A table row: seconds per image, mask AP / AP50 on ``records``' ground truth, detections per image,
    median mask IoU of ``reference``'s instances matched in ``predictions``."""
    results = []
    for record, instances in zip(records, predictions, strict=True):
        results.extend(instances_to_coco_results(instances, record.image_id))
    metrics = coco_evaluate(records_to_coco(records, class_map), results, "segm", max_dets=100)
    ious = matched_mask_ious(reference, predictions)
    return {
        "name": name,
        "seconds": seconds,
        "ap": metrics.summary["AP"],
        "ap50": metrics.summary["AP50"],
        "detections": len(results) / len(records),
        "median_iou": float(np.median(ious)) if ious else float("nan"),
    }


def folder_rows(args, checkpoint: str, images, records, class_map, threshold: float | None) -> list[dict]:
    """The images as one folder, as ``predict`` and ``evaluate`` run it: the seed's loop (``model([img])``
    one image after the other, all threads), instaseg one image at a time (all threads, ``--lanes 1``) and
    in lanes (its default: two images at once, half the threads each). Wall time; the three loops
    alternate, ``args.rounds`` times each after one warm-up, and the median round counts."""
    keep = 0.0 if threshold is None else threshold
    predict_seed, _ = seed_way(checkpoint, None, None, keep_score=keep)
    predictor = Predictor(checkpoint, device="cpu", score_threshold=threshold)
    lanes, per_lane = lanes_for(predictor, len(images), args.threads)

    def one_by_one(predict):
        return lambda: [predict(image) for image in images]

    def in_two_lanes():
        torch.set_num_threads(per_lane)
        try:
            return [
                f.result() for _, f in in_lanes(lambda im: predictor.predict_arrays([im])[0], images, lanes)
            ]
        finally:
            torch.set_num_threads(args.threads)

    loops = [
        ("(L-a2) seed's loop: eager fp32 model([img]), one by one", one_by_one(predict_seed)),
        (
            "(L-b) instaseg, one image at a time (--lanes 1)",
            one_by_one(lambda im: predictor.predict_arrays([im])[0]),
        ),
        (f"(L-c) instaseg in {lanes} lanes of {per_lane} thread(s) (default)", in_two_lanes),
    ]
    times: list[list[float]] = [[] for _ in loops]
    outputs = [loop() for _, loop in loops]  # warm-up; its predictions are the ones scored
    for _ in range(args.rounds):
        for k, (_, loop) in enumerate(loops):
            start = time.perf_counter()
            loop()
            times[k].append(time.perf_counter() - start)
    return [
        score_row(name, float(np.median(t)) / len(images), out, outputs[0], records, class_map)
        for (name, _), t, out in zip(loops, times, outputs, strict=True)
    ]


def print_folder_rows(rows: list[dict], rounds: int) -> None:
    seed = rows[0]
    print(f"\nthe same images as a folder (wall time, median of {rounds} rounds), against the seed's loop:")
    print(
        f"{'path':64s} {'s/image':>8s} {'vs seed':>8s} {'mask AP':>8s} {'IoU':>5s} {'dets/img':>8s} "
        f"{'count':>7s}"
    )
    for row in rows:
        count = row["detections"] / seed["detections"] - 1 if seed["detections"] else 0.0
        print(
            f"{row['name']:64s} {row['seconds']:8.3f} {seed['seconds'] / row['seconds']:7.2f}x "
            f"{100 * row['ap']:8.2f} {row['median_iou']:5.3f} {row['detections']:8.1f} {100 * count:+6.1f}%"
        )


def build_paths(args, checkpoint: str, folder: str, profiles: dict) -> tuple[list, Predictor, int]:
    """The (name, predict function) rows, the default predictor (profiled afterwards), and the index of
    instaseg's torch fp32 row (the parity reference)."""
    paths = []
    predict, profiles["(a)"] = seed_way(checkpoint, 800, 1333)
    paths.append(("(a) seed: eager model([img]), min 800 px", predict))
    paths.append(("(a2) eager fp32 model([img]) at training size", seed_way(checkpoint, None, None)[0]))
    predictor = Predictor(checkpoint, device="cpu")
    default = predictor.precision.name
    predict, profiles["(b)"] = instaseg_way(predictor)
    paths.append((f"(b) instaseg default CPU path ({default})", predict))
    paths.append(
        (
            "(b2) instaseg path, 300 proposals",
            instaseg_way(Predictor(checkpoint, device="cpu", proposals=300))[0],
        )
    )
    reference = 2
    if default != "fp32":
        reference = len(paths)
        paths.append(
            (
                "(b3) instaseg path, fp32",
                instaseg_way(Predictor(checkpoint, device="cpu", precision="fp32"))[0],
            )
        )
    if not args.torch_only:
        onnx_path = export_onnx(checkpoint, Path(folder) / "model.onnx")
        onnx_predictor = Predictor(onnx_path, engine="onnx", threads=args.threads)
        paths.append(("(c) ONNX Runtime (fp32)", instaseg_way(onnx_predictor)[0]))
    native = resolve_precision("auto", "cpu").name == "bf16"
    if default != "bf16" and (args.bf16 == "yes" or (args.bf16 == "auto" and native)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the emulated-bf16 warning: --bf16 yes asks for it knowingly
            bf16 = Predictor(checkpoint, device="cpu", precision="bf16")
        paths.append(("(d) torch bf16 autocast", instaseg_way(bf16)[0]))
    if args.torch_only:
        return paths, predictor, reference
    if importlib.util.find_spec("openvino") is None:
        print("no openvino package: the OpenVINO rows are left out (pip install 'instaseg[openvino]')")
        return paths, predictor, reference
    openvino = Predictor(checkpoint, engine="openvino", threads=args.threads)
    paths.append((f"(e) OpenVINO ({openvino.precision.name})", instaseg_way(openvino)[0]))
    if openvino.precision.name != "fp32":
        ov32 = Predictor(checkpoint, engine="openvino", threads=args.threads, precision="fp32")
        paths.append(("(e2) OpenVINO fp32", instaseg_way(ov32)[0]))
    int8 = int8_predictor(args, checkpoint, Path(folder) / "ap", None)
    if int8 is not None:
        paths.append((f"(f) OpenVINO INT8 ({int8.precision.name} rest)", instaseg_way(int8)[0]))
        bf16_rest = int8_bf16_rest(args, int8, None)
        if bf16_rest is not None:
            paths.append(("(f2) OpenVINO INT8, bf16 rest", instaseg_way(bf16_rest)[0]))
    return paths, predictor, reference


def int8_bf16_rest(args, int8: Predictor, score_threshold: float | None) -> Predictor | None:
    """The same INT8 export with its unquantized ops in bf16 (``--precision bf16``), where OpenVINO runs
    bf16 on this CPU and the default (``auto``: float32 rest) is not bf16 already; else ``None``."""
    if int8.precision.name == "bf16":
        return None
    rest = Predictor(
        int8.engine.path, threads=args.threads, score_threshold=score_threshold, precision="bf16"
    )
    return rest if rest.precision.name == "bf16" else None


def int8_predictor(args, checkpoint: str, folder: Path, score_threshold: float | None):
    """A Predictor on the INT8 export of ``checkpoint`` (calibrated on the dataset's images before
    ``--first``), or ``None`` without nncf or with ``--no-int8``."""
    if args.torch_only:
        return None
    if args.no_int8 or importlib.util.find_spec("nncf") is None:
        print("INT8 rows left out (--no-int8, or no nncf: pip install 'instaseg[openvino]')")
        return None
    from instaseg.model.openvino_export import export_openvino_int8

    if args.calibration is None:
        records = load_dataset(args.data).records[: args.first]
        args.calibration = [load_image(r.image) for r in records if r.image is not None]
    started = time.perf_counter()
    export = export_openvino_int8(
        checkpoint, folder / "model-int8.xml", args.calibration, score_threshold=score_threshold
    )
    print(
        f"INT8 export: {export.quantizers} quantizers, {export.calibration_images} calibration images, "
        f"{time.perf_counter() - started:.0f} s"
    )
    return Predictor(export.path, threads=args.threads, score_threshold=score_threshold)


def user_setting(args, checkpoint: str, images, records, class_map, clock) -> None:
    """What a user of ``instaseg predict`` gets by default (its ``--score-threshold`` and the checkpoint's
    detections): the seed's way at the same input size, filtered afterwards, against instaseg's default
    CPU path with the threshold applied inside the ROI heads (the mask head runs on kept detections only).
    Same instances: median mask IoU of the seed's instances matched in instaseg's >= 0.95 and instance
    counts within 2 %."""
    predict_seed, seed_stages = seed_way(checkpoint, None, None, keep_score=args.user_threshold)
    predictor = Predictor(checkpoint, device="cpu", score_threshold=args.user_threshold)
    predict_ours, our_stages = instaseg_way(predictor)
    paths = [
        ("(u-a2) seed: eager fp32 model([img]) at training size, filtered", predict_seed),
        (f"(u-b) instaseg default CPU path ({predictor.precision.name})", predict_ours),
    ]
    if predictor.precision.name != "fp32":
        fp32 = Predictor(checkpoint, device="cpu", precision="fp32", score_threshold=args.user_threshold)
        paths.append(("(u-b3) instaseg path, fp32", instaseg_way(fp32)[0]))
    if not args.torch_only and importlib.util.find_spec("openvino") is not None:  # --engine openvino
        openvino = Predictor(
            checkpoint, engine="openvino", threads=args.threads, score_threshold=args.user_threshold
        )
        paths.append((f"(u-e) OpenVINO ({openvino.precision.name})", instaseg_way(openvino)[0]))
    with tempfile.TemporaryDirectory() as folder:
        int8 = int8_predictor(args, checkpoint, Path(folder), args.user_threshold)
        if int8 is not None:
            paths.append((f"(u-f) OpenVINO INT8 ({int8.precision.name} rest)", instaseg_way(int8)[0]))
            bf16_rest = int8_bf16_rest(args, int8, args.user_threshold)
            if bf16_rest is not None:
                paths.append(("(u-f2) OpenVINO INT8, bf16 rest", instaseg_way(bf16_rest)[0]))
        rows = run_all(paths, images, records, class_map, clock, reference=0)
    folder = folder_rows(args, checkpoint, images, records, class_map, args.user_threshold)
    seed = rows[0]
    print(
        f"\nuser's setting: score >= {args.user_threshold:g} (predict's default), the checkpoint's detections"
        f" per image ({predictor.max_detections})"
    )
    print(
        f"{'path':64s} {'s/image':>8s} {'vs seed':>8s} {'mask AP':>8s} {'IoU':>5s} {'dets/img':>8s} "
        f"{'count':>7s} {'same':>5s}"
    )
    for row in rows:
        count_change = row["detections"] / seed["detections"] - 1 if seed["detections"] else 0.0
        same = "ok" if row["median_iou"] >= 0.95 and abs(count_change) <= 0.02 else "FAIL"
        print(
            f"{row['name']:64s} {row['seconds']:8.3f} {seed['seconds'] / row['seconds']:7.2f}x "
            f"{100 * row['ap']:8.2f} {row['median_iou']:5.3f} {row['detections']:8.1f} "
            f"{100 * count_change:+6.1f}% {same:>5s}"
        )
    print(
        " (IoU: median mask IoU of the seed's instances matched in this row, unmatched counting 0; same: "
        "IoU >= 0.95 and counts within 2 %)"
    )
    for name, stages in (("(u-a2)", seed_stages), ("(u-b)", our_stages)):
        parts = ", ".join(f"{k} {v / len(images):.3f}" for k, v in stages.items())
        print(f"  {name:8s} {parts} (s/image, includes warm-up images)")
    network = profile_network(predictor, images)
    print("  (u-b) network: " + ", ".join(f"{k} {v / len(images):.3f}" for k, v in network.items()))
    print_folder_rows(folder, args.rounds)


def print_table(rows: list[dict], reference: int) -> None:
    """One line per path: speed-ups vs (a) and (a2), mask AP, and the parity verdict against instaseg's torch
    fp32 row (``reference``): mask AP within 0.5 points and median matched mask IoU >= 0.95."""
    base, equal, fp32 = rows[0]["seconds"], rows[1]["seconds"], rows[reference]
    print(
        f"\n{'path':48s} {'s/image':>8s} {'vs (a)':>7s} {'vs (a2)':>8s} {'mask AP':>8s} {'dAP a2':>7s} "
        f"{'dAP fp32':>8s} {'AP50':>6s} {'IoU':>5s} {'parity':>6s} {'dets/img':>8s}"
    )
    for row in rows:
        versus_fp32 = 100 * (row["ap"] - fp32["ap"])
        parity = "ok" if abs(versus_fp32) <= 0.5 and row["median_iou"] >= 0.95 else "FAIL"
        print(
            f"{row['name']:48s} {row['seconds']:8.3f} {base / row['seconds']:6.2f}x "
            f"{equal / row['seconds']:7.2f}x {100 * row['ap']:8.2f} {100 * (row['ap'] - rows[1]['ap']):+7.2f} "
            f"{versus_fp32:+8.2f} {100 * row['ap50']:6.2f} {row['median_iou']:5.3f} {parity:>6s} "
            f"{row['detections']:8.1f}"
        )
    print(
        "(vs (a2): speed-up at equal input size; dAP a2 / dAP fp32: mask AP minus (a2)'s / minus instaseg's"
    )
    print(
        f" torch fp32 row's; IoU: median mask IoU of the instances of {fp32['name'][:4].strip()} matched in this"
    )
    print(" row, unmatched counting 0; parity: |dAP fp32| <= 0.5 and IoU >= 0.95. (a)/(a2) resize images of")
    print(
        " another size in float inside torchvision, instaseg in uint8 with OpenCV: their IoU is then below 1)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoint")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="dataset with ground truth (any format)")
    parser.add_argument("--first", type=int, default=40, help="index of the first image used (0-based)")
    parser.add_argument("--count", type=int, default=20, help="number of images")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--bf16", choices=["auto", "yes", "no"], default="auto", help="torch bf16 rows")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall", help="wall or process CPU time")
    parser.add_argument(
        "--setting",
        choices=["both", "ap", "user"],
        default="both",
        help="ap: score >= the checkpoint's threshold (0.05), all engines; user: predict's default threshold",
    )
    parser.add_argument(
        "--user-threshold", type=float, default=0.5, help="predict's default --score-threshold (0.5)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the folder rows (median counts)")
    parser.add_argument("--no-int8", action="store_true", help="leave out the OpenVINO INT8 rows")
    parser.add_argument(
        "--torch-only", action="store_true", help="leave out the ONNX Runtime and OpenVINO rows"
    )
    args = parser.parse_args()
    args.calibration = None  # the INT8 rows' calibration images, read once
    torch.set_num_threads(args.threads)

    dataset = load_dataset(args.data)
    records = dataset.records[args.first : args.first + args.count]
    images = [load_image(r.image) for r in records]
    print(
        f"{len(images)} images of {args.data} ({images[0].shape[1]}x{images[0].shape[0]} first), "
        f"{sum(len(r.annotations) for r in records)} ground-truth instances, {args.threads} threads, "
        f"{args.clock} time; {resolve_precision('auto', 'cpu').reason}"
    )
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    if args.setting in ("both", "user"):
        user_setting(args, args.checkpoint, images, records, dataset.class_map, clock)
    if args.setting == "user":
        return
    print("\nAP setting: score >= the checkpoint's threshold, as COCO AP wants")
    profiles: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as folder:
        paths, predictor, reference = build_paths(args, args.checkpoint, folder, profiles)
        rows = run_all(paths, images, records, dataset.class_map, clock, reference)
    profiles["(b) network"] = profile_network(predictor, images)
    folder = folder_rows(args, args.checkpoint, images, records, dataset.class_map, None)

    print_table(rows, reference)
    print("\nwhere the time goes (seconds per image):")
    for name, stages in profiles.items():
        total = sum(stages.values()) / len(images)
        parts = ", ".join(f"{k} {v / len(images):.3f}" for k, v in stages.items())
        print(
            f"  {name:12s} {parts} (sum {total:.3f}; includes warm-up images)"
            if "network" not in name
            else f"  {name:12s} {parts}"
        )
    print_folder_rows(folder, args.rounds)


if __name__ == "__main__":
    main()
