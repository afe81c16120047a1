"""Tell which annotation format a file, folder or ``.zip`` holds, by peeking at names and a little content.

:func:`detect_format` never imports the importers: it only reads folder listings and the start of JSON
files (a whole JSON file only when it is small).
"""

from __future__ import annotations

import json
import posixpath
from typing import Any

from .. import storage
from ..problems import DatasetError
from .limits import member_problem, open_zip, read_member_start, require_regular_file

# The formats detect_format can name, with what each looks like (for the error message).
FORMATS: dict[str, str] = {
    "coco": "COCO JSON (images, annotations, categories), also Label Studio's COCO export (.zip or folder)",
    "labelstudio-json": "Label Studio JSON export (a list of tasks with data and annotations)",
    "mask-png": "images with one PNG mask per object (PennFudan PNGImages/ + PedMasks/, DSB <id>/images + "
    "<id>/masks)",
    "labelme": "a folder of LabelMe *.json files (shapes, imagePath)",
    "via": "VGG Image Annotator JSON (via_region_data.json or a VIA project file)",
}

# JSON files up to this size are parsed whole; larger ones are classified from their first bytes.
_PEEK_BYTES = 1 << 20

_COCO_NAMES = ("result.json", "result_coco.json", "annotations.json")


def detect_format(source: str) -> str:
    """The format of ``source`` (a file, folder or ``.zip``; local path or URL): one of :data:`FORMATS`.

    Raises:
        DatasetError: ``source`` does not exist, is a FIFO or a device, or its format is not recognised
            (the message lists the formats that can be read and suggests ``--format``).
    """
    if not storage.exists(source):
        raise DatasetError("not found; check the path (or URL) of the dataset", file=source)
    require_regular_file(source)
    if storage.is_dir(source):
        found = _detect_folder(source)
    elif source.lower().endswith(".zip"):
        found = _detect_zip(source)
    elif source.lower().endswith(".json"):
        size = storage.file_size(source)
        data = _read_prefix(source)
        if size <= _PEEK_BYTES:
            _require_json(data, source)
        found = classify_json_prefix(data, complete=size <= _PEEK_BYTES)
    else:
        found = None
    if found is None:
        raise _unknown(source)
    return found


def _require_json(data: bytes, source: str) -> None:
    """Raise a ``DatasetError`` saying where the JSON breaks, for a file that is not valid JSON."""
    if not data.strip():
        raise DatasetError("empty file (0 bytes of JSON)", file=source)
    try:
        storage.parse_json(data, source)
    except json.JSONDecodeError as e:
        raise DatasetError(
            f"not valid JSON (truncated or damaged?): {e.msg} at line {e.lineno} column {e.colno}",
            file=source,
        ) from None
    except ValueError as e:  # not UTF-8, nested too deeply
        message = str(e).removeprefix(f"{source}: ")
        if message.startswith("not UTF-8"):
            message = f"not a JSON text file ({message.split(';')[0]})"
        raise DatasetError(message, file=source) from None


def _unknown(source: str) -> DatasetError:
    listed = "; ".join(f"{name}: {what}" for name, what in FORMATS.items())
    return DatasetError(
        f"cannot tell the annotation format. Formats that can be read: {listed}. "
        "If it is one of them, name it with --format",
        file=source,
    )


def _read_prefix(location: str) -> bytes:
    require_regular_file(location)
    with storage.open_file(location) as f:
        return f.read(_PEEK_BYTES)


def classify_json(obj: Any) -> str | None:
    """The format of a parsed JSON document, or ``None``."""
    if isinstance(obj, dict):
        if "images" in obj and "annotations" in obj:
            return "coco"
        if "_via_img_metadata" in obj:
            return "via"
        if "shapes" in obj and "imagePath" in obj:
            return "labelme"
        values = list(obj.values())[:5]
        if values and all(isinstance(v, dict) and "filename" in v and "regions" in v for v in values):
            return "via"
        return None
    if isinstance(obj, list) and obj:
        tasks = obj[:5]
        if all(
            isinstance(t, dict) and "data" in t and ("annotations" in t or "predictions" in t) for t in tasks
        ):
            return "labelstudio-json"
        if all(isinstance(t, dict) and _is_json_min_task(t) for t in tasks):
            return "labelstudio-json"
    return None


def _is_json_min_task(task: dict) -> bool:
    """Label Studio's JSON_MIN export: flat tasks with the data fields and lists of regions holding ``*labels``."""
    regions = [v for v in task.values() if isinstance(v, list) and v and isinstance(v[0], dict)]
    return "id" in task and any(any(k.endswith("labels") for k in r[0]) for r in regions)


def classify_json_prefix(data: bytes, complete: bool) -> str | None:
    """The format of a JSON file from its bytes: parsed when ``complete``, else guessed from key names."""
    if complete:
        try:
            return classify_json(storage.parse_json(data, "JSON"))
        except ValueError:  # not JSON, not UTF-8, nested too deeply
            return None
    text = data.decode("utf-8-sig", errors="replace").lstrip()
    if text.startswith("["):
        return (
            "labelstudio-json"
            if ('"data"' in text and ('"annotations"' in text or '"predictions"' in text))
            or ('labels"' in text and '"annotation_id"' in text)
            else None
        )
    if not text.startswith("{"):
        return None
    if '"_via_img_metadata"' in text or ('"regions"' in text and '"filename"' in text):
        return "via"
    if '"shapes"' in text and '"imagePath"' in text:
        return "labelme"
    if '"images"' in text or '"categories"' in text:
        return "coco"
    return None


def _detect_folder(folder: str) -> str | None:
    entries = _listing(folder)
    files = {name for name, is_dir in entries.items() if not is_dir}
    dirs = {name for name, is_dir in entries.items() if is_dir}
    if "via_region_data.json" in files:
        return "via"
    for name in _COCO_NAMES:
        if name in files:
            return _classify_file(storage.join(folder, name))
    if {"PNGImages", "PedMasks"} <= dirs or {"images", "masks"} <= dirs or "stage1_train" in dirs:
        return "mask-png"
    jsons = sorted(n for n in files if n.lower().endswith(".json"))
    if jsons:
        kinds = {_classify_file(storage.join(folder, n)) for n in jsons[:3]}
        if kinds == {"labelme"}:
            return "labelme"
        if len(jsons) == 1:
            return kinds.pop()
        return None
    # DSB layout given as the folder of sample folders: <id>/images + <id>/masks.
    for name in sorted(dirs)[:1]:
        inner = {n for n, is_dir in _listing(storage.join(folder, name)).items() if is_dir}
        if {"images", "masks"} <= inner:
            return "mask-png"
    return None


def _listing(folder: str) -> dict[str, bool]:
    """Entry name -> is a folder, for one folder (one request on a bucket)."""
    fs, path = storage.filesystem(folder)
    return {
        posixpath.basename(e["name"].rstrip("/")): e["type"] == "directory" for e in fs.ls(path, detail=True)
    }


def _classify_file(location: str) -> str | None:
    return classify_json_prefix(_read_prefix(location), complete=storage.file_size(location) <= _PEEK_BYTES)


def _detect_zip(source: str) -> str | None:
    with open_zip(source) as archive:
        jsons = [n for n in archive.namelist() if n.lower().endswith(".json")]
        named = [n for n in jsons if posixpath.basename(n) in _COCO_NAMES] or jsons
        if len(named) != 1:
            return None
        info = archive.getinfo(named[0])
        problem = member_problem(info, storage.MAX_JSON_BYTES)
        if problem:
            raise DatasetError(problem, file=source)
        data = read_member_start(archive, named[0], source, _PEEK_BYTES)
        return classify_json_prefix(data, complete=info.file_size <= _PEEK_BYTES)
