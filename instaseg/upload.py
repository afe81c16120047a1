"""Copy a local dataset folder to a bucket (or another folder), skipping what is already there.

:func:`upload` walks a local folder, keeps the relative layout under the destination and copies only
the files whose copy is missing or different. A file counts as "already there" when the destination
object has the same size **and** the same content hash:

- S3 (and S3-compatible stores: MinIO, moto, ...): the object's ETag. A single-part upload's ETag is the
  hex MD5 of the bytes; a multipart ETag (``"<hex>-<parts>"``) is the MD5 of the parts' MD5s, which is
  recomputed from the local file for the part sizes that give that number of parts (s3fs's own
  chunk size, 5/8/16/50 MiB). An ETag that cannot be checked (e.g. a server-side encrypted object)
  counts as different, so the file is copied again.
- Google Cloud Storage: the object's ``md5Hash`` (base64 MD5) when the listing has it.
- Local destination: the MD5 of the destination file, computed.
- Any other filesystem: size alone. fsspec's ``checksum()``/``ukey()`` are change tokens of one file
  (a hash of its listing: name, mtime, ...), not content hashes, so they cannot compare a local file
  with a remote copy.

A copy cut short (interrupted program, lost connection) is therefore never taken as done: on S3 an
unfinished upload leaves no object, and a truncated or half-written file elsewhere differs in size or
hash. Re-running :func:`upload` finishes the job.
"""

from __future__ import annotations

import base64
import hashlib
import math
import os
import posixpath
from dataclasses import dataclass, field

from fsspec.callbacks import Callback
from fsspec.implementations.local import LocalFileSystem
from tqdm.auto import tqdm

from . import storage
from .problems import DatasetError

# Images plus the annotation files that travel with them (COCO/VIA/Label Studio JSON, YOLO/PennFudan txt,
# CSV tables). PNG masks are covered by the image suffixes.
DEFAULT_INCLUDE: tuple[str, ...] = storage.IMAGE_SUFFIXES + (".json", ".txt", ".csv")

_MIB = 2**20
# Part sizes tried when checking a multipart ETag: s3fs's default chunk, then the usual client defaults
# (AWS CLI 8 MiB, the 5 MiB minimum, 16 MiB).
_PART_SIZES = (50 * _MIB, 8 * _MIB, 5 * _MIB, 16 * _MIB)
_READ_BLOCK = 4 * _MIB


@dataclass
class UploadReport:
    """What :func:`upload` did. Paths are relative to the source folder, ``/``-separated.

    ``copied``: files written (or, in a dry run, that would be written); ``skipped``: identical copies
    already at the destination; ``failed``: ``(path, reason)`` pairs; ``bytes``: total size of
    ``copied`` in bytes.
    """

    copied: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    bytes: int = 0


def upload(
    local_dir: str,
    url: str,
    include: tuple[str, ...] = DEFAULT_INCLUDE,
    progress: bool = True,
    dry_run: bool = False,
) -> UploadReport:
    """Copy the files of ``local_dir`` whose suffix is in ``include`` to ``url``, keeping the layout.

    Hidden files and folders (name starting with ``.``) are left out. Files already at the destination
    with the same size and content hash are skipped (see the module docstring for the rule per
    filesystem), so the function can be re-run after an interruption.

    Args:
        local_dir: a folder on this machine.
        url: destination folder: ``s3://bucket/prefix``, any fsspec URL, or a local path. A bucket must
            already exist; a local folder is created.
        include: lower-case file suffixes to copy (matched case-insensitively).
        progress: show a tqdm progress bar of bytes copied (on stderr).
        dry_run: only decide what would be copied; write nothing.

    Raises:
        DatasetError: ``local_dir`` is not a local folder, or the destination cannot be listed
            (missing bucket, unreachable endpoint, no permission).
    """
    if storage.is_url(local_dir) or not os.path.isdir(local_dir):
        raise DatasetError("the folder to upload must be an existing folder on this machine", file=local_dir)
    include = tuple(s.lower() for s in include)
    sources = _local_files(local_dir, include)
    fs, root = storage.filesystem(url)
    root = root.rstrip("/") or root
    existing = _list_destination(fs, root, url)

    report = UploadReport()
    to_copy: list[tuple[str, str, int]] = []  # (relative path, local path, size)
    for rel, local_path in sources:
        size = os.path.getsize(local_path)
        info = existing.get(_dest_path(root, rel))
        if info is not None and _same_content(local_path, size, info, fs):
            report.skipped.append(rel)
        else:
            to_copy.append((rel, local_path, size))

    total = sum(size for _, _, size in to_copy)
    with tqdm(
        total=total,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        disable=not progress or dry_run or total == 0,
        desc="upload",
    ) as bar:
        for rel, local_path, size in to_copy:
            if dry_run:
                report.copied.append(rel)
                report.bytes += size
                continue
            callback = _BarCallback(bar)
            try:
                _copy(fs, local_path, _dest_path(root, rel), url, callback)
            except Exception as e:  # noqa: BLE001 - any backend error fails this file only; the rest go on
                report.failed.append((rel, f"{type(e).__name__}: {e}"))
            else:
                report.copied.append(rel)
                report.bytes += size
            bar.update(size - callback.counted)
    return report


def _local_files(local_dir: str, include: tuple[str, ...]) -> list[tuple[str, str]]:
    """``(relative posix path, local path)`` of the files to consider, sorted, hidden ones left out."""
    found = []
    for folder, dirs, files in os.walk(local_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if name.startswith(".") or not name.lower().endswith(include):
                continue
            path = os.path.join(folder, name)
            found.append((os.path.relpath(path, local_dir).replace(os.sep, "/"), path))
    return sorted(found)


def _dest_path(root: str, rel: str) -> str:
    return posixpath.join(root, rel) if root not in ("", "/") else "/" + rel


def _list_destination(fs, root: str, url: str) -> dict[str, dict]:
    """``{path inside fs: info}`` of every file under the destination; DatasetError when unreachable."""
    if not storage.is_url(url) and not fs.exists(root):
        return {}  # a local destination is created by the first copy
    # A listing cached by an earlier call in this process may predate changes made by someone else.
    fs.invalidate_cache(root)
    try:
        listing = fs.find(root, detail=True)
    except FileNotFoundError as e:  # s3fs: the bucket does not exist
        raise DatasetError(
            f"the destination does not exist ({e}); create the bucket first, or check its "
            "name and the endpoint (see instaseg.storage: AWS_ENDPOINT_URL_S3)",
            file=url,
        ) from None
    except Exception as e:  # noqa: BLE001 - botocore's connection errors are not OSErrors
        raise DatasetError(
            f"cannot list the destination ({type(e).__name__}: {e}); check the URL, the "
            "endpoint (see instaseg.storage: AWS_ENDPOINT_URL_S3) and the credentials",
            file=url,
        ) from None
    return {path: info for path, info in listing.items() if info.get("type") != "directory"}


def _copy(fs, local_path: str, dest: str, url: str, callback: Callback) -> None:
    if not storage.is_url(url):
        fs.makedirs(posixpath.dirname(dest), exist_ok=True)
    fs.put_file(local_path, dest, callback=callback)


def _same_content(local_path: str, size: int, info: dict, fs) -> bool:
    """Whether the destination object (its listing ``info``) holds the bytes of ``local_path``."""
    if info.get("size") != size:
        return False
    etag = info.get("ETag") or info.get("etag")
    if etag:
        return _etag_matches(local_path, size, str(etag).strip('"'))
    md5_base64 = info.get("md5Hash")  # gcsfs
    if md5_base64:
        return base64.b64encode(_md5(local_path).digest()).decode("ascii") == md5_base64
    if isinstance(fs, LocalFileSystem):
        return _md5(local_path).hexdigest() == _md5(info["name"]).hexdigest()
    return True  # size alone: no content hash available for this filesystem


def _etag_matches(local_path: str, size: int, etag: str) -> bool:
    if "-" not in etag:
        return _md5(local_path).hexdigest() == etag.lower()
    digest, _, parts_text = etag.partition("-")
    if not parts_text.isdigit():
        return False
    parts = int(parts_text)
    for part_size in _PART_SIZES:
        if (
            math.ceil(size / part_size) == parts
            and multipart_etag(local_path, part_size) == f"{digest}-{parts}"
        ):
            return True
    return False


def multipart_etag(local_path: str, part_size: int) -> str:
    """The ETag S3 gives a multipart upload of ``local_path`` in parts of ``part_size`` bytes.

    That is the hex MD5 of the concatenated binary MD5s of the parts, then ``-<number of parts>``.
    """
    part_digests = []
    with open(local_path, "rb") as f:
        while chunk := f.read(part_size):
            part_digests.append(hashlib.md5(chunk).digest())
    return f"{hashlib.md5(b''.join(part_digests)).hexdigest()}-{len(part_digests)}"


def _md5(local_path: str):
    digest = hashlib.md5()
    with open(local_path, "rb") as f:
        while chunk := f.read(_READ_BLOCK):
            digest.update(chunk)
    return digest


class _BarCallback(Callback):
    """Forwards fsspec's transfer progress of one file to the tqdm bar; ``counted`` bytes so far."""

    def __init__(self, bar):
        super().__init__()
        self.bar = bar
        self.counted = 0

    def call(self, *args, **kwargs):
        if self.value > self.counted:
            self.bar.update(self.value - self.counted)
            self.counted = self.value
