"""Import labelme JSON: one file, or every ``*.json`` under a folder (one JSON per image).

What is read from each file:

- ``imagePath``: the image, relative to the JSON file (then looked up in ``images`` by path and by name).
  When it is absent, an image next to the JSON with the same stem is used (labelme's own naming).
- ``imageHeight``/``imageWidth``: checked against the image header.
- ``imageData`` (the embedded base64 image) is never decoded or written out: when the image file is missing,
  the record is kept without an image (``Record.image is None``) at the declared size, with a warning.
- ``shapes``: ``label``, ``points`` (``[[x, y], ...]`` pixels), ``shape_type`` and ``group_id``.
  ``polygon`` (or no ``shape_type``, as older labelme writes) -> mask; ``rectangle`` (two corners) -> box
  only; ``circle`` (centre and a point on the circle) -> polygon approximation; other types (``line``,
  ``linestrip``, ``point``, ``points``, ``mask``...) are ignored with a warning. Shapes of one file sharing
  a ``group_id`` and a ``label`` are ONE instance with several polygons (a grouped rectangle counts as
  its four-corner polygon).

Classes are the labels of the usable shapes, sorted by name, mapped to 1..K. A file that is not JSON is an
error for that file; a JSON file without a ``shapes`` list is skipped with a warning (not a labelme file).
"""

from __future__ import annotations

import math
import posixpath

from .. import storage
from ..core import ClassMap, Record
from ..problems import DatasetError, ProblemLog
from .geometry import build_record, is_number
from .image_files import (
    ImageResolver,
    folder_resolver,
    image_size,
    json_files,
    name_under_root,
    relative_name,
)
from .limits import read_json_file, require_regular_file, shown
from .via import ellipse_to_polygon

_AREA_TYPES = ("polygon", "rectangle", "circle")


def load_labelme(
    source: str, images: str | None, log: ProblemLog, allow_outside_paths: bool = False
) -> tuple[ClassMap, list[Record]]:
    """Import a labelme JSON file or a folder of them (local path or fsspec URL).

    Returns the class map (sorted labels, 1..K) and one record per labelme file with an identifiable image,
    sorted by JSON file name. An ``imagePath`` leading outside the source folder and ``images`` (an
    absolute path, ``../..``) is refused (error, record kept without image) unless ``allow_outside_paths``.

    Raises:
        DatasetError: the source is missing, or holds no readable labelme JSON file.
    """
    if not storage.exists(source):
        raise DatasetError(
            "labelme source not found; give a labelme JSON file or a folder of them", file=source
        )
    require_regular_file(source)
    root, files = json_files(source)
    if not files:
        raise DatasetError("no .json file in the folder (labelme writes one JSON per image)", file=source)
    documents = _read_documents(source, files, log)
    grouped = [(file, data, _group_shapes(log, file, data)) for file, data in documents]
    class_map = ClassMap(tuple(sorted({label for _, _, groups in grouped for label, _, _ in groups})))
    resolvers: dict[str, ImageResolver] = {}
    records = [
        _document_to_record(
            log,
            folder_resolver(resolvers, file, images, root, allow_outside_paths),
            root,
            file,
            data,
            groups,
            class_map,
        )
        for file, data, groups in grouped
    ]
    return class_map, [record for record in records if record is not None]


def _read_documents(source: str, files: list[str], log: ProblemLog) -> list[tuple[str, dict]]:
    """``[(file, parsed JSON)]`` of the labelme files; a single file's problem is raised, not logged."""
    single_file = files == [source]
    documents = []
    reasons = []  # why files were skipped, for the error when none is left
    for file in files:
        try:
            data = read_json_file(file)
        except DatasetError as e:  # not JSON, too deep or large; unreadable, a FIFO
            if single_file:
                raise
            log.error(f"{e.problem.message}; file skipped", file=file)
            reasons.append(f"{storage.basename(file)}: {e.problem.message}")
            continue
        if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
            if single_file:
                raise DatasetError("not a labelme file: no 'shapes' list", file=file)
            log.warn("not a labelme file (no 'shapes' list); skipped", file=file)
            reasons.append(f"{storage.basename(file)}: no 'shapes' list")
            continue
        documents.append((file, data))
    if not documents:
        raise DatasetError(
            f"none of the {len(files)} JSON file(s) is a readable labelme file (first: {reasons[0]})",
            file=source,
        )
    return documents


def _document_to_record(
    log: ProblemLog,
    resolver: ImageResolver,
    root: str,
    file: str,
    data: dict,
    groups: list[tuple[str, int, dict]],
    class_map: ClassMap,
) -> Record | None:
    """The record of one labelme file; ``None`` (logged) when its image cannot be identified or sized."""
    found = _find_image(log, resolver, file, data)
    if found is None:
        return None
    image_name, location = found
    size = image_size(log, location, data.get("imageWidth"), data.get("imageHeight"), file, image_name)
    if size is None:
        if location is None:
            log.error(
                "image file missing and no usable imageWidth/imageHeight declared; file skipped",
                file=file,
                image=image_name,
            )
        return None
    objects = (
        {"label": class_map.label(label), "annotation_id": annotation_id, **geometry}
        for label, annotation_id, geometry in groups
    )
    return build_record(
        log,
        location=location,
        file_name=_file_name(root, storage.parent(file), image_name, location),
        size=size,
        objects=objects,
        file=file,
        image=image_name,
    )


def _find_image(log: ProblemLog, resolver: ImageResolver, file: str, data: dict):
    """``(image name, location or None)``, or ``None`` (logged) when no image can be identified."""
    image_path = data.get("imagePath")
    if not isinstance(image_path, str) or not image_path.strip():
        stem = posixpath.splitext(storage.basename(file))[0]
        for suffix in storage.IMAGE_SUFFIXES:
            location = resolver.resolve(stem + suffix)
            if location is not None and storage.parent(location) == storage.parent(file):
                log.warn(
                    f"no imagePath; using {storage.basename(location)}, the image with the JSON's name",
                    file=file,
                )
                return storage.basename(location), location
        log.error("no imagePath and no image with the JSON's name next to it; file skipped", file=file)
        return None
    location, refusal = resolver.find(image_path, storage.parent(file))
    if refusal:
        log.error(f"{refusal}; record kept without image", file=file, image=image_path)
    elif location is None:
        embedded = (
            " (the JSON embeds it as imageData, which instaseg does not extract: save the image "
            "next to the JSON)"
            if data.get("imageData")
            else ""
        )
        log.warn(f"image file not found{embedded}; record kept without image", file=file, image=image_path)
    return image_path, location


def _points(shape) -> list[float] | None:
    points = shape.get("points")
    if not isinstance(points, list) or not all(isinstance(p, list | tuple) and len(p) == 2 for p in points):
        return None
    return [v for point in points for v in point]


def _group_shapes(log: ProblemLog, file: str, data: dict) -> list[tuple[str, int, dict]]:
    """``[(label, first shape index, build_annotation geometry kwargs)]`` in shape order."""
    groups: dict[tuple, list[tuple[int, str, list[float]]]] = {}
    for index, shape in enumerate(data["shapes"]):
        where = {"file": file, "image": data.get("imagePath"), "annotation": index}
        if not isinstance(shape, dict):
            log.error("shape is not an object; dropped", **where)
            continue
        kind = shape.get("shape_type") or "polygon"
        label = shape.get("label")
        if kind not in _AREA_TYPES:
            log.warn(
                f"shape_type {kind!r} is not used (only polygon, rectangle and circle are); ignored", **where
            )
            continue
        if not isinstance(label, str) or not label.strip():
            log.error("shape has no label; dropped", **where)
            continue
        flat = _points(shape)
        if flat is None:
            log.error("'points' must be a list of [x, y] pairs; shape dropped", **where)
            continue
        if kind in ("rectangle", "circle") and len(flat) != 4:
            log.error(f"{kind} needs exactly 2 points, got {len(flat) // 2}; shape dropped", **where)
            continue
        group_id = shape.get("group_id")
        if group_id is not None and (isinstance(group_id, bool) or not isinstance(group_id, int | str)):
            log.warn(
                f"group_id must be an integer (or a text) or null, got {shown(group_id)}; shape not grouped",
                **where,
            )
            group_id = None
        key = (label.strip(), group_id) if group_id is not None else (label.strip(), None, index)
        groups.setdefault(key, []).append((index, kind, flat))

    result = []
    for key, members in groups.items():
        label, first = key[0], members[0][0]
        if len(members) == 1 and members[0][1] == "rectangle":
            result.append((label, first, {"box_xyxy": _rectangle_box(members[0][2])}))
            continue
        polygons = []
        for _, kind, flat in members:
            if kind == "rectangle":
                x0, y0, x1, y1 = _rectangle_box(flat)
                polygons.append([x0, y0, x1, y0, x1, y1, x0, y1])
            elif kind == "circle":
                polygons.append(_circle_polygon(flat))
            else:
                polygons.append(flat)
        result.append((label, first, {"polygons": polygons}))
    return result


def _rectangle_box(flat: list) -> tuple | list:
    """xyxy of a rectangle given by two opposite corners in any order (non-numbers pass through to fail)."""
    if not all(is_number(v) for v in flat):
        return flat
    x0, y0, x1, y1 = (float(v) for v in flat)
    return (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


def _circle_polygon(flat) -> list:
    if not all(is_number(v) for v in flat):
        return flat  # non-numeric or infinite: build_annotation reports it
    cx, cy, px, py = (float(v) for v in flat)
    radius = math.hypot(px - cx, py - cy)  # inf, never OverflowError, for huge coordinates
    return ellipse_to_polygon(cx, cy, radius, radius) if 0 < radius < math.inf else flat


def _file_name(root: str, directory: str, image_path: str, location: str | None) -> str:
    """The image path relative to the source root (forward slashes); the found file's name if it escapes."""
    name = name_under_root(root, directory, image_path)
    if name is None or storage.is_url(image_path):
        if location is not None and not relative_name(root, location).startswith("../"):
            return relative_name(root, location)
        return storage.basename(image_path)
    return name
