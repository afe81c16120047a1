"""Fetch a Label Studio project's JSON export and its images into a dataset folder (local or bucket).

The folder gets ``result.json`` (Label Studio's JSON export, unchanged) and ``images/<name>`` (each task's
image, named as in its URL: uploads keep Label Studio's ``<8hex>-<name>`` prefix), which
:func:`instaseg.formats.labelstudio_json.load_labelstudio_json` reads with ``images`` = the folder.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from dataclasses import dataclass, field

from .. import storage
from ..formats.labelstudio_json import image_reference, task_image_field
from .ls_client import LabelStudioClient, LabelStudioError


@dataclass
class PullResult:
    """What :func:`pull_project` wrote: the export's path, task/image counts and images that failed."""

    export: str
    tasks: int
    images: int
    failed: list[str] = field(default_factory=list)


def image_file_name(url: str) -> str:
    """The local file name of a task image reference: the file name of what
    :func:`~instaseg.formats.labelstudio_json.image_reference` finds in it (``?d=``, ``fileuri``,
    ``filepath``, upload paths, URLs), which the importer matches by name."""
    reference, _ = image_reference(url)
    name = posixpath.basename(reference.replace("\\", "/"))
    if not name or name in (".", ".."):
        raise LabelStudioError(f"cannot derive a file name from the image URL {url!r}")
    return name


def pull_project(
    client: LabelStudioClient, project: int, out: str, progress: Callable[[int, int], None] | None = None
) -> PullResult:
    """Write ``out/result.json`` and ``out/images/*`` for ``project``.

    Images already present in ``out/images`` (same name) are not downloaded again. An image that cannot be
    fetched is listed in ``failed`` (the export still refers to it; the importer reports it as missing).

    Raises:
        LabelStudioError: the server, project or export cannot be reached/read.
    """
    tasks = client.export_tasks(project)
    images_dir = storage.join(out, "images")
    result = PullResult(export=storage.join(out, "result.json"), tasks=len(tasks), images=0)
    seen: set[str] = set()
    for done, task in enumerate(tasks, 1):
        url = task_image_field(task.get("data") if isinstance(task, dict) else None)
        if url is None:
            result.failed.append(f"task {task.get('id')}: no image URL in data")
            continue
        try:
            name = image_file_name(url)
            target = storage.join(images_dir, name)
            if name not in seen and not storage.exists(target):
                storage.write_bytes(target, client.download(url))
            seen.add(name)
            result.images += 1
        except LabelStudioError as e:
            result.failed.append(f"task {task.get('id')}: {e}")
        if progress is not None:
            progress(done, len(tasks))
    storage.write_json(result.export, tasks, indent=1)
    return result
