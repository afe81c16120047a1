"""Pieces every importer shares: finding image files, reading image headers, turning raw geometry into
validated :class:`~instaseg.core.Annotation` objects (safe repairs reported as warnings) and records."""

from __future__ import annotations

import math
import os
import posixpath
import re
from collections.abc import Iterable

import numpy as np
from PIL import Image
from pycocotools import mask as coco_mask

from .. import storage
from ..core import Annotation, Record
from ..images import ImageError, ImageHeader, read_header
from ..masks import mask_to_rle, polygons_to_rle, rle_for_pycocotools
from ..problems import ProblemLog

# Label Studio prefixes uploaded files with 8 hex digits: "2f4821cd-10.jpg"; its COCO export with images
# writes "a43e3fb6__img0.png".
_UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}(?:-|__)", re.IGNORECASE)

# Pixels a coordinate may lie outside the image before clipping it is reported (float noise is not).
_CLIP_TOLERANCE = 0.5


def strip_upload_prefix(name: str) -> str:
    """``"2f4821cd-10.jpg"`` -> ``"10.jpg"``; names without the prefix are returned unchanged."""
    return _UPLOAD_PREFIX.sub("", name, count=1)


class ImageResolver:
    """Finds the image file for a name written in an annotation file.

    Tries, in order: the name relative to the annotation file's folder, relative to the images folder the
    user gave, then by basename anywhere under the images folder (or the annotation folder), with and
    without Label Studio's 8-hex upload prefix. Windows backslashes are normalised. The folder is listed
    once (one request on a bucket), not probed per image.
    """

    def __init__(self, annotation_dir: str, images_dir: str | None = None):
        self.annotation_dir = annotation_dir
        self.images_dir = images_dir
        self._files: set[str] | None = None
        self._by_name: dict[str, str | None] = {}

    def _index(self) -> set[str]:
        if self._files is None:
            self._files = set()
            for root in filter(None, (self.annotation_dir, self.images_dir)):
                if storage.is_dir(root):
                    self._files.update(storage.list_files(root, storage.IMAGE_SUFFIXES))
            for path in sorted(self._files):
                for key in {storage.basename(path), strip_upload_prefix(storage.basename(path))}:
                    # A name shared by two files is ambiguous: remember that, match neither.
                    self._by_name[key] = None if key in self._by_name and self._by_name[key] != path else path
        return self._files

    def resolve(self, name: str) -> str | None:
        """The location of image ``name``, or ``None`` when no file matches."""
        files = self._index()
        name = name.replace("\\", "/")
        if storage.is_url(name):
            return name if storage.exists(name) else None
        for root in filter(None, (self.annotation_dir, self.images_dir)):
            candidate = _normalise(storage.join(root, name))
            if candidate in files:
                return candidate
        base = storage.basename(name)
        for key in (base, strip_upload_prefix(base)):
            found = self._by_name.get(key)
            if found:
                return found
        return None


def _normalise(location: str) -> str:
    if storage.is_url(location):
        return location
    return os.path.normpath(location)


def read_image_info(location: str, decode: bool = False) -> ImageHeader:
    """Read an image file's header (:func:`instaseg.images.read_header`) and, with ``decode``, all its
    pixels to prove it is not corrupt.

    Raises ``ValueError`` with a message for a person when the file is empty, not an image, or corrupt.
    """
    with storage.open_file(location) as f:
        try:
            header = read_header(f, location)
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


def _finite_numbers(values) -> np.ndarray | None:
    try:
        array = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        return None
    return array if np.isfinite(array).all() else None


def build_annotation(
    log: ProblemLog,
    *,
    label: int,
    height: int,
    width: int,
    file: str | None,
    image: str | None,
    annotation_id: str | int | None,
    polygons: list | None = None,
    rle: dict | None = None,
    mask: np.ndarray | None = None,
    box_xyxy: list | tuple | None = None,
    iscrowd: bool = False,
) -> Annotation | None:
    """Validate one object's geometry and build its :class:`Annotation`; ``None`` if nothing usable is left.

    Give exactly one geometry: ``polygons`` (list of flat ``[x1, y1, x2, y2, ...]`` pixel lists),
    ``rle`` (COCO RLE, compressed or uncompressed, of size ``[height, width]``), ``mask`` (bool ``(H, W)``),
    or ``box_xyxy`` alone for a box-only object. Safe repairs (clipping to the image, dropping a degenerate
    polygon) are logged as warnings; unusable geometry is logged as an error and the object dropped.
    """
    where = {"file": file, "image": image, "annotation": annotation_id}
    kept_polygons = None
    if polygons is not None:
        kept_polygons = _clean_polygons(log, polygons, height, width, where)
        if not kept_polygons:
            log.error("no valid polygon left (each needs at least 3 finite points); object dropped", **where)
            return None
        rle = polygons_to_rle(kept_polygons, height, width)
    elif rle is not None:
        rle = _check_rle(log, rle, height, width, where)
        if rle is None:
            return None
    elif mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (height, width):
            log.error(
                f"mask is {mask.shape[1]}x{mask.shape[0]} but the image is {width}x{height}; dropped", **where
            )
            return None
        rle = mask_to_rle(mask)

    if rle is not None:
        area = float(coco_mask.area(rle_for_pycocotools(rle)))
        if area == 0:
            log.warn("zero-area mask; object dropped", **where)
            return None
        x, y, w, h = (float(v) for v in coco_mask.toBbox(rle_for_pycocotools(rle)))
        box = (x, y, x + w, y + h)
    else:
        box = _check_box(log, box_xyxy, height, width, where)
        if box is None:
            return None
    return Annotation(
        label=label, box=box, rle=rle, iscrowd=bool(iscrowd), polygons=kept_polygons, source_id=annotation_id
    )


def _clean_polygons(log: ProblemLog, polygons, height: int, width: int, where: dict) -> list[list[float]]:
    if not isinstance(polygons, list):
        log.error(f"segmentation polygons must be a list, got {type(polygons).__name__}", **where)
        return []
    kept = []
    for i, polygon in enumerate(polygons):
        coords = _finite_numbers(polygon)
        if coords is None:
            log.warn(f"polygon {i} has non-numeric, NaN or infinite coordinates; polygon dropped", **where)
            continue
        if len(coords) % 2:
            log.warn(
                f"polygon {i} has an odd number of coordinates ({len(coords)}); polygon dropped", **where
            )
            continue
        if len(coords) < 6:
            log.warn(f"polygon {i} has {len(coords) // 2} points (needs 3); polygon dropped", **where)
            continue
        xs, ys = coords[0::2], coords[1::2]
        if (
            xs.min() < -_CLIP_TOLERANCE
            or ys.min() < -_CLIP_TOLERANCE
            or xs.max() > width + _CLIP_TOLERANCE
            or ys.max() > height + _CLIP_TOLERANCE
        ):
            log.warn(f"polygon {i} extends outside the {width}x{height} image; clipped to it", **where)
        coords[0::2] = np.clip(xs, 0, width)
        coords[1::2] = np.clip(ys, 0, height)
        kept.append(coords.tolist())
    return kept


def _check_rle(log: ProblemLog, rle, height: int, width: int, where: dict) -> dict | None:
    if not isinstance(rle, dict) or "counts" not in rle or "size" not in rle:
        log.error("RLE segmentation must be an object with 'size' and 'counts'; object dropped", **where)
        return None
    size = rle["size"]
    if not (isinstance(size, list | tuple) and len(size) == 2 and list(size) == [height, width]):
        log.error(
            f"RLE size {size} does not match the image's [height, width] = [{height}, {width}]; "
            "object dropped",
            **where,
        )
        return None
    counts = rle["counts"]
    if isinstance(counts, list):  # uncompressed RLE
        numbers = _finite_numbers(counts)
        if numbers is None or (numbers < 0).any() or numbers.sum() != height * width:
            log.error(
                f"uncompressed RLE counts must be non-negative and sum to {height}*{width}; object dropped",
                **where,
            )
            return None
        compressed = coco_mask.frPyObjects(
            {"size": [height, width], "counts": [int(c) for c in counts]}, height, width
        )
        return {"size": [height, width], "counts": compressed["counts"].decode("ascii")}
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    if not isinstance(counts, str):
        log.error(
            f"RLE counts must be a string or a list, got {type(counts).__name__}; object dropped", **where
        )
        return None
    try:
        decoded = coco_mask.decode({"size": [height, width], "counts": counts.encode("ascii")})
    except Exception as e:  # pycocotools raises plain exceptions for malformed strings
        log.error(f"compressed RLE cannot be decoded ({e}); object dropped", **where)
        return None
    # Re-encode so that every stored RLE is canonical (a malformed string may decode "successfully").
    return mask_to_rle(decoded.astype(bool))


def _check_box(log: ProblemLog, box, height: int, width: int, where: dict) -> tuple | None:
    coords = _finite_numbers(box) if box is not None else None
    if coords is None or len(coords) != 4:
        log.error("box must be 4 finite numbers; object dropped", **where)
        return None
    x0, y0, x1, y1 = coords.tolist()
    if x1 <= x0 or y1 <= y0:
        log.error(
            f"box has zero or negative width/height ({x1 - x0:g} x {y1 - y0:g}); object dropped", **where
        )
        return None
    clipped = (max(0.0, x0), max(0.0, y0), min(float(width), x1), min(float(height), y1))
    if any(abs(a - b) > _CLIP_TOLERANCE for a, b in zip(clipped, (x0, y0, x1, y1), strict=True)):
        log.warn(f"box extends outside the {width}x{height} image; clipped to it", **where)
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        log.error("box lies entirely outside the image; object dropped", **where)
        return None
    return clipped


def is_number(value) -> bool:
    """A real, finite number (bools excluded)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


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
    ``None`` when the file is unreadable or the sizes disagree.
    """
    declared = None
    if (
        is_number(declared_width)
        and is_number(declared_height)
        and declared_width > 0
        and declared_height > 0
    ):
        declared = (int(round(declared_width)), int(round(declared_height)))
    elif declared_width is not None or declared_height is not None:
        log.warn(
            f"invalid image size {declared_width!r} x {declared_height!r} in the annotations; "
            "using the image file's size",
            file=file,
            image=image,
        )
    if location is None:
        return (*declared, None) if declared else None
    try:
        info = read_image_info(location)
    except (ValueError, OSError) as e:
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


def folder_resolver(resolvers: dict[str, ImageResolver], file: str, images: str | None) -> ImageResolver:
    """The :class:`ImageResolver` for the annotation ``file``'s folder, made once per folder in
    ``resolvers`` (a folder is listed once, however many annotation files it holds)."""
    directory = storage.parent(file)
    return resolvers.setdefault(directory, ImageResolver(directory, images))


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


def find_image(resolver: ImageResolver, directory: str, name: str) -> str | None:
    """The image ``name`` (as an annotation file writes it) via ``resolver``, else the path relative to
    ``directory`` when that file exists outside the indexed folders (``../images/x.jpg``); else ``None``."""
    location = resolver.resolve(name)
    if location is not None or storage.is_url(name):
        return location
    candidate = storage.join(directory, name.replace("\\", "/"))
    if storage.is_url(candidate):
        scheme, rest = candidate.split("://", 1)
        candidate = f"{scheme}://{posixpath.normpath(rest)}"
    else:
        candidate = os.path.normpath(candidate)
    return candidate if storage.exists(candidate) and not storage.is_dir(candidate) else None


def build_record(
    log: ProblemLog,
    *,
    location: str | None,
    file_name: str,
    size: tuple[int, int, str | None],
    objects: Iterable[dict],
    file: str | None = None,
    image: str | None = None,
) -> Record:
    """The :class:`Record` of the image at ``location`` of ``size`` ``(width, height, mode)`` (pixels).

    ``objects`` gives each object's :func:`build_annotation` keywords: ``label``, ``annotation_id``, one
    geometry, and ``file``/``image`` where they differ from the ones given here. Objects that
    :func:`build_annotation` drops are left out. ``objects`` may be a generator that logs as it goes: it is
    consumed in order, so the problems of one object stay together.
    """
    width, height, mode = size
    annotations = []
    for keywords in objects:
        annotation = build_annotation(
            log, height=height, width=width, **{"file": file, "image": image, **keywords}
        )
        if annotation is not None:
            annotations.append(annotation)
    return Record(
        image=location, file_name=file_name, width=width, height=height, annotations=annotations, mode=mode
    )
