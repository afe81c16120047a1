"""Small record factories for the training tests: synthetic images with known masks, and the DSB sample."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from instaseg.core import Annotation, ClassMap, Record
from instaseg.formats.mask_png import load_mask_png
from instaseg.masks import mask_to_rle, masks_to_boxes
from instaseg.problems import ProblemLog
from tests.conftest import DATASETS

DSB = DATASETS / "dsb2018_nuclei_sample"


def synthetic_record(
    folder: Path,
    name: str,
    masks: np.ndarray,
    labels: list[int],
    image_id: int = 1,
    crowd: list[bool] | None = None,
) -> Record:
    """A record whose image is dark with each instance painted in its own bright colour (so tests can check
    that image and masks were transformed alike). ``masks``: bool (N, H, W)."""
    n, height, width = masks.shape
    image = np.full((height, width, 3), 10, dtype=np.uint8)
    rng = np.random.default_rng(image_id)
    for mask in masks:
        image[mask] = rng.integers(120, 255, size=3)
    path = folder / name
    Image.fromarray(image).save(path)
    boxes = masks_to_boxes(masks)
    crowd = crowd or [False] * n
    annotations = [
        Annotation(label=label, box=tuple(map(float, box)), rle=mask_to_rle(mask), iscrowd=c, source_id=i)
        for i, (mask, label, box, c) in enumerate(zip(masks, labels, boxes, crowd, strict=True))
    ]
    return Record(str(path), name, width, height, annotations, image_id=image_id, split="train")


def rectangles(height: int, width: int, boxes: list[tuple[int, int, int, int]]) -> np.ndarray:
    """Bool masks (N, H, W) filled inside the given xyxy boxes."""
    masks = np.zeros((len(boxes), height, width), dtype=bool)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        masks[i, y0:y1, x0:x1] = True
    return masks


def toy_records(folder: Path, count: int = 4, size: int = 64) -> tuple[ClassMap, list[Record]]:
    """``count`` small images with 1-3 rectangles of two classes each (labels 1 and 2)."""
    rng = np.random.default_rng(0)
    records = []
    for i in range(count):
        boxes = []
        for _ in range(1 + i % 3):
            x0, y0 = rng.integers(0, size - 24, size=2)
            w, h = rng.integers(10, 24, size=2)
            boxes.append((int(x0), int(y0), int(x0 + w), int(y0 + h)))
        labels = [1 + (j + i) % 2 for j in range(len(boxes))]
        records.append(synthetic_record(folder, f"toy{i}.png", rectangles(size, size, boxes), labels, i + 1))
    return ClassMap(("square", "patch")), records


def dsb_records() -> tuple[ClassMap, list[Record]]:
    """The 60 DSB 2018 nuclei images (one class), image ids 1..60."""
    class_map, records = load_mask_png(str(DSB), None, ProblemLog())
    for i, record in enumerate(records, start=1):
        record.image_id = i
    return class_map, records
