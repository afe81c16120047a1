"""Time instaseg's evaluator against pycocotools on the same predictions, in one run.

Ground truth: PennFudanPed (170 images) and the DSB 2018 nuclei sample (60 images, dense), repeated
``--repeat`` times under new image ids (default 5: 1,150 images). Predictions: the ground truth jittered
(masks shifted by up to 3 px, some dilated, 10 % dropped, random scores), made once per source image.

What each timing covers (bbox and segm both, max detections 100 and 300 for the dense nuclei):

- instaseg: canonical COCO ground truth built from the records in memory + faster-coco-eval evaluate and
  accumulate for bbox and segm + instaseg's summary and per-class AP;
- pycocotools: COCO index of the same ground-truth dict (prebuilt, not timed: pycocotools has no way to
  build it from records) + loadRes + evaluate + accumulate + summarize for bbox and segm.

Neither side reads an image. Run: ``.venv/bin/python bench/eval_speed.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import time
from pathlib import Path

import numpy as np

from instaseg.core import ClassMap, Record
from instaseg.evaluate import coco_evaluate
from instaseg.formats.coco_export import records_to_coco
from instaseg.formats.load import load_dataset
from instaseg.masks import mask_to_rle, masks_to_boxes, rle_to_mask

DATASETS = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets"


def jittered(record: Record, rng: np.random.Generator) -> list[dict]:
    """COCO results (image_id left to fill) from one record's ground truth."""
    out = []
    for a in record.annotations:
        if rng.random() < 0.1:
            continue
        mask = rle_to_mask(a.rle)
        dy, dx = rng.integers(-3, 4, size=2)
        mask = np.roll(mask, (dy, dx), axis=(0, 1))
        if rng.random() < 0.3:
            mask[:-1] |= mask[1:]
        if not mask.any():
            continue
        x0, y0, x1, y1 = (float(v) for v in masks_to_boxes(mask[None])[0])
        out.append(
            {
                "category_id": 1,
                "score": float(rng.random()),
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "segmentation": mask_to_rle(mask),
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    sources = [
        load_dataset(str(DATASETS / name), format="mask-png").records
        for name in ("PennFudanPed", "dsb2018_nuclei_sample")
    ]
    rng = np.random.default_rng(0)
    base = [(r, jittered(r, rng)) for records in sources for r in records]
    records, results = [], []
    for _ in range(args.repeat):
        for record, preds in base:
            copy_ = copy.copy(record)
            copy_.image_id = len(records) + 1
            records.append(copy_)
            results += [{**p, "image_id": copy_.image_id} for p in preds]
    class_map = ClassMap(("object",))
    print(
        f"{len(records)} images, {sum(len(r.annotations) for r in records)} objects, {len(results)} predictions"
    )

    for max_dets in (100, 300):
        start = time.perf_counter()
        gt = records_to_coco(records, class_map)
        ours = {t: coco_evaluate(gt, results, t, max_dets).summary for t in ("bbox", "segm")}
        instaseg_s = time.perf_counter() - start

        gt_dict = copy.deepcopy(gt)
        inputs = {
            t: copy.deepcopy(
                [
                    {k: v for k, v in r.items() if k != ("segmentation" if t == "bbox" else "bbox")}
                    for r in results
                ]
            )
            for t in ("bbox", "segm")
        }
        reference, pycocotools_s = _pycocotools(gt_dict, inputs, max_dets)
        gap = max(abs(ours[t]["AP"] - reference[t]) for t in ours)
        print(
            f"max_dets {max_dets}: instaseg (faster-coco-eval) {instaseg_s:.2f} s, pycocotools "
            f"{pycocotools_s:.2f} s, ratio {pycocotools_s / instaseg_s:.1f}x; mask AP {ours['segm']['AP']:.4f}, "
            f"box AP {ours['bbox']['AP']:.4f}, largest AP difference {gap:.1e}"
        )


def _pycocotools(gt: dict, inputs: dict, max_dets: int) -> tuple[dict, float]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    stats = {}
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        ground = COCO()
        ground.dataset = gt
        ground.createIndex()
        for iou_type, results in inputs.items():
            evaluator = COCOeval(ground, ground.loadRes(results), iou_type)
            evaluator.params.maxDets = [1, 10, max_dets]
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
            # AP from the precision array: summarize()'s stats[0] is -1 unless 100 is among maxDets.
            precision = evaluator.eval["precision"][:, :, :, 0, -1]
            stats[iou_type] = float(precision[precision > -1].mean())
    return stats, time.perf_counter() - start


if __name__ == "__main__":
    main()
