"""Pick the importer for a dataset and run it: :func:`load_dataset`."""

from __future__ import annotations

from collections.abc import Callable

from ..core import ClassMap, Record
from ..dataset import Dataset
from ..problems import DatasetError, ProblemLog
from . import coco, labelme, labelstudio_json, mask_png, via
from .detect import detect_format

Loader = Callable[[str, "str | None", ProblemLog], "tuple[ClassMap, list[Record]]"]

# Format name -> importer. An explicit table, so the error for an unknown name can list them all.
IMPORTERS: dict[str, Loader] = {
    "coco": coco.load_coco,
    "labelstudio-json": labelstudio_json.load_labelstudio_json,
    "mask-png": mask_png.load_mask_png,
    "labelme": labelme.load_labelme,
    "via": via.load_via,
}


def load_dataset(source: str, images: str | None = None, format: str | None = None) -> Dataset:
    """Import a dataset from a file or folder (local path or fsspec URL).

    Args:
        source: the annotation file (COCO/Label Studio/VIA JSON, or a ``.zip`` export) or dataset folder.
        images: the folder holding the images when the annotation file's paths do not lead to them
            (Label Studio exports: images are then matched by file name).
        format: one of :data:`IMPORTERS`; detected from the content when ``None``.

    Raises:
        DatasetError: the source is missing, unreadable, of unknown format, or unusable as a whole.
    """
    if format is None:
        format = detect_format(source)
    elif format not in IMPORTERS:
        raise DatasetError(f"unknown format {format!r}; valid formats: {', '.join(IMPORTERS)}", file=source)
    log = ProblemLog()
    class_map, records = IMPORTERS[format](source, images, log)
    for i, record in enumerate(records, start=1):
        record.image_id = i
    _report_image_modes(records, log)
    return Dataset(format=format, source=source, class_map=class_map, records=records, problems=log.problems)


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
