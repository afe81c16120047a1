"""Label Studio's native JSON export (and its JSON_MIN variant) -> records: :func:`load_labelstudio_json`."""

from __future__ import annotations

import base64
import binascii
import math
import posixpath
from collections import Counter
from datetime import datetime
from urllib.parse import parse_qs, unquote, urlsplit

from .. import storage
from ..core import ClassMap, Record
from ..problems import DatasetError, ProblemLog
from .common import ImageResolver, image_size, is_number
from .labelstudio_results import SUPPORTED_TYPES, result_to_annotation

# JSON_MIN keys that describe the annotation, not the task's data.
_MIN_META_KEYS = {"id", "annotator", "annotation_id", "created_at", "updated_at", "lead_time", "agreement"}


def load_labelstudio_json(source: str, images: str | None, log: ProblemLog) -> tuple[ClassMap, list[Record]]:
    """Import a Label Studio JSON export (a list of tasks) or JSON_MIN export (a list of flat dicts).

    Objects: ``polygonlabels`` (``value.points`` in percent of ``original_width``/``original_height``,
    converted to pixels as ``x / 100 * original_width``), ``brushlabels`` (``value.format == "rle"``,
    Label Studio's brush RLE, see :mod:`instaseg.formats.brush`) and ``rectanglelabels`` (``x, y, width,
    height`` in percent -> an xyxy pixel box without mask). Other result types are ignored with one
    summary warning; relations, predictions and drafts are ignored. A result with several labels uses the
    first one. Class names are sorted and mapped to labels 1..K.

    Which annotation of a task is used: cancelled (skipped) annotations are ignored; among the others the
    ``ground_truth`` ones win if there are any, then the latest by ``updated_at``, then ``created_at``,
    then ``id``. A task with no annotation at all becomes a record without objects (a negative image); a
    task whose annotations were all cancelled was skipped by its annotator and is left out.

    Images: ``data.image`` may be ``/data/upload/<project>/<8hex>-<name>``, ``/data/local-files/?d=<path>``,
    an http(s) or bucket URL or a plain path; it is looked up in ``images`` (or, when ``None``, the JSON's
    folder) by relative path, then by file name with or without Label Studio's 8-hex upload prefix.
    A missing file gives a record with ``image=None`` (one summary warning). The size is read from the file
    header and must equal the results' ``original_width``/``original_height``; a task whose image is
    unreadable or of another size is left out (error). Regions with ``image_rotation != 0`` are dropped
    (error: not supported).

    Args:
        source: the export file (local path or fsspec URL).
        images: the folder with the task images, or ``None``.
        log: receives warnings and errors (file, image = the task's image name, annotation =
            ``"task <id> region <result id>"``).

    Returns:
        The class map and one record per kept task, in file order.

    Raises:
        DatasetError: the file is missing, not JSON, not a list, or its tasks lack ``data``.
    """
    tasks = _read_tasks(source)
    resolver = ImageResolver(storage.parent(source), images)
    counts: Counter = Counter()
    ignored_types: Counter = Counter()
    chosen = []  # (task, annotation or None)
    for task in tasks:
        annotation = _choose_annotation(task, counts)
        if annotation is not False:
            chosen.append((task, annotation))
    names = set()
    for _, annotation in chosen:
        for result in _results(annotation):
            kind = str(result.get("type", "")).lower()
            labels = result.get("value", {}).get(kind) if isinstance(result.get("value"), dict) else None
            if kind in SUPPORTED_TYPES and isinstance(labels, list) and labels and isinstance(labels[0], str):
                names.add(labels[0])
            elif kind not in SUPPORTED_TYPES:
                ignored_types[kind or "<no type>"] += 1
    class_map = ClassMap(tuple(sorted(names)))

    records, missing = [], []
    for task, annotation in chosen:
        record = _task_to_record(task, annotation, class_map, resolver, source, log)
        if record is not None:
            records.append(record)
            if record.image is None:
                missing.append(record.file_name)
    _summarise(log, source, images, len(chosen), missing, counts, ignored_types)
    return class_map, records


def _read_tasks(source: str) -> list[dict]:
    try:
        data = storage.read_json(source)
    except FileNotFoundError:
        raise DatasetError("file not found", file=source) from None
    except (ValueError, UnicodeDecodeError) as e:
        raise DatasetError(
            f"not a JSON file ({e}); expected a Label Studio JSON export", file=source
        ) from None
    if not isinstance(data, list):
        raise DatasetError(
            f"a Label Studio JSON export is a list of tasks, this file holds a "
            f"{type(data).__name__}; export the project as JSON",
            file=source,
        )
    for i, task in enumerate(data):
        if not isinstance(task, dict):
            raise DatasetError(f"task {i} is a {type(task).__name__}, expected an object", file=source)
    if any("data" in t or "annotations" in t or "completions" in t for t in data):
        for i, task in enumerate(data):
            if not isinstance(task.get("data"), dict):
                raise DatasetError(
                    f"task {task.get('id', f'#{i}')} has no 'data' object; this is not a "
                    "Label Studio JSON export",
                    file=source,
                )
        return data
    return _min_to_tasks(data, source)


def _min_to_tasks(items: list[dict], source: str) -> list[dict]:
    """JSON_MIN (one flat dict per annotation: data fields, then ``<from_name>: [regions]``) -> tasks.

    A JSON_MIN region lacks its id and ``type``: the type is read from its ``<type>labels`` key and the
    region is named ``<from_name>[<i>]``. Cancelled annotations are not in JSON_MIN at all.
    """
    tasks: dict = {}
    for i, item in enumerate(items):
        data, results = {}, []
        for key, value in item.items():
            if key in _MIN_META_KEYS:
                continue
            if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
                for j, region in enumerate(value):
                    kind = next((k for k in region if k.endswith("labels")), None) or "<unknown>"
                    results.append(
                        {
                            "id": f"{key}[{j}]",
                            "type": kind,
                            "original_width": region.get("original_width"),
                            "original_height": region.get("original_height"),
                            "image_rotation": region.get("image_rotation", 0),
                            "value": {k: v for k, v in region.items() if not k.startswith("original_")},
                        }
                    )
            else:
                data[key] = value
        if task_image_field(data) is None:
            raise DatasetError(
                f"item {item.get('id', f'#{i}')} has neither 'data' (native JSON export) nor "
                "an image field (JSON_MIN export); export the project as JSON",
                file=source,
            )
        task_id = item.get("id", f"#{i}")
        task = tasks.setdefault(str(task_id), {"id": task_id, "data": data, "annotations": []})
        task["annotations"].append(
            {
                "id": item.get("annotation_id"),
                "created_at": item.get("created_at"),
                "updated_at": item.get("updated_at"),
                "result": results,
            }
        )
    return list(tasks.values())


# Task data keys that commonly hold the image, in the order they are tried (``$image`` is the default).
IMAGE_KEYS = ("image", "img", "photo", "picture", "url")


def task_image_field(data) -> str | None:
    """A task's image reference (``data`` of a Label Studio task): ``data["image"]`` (or another common
    key), else the one string field that looks like an image path or URL; ``None`` when there is none."""
    if not isinstance(data, dict):
        return None
    for key in IMAGE_KEYS:
        if isinstance(data.get(key), str) and data[key]:
            return data[key]
    candidates = [
        v
        for v in data.values()
        if isinstance(v, str) and (urlsplit(v).path.lower().endswith(storage.IMAGE_SUFFIXES) or "/data/" in v)
    ]
    return candidates[0] if len(candidates) == 1 else None


def _choose_annotation(task: dict, counts: Counter):
    """The annotation to use (see :func:`load_labelstudio_json`); ``None`` for none; ``False`` if skipped."""
    # "completions" is what Label Studio before 1.0 called annotations.
    annotations = task.get("annotations") or task.get("completions") or []
    annotations = [a for a in annotations if isinstance(a, dict)]
    if task.get("drafts"):
        counts["drafts"] += 1
    live = [a for a in annotations if not a.get("was_cancelled")]
    counts["cancelled"] += len(annotations) - len(live)
    if not live:
        if annotations:
            counts["skipped"] += 1
            return False
        return None
    if len(live) > 1:
        counts["several"] += 1
    ground_truth = [a for a in live if a.get("ground_truth")]
    return max(
        ground_truth or live,
        key=lambda a: (_time(a.get("updated_at")), _time(a.get("created_at")), _id_key(a.get("id"))),
    )


def _time(value) -> float:
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return -math.inf


def _id_key(value) -> float:
    return float(value) if is_number(value) else -math.inf


def _results(annotation) -> list[dict]:
    results = annotation.get("result") if isinstance(annotation, dict) else None
    return [r for r in results if isinstance(r, dict)] if isinstance(results, list) else []


def image_reference(value: str) -> tuple[str, bool]:
    """Where Label Studio's ``data.image`` points: ``(path or name to look up, is_bucket_url)``.

    ``/data/local-files/?d=images%2Fa.jpg`` -> ``images/a.jpg``; ``/data/upload/8/2f4821cd-a.jpg`` ->
    ``2f4821cd-a.jpg``; ``https://host/x/a.jpg?sig=..`` -> ``a.jpg`` (never fetched); ``s3://b/a.jpg`` is
    kept whole (it may be read directly); a plain path is returned unchanged.
    """
    parts = urlsplit(value)
    query = parse_qs(parts.query)
    if query.get("d"):
        return query["d"][0], False
    if query.get("fileuri"):  # /tasks/<id>/presign/?fileuri=<base64 of s3://...>
        try:
            return image_reference(base64.b64decode(query["fileuri"][0]).decode("utf-8"))
        except (binascii.Error, UnicodeDecodeError):
            pass
    if query.get("filepath"):
        return posixpath.basename(query["filepath"][0]), False
    if len(parts.scheme) > 1 and parts.scheme not in ("http", "https", "file"):
        return value, True
    if len(parts.scheme) > 1 or "/data/upload/" in parts.path:  # "C:\\photos" has scheme "c": a path
        return posixpath.basename(unquote(parts.path)), False
    return value.replace("\\", "/"), False


def _task_to_record(
    task: dict, annotation, class_map: ClassMap, resolver: ImageResolver, source: str, log: ProblemLog
) -> Record | None:
    task_id = task.get("id")
    raw = task_image_field(task["data"])
    if raw is None:
        log.error(
            f"task {task_id} has no image field in 'data' (found keys: {', '.join(task['data'])})",
            file=source,
            annotation=f"task {task_id}",
        )
        return None
    reference, is_bucket = image_reference(raw)
    image_name = posixpath.basename(reference)
    location = resolver.resolve(image_name) if is_bucket else resolver.resolve(reference)
    if location is None and is_bucket:
        location = resolver.resolve(reference)
    results = _results(annotation)
    objects = [r for r in results if str(r.get("type", "")).lower() in SUPPORTED_TYPES]
    declared = next(((r.get("original_width"), r.get("original_height")) for r in objects), (None, None))
    size = image_size(log, location, *declared, file=source, image=image_name)
    if size is None:
        if location is not None:
            return None  # unreadable image or size mismatch: error logged, its objects cannot be placed
        size = (0, 0, None)
    width, height, mode = size
    record = Record(image=location, file_name=reference, width=width, height=height, mode=mode)
    if width and height:
        for result in objects:
            where = {
                "file": source,
                "image": image_name,
                "annotation": f"task {task_id} region {result.get('id')}",
            }
            built = result_to_annotation(result, class_map, width, height, log, where)
            if built is not None:
                record.annotations.append(built)
    elif objects:
        log.error(
            f"image missing and no valid original_width/original_height: {len(objects)} objects of task "
            f"{task_id} cannot be placed",
            file=source,
            image=image_name,
        )
    return record


def _summarise(
    log: ProblemLog,
    source: str,
    images: str | None,
    listed: int,
    missing: list[str],
    counts: Counter,
    ignored_types: Counter,
) -> None:
    if missing:
        where = images or storage.parent(source)
        log.warn(
            f"{len(missing)} of {listed} task images not found under {where} (e.g. "
            f"{', '.join(missing[:3])}); their records have no image",
            file=source,
        )
    if ignored_types:
        kinds = ", ".join(f"{k} ({n})" for k, n in sorted(ignored_types.items()))
        log.warn(
            f"ignored {sum(ignored_types.values())} results of types that carry no object mask or box: "
            f"{kinds}",
            file=source,
        )
    if counts["cancelled"]:
        log.warn(
            f"ignored {counts['cancelled']} cancelled annotations; {counts['skipped']} tasks had only "
            "cancelled annotations (skipped by the annotator) and are left out",
            file=source,
        )
    if counts["several"]:
        log.warn(
            f"{counts['several']} tasks have several annotations; used the ground-truth one, else the "
            "latest by updated_at",
            file=source,
        )
    if counts["drafts"]:
        log.warn(f"{counts['drafts']} tasks have drafts (unsubmitted work); drafts are ignored", file=source)
