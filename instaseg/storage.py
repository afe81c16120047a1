"""Files on local disk or in buckets, through fsspec: every path argument may be a URL.

A "location" is a string: a local path (``data/images``) or an fsspec URL (``s3://bucket/data``,
``gs://...``, ``https://...``, ``zip://result.json::export.zip``). Functions here never print.
Folder listings (:func:`list_files`) come back in the scheme they were asked in: ``s3://bucket/key``.

S3-compatible servers (MinIO, Ceph, moto, a cloud other than AWS): s3fs talks to AWS unless told
otherwise. These standard settings work, checked against a real S3-protocol server in
``tests/test_storage.py``:

- ``AWS_ENDPOINT_URL_S3=http://127.0.0.1:9000`` (S3 only) or ``AWS_ENDPOINT_URL=...`` (every AWS
  service), environment variables read by botocore >= 1.31 each time a client is created;
- ``FSSPEC_S3_ENDPOINT_URL=...``, fsspec's configuration from the environment, passed to
  ``S3FileSystem(endpoint_url=...)``. fsspec reads ``FSSPEC_*`` variables once, when it is first imported,
  so set it before starting Python; the same key can live in fsspec's config file
  (``~/.config/fsspec/s3.json``: ``{"s3": {"endpoint_url": "..."}}``);
- ``endpoint_url = ...`` under a profile in ``~/.aws/config`` (with ``AWS_PROFILE``), also botocore's.

Credentials come the usual botocore way (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, profiles, instance
roles). An s3fs filesystem is cached per process with its arguments, so changing these variables inside a
running program only takes effect for filesystems created afterwards (``s3fs.S3FileSystem.clear_instance_cache()``).
"""

from __future__ import annotations

import io
import json
import os
import posixpath
from typing import IO, Any

import fsspec

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def is_url(location: str) -> bool:
    """True for ``scheme://...`` locations other than ``file://``."""
    return "://" in location and not location.startswith("file://")


def filesystem(location: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem of a location and the path inside it."""
    fs, path = fsspec.core.url_to_fs(location)
    return fs, path


def join(base: str, *parts: str) -> str:
    """Join path parts with ``/``, keeping the URL scheme of ``base``."""
    if not is_url(base):
        return os.path.join(base, *parts)
    return posixpath.join(base.rstrip("/"), *parts)


def parent(location: str) -> str:
    """The folder that holds ``location``."""
    if is_url(location):
        scheme, rest = location.split("://", 1)
        return f"{scheme}://{posixpath.dirname(rest.rstrip('/'))}"
    return os.path.dirname(os.path.abspath(location))


def basename(location: str) -> str:
    return posixpath.basename(location.replace("\\", "/").rstrip("/"))


def open_file(location: str, mode: str = "rb") -> IO[Any]:
    """Open a file for reading or writing (the caller closes it; use as a context manager)."""
    if "::" in location and mode == "rb":
        # A chained location (``zip://member::archive.zip``) closes its archive as soon as the temporary
        # filesystem object is collected, so read the member into memory instead of streaming it.
        return io.BytesIO(read_bytes(location))
    return fsspec.open(location, mode).open()


def read_bytes(location: str) -> bytes:
    fs, path = filesystem(location)
    return fs.cat_file(path)


def read_json(location: str) -> Any:
    """Parse a JSON file; ``ValueError`` (``json.JSONDecodeError``) when it is not JSON."""
    return json.loads(read_bytes(location).decode("utf-8-sig"))


def write_bytes(location: str, data: bytes) -> None:
    fs, path = filesystem(location)
    parent_path = posixpath.dirname(path) if is_url(location) else os.path.dirname(path)
    if parent_path:
        fs.makedirs(parent_path, exist_ok=True)
    fs.pipe_file(path, data)


def write_json(location: str, obj: Any, indent: int | None = None) -> None:
    write_bytes(location, json.dumps(obj, indent=indent).encode("utf-8"))


def exists(location: str) -> bool:
    fs, path = filesystem(location)
    return fs.exists(path)


def is_dir(location: str) -> bool:
    fs, path = filesystem(location)
    return fs.isdir(path)


def list_files(location: str, suffixes: tuple[str, ...] | None = None, recursive: bool = True) -> list[str]:
    """Files under a folder (sorted locations with the same scheme as ``location``), optionally by suffix."""
    fs, path = filesystem(location)
    if recursive:
        paths = fs.find(path)
    else:
        paths = [p for p in fs.ls(path, detail=False) if fs.isfile(p)]
    if suffixes is not None:
        paths = [p for p in paths if p.lower().endswith(suffixes)]
    return sorted(_with_scheme(location, p) for p in paths)


def _with_scheme(location: str, path: str) -> str:
    if is_url(location):
        scheme = location.split("://", 1)[0]
        return f"{scheme}://{path}" if not path.startswith(f"{scheme}://") else path
    return path


def file_size(location: str) -> int:
    fs, path = filesystem(location)
    return int(fs.size(path))


def image_bytes_io(location: str) -> io.BytesIO:
    """The whole file in memory (images are decoded from it by PIL)."""
    return io.BytesIO(read_bytes(location))
