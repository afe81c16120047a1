"""INPUT arguments of ``instaseg predict`` -> the images to predict, each with a name for its outputs.

An INPUT is an image file, a folder (searched recursively), a glob (``photos/*.jpg``, ``s3://b/**/*.png``)
or any of these as a bucket URL. Folders and globs yield the files with an image suffix
(:data:`instaseg.storage.IMAGE_SUFFIXES`); a file named explicitly is always taken, so that a file that is
not an image is reported as such instead of silently skipped.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from .. import storage

GLOB_CHARACTERS = "*?["


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


def _glob(pattern: str) -> list[tuple[str, str]]:
    fs, path = storage.filesystem(pattern)
    matches = sorted(p for p in fs.glob(path) if fs.isfile(p) and p.lower().endswith(storage.IMAGE_SUFFIXES))
    # Names relative to the pattern's fixed leading folders, so that `a/*/x.jpg` keeps the sub-folder.
    fixed = path.split("/")
    cut = next(i for i, part in enumerate(fixed) if _is_glob(part))
    base = "/".join(fixed[:cut])
    scheme = pattern.split("://", 1)[0] + "://" if storage.is_url(pattern) else ""
    return [(scheme + p if scheme and not p.startswith(scheme) else p, _relative(p, base)) for p in matches]


def _folder(location: str) -> list[tuple[str, str]]:
    files = storage.list_files(location, suffixes=storage.IMAGE_SUFFIXES)
    _, base = storage.filesystem(location)
    return [(f, _relative(storage.filesystem(f)[1], base)) for f in files]


def _looks_like_folder(location: str) -> bool:
    try:
        return storage.is_dir(location)
    except Exception:  # an unreachable host or bucket: treat as a file, reported when it is read
        return False


def expand_inputs(inputs: list[str]) -> tuple[list[ImageInput], list[tuple[str, str]]]:
    """The images named by INPUT arguments, in order, without repeats.

    Returns:
        ``(images, problems)``: the images, and ``(INPUT, message)`` per INPUT that yielded no image (an
        empty folder, a glob matching nothing). A named file that does not exist or cannot be reached is
        returned as an image; reading it fails later and is reported for that file.
    """
    images: list[ImageInput] = []
    problems: list[tuple[str, str]] = []
    seen_locations: set[str] = set()
    used_stems: set[str] = set()
    for item in inputs:
        if _is_glob(item):
            found = _glob(item)
            kind = "glob"
        elif _looks_like_folder(item):
            found = _folder(item)
            kind = "folder"
        else:
            found = [(item, storage.basename(item))]
            kind = "file"
        if not found:
            problems.append(
                (
                    item,
                    f"{item}: no image files in this {kind} (looked for {', '.join(storage.IMAGE_SUFFIXES)})",
                )
            )
        for location, name in found:
            if location in seen_locations:
                continue
            seen_locations.add(location)
            name = _unique(safe_relative_name(name), used_stems)
            used_stems.add(_stem_key(name))
            images.append(ImageInput(location, name))
    return images, problems


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
