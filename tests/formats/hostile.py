"""Small factories for the hostile-input tests: a real image and one valid document per format around it,
written to a folder, and a helper that imports it and returns the problems."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from instaseg.formats.load import load_dataset

WIDTH, HEIGHT = 40, 30


def write_image(path: Path, size: tuple[int, int] = (WIDTH, HEIGHT)) -> Path:
    """A real RGB PNG of ``size`` (width, height) at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = (np.arange(size[0] * size[1] * 3) % 251).astype(np.uint8).reshape(size[1], size[0], 3)
    Image.fromarray(pixels).save(path)
    return path


def coco(file_name: str = "a.png", width=WIDTH, height=HEIGHT, segmentation=None) -> dict:
    """One image, one class, one polygon object (or ``segmentation``)."""
    return {
        "images": [{"id": 1, "file_name": file_name, "width": width, "height": height}],
        "categories": [{"id": 1, "name": "cat"}],
        "annotations": [
            {
                "id": 7,
                "image_id": 1,
                "category_id": 1,
                "segmentation": [[2, 2, 20, 2, 20, 20]] if segmentation is None else segmentation,
            }
        ],
    }


def labelstudio(image: str = "a.png", width=WIDTH, height=HEIGHT, points=None) -> list:
    """One task with one polygon region (percent coordinates)."""
    return [
        {
            "id": 1,
            "data": {"image": image},
            "annotations": [
                {
                    "id": 10,
                    "result": [
                        {
                            "id": "r1",
                            "type": "polygonlabels",
                            "original_width": width,
                            "original_height": height,
                            "image_rotation": 0,
                            "value": {
                                "points": [[10, 10], [50, 10], [50, 60]] if points is None else points,
                                "polygonlabels": ["cat"],
                            },
                        }
                    ],
                }
            ],
        }
    ]


def labelme(image_path: str = "a.png", width=WIDTH, height=HEIGHT, points=None) -> dict:
    return {
        "shapes": [
            {
                "label": "cat",
                "points": [[2, 2], [20, 2], [20, 20]] if points is None else points,
                "shape_type": "polygon",
                "group_id": None,
            }
        ],
        "imagePath": image_path,
        "imageWidth": width,
        "imageHeight": height,
    }


def via(filename: str = "a.png", xs=None, ys=None) -> dict:
    return {
        f"{filename}1": {
            "filename": filename,
            "size": 1,
            "regions": [
                {
                    "shape_attributes": {
                        "name": "polygon",
                        "all_points_x": [2, 20, 20] if xs is None else xs,
                        "all_points_y": [2, 2, 20] if ys is None else ys,
                    },
                    "region_attributes": {"class": "cat"},
                }
            ],
        }
    }


# Format -> (document factory, the annotation file's name, whether the importer is given the folder).
FORMATS = {
    "coco": (coco, "result.json", False),
    "labelstudio-json": (labelstudio, "export.json", False),
    "labelme": (labelme, "a.json", True),
    "via": (via, "via_region_data.json", True),
}


def write_dataset(folder: Path, format: str, document, image: bool = True) -> Path:
    """``document`` written as ``format``'s annotation file in ``folder`` (with the 40x30 ``a.png`` when
    ``image``); returns the source to import (the file, or the folder for labelme/VIA)."""
    folder.mkdir(parents=True, exist_ok=True)
    if image:
        write_image(folder / "a.png")
    _, name, by_folder = FORMATS[format]
    (folder / name).write_text(json.dumps(document))
    return folder if by_folder else folder / name


def problems_of(source, format: str, **options) -> tuple[list, list[str]]:
    """``(records, ["level: message", ...])`` of importing ``source`` as ``format``."""
    dataset = load_dataset(str(source), format=format, **options)
    return dataset.records, [f"{p.level}: {p.message}" for p in dataset.problems]


def has(problems: list[str], level: str, *fragments: str) -> bool:
    """Whether one problem of ``level`` holds every fragment."""
    return any(p.startswith(level) and all(f in p for f in fragments) for p in problems)
