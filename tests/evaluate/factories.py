"""Small factories for evaluation tests: records from masks, ground truth as predictions, jittered predictions,
and the reference computation with pycocotools."""

from __future__ import annotations

import contextlib
import copy
import io

import numpy as np
from PIL import Image

from instaseg.core import Annotation, ClassMap, Instances, Record
from instaseg.masks import mask_to_rle, masks_to_boxes, rle_to_mask

SUMMARY = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]


def record_from_masks(masks: np.ndarray, labels, image_id: int = 1, name: str = "img.png") -> Record:
    """A record of boolean masks ``(N, H, W)`` with labels 1..K."""
    boxes = masks_to_boxes(masks)
    annotations = [
        Annotation(int(label), tuple(float(v) for v in box), mask_to_rle(mask))
        for mask, box, label in zip(masks, boxes, labels, strict=True)
    ]
    return Record(name, name, masks.shape[2], masks.shape[1], annotations, image_id=image_id)


def pennfudan_records(root) -> list[Record]:
    """PennFudanPed as records (1 class), through the mask-png importer when it is there."""
    try:
        from instaseg.formats.load import load_dataset

        return load_dataset(str(root), format="mask-png").records
    except ImportError:
        pass
    records = []
    for i, mask_file in enumerate(sorted((root / "PedMasks").glob("*_mask.png")), start=1):
        ids = np.asarray(Image.open(mask_file))
        masks = np.stack([ids == v for v in np.unique(ids) if v != 0])
        record = record_from_masks(masks, [1] * len(masks), i, f"PNGImages/{mask_file.name[:-9]}.png")
        records.append(record)
    return records


def two_class(records: list[Record]) -> list[Record]:
    """Copies with every second annotation of an image relabelled 2, so that both classes share images."""
    out = copy.deepcopy(records)
    for record in out:
        for i, a in enumerate(record.annotations):
            a.label = 1 + i % 2
    return out


def ground_truth_as_predictions(records: list[Record], boxes_only: bool = False) -> list[Instances]:
    predictions = []
    for record in records:
        gt = record.instances()
        predictions.append(
            Instances(
                gt.boxes,
                gt.labels,
                None if boxes_only else gt.masks,
                np.linspace(1.0, 0.5, len(gt), dtype=np.float32),
                gt.image_size,
            )
        )
    return predictions


def shift(instances: Instances, dx: int, dy: int) -> Instances:
    """The instances moved by (dx, dy) pixels (masks rolled with zero fill, boxes recomputed)."""
    dense = instances.dense_masks()
    masks = np.zeros_like(dense)
    h, w = masks.shape[1:]
    src = dense[:, max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)]
    masks[:, max(0, dy) : max(0, dy) + src.shape[1], max(0, dx) : max(0, dx) + src.shape[2]] = src
    return Instances(masks_to_boxes(masks), instances.labels, masks, instances.scores)


def jittered_results(records: list[Record], num_classes: int, seed: int = 0) -> list[dict]:
    """COCO results made from the ground truth: masks shifted by up to 8 px and sometimes dilated, random
    scores, 10 % dropped, a few with the wrong class, and false alarms taken from other images."""
    rng = np.random.default_rng(seed)
    results = []
    for index, record in enumerate(records):
        for a in record.annotations:
            if rng.random() < 0.1:
                continue
            mask = rle_to_mask(a.rle)
            moved = (
                shift(Instances(np.zeros((1, 4)), [1], mask[None]), *rng.integers(-8, 9, size=2))
                .mask(0)
                .copy()
            )
            if rng.random() < 0.3:
                moved[:-2] |= moved[2:]
            label = a.label if rng.random() > 0.1 else int(rng.integers(1, num_classes + 1))
            results.append(_result(record.image_id, label, moved, rng.random()))
        other = records[(index + 1) % len(records)]
        for a in other.annotations[:2]:
            mask = np.zeros((record.height, record.width), bool)
            src = rle_to_mask(a.rle)[: record.height, : record.width]
            mask[: src.shape[0], : src.shape[1]] = src
            if mask.any():
                results.append(_result(record.image_id, a.label, mask, rng.random() * 0.6))
    return results


def _result(image_id: int, label: int, mask: np.ndarray, score: float) -> dict:
    x0, y0, x1, y1 = (float(v) for v in masks_to_boxes(mask[None])[0])
    return {
        "image_id": image_id,
        "category_id": label,
        "score": float(score),
        "bbox": [x0, y0, x1 - x0, y1 - y0],
        "segmentation": mask_to_rle(mask),
    }


def pycocotools_metrics(gt: dict, results: list[dict], iou_type: str, max_dets: int = 100):
    """(summary dict, per-class AP list) computed by pycocotools on the same input (the reference).

    The summary is ``None`` for ``max_dets <= 10``, which pycocotools' ``summarize`` cannot handle."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    ground = COCO()
    ground.dataset = copy.deepcopy(gt)
    with contextlib.redirect_stdout(io.StringIO()):
        ground.createIndex()
        key = "bbox" if iou_type == "bbox" else "segmentation"
        detected = ground.loadRes(
            [
                {k: v for k, v in r.items() if k in ("image_id", "category_id", "score", key)}
                for r in copy.deepcopy(results)
            ]
        )
        evaluator = COCOeval(ground, detected, iou_type)
        evaluator.params.maxDets = [1, 10, max_dets] if max_dets > 10 else [1, max_dets]
        evaluator.evaluate()
        evaluator.accumulate()
        if max_dets > 10:  # pycocotools' summarize() needs three max-detection values
            evaluator.summarize()
    names = SUMMARY[:8] + [f"AR{max_dets}"] + SUMMARY[9:]
    summary = None
    if max_dets > 10:
        summary = {n: (None if v < 0 else float(v)) for n, v in zip(names, evaluator.stats, strict=True)}
    precision = evaluator.eval["precision"][:, :, :, 0, -1]
    per_class = []
    for k in range(precision.shape[2]):
        p = precision[:, :, k]
        per_class.append(float(p[p > -1].mean()) if (p > -1).any() else None)
    return summary, per_class


def class_map(k: int) -> ClassMap:
    return ClassMap(("person", "other")[:k] if k <= 2 else tuple(f"c{i}" for i in range(1, k + 1)))
