"""INPUT arguments of ``instaseg predict`` -> the images to predict, each with a name for its outputs.

An INPUT is an image file, a folder (searched recursively), a glob (``photos/*.jpg``, ``s3://b/**/*.png``)
or any of these as a bucket URL. Folders and globs yield the files with an image suffix
(:data:`instaseg.storage.IMAGE_SUFFIXES`); a file named explicitly is always taken, so that a file that is
not an image is reported as such instead of silently skipped. Files of other image formats that folders
and globs leave out (:data:`OTHER_IMAGE_SUFFIXES`: GIF, HEIC, RAW...) are counted in a note.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from .. import storage

GLOB_CHARACTERS = "*?["

# Image formats that folders and globs do not pick up: animations, phone and camera formats PIL cannot read
# without plug-ins. Skipped files with these suffixes are counted in a note, so that they are not lost
# without a word; a file named explicitly is tried (a GIF's first frame reads).
OTHER_IMAGE_SUFFIXES = (
    ".gif", ".heic", ".heif", ".avif", ".jp2", ".jfif", ".ppm", ".pgm", ".tga", ".psd",
    ".dng", ".cr2", ".cr3", ".nef", ".arw", ".raf", ".orf", ".rw2",
)  # fmt: skip


@dataclass(frozen=True)
class ImageInput:
    """One image to predict.

    Attributes:
        location: local path or URL to read it from.
        name: relative path (forward slashes) its outputs are named after, e.g. ``"ward_3/img_001.jpg"``
            for ``img_001.jpg`` found in the sub-folder ``ward_3`` of a folder INPUT; unique in a run.
    """

    location: str
    name: str


def _is_glob(location: str) -> bool:
    return any(c in location for c in GLOB_CHARACTERS)


def _relative(path: str, base: str) -> str:
    path, base = path.replace("\\", "/"), base.replace("\\", "/").rstrip("/")
    if base and path.startswith(base + "/"):
        return path[len(base) + 1 :]
    return posixpath.basename(path)


def _glob(pattern: str) -> tuple[list[tuple[str, str]], list[str]]:
    fs, path = storage.filesystem(pattern)
    wanted = storage.IMAGE_SUFFIXES + OTHER_IMAGE_SUFFIXES  # by name first: isfile is a request on a bucket
    matches = sorted(p for p in fs.glob(path) if p.lower().endswith(wanted) and fs.isfile(p))
    # Names relative to the pattern's fixed leading folders, so that `a/*/x.jpg` keeps the sub-folder.
    fixed = path.split("/")
    cut = next(i for i, part in enumerate(fixed) if _is_glob(part))
    base = "/".join(fixed[:cut])
    scheme = pattern.split("://", 1)[0] + "://" if storage.is_url(pattern) else ""
    images, others = _split_images(matches)
    return [
        (scheme + p if scheme and not p.startswith(scheme) else p, _relative(p, base)) for p in images
    ], others


def _folder(location: str) -> tuple[list[tuple[str, str]], list[str]]:
    files, others = _split_images(storage.list_files(location))
    _, base = storage.filesystem(location)
    return [(f, _relative(storage.filesystem(f)[1], base)) for f in files], others


def _split_images(paths: list[str]) -> tuple[list[str], list[str]]:
    """``(image files, files of other image formats)`` of ``paths``; the rest (text, JSON...) dropped."""
    images = [p for p in paths if p.lower().endswith(storage.IMAGE_SUFFIXES)]
    others = [p for p in paths if p.lower().endswith(OTHER_IMAGE_SUFFIXES)]
    return images, others


def _skipped_note(item: str, kind: str, others: list[str]) -> str:
    counts: dict[str, int] = {}
    for path in others:
        suffix = posixpath.splitext(path)[1].lower()
        counts[suffix] = counts.get(suffix, 0) + 1
    listed = ", ".join(f"{n} {suffix}" for suffix, n in sorted(counts.items()))
    return (
        f"{item}: skipped {len(others)} file(s) of this {kind} with suffixes it does not pick up ({listed}; "
        f"it picks up {', '.join(storage.IMAGE_SUFFIXES)}). Name a file explicitly to try it (a GIF's first "
        "frame reads), or convert them"
    )


def _looks_like_folder(location: str) -> bool:
    try:
        return storage.is_dir(location)
    except Exception:  # an unreachable host or bucket: treat as a file, reported when it is read
        return False


def expand_inputs(inputs: list[str]) -> tuple[list[ImageInput], list[tuple[str, str]], list[str]]:
    """The images named by INPUT arguments, in order, without repeats.

    Returns:
        ``(images, problems, notes)``: the images; ``(INPUT, message)`` per INPUT that yielded no image (an
        empty folder, a glob matching nothing); a note per folder or glob that skipped files of other image
        formats (:data:`OTHER_IMAGE_SUFFIXES`). A named file that does not exist or cannot be reached is
        returned as an image; reading it fails later and is reported for that file.
    """
    images: list[ImageInput] = []
    problems: list[tuple[str, str]] = []
    notes: list[str] = []
    seen_locations: set[str] = set()
    used_stems: set[str] = set()
    for item in inputs:
        others: list[str] = []
        if _is_glob(item):
            found, others = _glob(item)
            kind = "glob"
        elif _looks_like_folder(item):
            found, others = _folder(item)
            kind = "folder"
        else:
            found = [(item, storage.basename(item))]
            kind = "file"
        if others:
            notes.append(_skipped_note(item, kind, others))
        if not found:
            looked = f"looked for {', '.join(storage.IMAGE_SUFFIXES)}"
            problems.append((item, f"{item}: no image files in this {kind} ({looked})"))
        for location, name in found:
            if location in seen_locations:
                continue
            seen_locations.add(location)
            name = _unique(safe_relative_name(name), used_stems)
            used_stems.add(_stem_key(name))
            images.append(ImageInput(location, name))
    return images, problems, notes


def safe_relative_name(name: str) -> str:
    """``name`` as a relative path that stays inside an output folder: no absolute start, no ``..`` or
    ``.`` parts, no empty parts, no control characters."""
    parts = [
        storage.safe_file_name(p) for p in name.replace("\\", "/").split("/") if p not in ("", ".", "..")
    ]
    return "/".join(parts) or "image"


def _stem_key(name: str) -> str:
    # Outputs are named by stem (photo.jpg -> overlay/photo.jpg, binary/photo.png), case-insensitively on
    # some file systems: two inputs must not share one.
    return posixpath.splitext(name)[0].lower()


def _unique(name: str, used_stems: set[str]) -> str:
    """``name``, or ``stem_2.ext``, ``stem_3.ext``... when two inputs would write the same outputs
    (``photo.jpg`` and ``photo.png`` included)."""
    if _stem_key(name) not in used_stems:
        return name
    stem, ext = posixpath.splitext(name)
    k = 2
    while _stem_key(f"{stem}_{k}{ext}") in used_stems:
        k += 1
    return f"{stem}_{k}{ext}"
