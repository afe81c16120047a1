"""Predictions -> Label Studio: :func:`instances_to_label_studio_regions` and :func:`label_studio_prediction`.

The one converter from :class:`~instaseg.core.Instances` to Label Studio ``result`` regions, used by
``instaseg predict --save label-studio`` and by the ML backend's ``/predict`` alike; the importer
(:mod:`.labelstudio_json`) reads them back.

Polygon rule: one ``polygonlabels`` region per connected part of a mask (8-connected), traced along the
pixel edges, points ``[x%, y%]`` in percent of the image's width and height (``x% = x / W * 100``), four
decimals. Label Studio polygons have no holes: a hole inside a part is filled. Brush regions
(``brushlabels``, Label Studio's RGBA RLE, :mod:`.brush`) keep every part and every hole in one region per
instance: use them when holes matter.
"""

from __future__ import annotations

import uuid

import numpy as np

from ..core import Instances
from ..masks import mask_to_polygons
from .brush import mask_to_brush_rle

REGION_KINDS = ("polygonlabels", "brushlabels")


def _part_polygons(instances: Instances, i: int, width: int, height: int) -> list[list[list[float]]]:
    """Each connected part of instance ``i``'s mask as ``[[x%, y%], ...]`` (traced on its crop only)."""
    y0, x0, crop = instances.mask_crop(i)
    polygons = []
    for flat in mask_to_polygons(crop):
        xs = (np.asarray(flat[0::2]) + x0) * (100.0 / width)
        ys = (np.asarray(flat[1::2]) + y0) * (100.0 / height)
        polygons.append([[round(float(x), 4), round(float(y), 4)] for x, y in zip(xs, ys, strict=True)])
    return polygons


def instances_to_label_studio_regions(
    instances: Instances,
    names: dict[int, str],
    kind: str = "polygonlabels",
    from_name: str = "label",
    to_name: str = "image",
) -> list[dict]:
    """Label Studio ``result`` regions of one image's predicted instances (masks required).

    Args:
        names: label 1..K -> the Label Studio label value to write; instances of other labels are left out.
        kind: ``"polygonlabels"`` (one region per connected part) or ``"brushlabels"`` (one per instance).
        from_name, to_name: the labeling config's control tag and its ``<Image>`` tag.

    Each region carries ``id``, ``from_name``, ``to_name``, ``type``, ``original_width``/``_height``,
    ``image_rotation`` 0, ``value`` and ``score`` (the instance's, 5 decimals; 1.0 without scores).
    Empty masks give no region.
    """
    if kind not in REGION_KINDS:
        raise ValueError(f"unknown region kind {kind!r}; valid: {', '.join(REGION_KINDS)}")
    if len(instances) and not instances.has_masks:
        raise ValueError("Label Studio regions need instances with masks")
    height, width = instances.image_size or (0, 0)
    regions = []
    for i in range(len(instances)):
        name = names.get(int(instances.labels[i]))
        if name is None:
            continue
        common = {
            "from_name": from_name,
            "to_name": to_name,
            "type": kind,
            "original_width": int(width),
            "original_height": int(height),
            "image_rotation": 0,
            "score": round(float(instances.scores[i]), 5) if instances.scores is not None else 1.0,
        }
        if kind == "brushlabels":
            if instances.mask_crop(i)[2].any():
                value = {"format": "rle", "rle": mask_to_brush_rle(instances.mask(i)), "brushlabels": [name]}
                regions.append({"id": uuid.uuid4().hex[:10], **common, "value": value})
            continue
        for points in _part_polygons(instances, i, width, height):
            value = {"points": points, "closed": True, "polygonlabels": [name]}
            regions.append({"id": uuid.uuid4().hex[:10], **common, "value": value})
    return regions


def label_studio_prediction(regions: list[dict], model_version: str, score: float | None = None) -> dict:
    """One task's prediction: ``{"model_version", "score", "result": regions}``.

    ``score`` is what Label Studio's Data Manager sorts tasks by; the mean region score when not given.
    """
    if score is None:
        score = float(np.mean([r["score"] for r in regions])) if regions else 0.0
    return {"model_version": model_version, "score": round(float(score), 5), "result": regions}
