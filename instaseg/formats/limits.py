"""What an annotation source may ask of instaseg: the limits every importer (and the predictions reader)
applies, so that a careless or hostile file ends in a problem or a ``DatasetError``, never in a crash.

- :data:`MAX_IMAGE_PIXELS`: pixels of one image, declared by an annotation file or read from a header.
  It is PIL's decompression-bomb threshold (``2 * PIL.Image.MAX_IMAGE_PIXELS``, about 179 megapixels):
  an image larger than that cannot be decoded anyway, and pycocotools' polygon rasteriser writes
  ``height * width`` into 32-bit integers (a declared 1e8 x 1e8 image crashes the process).
- :data:`MAX_OUTLINE_PIXELS`: total length of one object's polygon outlines, in pixels. pycocotools
  samples an outline every 1/5 pixel into memory (about 50 bytes per pixel of outline), so this bounds
  the memory one object may take (200 MB); the outline of a whole 13,000 x 13,000 image is 52,000 px.
- :data:`MAX_OBJECTS_PER_IMAGE`: objects of one image; a training sample holds one mask per object.
- :data:`MAX_ZIP_RATIO`, :data:`MAX_ZIP_BYTES`: a ``.zip`` export is read member by member; a member
  expanding more than 100 times (once over 1 MiB) or an archive declaring more than 16 GiB in all is
  refused (a zip bomb), as is a JSON member over :data:`~instaseg.storage.MAX_JSON_BYTES`.
- JSON files: at most :data:`~instaseg.storage.MAX_JSON_BYTES` and nested at most as deep as Python's
  recursion limit (about 1,000 levels), see :func:`instaseg.storage.read_json`.

:data:`LIMITS_HELP` states them for ``--help``.
"""

from __future__ import annotations

import io
import json
import math
import re
import zipfile
import zlib
from typing import Any

from .. import storage
from ..problems import DatasetError

MAX_IMAGE_PIXELS = 178_956_970
MAX_OUTLINE_PIXELS = 4_000_000
MAX_OBJECTS_PER_IMAGE = 10_000
MAX_ZIP_RATIO = 100
MAX_ZIP_BYTES = 16 << 30
# Members that expand to at most this many bytes are never refused for their ratio (tiny files compress
# far better than 100:1 without being bombs).
_ZIP_RATIO_FREE_BYTES = 1 << 20
_ZIP_CHUNK = 1 << 20

LIMITS_HELP = (
    f"Limits on input: images up to {MAX_IMAGE_PIXELS:,} pixels (PIL's decompression-bomb limit, declared "
    f"or read); up to {MAX_OBJECTS_PER_IMAGE:,} objects per image; polygon outlines up to "
    f"{MAX_OUTLINE_PIXELS:,} px per object; JSON files up to {storage.MAX_JSON_BYTES >> 30} GiB, nested up "
    f"to about 1,000 levels; .zip exports up to {MAX_ZIP_BYTES >> 30} GiB uncompressed, no member expanding "
    f"more than {MAX_ZIP_RATIO}x. Image paths in annotation files must lead inside the dataset folder or "
    "--images (else --allow-outside-paths); http(s) images are fetched with a "
    f"{storage.HTTP_TIMEOUT:g} s timeout (INSTASEG_HTTP_TIMEOUT)."
)


def size_problem(width, height) -> str | None:
    """Why ``width`` x ``height`` (pixels, as an annotation file or a header gives them; floats are rounded)
    cannot be an image size, or ``None`` when both are at least 1 and within :data:`MAX_IMAGE_PIXELS`."""
    for value in (width, height):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"image size {shown(width)} x {shown(height)} is not two numbers"
        if isinstance(value, float) and not math.isfinite(value):
            return f"image size {shown(width)} x {shown(height)} is not two finite numbers"
        if round(value) < 1:
            return f"image size {shown(width)} x {shown(height)} must be positive"
    if round(width) * round(height) > MAX_IMAGE_PIXELS:
        return (
            f"image size {shown(width)} x {shown(height)} is over the limit of {MAX_IMAGE_PIXELS:,} pixels "
            "per image (PIL's decompression-bomb limit)"
        )
    return None


def shown(value, limit: int = 60, quote: bool = True) -> str:
    """``value`` for a message: its ``repr`` (``str`` unless ``quote``), floats as ``%g``, every number of
    more than 24 digits as ``<a N-digit number>``, and cut to ``limit`` characters (a hostile file's
    values must not turn one line into pages)."""
    try:
        text = f"{value:g}" if isinstance(value, float) else repr(value) if quote else str(value)
    except ValueError:  # an integer over Python's 4,300-digit limit for str()
        text = "<a number of over 4,300 digits>"
    text = re.sub(r"\d{25,}", lambda m: f"<a {len(m.group())}-digit number>", text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def require_regular_file(location: str) -> None:
    """``DatasetError`` naming ``location`` when it is a FIFO, a device or a socket (reading one may block
    forever or never end); checked before anything opens it."""
    try:
        storage.check_regular_file(location)
    except storage.SpecialFileError:
        raise DatasetError(
            "not a regular file (a FIFO, device or socket); refused: give the annotation file or folder",
            file=location,
        ) from None


def parse_json_bytes(data: bytes, location: str) -> Any:
    """Parse JSON bytes (:func:`instaseg.storage.parse_json`); ``DatasetError`` naming ``location`` when
    they are not (complete) UTF-8 JSON text or are nested too deeply."""
    try:
        return storage.parse_json(data, location)
    except json.JSONDecodeError as e:
        truncated = e.msg.startswith("Unterminated") or e.pos >= len(data.rstrip()) - 1
        end = "; the file ends early: truncated download or copy?" if truncated else ""
        raise DatasetError(
            f"not valid JSON: {e.msg} (line {e.lineno}, column {e.colno}){end}", file=location
        ) from None
    except ValueError as e:
        message = str(e).removeprefix(f"{location}: ")
        if message.startswith("not UTF-8"):
            message = f"not a text (UTF-8) JSON file ({message})"
        raise DatasetError(message, file=location) from None


def read_json_file(location: str) -> Any:
    """The parsed JSON file at ``location`` (path or URL), refused before reading when it is a special
    file or larger than :data:`~instaseg.storage.MAX_JSON_BYTES`.

    Raises:
        DatasetError: naming ``location``: not found, unreadable, too large, or not JSON.
    """
    require_regular_file(location)
    try:
        size = storage.file_size(location)
        if size > storage.MAX_JSON_BYTES:
            raise DatasetError(
                f"the file is {size / (1 << 30):.1f} GiB, over the limit of "
                f"{storage.MAX_JSON_BYTES >> 30} GiB for a JSON annotation file",
                file=location,
            )
        data = storage.read_bytes(location)
    except FileNotFoundError:
        raise DatasetError("file not found", file=location) from None
    except OSError as e:
        raise DatasetError(f"cannot read the file ({e.strerror or e})", file=location) from None
    return parse_json_bytes(data, location)


def open_zip(source: str) -> zipfile.ZipFile:
    """The archive at ``source`` (local path or URL), opened without reading it into memory.

    Raises:
        DatasetError: not a zip file, or its members declare more than :data:`MAX_ZIP_BYTES` in all.
    """
    require_regular_file(source)  # a FIFO named x.zip would block on open
    try:
        # A local archive is opened by path (read as needed, closed with the archive); a remote one is read
        # into memory once (one request, not one per seek).
        archive = zipfile.ZipFile(source if not storage.is_url(source) else io.BytesIO(_remote_zip(source)))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError):
        raise DatasetError("not a readable zip file (truncated download?)", file=source) from None
    total = sum(info.file_size for info in archive.infolist())
    if total > MAX_ZIP_BYTES:
        archive.close()
        raise DatasetError(
            f"the zip expands to {total / (1 << 30):.1f} GiB, over the limit of {MAX_ZIP_BYTES >> 30} GiB "
            "(a zip bomb?); unzip it yourself and give the folder",
            file=source,
        )
    return archive


def _remote_zip(source: str) -> bytes:
    size = storage.file_size(source)
    if size > MAX_ZIP_BYTES:
        raise DatasetError(
            f"the zip is {size / (1 << 30):.1f} GiB, over the limit of {MAX_ZIP_BYTES >> 30} GiB; download "
            "and unzip it, and give the folder",
            file=source,
        )
    return storage.read_bytes(source)


def member_problem(info: zipfile.ZipInfo, limit: int) -> str | None:
    """Why the zip member ``info`` is not read (larger than ``limit`` bytes, or expanding more than
    :data:`MAX_ZIP_RATIO` times), or ``None``."""
    if info.file_size > limit:
        return f"zip member {info.filename} expands to {info.file_size:,} bytes, over the limit of {limit:,}"
    if info.file_size > _allowed_bytes(info):
        return (
            f"zip member {info.filename} expands {info.file_size / max(info.compress_size, 1):.0f} times "
            f"(over {MAX_ZIP_RATIO}x: a zip bomb?); not read"
        )
    return None


def _allowed_bytes(info: zipfile.ZipInfo) -> int:
    return max(_ZIP_RATIO_FREE_BYTES, MAX_ZIP_RATIO * info.compress_size)


_CORRUPT = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError)


def read_member_start(archive: zipfile.ZipFile, name: str, location: str, size: int) -> bytes:
    """The first ``size`` bytes of member ``name`` (``DatasetError`` naming ``location`` if corrupt)."""
    try:
        with archive.open(name) as member:
            return member.read(size)
    except _CORRUPT as e:
        raise DatasetError(f"zip member {name} cannot be read ({e})", file=location) from None


def read_member(archive: zipfile.ZipFile, name: str, location: str, limit: int | None = None) -> bytes:
    """The bytes of member ``name``, never more than its declared size allows (the declared size may lie:
    reading stops at the limit). ``location`` names it in messages; ``limit`` defaults to
    :data:`~instaseg.storage.MAX_JSON_BYTES`.

    Raises:
        DatasetError: the member is over a limit, or its data is corrupt.
    """
    limit = storage.MAX_JSON_BYTES if limit is None else limit
    info = archive.getinfo(name)
    problem = member_problem(info, limit)
    if problem:
        raise DatasetError(problem, file=location)
    allowed = min(limit, _allowed_bytes(info))
    chunks, size = [], 0
    try:
        with archive.open(info) as member:
            while chunk := member.read(_ZIP_CHUNK):
                size += len(chunk)
                if size > allowed:
                    raise DatasetError(
                        f"zip member {name} expands beyond {allowed:,} bytes (a zip bomb?); not read",
                        file=location,
                    )
                chunks.append(chunk)
    except _CORRUPT as e:
        raise DatasetError(f"zip member {name} cannot be read ({e})", file=location) from None
    return b"".join(chunks)
