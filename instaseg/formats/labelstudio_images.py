"""Where a Label Studio task's image is: the task field that holds it (:func:`task_image_field`), the
file name or path it stands for (:func:`image_reference`) and the file found for it
(:func:`find_task_image`)."""

from __future__ import annotations

import base64
import binascii
import posixpath
from urllib.parse import parse_qs, unquote, urlsplit

from .. import storage
from .image_files import ImageResolver

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
        if isinstance(v, str) and (url_path(v).lower().endswith(storage.IMAGE_SUFFIXES) or "/data/" in v)
    ]
    return candidates[0] if len(candidates) == 1 else None


def url_path(value: str) -> str:
    try:
        return urlsplit(value).path
    except ValueError:  # "http://[" and other malformed URLs: a plain string
        return value


def image_reference(value: str) -> tuple[str, bool]:
    """Where Label Studio's ``data.image`` points: ``(path or name to look up, is_bucket_url)``.

    ``/data/local-files/?d=images%2Fa.jpg`` -> ``images/a.jpg``; ``/data/upload/8/2f4821cd-a.jpg`` ->
    ``2f4821cd-a.jpg``; ``https://host/x/a.jpg?sig=..`` -> ``a.jpg`` (never fetched); ``s3://b/a.jpg`` is
    kept whole (it may be read directly); a plain path is returned unchanged.
    """
    try:
        parts = urlsplit(value)
    except ValueError:  # a malformed URL ("http://["): read as a plain path
        return value.replace("\\", "/"), False
    query = parse_qs(parts.query)
    if query.get("d"):
        return query["d"][0], False
    if query.get("fileuri"):  # /tasks/<id>/presign/?fileuri=<base64 of s3://...>
        try:
            # Label Studio encodes it URL-safe (``-_``); this also reads the standard alphabet.
            return image_reference(base64.urlsafe_b64decode(query["fileuri"][0]).decode("utf-8"))
        except (binascii.Error, UnicodeDecodeError):
            pass
    if query.get("filepath"):
        return posixpath.basename(query["filepath"][0]), False
    if len(parts.scheme) > 1 and parts.scheme not in ("http", "https", "file"):
        return value, True
    if len(parts.scheme) > 1 or "/data/upload/" in parts.path:  # "C:\\photos" has scheme "c": a path
        return posixpath.basename(unquote(parts.path)), False
    return value.replace("\\", "/"), False


# Paths of Label Studio's own server: fetching them needs the server and its token, never tried.
_LABEL_STUDIO_PATHS = ("/data/", "/tasks/", "/storage-data/", "/api/")


def find_task_image(resolver: ImageResolver, raw: str) -> tuple[str, str | None, str | None]:
    """``(reference, location, refusal)`` of a task's ``data.image`` value ``raw``: looked up locally
    (:func:`image_reference`), then a bucket URL read directly and an http(s) URL fetched."""
    reference, is_bucket = image_reference(raw)
    if is_bucket:
        location = resolver.resolve(posixpath.basename(reference))
        return (reference, location, None) if location else (reference, *resolver.find(reference))
    location, refusal = resolver.find(reference)
    remote = raw.startswith(("http://", "https://")) and not url_path(raw).startswith(_LABEL_STUDIO_PATHS)
    if location is None and refusal is None and remote:
        location, refusal = resolver.find(raw)
    return reference, location, refusal
