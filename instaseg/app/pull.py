"""Fetch a Label Studio project's JSON export and its images into a dataset folder (local or bucket).

The folder gets ``result.json`` (Label Studio's JSON export, unchanged) and ``images/<name>`` (each task's
image, named as in its URL: uploads keep Label Studio's ``<8hex>-<name>`` prefix), which
:func:`instaseg.formats.labelstudio_json.load_labelstudio_json` reads with ``images`` = the folder.

Tasks of a project whose *Source Cloud Storage* is a bucket hold ``s3://bucket/key`` (or ``gs://``,
``azure-blob://``) URIs: their images come through Label Studio's presign route with the Label Studio token
(no bucket credentials needed), or, with ``from_bucket``, straight from the bucket with the person's own
credentials (fsspec: ``AWS_*`` variables, ``~/.aws``, ``GOOGLE_APPLICATION_CREDENTIALS``...). Tasks of a
local-files storage (``/data/local-files/?d=...``) and uploads come from the server with the token.
"""

from __future__ import annotations

import posixpath
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from .. import storage
from ..formats.labelstudio_json import image_reference, task_image_field
from .ls_client import BUCKET_SCHEMES, LabelStudioClient, LabelStudioError


@dataclass
class PullResult:
    """What :func:`pull_project` wrote: the export's path, task/image counts and images that failed.

    ``sources`` counts the images fetched by each way (:data:`FROM_SERVER`, :data:`PRESIGNED`,
    :data:`FROM_BUCKET`), ``kept`` those already in the folder."""

    export: str
    tasks: int
    images: int
    failed: list[str] = field(default_factory=list)
    sources: Counter = field(default_factory=Counter)
    kept: int = 0


FROM_SERVER = "from Label Studio"
PRESIGNED = "through Label Studio's presign route"
FROM_BUCKET = "straight from the bucket with your credentials"
# Bucket URI schemes fsspec reads with the person's own credentials (s3fs, gcsfs).
DIRECT_SCHEMES = ("s3", "gs", "gcs")


def fetch_task_image(
    client: LabelStudioClient, task: dict, url: str, from_bucket: bool = False
) -> tuple[bytes, str]:
    """The bytes of one task's image and how they came (:data:`FROM_SERVER`, :data:`PRESIGNED` or
    :data:`FROM_BUCKET`). ``LabelStudioError`` when it cannot be fetched."""
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme in DIRECT_SCHEMES and from_bucket:
        try:
            return storage.read_bytes(url), FROM_BUCKET
        except Exception as e:  # noqa: BLE001 - fsspec backends raise their own errors (auth, network, missing)
            raise LabelStudioError(f"cannot read {url} from the bucket ({type(e).__name__}: {e})") from None
    data = client.download(url, task=task.get("id"))
    return data, PRESIGNED if scheme in BUCKET_SCHEMES else FROM_SERVER


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
    client: LabelStudioClient,
    project: int,
    out: str,
    progress: Callable[[int, int], None] | None = None,
    from_bucket: bool = False,
) -> PullResult:
    """Write ``out/result.json`` and ``out/images/*`` for ``project``; ``from_bucket``: read ``s3://`` and
    ``gs://`` task images with the person's own credentials instead of through Label Studio.

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
            if name in seen or storage.exists(target):
                result.kept += name not in seen
            else:
                data, source = fetch_task_image(client, task, url, from_bucket)
                storage.write_bytes(target, data)
                result.sources[source] += 1
            seen.add(name)
            result.images += 1
        except LabelStudioError as e:
            result.failed.append(f"task {task.get('id')}: {e}")
        if progress is not None:
            progress(done, len(tasks))
    storage.write_json(result.export, tasks, indent=1)
    return result
