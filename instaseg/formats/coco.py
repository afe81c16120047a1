"""Import COCO instance-segmentation annotations, including Label Studio's COCO exports.

:func:`load_coco` reads a COCO JSON file, a folder holding one, or a Label Studio export ``.zip`` and
returns a :class:`~instaseg.core.ClassMap` (categories sorted by id, mapped once to labels 1..K) and one
:class:`~instaseg.core.Record` per listed image. Geometry goes through
:func:`~instaseg.formats.geometry.build_annotation`, so polygons (several per object), compressed and
uncompressed RLE, crowd regions and box-only objects are validated and repaired like in every importer.

Problems with single items (an annotation on an unknown image, a NaN coordinate...) are logged and the
item skipped; a file that cannot be a COCO dataset at all raises :class:`~instaseg.problems.DatasetError`.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import Any

from .. import storage
from ..core import ClassMap, Record
from ..problems import DatasetError, ProblemLog
from .geometry import build_annotation, is_number
from .image_files import ImageResolver, image_size, nfc, strip_upload_prefix
from .limits import (
    member_problem,
    open_zip,
    parse_json_bytes,
    read_json_file,
    read_member,
    require_regular_file,
    shown,
)

# File names tried, in order, inside a folder or a zip; otherwise its only *.json file is used.
ANNOTATION_FILE_NAMES = ("result.json", "result_coco.json", "annotations.json")

_REQUIRED_KEYS = ("images", "annotations", "categories")


def load_coco(
    source: str, images: str | None, log: ProblemLog, allow_outside_paths: bool = False
) -> tuple[ClassMap, list[Record]]:
    """Import a COCO dataset.

    Args:
        source: a COCO JSON file, a folder holding ``result.json``/``result_coco.json``/``annotations.json``
            or a single ``*.json``, or a Label Studio export ``.zip`` (local path or fsspec URL).
        images: folder of the images when the paths in the file do not lead to them; images are then
            matched by file name (with or without Label Studio's 8-hex upload prefix).
        log: receives warnings (repairs, missing images) and errors (items dropped).
        allow_outside_paths: read images whose ``file_name`` leads outside the JSON's folder and
            ``images`` (else such an image is refused with an error and kept as missing).

    Returns:
        The class map and one record per listed image, in file order, ``image_id`` 1..N. A record's
        ``image`` is ``None`` when its file is missing or unusable.

    Raises:
        DatasetError: the source is missing, not JSON, not a COCO object, or its categories are unusable.
    """
    coco, json_location, locate = _open_source(source, images, allow_outside_paths, log)
    return coco_to_records(coco, json_location, locate, log)


@dataclass
class _ZipImages:
    """Finds image files inside a zip export: by path relative to the JSON, then by (unprefixed) basename;
    else through ``fallback`` (the ``--images`` folder, or the zip's folder)."""

    archive: str
    json_dir: str
    members: set[str]
    fallback: ImageResolver
    _by_name: dict[str, str | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.members = {nfc(m): m for m in self.members}
        for key_member, member in sorted(self.members.items()):
            for key in {posixpath.basename(key_member), strip_upload_prefix(posixpath.basename(key_member))}:
                self._by_name[key] = None if self._by_name.get(key, member) != member else member

    def find(self, name: str) -> tuple[str | None, str | None]:
        """``(location, refusal)`` as :meth:`ImageResolver.find` gives them."""
        name = nfc(name.replace("\\", "/"))
        member = self.members.get(posixpath.normpath(posixpath.join(self.json_dir, name)).lstrip("/"))
        if member is None:
            base = posixpath.basename(name)
            member = self._by_name.get(base) or self._by_name.get(strip_upload_prefix(base))
        if member:
            return f"zip://{member}::{self.archive}", None
        return self.fallback.find(name)


def _open_source(
    source: str, images: str | None, allow_outside: bool, log: ProblemLog
) -> tuple[Any, str, Any]:
    """Parse the COCO JSON of ``source``: ``(parsed object, its location for messages, image finder)``."""
    if not storage.exists(source):
        raise DatasetError("not found; check the path (or URL) of the annotation file or folder", file=source)
    if images is not None and not storage.is_dir(images):
        raise DatasetError("images folder not found", file=images)
    require_regular_file(source)
    if source.lower().endswith(".zip") and not storage.is_dir(source):
        return _open_zip(source, images, allow_outside, log)
    root = source
    if storage.is_dir(source):
        names = {storage.basename(p): p for p in storage.list_files(source, (".json",), recursive=False)}
        location = next((names[n] for n in ANNOTATION_FILE_NAMES if n in names), None)
        if location is None and len(names) == 1:
            location = next(iter(names.values()))
        if location is None:
            found = ", ".join(sorted(names)) or "none"
            raise DatasetError(
                f"no COCO annotation file in this folder (looked for "
                f"{', '.join(ANNOTATION_FILE_NAMES)} or a single *.json; found: {found}); "
                "give the JSON file itself",
                file=source,
            )
        source = location
    else:
        root = storage.parent(source)
    coco = read_json_file(source)
    return coco, source, ImageResolver(storage.parent(source), images, root=root, allow_outside=allow_outside)


def _open_zip(
    source: str, images: str | None, allow_outside: bool, log: ProblemLog
) -> tuple[Any, str, _ZipImages]:
    with open_zip(source) as archive:
        infos = [i for i in archive.infolist() if not i.is_dir()]
        jsons = [i.filename for i in infos if i.filename.lower().endswith(".json")]
        member = next((n for n in ANNOTATION_FILE_NAMES if n in jsons), None)
        if member is None and len(jsons) == 1:
            member = jsons[0]
        if member is None:
            raise DatasetError(
                f"no COCO annotation file in this zip (looked for "
                f"{', '.join(ANNOTATION_FILE_NAMES)} or a single *.json; found: "
                f"{', '.join(jsons) or 'none'})",
                file=source,
            )
        location = f"zip://{member}::{source}"
        coco = parse_json_bytes(read_member(archive, member, location), location)
    members = set()
    for info in infos:
        if info.filename.lower().endswith(storage.IMAGE_SUFFIXES):
            problem = member_problem(info, storage.MAX_JSON_BYTES)
            if problem:
                log.error(f"{problem}; the image is treated as missing", file=source, image=info.filename)
            else:
                members.add(info.filename)
    folder = storage.parent(source)
    fallback = ImageResolver(images or folder, images, root=folder, allow_outside=allow_outside)
    return coco, location, _ZipImages(source, posixpath.dirname(member), members, fallback)


def coco_to_records(coco: Any, file: str, locate: Any, log: ProblemLog) -> tuple[ClassMap, list[Record]]:
    """Turn a parsed COCO object into ``(class map, records)``; see :func:`load_coco`.

    ``locate`` has ``find(file_name) -> (location | None, refusal | None)`` (an :class:`ImageResolver`).
    """
    if not isinstance(coco, dict):
        raise DatasetError(
            f"expected a JSON object with {', '.join(_REQUIRED_KEYS)}, got a "
            f"{type(coco).__name__}; is this a COCO file?",
            file=file,
        )
    missing = [k for k in _REQUIRED_KEYS if k not in coco]
    if missing:
        raise DatasetError(
            f"not a COCO file: missing key(s) {', '.join(missing)} "
            f"(found: {', '.join(map(str, coco)) or 'none'})",
            file=file,
        )
    for key in _REQUIRED_KEYS:
        if not isinstance(coco[key], list):
            raise DatasetError(f"'{key}' must be a list, got {type(coco[key]).__name__}", file=file)
    class_map, labels = _categories(coco["categories"], len(coco["annotations"]), file)
    records, by_id = _images(coco["images"], file, locate, log)
    _annotations(coco["annotations"], by_id, labels, file, log)
    for i, record in enumerate(records, start=1):
        record.image_id = i
    return class_map, records


def _categories(categories: list, num_annotations: int, file: str) -> tuple[ClassMap, dict[int, int]]:
    """``(class map, category id -> label)``: categories sorted by id get labels 1..K."""
    if not categories and num_annotations:
        raise DatasetError(
            f"'categories' is empty but there are {num_annotations} annotations; add the "
            "categories (id and name of each class)",
            file=file,
        )
    by_id: dict[int, str] = {}
    for i, category in enumerate(categories):
        if not isinstance(category, dict):
            raise DatasetError(
                f"category #{i} must be an object with id and name, got {type(category).__name__}", file=file
            )
        cid, name = category.get("id"), category.get("name")
        if not isinstance(cid, int) or isinstance(cid, bool):
            raise DatasetError(
                f"category #{i} ({shown(name)}) needs an integer id, got {shown(cid)}", file=file
            )
        if not isinstance(name, str) or not name.strip():
            raise DatasetError(
                f"category id {shown(cid)} needs a non-empty name, got {shown(name)}", file=file
            )
        if cid in by_id:
            raise DatasetError(
                f"category id {shown(cid)} is used twice ({shown(by_id[cid])} and {shown(name)})", file=file
            )
        by_id[cid] = name
    names = [by_id[cid] for cid in sorted(by_id)]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DatasetError(
            f"category names must be unique; repeated: {', '.join(repeated)}. Merge them "
            "(and their annotations) into one category",
            file=file,
        )
    return ClassMap(tuple(names)), {cid: label for label, cid in enumerate(sorted(by_id), start=1)}


def _valid_id(value: Any) -> bool:
    return isinstance(value, int | str) and not isinstance(value, bool)


def clean_file_name(name: str) -> str:
    """A relative name with forward slashes; a name that leaves its folder (``../x/img.png``) keeps its basename."""
    name = posixpath.normpath(name.replace("\\", "/"))
    if name.startswith("../") or name == ".." or name.startswith("/") or ":" in name.split("/")[0]:
        return posixpath.basename(name)
    return name


def _images(images: list, file: str, locate: Any, log: ProblemLog) -> tuple[list[Record], dict]:
    """Records for the listed images and ``image id -> record`` (``None`` for entries dropped)."""
    records: list[Record] = []
    by_id: dict[Any, Record | None] = {}
    missing: list[str] = []
    for i, entry in enumerate(images):
        if not isinstance(entry, dict):
            log.error(f"image entry #{i} must be an object, got {type(entry).__name__}; skipped", file=file)
            continue
        image_id, name = entry.get("id"), entry.get("file_name")
        if not _valid_id(image_id):
            log.error(f"image entry #{i} has no valid id ({shown(image_id)}); skipped", file=file, image=name)
            continue
        if image_id in by_id:
            first = by_id[image_id]
            log.error(
                f"image id {shown(image_id)} is listed twice (also for "
                f"{first.file_name if first else 'an invalid entry'}); this entry is skipped",
                file=file,
                image=name,
            )
            continue
        if not isinstance(name, str) or not name.strip():
            log.error(f"image id {shown(image_id)} has no file_name; skipped", file=file)
            by_id[image_id] = None
            continue
        location, refusal = locate.find(name)
        if refusal:
            log.error(f"{refusal}; kept as missing", file=file, image=name)
        size = image_size(log, location, entry.get("width"), entry.get("height"), file, name)
        if location is None and not refusal:
            missing.append(clean_file_name(name))
        width, height, mode = size if size else (0, 0, None)
        record = Record(
            image=location if size else None,
            file_name=clean_file_name(name),
            width=width,
            height=height,
            mode=mode,
        )
        records.append(record)
        by_id[image_id] = record if size else None
    if missing:
        examples = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        log.warn(
            f"{len(missing)} of {len(images)} listed images were not found ({examples}); they are kept "
            "as missing and not used. Give the folder that holds them (--images DIR); files are matched "
            "by name",
            file=file,
        )
    return records, by_id


def _annotations(annotations: list, by_id: dict, labels: dict[int, int], file: str, log: ProblemLog) -> None:
    """Build every annotation onto its record; per-item problems are logged and the item skipped."""
    seen: set = set()
    box_only = 0
    unusable_image = 0
    for i, ann in enumerate(annotations):
        if not isinstance(ann, dict):
            log.error(f"annotation #{i} must be an object, got {type(ann).__name__}; skipped", file=file)
            continue
        ann_id = ann.get("id")
        if not _valid_id(ann_id):
            log.warn(f"annotation #{i} has no valid id ({shown(ann_id)}); called #{i} in messages", file=file)
            ann_id = f"#{i}"
        elif ann_id in seen:
            log.error(
                f"annotation id {shown(ann_id)} is used twice; the later one is skipped",
                file=file,
                annotation=ann_id,
            )
            continue
        seen.add(ann_id)
        image_id, category_id = ann.get("image_id"), ann.get("category_id")
        if not _valid_id(image_id) or image_id not in by_id:
            log.error(
                f"annotation on unknown image id {shown(image_id)}; skipped", file=file, annotation=ann_id
            )
            continue
        record = by_id[image_id]
        if record is None:
            unusable_image += 1  # its image entry was reported already
            continue
        if not _valid_id(category_id) or category_id not in labels:
            log.error(
                f"unknown category id {shown(category_id)} (known: {', '.join(map(str, labels)) or 'none'}); "
                "skipped",
                file=file,
                image=record.file_name,
                annotation=ann_id,
            )
            continue
        geometry = _geometry(ann, log, file, record.file_name, ann_id)
        if geometry is None:
            continue
        if "box_xyxy" in geometry:
            box_only += 1
        annotation = build_annotation(
            log,
            label=labels[category_id],
            height=record.height,
            width=record.width,
            file=file,
            image=record.file_name,
            annotation_id=ann_id,
            iscrowd=geometry.pop("iscrowd"),
            **geometry,
        )
        if annotation is not None:
            record.annotations.append(annotation)
    if box_only:
        log.warn(
            f"{box_only} of {len(annotations)} objects have no mask (empty segmentation); they are kept "
            "as boxes only",
            file=file,
        )
    if unusable_image:
        log.warn(f"{unusable_image} annotations belong to unusable image entries and were skipped", file=file)


def _geometry(ann: dict, log: ProblemLog, file: str, image: str, ann_id: Any) -> dict | None:
    """Keyword arguments for :func:`build_annotation` (one geometry + ``iscrowd``), or ``None`` if unusable."""
    where = {"file": file, "image": image, "annotation": ann_id}
    iscrowd = ann.get("iscrowd", 0)
    if iscrowd not in (0, 1) or isinstance(iscrowd, float):
        log.error(f"iscrowd must be 0 or 1, got {shown(iscrowd)}; skipped", **where)
        return None
    bbox = ann.get("bbox")
    if bbox is not None and not (isinstance(bbox, list) and len(bbox) == 4 and all(map(is_number, bbox))):
        log.error(
            f"bbox must be [x, y, width, height] (4 finite numbers), got {shown(bbox)}; skipped", **where
        )
        return None
    segmentation = ann.get("segmentation")
    if segmentation is None or segmentation == [] or segmentation == [[]]:
        if bbox is None:
            log.error("annotation has neither segmentation nor bbox; skipped", **where)
            return None
        x, y, w, h = bbox
        return {"box_xyxy": [x, y, x + w, y + h], "iscrowd": bool(iscrowd)}
    if isinstance(segmentation, dict):
        return {"rle": segmentation, "iscrowd": bool(iscrowd)}
    if isinstance(segmentation, list) and all(isinstance(p, list) for p in segmentation):
        return {"polygons": segmentation, "iscrowd": bool(iscrowd)}
    if isinstance(segmentation, list) and all(is_number(v) for v in segmentation):
        log.warn(
            "segmentation is one flat list of coordinates, not a list of polygons; read as one polygon",
            **where,
        )
        return {"polygons": [segmentation], "iscrowd": bool(iscrowd)}
    log.error(
        "segmentation must be a list of polygons or an RLE object, got "
        f"{type(segmentation).__name__}; skipped",
        **where,
    )
    return None
