"""Label Studio's native JSON export (and its JSON_MIN variant) -> records: :func:`load_labelstudio_json`."""

from __future__ import annotations

import math
import posixpath
from collections import Counter
from datetime import datetime

from .. import storage
from ..core import ClassMap, Record
from ..problems import DatasetError, ProblemLog
from .geometry import is_number
from .image_files import ImageResolver, image_size
from .labelstudio_images import (
    find_task_image,
    image_reference,  # noqa: F401  (imported from here by instaseg.app)
    task_image_field,
)
from .labelstudio_results import SUPPORTED_TYPES, result_to_annotation
from .limits import read_json_file, shown

# JSON_MIN keys that describe the annotation, not the task's data.
_MIN_META_KEYS = {"id", "annotator", "annotation_id", "created_at", "updated_at", "lead_time", "agreement"}


def load_labelstudio_json(
    source: str, images: str | None, log: ProblemLog, allow_outside_paths: bool = False
) -> tuple[ClassMap, list[Record]]:
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
    task whose annotations were all cancelled was skipped by its annotator and is left out. A task whose
    ``annotations`` is not a list, or whose chosen annotation's ``result`` is not a list, is left out with
    an error (never read as an image without objects).

    Images: ``data.image`` may be ``/data/upload/<project>/<8hex>-<name>``, ``/data/local-files/?d=<path>``,
    an http(s) or bucket URL or a plain path; it is looked up in ``images`` (or, when ``None``, the JSON's
    folder) by relative path, then by file name with or without Label Studio's 8-hex upload prefix.
    A path leading outside that folder is read only with ``allow_outside_paths``; an http(s) URL that
    is not Label Studio's own (``/data/...``) and matches no local file is fetched (with the storage
    timeout), a failure being an error for that task.
    A missing file gives a record with ``image=None`` (one summary warning). The size is read from the file
    header and must equal the results' ``original_width``/``original_height``; a task whose image is
    unreadable or of another size is left out (error). Regions with ``image_rotation != 0`` are dropped
    (error: not supported).

    Args:
        source: the export file (local path or fsspec URL).
        images: the folder with the task images, or ``None``.
        log: receives warnings and errors (file, image = the task's image name, annotation =
            ``"task <id> region <result id>"``).
        allow_outside_paths: read image paths that lead outside the JSON's folder and ``images``.

    Returns:
        The class map and one record per kept task, in file order.

    Raises:
        DatasetError: the file is missing, not JSON, not a list, or its tasks lack ``data``.
    """
    tasks = _read_tasks(source)
    resolver = ImageResolver(storage.parent(source), images, allow_outside=allow_outside_paths)
    counts: Counter = Counter()
    ignored_types: Counter = Counter()
    chosen = []  # (task, results of its chosen annotation)
    for task in tasks:
        annotation = _choose_annotation(task, counts, log, source)
        results = _results(annotation, task, log, source) if isinstance(annotation, dict) else []
        if annotation is not False and results is not None:
            chosen.append((task, results))
    names = set()
    for _, results in chosen:
        for result in results:
            kind = str(result.get("type", "")).lower()
            labels = result.get("value", {}).get(kind) if isinstance(result.get("value"), dict) else None
            if (
                kind in SUPPORTED_TYPES
                and isinstance(labels, list)
                and labels
                and isinstance(labels[0], str)
                and labels[0].strip()
            ):
                names.add(labels[0])
            elif kind not in SUPPORTED_TYPES:
                ignored_types[kind or "<no type>"] += 1
    class_map = ClassMap(tuple(sorted(names)))

    records, missing = [], []
    for task, results in chosen:
        record = _task_to_record(task, results, class_map, resolver, source, log)
        if record is not None:
            records.append(record)
            if record.image is None:
                missing.append(record.file_name)
    _summarise(log, source, images, len(chosen), missing, counts, ignored_types)
    return class_map, records


def _read_tasks(source: str) -> list[dict]:
    try:
        data = read_json_file(source)
    except DatasetError as e:
        message = e.problem.message
        if message.startswith("not valid JSON") or message.startswith("not a text"):
            message = f"not a JSON file ({message}); expected a Label Studio JSON export"
        raise DatasetError(message, file=source) from None
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


def _choose_annotation(task: dict, counts: Counter, log: ProblemLog, source: str):
    """The annotation to use (see :func:`load_labelstudio_json`); ``None`` for none; ``False`` if the task
    is left out (skipped by its annotator, or its annotations unreadable: logged)."""
    # "completions" is what Label Studio before 1.0 called annotations.
    key = "annotations" if task.get("annotations") is not None else "completions"
    annotations = task.get(key) or []
    where = {"file": source, "annotation": f"task {_short(task.get('id'))}"}
    if not isinstance(annotations, list):
        log.error(
            f"'{key}' must be a list of annotations, got {type(annotations).__name__}; task left out", **where
        )
        return False
    for index, annotation in enumerate(annotations):
        if not isinstance(annotation, dict):
            log.error(
                f"{key}[{index}] is a {type(annotation).__name__}, not an annotation object; ignored", **where
            )
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


def _short(value) -> str:
    return shown(value, 40, quote=False)


def _results(annotation: dict, task: dict, log: ProblemLog, source: str) -> list[dict] | None:
    """The regions of a task's chosen annotation; ``None`` (logged) when its ``result`` is not a list."""
    results = annotation.get("result")
    where = {
        "file": source,
        "annotation": f"task {_short(task.get('id'))} annotation {_short(annotation.get('id'))}",
    }
    if results is None:
        return []
    if not isinstance(results, list):
        log.error(
            f"'result' must be a list of regions, got {type(results).__name__}; task left out (its objects "
            "cannot be read)",
            **where,
        )
        return None
    for index, result in enumerate(results):
        if not isinstance(result, dict):
            log.error(f"result[{index}] is a {type(result).__name__}, not a region object; dropped", **where)
    return [r for r in results if isinstance(r, dict)]


def _task_to_record(
    task: dict,
    results: list[dict],
    class_map: ClassMap,
    resolver: ImageResolver,
    source: str,
    log: ProblemLog,
) -> Record | None:
    task_id = _short(task.get("id"))
    raw = task_image_field(task["data"])
    if raw is None:
        log.error(
            f"task {task_id} has no image field in 'data' (found keys: {_short(', '.join(task['data']))})",
            file=source,
            annotation=f"task {task_id}",
        )
        return None
    reference, location, refusal = find_task_image(resolver, raw)
    image_name = posixpath.basename(reference)
    if refusal:
        log.error(f"{refusal}; kept as missing", file=source, image=image_name, annotation=f"task {task_id}")
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
