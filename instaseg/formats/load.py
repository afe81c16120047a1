"""Pick the importer for a dataset and run it: :func:`load_dataset`."""

from __future__ import annotations

from collections.abc import Callable

from .. import storage
from ..core import ClassMap, Record
from ..dataset import Dataset
from ..problems import DatasetError, ProblemLog
from . import coco, labelme, labelstudio_json, mask_png, via
from .detect import detect_format
from .limits import MAX_OBJECTS_PER_IMAGE, shown

# ``load(source, images, log, allow_outside_paths) -> (class map, records)``.
Loader = Callable[[str, "str | None", ProblemLog, bool], "tuple[ClassMap, list[Record]]"]

# Format name -> importer. An explicit table, so the error for an unknown name can list them all.
IMPORTERS: dict[str, Loader] = {
    "coco": coco.load_coco,
    "labelstudio-json": labelstudio_json.load_labelstudio_json,
    "mask-png": mask_png.load_mask_png,
    "labelme": labelme.load_labelme,
    "via": via.load_via,
}


def load_dataset(
    source: str, images: str | None = None, format: str | None = None, allow_outside_paths: bool = False
) -> Dataset:
    """Import a dataset from a file or folder (local path or fsspec URL).

    Each image file is imported once: a later listing of an image already listed (a duplicated task, one
    file under two image ids) is left out with a warning, so that it cannot land in two splits. An image
    with more than :data:`~instaseg.formats.limits.MAX_OBJECTS_PER_IMAGE` objects is left out (error). A
    class name that cannot be part of a file name as it is (``../../tmp/x``) is warned about.

    Args:
        source: the annotation file (COCO/Label Studio/VIA JSON, or a ``.zip`` export) or dataset folder.
        images: the folder holding the images when the annotation file's paths do not lead to them
            (Label Studio exports: images are then matched by file name).
        format: one of :data:`IMPORTERS`; detected from the content when ``None``.
        allow_outside_paths: read image paths in annotation files that lead outside the dataset folder
            and ``images`` (absolute paths, ``../..``); refused with an error otherwise.

    Raises:
        DatasetError: the source is missing, unreadable, of unknown format, or unusable as a whole.
    """
    if format is None:
        format = detect_format(source)
    elif format not in IMPORTERS:
        raise DatasetError(f"unknown format {format!r}; valid formats: {', '.join(IMPORTERS)}", file=source)
    log = ProblemLog()
    try:
        class_map, records = IMPORTERS[format](source, images, log, allow_outside_paths)
    except RecursionError:  # a value nested just below the parser's limit, too deep to print or walk
        raise DatasetError(
            "a value in the annotations is nested too deeply to read (a malformed or hostile file)",
            file=source,
        ) from None
    records = _drop_crowded(_drop_duplicates(records, log), log)
    for i, record in enumerate(records, start=1):
        record.image_id = i
    _report_image_modes(records, log)
    _report_unsafe_class_names(class_map, log, source)
    return Dataset(format=format, source=source, class_map=class_map, records=records, problems=log.problems)


def _drop_duplicates(records: list[Record], log: ProblemLog) -> list[Record]:
    """``records`` without later listings of an image file (or file name) already listed, each warned."""
    kept: list[Record] = []
    first: dict[tuple[str, str], Record] = {}
    for record in records:
        keys = [("name", record.file_name)] + ([("file", record.image)] if record.image is not None else [])
        earlier = next((first[k] for k in keys if k in first), None)
        if earlier is None:
            first.update(dict.fromkeys(keys, record))
            kept.append(record)
            continue
        same = (
            "the same file as"
            if record.image is not None and record.image == earlier.image
            else "the name of"
        )
        log.warn(
            f"image listed twice ({same} {earlier.file_name}, listed earlier); this later listing and its "
            f"{len(record.annotations)} objects are left out, so the image is imported once",
            file=record.image,
            image=record.file_name,
        )
    return kept


def _drop_crowded(records: list[Record], log: ProblemLog) -> list[Record]:
    """``records`` without those holding more than :data:`MAX_OBJECTS_PER_IMAGE` objects, each an error."""
    kept = []
    for record in records:
        if len(record.annotations) > MAX_OBJECTS_PER_IMAGE:
            log.error(
                f"image has {len(record.annotations):,} objects, over the limit of {MAX_OBJECTS_PER_IMAGE:,} "
                "per image; left out",
                file=record.image,
                image=record.file_name,
            )
        else:
            kept.append(record)
    return kept


# What instaseg does with images that are not 8-bit RGB (see instaseg.images.pil_to_rgb).
_MODE_NOTES = {
    "RGBA": "alpha channel ignored",
    "LA": "grayscale, alpha ignored; repeated to 3 channels",
    "L": "grayscale; repeated to 3 channels",
    "1": "1-bit; converted to RGB",
    "P": "palette; converted to RGB",
    "CMYK": "CMYK; converted to RGB",
    "I;16": "16-bit; scaled to 8 bits (value / 65535 * 255)",
    "I;16B": "16-bit; scaled to 8 bits (value / 65535 * 255)",
    "I": "32-bit integer; scaled to 8 bits as 16-bit",
    "F": "floating point; scaled from 0..1 to 8 bits",
}


def _report_image_modes(records: list[Record], log: ProblemLog) -> None:
    """One warning per non-RGB pixel format among present images, saying how it will be read."""
    by_mode: dict[str, list[str]] = {}
    for record in records:
        if record.image is not None and record.mode and record.mode != "RGB":
            by_mode.setdefault(record.mode, []).append(record.file_name)
    for mode, names in sorted(by_mode.items()):
        note = _MODE_NOTES.get(mode, "converted to RGB")
        log.warn(f"{len(names)} image(s) in mode {mode} ({note}), e.g. {names[0]}", image=names[0])


def _report_unsafe_class_names(class_map: ClassMap, log: ProblemLog, source: str) -> None:
    """One warning per class name that is not usable as a file name as it is (path separators, ``..``, a
    leading dot, control characters): outputs named after classes use its safe form instead."""
    for name in class_map.names:
        safe = storage.safe_file_name(name)
        if safe != name:
            log.warn(
                f"class name {shown(name)} cannot be part of a file name as it is (path separators, a leading "
                f"dot, control or reserved characters); files named after it (predict --save instance-masks) "
                f"use {shown(safe)}. Rename the class in the annotation tool to avoid surprises",
                file=source,
            )
