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

import errno
import io
import json
import os
import posixpath
import stat
from typing import IO, Any

import fsspec

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def safe_file_name(text: str, limit: int = 120) -> str:
    """``text`` usable as one file name inside a folder: path separators, ``..``, control and other
    characters file systems refuse become ``_``; never empty, never a hidden or parent name, at most
    ``limit`` characters. Class names and image names from annotation files pass through it before they
    become part of an output path."""
    cleaned = "".join("_" if (c in '/\\:*?"<>|' or ord(c) < 32 or ord(c) == 127) else c for c in str(text))
    cleaned = cleaned.strip().lstrip(".") or "_"
    return cleaned[:limit]


class OutputError(ValueError):
    """An output location that cannot be used (a file where a folder is needed, read-only, an input)."""


def same_file(a: str, b: str) -> bool:
    """Whether two locations name the same file (local paths through symlinks and ``..``; URLs as text)."""
    if is_url(a) or is_url(b):
        return a.rstrip("/") == b.rstrip("/")
    return os.path.realpath(a) == os.path.realpath(b)


def check_output_file(location: str, inputs: list[str], flag: str) -> None:
    """Refuse, before any work, an output file that is one of the ``inputs`` or sits where a folder is.

    Raises:
        OutputError: naming ``flag`` (the option or argument that gave the location) and what to do.
    """
    for source in inputs:
        if source and same_file(location, source):
            raise OutputError(
                f"{flag} {location} is an input of this command; it would be overwritten. "
                "Choose another output path"
            )
    if not is_url(location):
        if os.path.isdir(location):
            raise OutputError(f"{flag} {location} is a folder; give a file path")
        check_output_folder(os.path.dirname(os.path.abspath(location)), flag)


def check_output_folder(location: str, flag: str) -> None:
    """Create the output folder ``location`` if needed and check that it is a writable folder (local paths;
    bucket URLs are checked when written).

    Raises:
        OutputError: a file is in the way, or the folder cannot be created or written.
    """
    if is_url(location):
        return
    probe = os.path.abspath(location)
    while not os.path.exists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    if os.path.exists(probe) and not os.path.isdir(probe):
        raise OutputError(f"{flag} {location}: {probe} is a file, not a folder; choose another path")
    try:
        os.makedirs(location, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{flag} {location}: cannot create the folder ({e.strerror})") from None
    if not os.access(location, os.W_OK | os.X_OK):
        raise OutputError(f"{flag} {location}: the folder is not writable")


def is_url(location: str) -> bool:
    """True for ``scheme://...`` locations other than ``file://``."""
    return "://" in location and not location.startswith("file://")


# Seconds an http(s) request may take before it fails (a remote image named in an annotation file on a
# machine without network must end in an error, not a hang). INSTASEG_HTTP_TIMEOUT overrides it.
HTTP_TIMEOUT = float(os.environ.get("INSTASEG_HTTP_TIMEOUT", "30"))


class SpecialFileError(OSError):
    """A FIFO, device or socket where a file was expected: refused before it is opened (reading one can
    block forever or never end)."""

    def __str__(self) -> str:  # the reason alone: messages name the file themselves
        return self.strerror or super().__str__()


def filesystem(location: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem of a location and the path inside it (http(s) with :data:`HTTP_TIMEOUT`)."""
    if location.startswith(("http://", "https://")):
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT, connect=min(10.0, HTTP_TIMEOUT))
        return fsspec.core.url_to_fs(location, client_kwargs={"timeout": timeout})
    fs, path = fsspec.core.url_to_fs(location)
    return fs, path


def check_regular_file(location: str) -> None:
    """``SpecialFileError`` when a local ``location`` exists and is not a regular file or folder."""
    if is_url(location) or "::" in location:
        return
    path = location.removeprefix("file://")
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # missing: the caller's own error says so
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise SpecialFileError(errno.EINVAL, "not a regular file (a FIFO, device or socket); refused", path)


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
    if "r" in mode:
        check_regular_file(location)
    return fsspec.open(location, mode).open()


def read_bytes(location: str) -> bytes:
    check_regular_file(location)
    fs, path = filesystem(location)
    return fs.cat_file(path)


# Largest JSON file read (annotation exports, predictions, split files): 4 GiB of text is far beyond any
# real export and keeps a hostile file from exhausting memory.
MAX_JSON_BYTES = 4 << 30


def read_json(location: str) -> Any:
    """Parse a JSON file; ``ValueError`` when it is not JSON, larger than :data:`MAX_JSON_BYTES`, or nested
    too deeply to parse (``RecursionError`` turned into a message)."""
    check_regular_file(location)
    if not is_url(location) and os.path.isfile(location) and os.path.getsize(location) > MAX_JSON_BYTES:
        raise ValueError(f"{location} is larger than {MAX_JSON_BYTES >> 30} GiB; not an annotation file")
    return parse_json(read_bytes(location), location)


def parse_json(data: bytes, name: str) -> Any:
    """``json.loads`` of UTF-8 bytes (a BOM allowed) with a message for malformed, non-UTF-8 or too deeply
    nested input or a number of thousands of digits (``ValueError``; ``json.JSONDecodeError`` for
    malformed JSON)."""
    try:
        return json.loads(data.decode("utf-8-sig"))
    except RecursionError:
        raise ValueError(f"{name}: JSON nested too deeply to read (a malformed or hostile file)") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{name}: not UTF-8 text ({e.reason} at byte {e.start}); not a JSON file") from None
    except ValueError as e:
        if "integer string conversion" not in str(e):  # json.JSONDecodeError: the caller words it
            raise
        # Python refuses to parse integers of over 4,300 digits (sys.get_int_max_str_digits()).
        raise ValueError(
            f"{name}: a number has more than 4,300 digits (a malformed or hostile file)"
        ) from None


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
