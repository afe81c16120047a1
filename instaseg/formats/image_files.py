"""Finding the image files that annotation files name, and reading their size: the part of every importer
that touches files other than the annotation file itself.

Where an importer may read (see :class:`ImageResolver`): files inside the dataset root (the annotation
folder, or a single file's folder) or the ``--images`` folder. A name that leads elsewhere (an absolute
path, ``../..``) is matched by file name inside those folders; the file it names outside is read only with
``allow_outside`` (``--allow-outside-paths``), else the importer reports the refusal. URLs are fetched
with :data:`instaseg.storage.HTTP_TIMEOUT`; one that cannot be fetched is reported, never waited on twice
for the same host. Names are compared in Unicode NFC, so a name written in NFD (macOS) finds its NFC twin.
"""

from __future__ import annotations

import os
import posixpath
import re
import unicodedata
from urllib.parse import urlsplit

from .. import storage
from ..images import ImageError, ImageHeader, read_header
from ..problems import ProblemLog
from .limits import size_problem

# Label Studio prefixes uploaded files with 8 hex digits: "2f4821cd-10.jpg"; its COCO export with images
# writes "a43e3fb6__img0.png".
_UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}(?:-|__)", re.IGNORECASE)


def strip_upload_prefix(name: str) -> str:
    """``"2f4821cd-10.jpg"`` -> ``"10.jpg"``; names without the prefix are returned unchanged."""
    return _UPLOAD_PREFIX.sub("", name, count=1)


def nfc(text: str) -> str:
    """``text`` in Unicode normal form C (the form names are compared in)."""
    return unicodedata.normalize("NFC", text)


class ImageResolver:
    """Finds the image file for a name written in an annotation file, inside the folders it may read.

    :meth:`resolve` tries, in order: the name relative to the annotation file's folder, relative to the
    images folder the user gave, then by basename anywhere under the images folder (or the annotation
    folder), with and without Label Studio's 8-hex upload prefix. Windows backslashes are normalised. The
    folder is listed once (one request on a bucket), not probed per image. :meth:`find` adds the path
    relative to the annotation file when it stays inside ``root`` or the images folder (or anywhere, with
    ``allow_outside``), and fetches URLs.

    Args:
        annotation_dir: the folder of the annotation file.
        images_dir: the ``--images`` folder, or ``None``.
        root: the dataset root (the source folder); ``annotation_dir`` when ``None``.
        allow_outside: read files that names lead to outside ``root`` and ``images_dir``.
    """

    def __init__(
        self,
        annotation_dir: str,
        images_dir: str | None = None,
        *,
        root: str | None = None,
        allow_outside: bool = False,
    ):
        self.annotation_dir = _absolute(annotation_dir)
        self.images_dir = _absolute(images_dir) if images_dir else None
        self.root = _absolute(root) if root else self.annotation_dir
        self.allow_outside = allow_outside
        self._files: dict[str, str] | None = None  # NFC location -> location
        self._by_name: dict[str, str | None] = {}
        self._unreachable: dict[str, str] = {}  # host -> why it could not be reached

    def _index(self) -> dict[str, str]:
        if self._files is None:
            self._files = {}
            for root in filter(None, (self.annotation_dir, self.images_dir)):
                if storage.is_dir(root):
                    for path in storage.list_files(root, storage.IMAGE_SUFFIXES):
                        self._files.setdefault(nfc(path), path)
            for key_path, path in sorted(self._files.items()):
                base = storage.basename(key_path)
                for key in {base, strip_upload_prefix(base)}:
                    # A name shared by two files is ambiguous: remember that, match neither.
                    self._by_name[key] = None if key in self._by_name and self._by_name[key] != path else path
        return self._files

    def resolve(self, name: str) -> str | None:
        """The location of image ``name`` inside the indexed folders, or ``None`` when no file matches."""
        files = self._index()
        name = nfc(name.replace("\\", "/"))
        if storage.is_url(name):
            return files.get(name)
        for root in filter(None, (self.annotation_dir, self.images_dir)):
            candidate = files.get(nfc(_normalise(storage.join(root, name))))
            if candidate is not None:
                return candidate
        base = storage.basename(name)
        for key in (base, strip_upload_prefix(base)):
            found = self._by_name.get(key)
            if found:
                return found
        return None

    def find(self, name: str, directory: str | None = None) -> tuple[str | None, str | None]:
        """``(location, refusal)`` of image ``name`` as an annotation file in ``directory`` (default: the
        annotation folder) writes it: :meth:`resolve`, else the file the path leads to when it may be
        read. ``location`` is ``None`` when nothing is found or reading was refused; ``refusal`` then says
        why for a person (a path outside the dataset, a URL that cannot be fetched), else it is ``None``.
        """
        name = name.replace("\\", "/")
        location = self.resolve(name)
        if location is not None:
            return location, None
        if storage.is_url(name):
            # A chained or local-filesystem URL (zip://x::/a.zip, local:///a, memory://) reads this
            # machine's files: an outside path like any other.
            if self.allow_outside or (_remote(name) and "::" not in name):
                return self._fetch(name)
            return None, self._outside(name)
        candidate = _normalise(storage.join(directory or self.annotation_dir, name))
        if storage.is_url(candidate):  # a relative name in a dataset on a bucket: missing like a local file
            if self.allow_outside or self.inside(candidate):
                return self._fetch(candidate, missing_is_refusal=False)
            return None, self._outside(name)
        existing = _existing_file(candidate)
        if existing is None or self.allow_outside or self.inside(existing):
            return existing, None
        return None, self._outside(name)

    def _outside(self, name: str) -> str:
        folders = self.root + (f" or --images {self.images_dir}" if self.images_dir else "")
        return (
            f"image path {name!r} leads outside the dataset ({folders}); not read. Move the image into the "
            "dataset, give --images DIR holding it (files are matched by name), or pass --allow-outside-paths"
        )

    def inside(self, location: str) -> bool:
        """Whether ``location`` lies in the dataset root or the images folder."""
        for folder in filter(None, (self.root, self.images_dir)):
            if storage.is_url(folder) != storage.is_url(location):
                continue
            prefix = folder.rstrip("/") + "/" if storage.is_url(folder) else os.path.join(folder, "")
            if nfc(_normalise(location)).startswith(nfc(prefix)):
                return True
        return False

    def _fetch(self, url: str, missing_is_refusal: bool = True) -> tuple[str | None, str | None]:
        """``(url, None)`` when the remote file answers, else ``(None, why)`` (``(None, None)`` for a file
        that is not there, unless ``missing_is_refusal``); a host that timed out once is not asked again (a
        machine without network must not wait once per image)."""
        try:
            host = f"{urlsplit(url).scheme}://{urlsplit(url).netloc}"
        except ValueError:  # "http://[": not a URL any client can fetch
            return None, f"image URL {url!r} is malformed; not fetched"
        advice = "download the images and give --images DIR (files are matched by name)"
        if host in self._unreachable:
            return (
                None,
                f"image URL {url} not fetched: {host} did not answer before ({self._unreachable[host]})",
            )
        try:
            found = storage.exists(url)
        except Exception as e:  # network (timeout, DNS, refused) or bucket (credentials) failures
            reason = " ".join(str(e).split())[:200] or type(e).__name__
            if isinstance(e, TimeoutError):
                reason = f"no answer within {storage.HTTP_TIMEOUT:g} s"
                self._unreachable[host] = reason
            return None, f"image URL {url} cannot be fetched ({reason}); {advice}"
        if not found and not missing_is_refusal:
            return None, None
        if not found:
            return (
                None,
                f"image URL {url} cannot be fetched (not found, access refused, or no network); {advice}",
            )
        return url, None


# URL schemes of other machines (web servers, buckets): an annotation file may name images there.
_REMOTE_SCHEMES = ("http", "https", "s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl")


def _remote(location: str) -> bool:
    return location.split("://", 1)[0].lower() in _REMOTE_SCHEMES


def _absolute(location: str) -> str:
    return location if storage.is_url(location) else os.path.abspath(location)


def _normalise(location: str) -> str:
    if storage.is_url(location):
        scheme, rest = location.split("://", 1)
        return f"{scheme}://{posixpath.normpath(rest)}"
    return os.path.normpath(location)


def _existing_file(path: str) -> str | None:
    """``path`` (or its NFC / NFD spelling) when it is an existing local non-folder, else ``None``."""
    for spelling in dict.fromkeys((path, nfc(path), unicodedata.normalize("NFD", path))):
        if os.path.exists(spelling) and not os.path.isdir(spelling):
            return spelling
    return None


def read_image_info(location: str, decode: bool = False) -> ImageHeader:
    """Read an image file's header (:func:`instaseg.images.read_header`) and, with ``decode``, all its
    pixels to prove it is not corrupt. URLs are read with the storage timeout.

    Raises ``ValueError`` with a message for a person when the file is empty, not an image, corrupt, or
    larger than :data:`~instaseg.formats.limits.MAX_IMAGE_PIXELS`; ``OSError`` when it cannot be read.
    """
    from PIL import Image

    source = storage.image_bytes_io(location) if storage.is_url(location) else storage.open_file(location)
    with source as f:
        try:
            header = read_header(f, location)
            problem = size_problem(header.width, header.height)
            if problem:
                raise ValueError(problem)
            if decode:
                f.seek(0)
                with Image.open(f) as img:
                    img.load()
        except ImageError as e:
            if storage.file_size(location) == 0:
                raise ValueError("empty file (0 bytes)") from None
            raise ValueError(str(e).removeprefix(f"{location}: ")) from None
        except (OSError, SyntaxError) as e:
            raise ValueError(f"corrupt or truncated image: {e}") from None
    return header


def image_size(
    log: ProblemLog,
    location: str | None,
    declared_width,
    declared_height,
    file: str | None,
    image: str | None,
) -> tuple[int, int, str | None] | None:
    """The size to rasterise an image's annotations at: ``(width, height, mode)`` or ``None`` if unusable.

    Reads the header of a present image (``location``) and checks it against the size the annotation
    file declares (``None``/0 when it declares none, as Label Studio's COCO export sometimes does). A
    missing image falls back to the declared size (``mode`` is then ``None``). Logs an error and returns
    ``None`` when the file is unreadable, the sizes disagree, or a size is over
    :data:`~instaseg.formats.limits.MAX_IMAGE_PIXELS`; a declared size that is not two positive numbers
    (NaN, a string, negative) is a warning, and the file's size is used.
    """
    declared = None
    if declared_width is not None or declared_height is not None:
        problem = size_problem(declared_width, declared_height)
        if problem is None:
            declared = (int(round(declared_width)), int(round(declared_height)))
        elif "over the limit" in problem:
            log.error(f"the annotations' {problem}; its annotations are not used", file=file, image=image)
            return None
        else:
            log.warn(f"the annotations' {problem}; using the image file's size", file=file, image=image)
    if location is None:
        return (*declared, None) if declared else None
    # A remote image may fail in any way its client library has (aiohttp, botocore): report each alike.
    expected = Exception if storage.is_url(location) else (ValueError, OSError)
    try:
        info = read_image_info(location)
    except expected as e:
        log.error(f"image file unusable: {e}", file=location, image=image)
        return None
    if declared and declared != (info.width, info.height):
        rotated = info.orientation in (5, 6, 7, 8)
        hint = (
            f"; the file has EXIF orientation {info.orientation} (rotated 90 degrees): the annotations were "
            "probably drawn on the unrotated image"
            if rotated and declared == (info.height, info.width)
            else ""
        )
        log.error(
            f"annotations declare {declared[0]}x{declared[1]} but the image is displayed at "
            f"{info.width}x{info.height}{hint}; its annotations are not used",
            file=file,
            image=image,
        )
        return None
    return info.width, info.height, info.mode


def json_files(source: str) -> tuple[str, list[str]]:
    """``(root, files)`` of an existing annotation source: a folder (made absolute when local) and the
    ``.json`` files under it, or a file's folder and ``[source]``."""
    if storage.is_dir(source):
        root = source if storage.is_url(source) else os.path.abspath(source)
        return root, storage.list_files(root, (".json",))
    return storage.parent(source), [source]


def folder_resolver(
    resolvers: dict[str, ImageResolver], file: str, images: str | None, root: str, allow_outside: bool
) -> ImageResolver:
    """The :class:`ImageResolver` for the annotation ``file``'s folder inside the dataset ``root``, made
    once per folder in ``resolvers`` (a folder is listed once, however many annotation files it holds)."""
    directory = storage.parent(file)
    if directory not in resolvers:
        resolvers[directory] = ImageResolver(directory, images, root=root, allow_outside=allow_outside)
    return resolvers[directory]


def relative_name(root: str, location: str) -> str:
    """``location`` relative to the folder ``root``, with forward slashes (both local or both URLs)."""
    if storage.is_url(root):
        return posixpath.relpath(storage.filesystem(location)[1], storage.filesystem(root)[1])
    return os.path.relpath(location, root).replace(os.sep, "/")


def name_under_root(root: str, directory: str, name: str) -> str | None:
    """``name``, as an annotation file in ``directory`` writes it, relative to ``root`` (forward slashes);
    ``None`` when it leads outside ``root`` (``../x.jpg``, an absolute path)."""
    joined = posixpath.normpath(posixpath.join(relative_name(root, directory), name.replace("\\", "/")))
    return None if joined.startswith("../") or joined.startswith("/") else joined
