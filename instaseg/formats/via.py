"""Import VGG Image Annotator (VIA) JSON: VIA 1.x ``via_region_data.json`` and VIA 2.x exports/projects.

What is read:

- VIA 1.x: a dict ``{"<filename><filesize>": {"filename", "size", "regions": {"0": region, ...}}}``.
- VIA 2.x: the same with ``regions`` a list, or a project file whose images are under
  ``_via_img_metadata``.
- A region is ``{"shape_attributes": {"name": shape, ...}, "region_attributes": {...}}``. Shapes:
  ``polygon`` (``all_points_x``/``all_points_y``, pixels) -> mask; ``rect`` (``x, y, width, height``)
  -> box only; ``circle`` (``cx, cy, r``) and ``ellipse`` (``cx, cy, rx, ry``, optional ``theta`` in
  radians) -> polygon approximation (chords within 0.1 px of the curve); ``polyline``, ``point`` and
  unknown shapes are ignored with a warning.

Class names: VIA has no class list. The class attribute is chosen once per dataset: the first of
``class``, ``label``, ``name``, ``category``, ``type`` that some region sets to a string, else the first
region attribute (in file order) that holds a string (a checkbox attribute counts when exactly one option
is ticked). When no region attribute gives a class, every region is of the single class ``"object"``.
When there is a class attribute, a region without a value for it is an error and is dropped.
Classes are sorted by name and mapped to 1..K.

VIA stores no image size: every image's header is read. An image file that cannot be found is an error:
its regions cannot be rasterised without the size, so it gets no record.
"""

from __future__ import annotations

import math

import numpy as np

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
from .limits import read_json_file, require_regular_file

DEFAULT_CLASS = "object"
_PREFERRED_CLASS_KEYS = ("class", "label", "name", "category", "type")

# (file, image entry, [(region index, class name, shape attributes)]): one image entry with usable regions.
_Entry = tuple[str, dict, list[tuple[int, str, dict]]]


def ellipse_to_polygon(cx: float, cy: float, rx: float, ry: float, theta: float = 0.0) -> list[float]:
    """Flat polygon ``[x1, y1, ...]`` (pixels) approximating an ellipse rotated by ``theta`` radians.

    Uses enough vertices that the chords stay within 0.1 px of the curve (at least 8, at most 720), so
    the polygon loses under 0.1 px of radius (a 0.5 px tolerance loses 10% of the area of a 6 px circle).
    """
    radius = max(abs(rx), abs(ry))
    step = math.acos(1.0 - 0.1 / radius) if radius > 0.1 else math.pi / 8  # 0 for radii past 1e15
    count = min(max(math.ceil(math.pi / step), 8), 720) if step > 0 else 720
    t = np.linspace(0.0, 2.0 * math.pi, count, endpoint=False)
    cos_theta, sin_theta = math.cos(theta), math.sin(theta)
    with np.errstate(over="ignore", invalid="ignore"):  # radii near 1e308: inf/NaN, refused by the caller
        xs = cx + rx * np.cos(t) * cos_theta - ry * np.sin(t) * sin_theta
        ys = cy + rx * np.cos(t) * sin_theta + ry * np.sin(t) * cos_theta
    return np.stack([xs, ys], axis=1).reshape(-1).tolist()


def load_via(
    source: str, images: str | None, log: ProblemLog, allow_outside_paths: bool = False
) -> tuple[ClassMap, list[Record]]:
    """Import a VIA JSON file, or every VIA JSON file under a folder (local path or fsspec URL).

    Images are looked up relative to each JSON file, then in ``images`` (by relative path, then by name).
    A ``filename`` leading outside the source folder and ``images`` (an absolute path, ``../..``) is refused
    (error) unless ``allow_outside_paths``.
    Returns the class map (sorted names, labels 1..K) and one record per image found, in file order.

    Raises:
        DatasetError: the source is missing, or no file in it is a readable VIA JSON.
    """
    if not storage.exists(source):
        raise DatasetError("VIA source not found; give a VIA JSON file or a folder holding one", file=source)
    require_regular_file(source)
    root, files = json_files(source)
    entries = _read_entries(source, files, log)
    class_key = _choose_class_key(value for _, _, value in entries)
    parsed = [_parse_entry(log, file, key, value, class_key) for file, key, value in entries]
    parsed = [entry for entry in parsed if entry is not None]
    class_map = ClassMap(tuple(sorted({name for _, _, kept in parsed for _, name, _ in kept})))
    resolvers: dict[str, ImageResolver] = {}
    records = [
        _entry_to_record(
            log,
            folder_resolver(resolvers, entry[0], images, root, allow_outside_paths),
            images,
            entry,
            class_map,
        )
        for entry in parsed
    ]
    return class_map, [record for record in records if record is not None]


def _read_entries(source: str, files: list[str], log: ProblemLog) -> list[tuple[str, str, object]]:
    """``[(file, key, image entry)]`` of every readable VIA file; a single file's problem is raised."""
    entries = []
    reasons = []  # why files were skipped, for the error when none is left
    for file in files:
        try:
            metadata = _read_metadata(file)
        except DatasetError as e:
            if files == [source]:
                raise
            log.error(e.problem.message, file=file)
            reasons.append(f"{storage.basename(file)}: {e.problem.message}")
            continue
        entries += [(file, key, value) for key, value in metadata.items()]
    if not entries:
        first = f" (first: {reasons[0]})" if reasons else ""
        raise DatasetError(
            f"no readable VIA JSON file among the {len(files)} JSON file(s) in the folder{first}", file=source
        )
    return entries


def _parse_entry(log: ProblemLog, file: str, key: str, value, class_key: str | None) -> _Entry | None:
    """The entry's usable regions with their class names; ``None`` (logged) when the entry is malformed."""
    if not isinstance(value, dict) or not isinstance(value.get("filename"), str) or not value["filename"]:
        log.error("image entry has no 'filename'; skipped", file=file, image=str(key))
        return None
    if "regions" not in value:
        log.error("image entry has no 'regions'; skipped", file=file, image=value["filename"])
        return None
    regions = value["regions"] or []
    if isinstance(regions, dict):  # VIA 1.x: {"0": region, "1": region}
        regions = [regions[k] for k in sorted(regions, key=_region_order)]
    elif not isinstance(regions, list):
        log.error(
            f"'regions' must be a list or an object, got {type(regions).__name__}; image skipped",
            file=file,
            image=value["filename"],
        )
        return None
    kept = []
    for index, region in enumerate(regions):
        where = {"file": file, "image": value["filename"], "annotation": index}
        shape = region.get("shape_attributes") if isinstance(region, dict) else None
        if not isinstance(shape, dict):
            log.error("region has no 'shape_attributes' object; dropped", **where)
            continue
        name = _class_of(region.get("region_attributes"), class_key)
        if name is None:
            log.error(
                f"region has no class in its '{class_key}' attribute (other regions use it); "
                "set one in VIA or remove the region; dropped",
                **where,
            )
            continue
        kept.append((index, name, shape))
    return file, value, kept


def _entry_to_record(
    log: ProblemLog,
    resolver: ImageResolver,
    images: str | None,
    entry: _Entry,
    class_map: ClassMap,
) -> Record | None:
    """The record of one parsed entry; ``None`` (logged) when its image is missing, refused or unusable."""
    file, value, regions = entry
    directory = storage.parent(file)
    filename = value["filename"]
    location, refusal = resolver.find(filename, directory)
    if refusal:
        log.error(f"{refusal}; its {len(regions)} region(s) are not used", file=file, image=filename)
        return None
    if location is None:
        log.error(
            f"image file not found (looked next to the JSON file{' and in ' + images if images else ''}); "
            f"VIA stores no image size, so its {len(regions)} region(s) are not used",
            file=file,
            image=filename,
        )
        return None
    size = image_size(log, location, None, None, file, filename)
    if size is None:
        return None
    where = {"file": file, "image": filename}
    objects = (
        {"label": class_map.label(name), "annotation_id": index, **geometry}
        for index, name, shape in regions
        if (geometry := _region_geometry(log, shape, {**where, "annotation": index})) is not None
    )
    return build_record(
        log,
        location=location,
        file_name=_file_name(resolver.root, directory, filename, location),
        size=size,
        objects=objects,
        **where,
    )


def _read_metadata(file: str) -> dict:
    """The ``{key: image entry}`` dict of a VIA 1.x/2.x file; ``DatasetError`` when it is not one."""
    try:
        data = read_json_file(file)
    except DatasetError as e:
        raise DatasetError(f"{e.problem.message} (truncated, or not a VIA file?)", file=file) from None
    if isinstance(data, dict) and "_via_img_metadata" in data:  # VIA 2.x project file
        data = data["_via_img_metadata"]
    elif isinstance(data, dict) and {"project", "file", "metadata"} <= set(data):
        raise DatasetError(
            "this is a VIA 3 project, which is not supported; export annotations from VIA 2 "
            "(Annotation > Export as JSON)",
            file=file,
        )
    if not isinstance(data, dict) or not any(isinstance(v, dict) and "regions" in v for v in data.values()):
        raise DatasetError(
            "not a VIA annotation file: expected an object of images, each with 'filename' "
            "and 'regions' (VIA 1.x/2.x 'Export as JSON' or a VIA 2 project)",
            file=file,
        )
    return data


def _region_order(key: str):
    return (0, int(key)) if str(key).isdigit() else (1, str(key))


def _string_value(value) -> str | None:
    """A class name held by an attribute value: a non-empty string, or the one ticked checkbox option."""
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, dict):
        ticked = [k for k, v in value.items() if v is True and isinstance(k, str) and k.strip()]
        return ticked[0].strip() if len(ticked) == 1 else None
    return None


def _choose_class_key(entries) -> str | None:
    seen: list[str] = []
    for value in entries:
        regions = value.get("regions") if isinstance(value, dict) else None
        regions = (
            regions.values() if isinstance(regions, dict) else regions if isinstance(regions, list) else []
        )
        for region in regions:
            attributes = region.get("region_attributes") if isinstance(region, dict) else None
            if isinstance(attributes, dict):
                seen += [k for k, v in attributes.items() if k not in seen and _string_value(v) is not None]
    preferred = [k for k in _PREFERRED_CLASS_KEYS if k in seen]
    return preferred[0] if preferred else (seen[0] if seen else None)


def _class_of(attributes, class_key: str | None) -> str | None:
    if class_key is None:
        return DEFAULT_CLASS
    return _string_value(attributes.get(class_key)) if isinstance(attributes, dict) else None


def _region_geometry(log: ProblemLog, shape: dict, where: dict) -> dict | None:
    """The :func:`~.geometry.build_annotation` geometry of a region's ``shape_attributes`` (pixels):
    ``polygons`` or ``box_xyxy``; ``None`` (logged) when the shape is malformed or not an area."""
    kind = shape.get("name")
    if kind == "polygon":
        xs, ys = shape.get("all_points_x"), shape.get("all_points_y")
        if not isinstance(xs, list) or not isinstance(ys, list) or len(xs) != len(ys):
            log.error(
                "polygon needs lists 'all_points_x' and 'all_points_y' of equal length; dropped", **where
            )
            return None
        return {"polygons": [[v for xy in zip(xs, ys, strict=True) for v in xy]]}
    if kind == "rect":
        values = [shape.get(k) for k in ("x", "y", "width", "height")]
        if not all(is_number(v) for v in values):
            log.error("rect needs numbers 'x', 'y', 'width', 'height'; dropped", **where)
            return None
        x, y, w, h = values
        return {"box_xyxy": (x, y, x + w, y + h)}
    if kind in ("circle", "ellipse"):
        keys = ("cx", "cy", "r", "r") if kind == "circle" else ("cx", "cy", "rx", "ry")
        values = [shape.get(k) for k in keys]
        theta = shape.get("theta", 0.0) if kind == "ellipse" else 0.0
        if not all(is_number(v) for v in values) or not is_number(theta) or min(values[2:]) <= 0:
            log.error(f"{kind} needs numbers {', '.join(dict.fromkeys(keys))} (radii > 0); dropped", **where)
            return None
        return {"polygons": [ellipse_to_polygon(*values, theta)]}
    log.warn(
        f"shape {kind!r} is not used (only polygon, rect, circle and ellipse are); region ignored", **where
    )
    return None


def _file_name(root: str, directory: str, filename: str, location: str) -> str:
    """The record's export name: the VIA filename relative to the source root, else the found file's."""
    if storage.is_url(filename):
        return storage.basename(filename)
    name = name_under_root(root, directory, filename) or relative_name(root, location)
    return name if not name.startswith("../") else storage.basename(location)
