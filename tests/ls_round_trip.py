"""Check that Label Studio pre-annotations come back through the importer with every part of every mask."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from instaseg.formats.labelstudio_json import load_labelstudio_json
from instaseg.problems import ProblemLog

EIGHT_CONNECTED = np.ones((3, 3), bool)


def filled_parts(mask: np.ndarray) -> list[np.ndarray]:
    """The 8-connected parts of a bool mask with its holes filled (what polygons can hold: a part lying in
    another's hole is inside that polygon), in no particular order."""
    labels, count = ndimage.label(ndimage.binary_fill_holes(mask), structure=EIGHT_CONNECTED)
    return [labels == k for k in range(1, count + 1)]


def import_regions(regions: list[dict], width: int, height: int, folder: Path) -> list[np.ndarray]:
    """The masks Label Studio's JSON export of one task annotated with ``regions`` imports as, in order."""
    folder.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height)).save(folder / "photo.png")
    task = {
        "id": 1,
        "data": {"image": "/data/upload/1/photo.png"},
        "annotations": [{"id": 1, "result": regions}],
    }
    (folder / "export.json").write_text(json.dumps([task]))
    log = ProblemLog()
    _, records = load_labelstudio_json(str(folder / "export.json"), str(folder), log)
    assert not [p for p in log.problems if p.level == "error"], log.problems
    (record,) = records
    return [record.instances().mask(i) for i in range(len(record.annotations))]


def check_every_part_comes_back(
    regions: list[dict], masks: list[np.ndarray], width: int, height: int, folder: Path
) -> int:
    """``regions`` (polygons, in instance order) of instances whose masks are ``masks``: each part of each
    mask is one region, and the importer gives back exactly that part. Returns the number of instances
    with two or more parts (the caller asserts there are some)."""
    imported = import_regions(regions, width, height, folder)
    several, position = 0, 0
    for mask in masks:
        parts = filled_parts(mask)
        several += len(parts) >= 2
        mine = imported[position : position + len(parts)]
        position += len(parts)
        assert len(mine) == len(parts)
        for part in parts:  # the regions of an instance, in whatever order the tracer found its parts
            assert any(np.array_equal(part, m) for m in mine), "a part of a mask did not come back"
    assert position == len(imported) == len(regions)
    return several
