"""Build instaseg's bundled demo dataset from the CC0 DSB 2018 nuclei sample.

The result is laid out like a Label Studio COCO export (``result.json`` next to ``images/``, 0-based ids,
8-hex upload prefixes on file names, float polygons, ``info.contributor = "Label Studio"``), so that the
demo goes through the same import path as a user's real export.

    python scripts/build_sample_data.py ../shared/datasets/dsb2018_nuclei_sample instaseg/sample_data/nuclei
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from instaseg.masks import mask_to_polygons


def main(source: Path, out: Path) -> None:
    ids = (source / "subset_ids.txt").read_text().split()
    (out / "images").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for image_index, image_id in enumerate(ids):
        folder = source / "stage1_train" / image_id
        pixels = Image.open(folder / "images" / f"{image_id}.png").convert("RGB")
        prefix = hashlib.sha1(image_id.encode()).hexdigest()[:8]
        file_name = f"{prefix}-nuclei{image_index:02d}.png"
        pixels.save(out / "images" / file_name, optimize=True)
        images.append(
            {
                "width": pixels.width,
                "height": pixels.height,
                "id": image_index,
                "file_name": f"images/{file_name}",
            }
        )
        for mask_path in sorted((folder / "masks").glob("*.png")):
            polygons = mask_to_polygons(np.asarray(Image.open(mask_path)) > 0)
            if not polygons:
                continue
            xs = [x for p in polygons for x in p[0::2]]
            ys = [y for p in polygons for y in p[1::2]]
            area = sum(float(cv2.contourArea(np.array(p, np.float32).reshape(-1, 2))) for p in polygons)
            annotations.append(
                {
                    "id": len(annotations),
                    "image_id": image_index,
                    "category_id": 0,
                    "segmentation": polygons,
                    "bbox": [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)],
                    "ignore": 0,
                    "iscrowd": 0,
                    "area": area,
                }
            )
    result = {
        "images": images,
        "categories": [{"id": 0, "name": "nucleus"}],
        "annotations": annotations,
        "info": {
            "year": 2018,
            "version": "1.0",
            "contributor": "Label Studio",
            "description": "DSB 2018 stage1_train fluorescence nuclei sample (BBBC038), CC0",
        },
    }
    (out / "result.json").write_text(json.dumps(result))
    (out / "LICENSE.txt").write_text(
        "Images and masks: 2018 Data Science Bowl stage1_train (BBBC038, Broad Institute), CC0 1.0 "
        "(public domain).\nPolygons traced from the instance masks by scripts/build_sample_data.py.\n"
    )
    print(f"{len(images)} images, {len(annotations)} instances -> {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
