"""Import folders of mask images: one instance-id PNG per image, or one PNG per instance.

Two layouts are recognised inside the source folder, with no option to set:

- **Per-instance masks** (2018 Data Science Bowl): ``<sample>/images/<image>`` and ``<sample>/masks/*.png``
  in sample folders below the source (``stage1_train/<id>/...`` or ``<id>/...``). Each mask file is one
  instance: every non-zero pixel belongs to it. Such a mask must be binary (0 and one other value): a
  mask with more values (a grayscale image, a 0..255 gradient, an instance-id mask) is an error for that
  mask, never one object covering the image. If the source folder itself holds ``images/`` (one image)
  and ``masks/``, it is read as a single sample.
- **Instance-id masks** (PennFudanPed): a folder of masks whose name contains ``mask`` (``PedMasks/``,
  ``masks/``) and a folder of images whose files pair with them by stem, a mask's stem may end in
  ``_mask`` (``PNGImages/X.png`` + ``PedMasks/X_mask.png``). ``images`` (the argument) names the images
  folder when it is elsewhere. Pixel value 0 is background and every other value 1..N is one instance
  (values are never binarised). An all-zero mask gives an image with no objects. A mask of more than 16
  values in which nine in ten neighbouring pixels of different values differ by a small step (at most
  twice the average gap between its values) is a gradient or a photo, not instance ids: an error.

Masks are files ending in ``.png``, ``.tif``, ``.tiff`` or ``.bmp``, of at most
:data:`~instaseg.formats.limits.MAX_IMAGE_PIXELS` pixels; modes ``1``, ``L``, ``P``, ``I;16`` and
``I`` are read as they are. An ``RGB``/``RGBA`` mask whose three colour channels are equal (grayscale saved
as colour) is read as its first channel; one with differing channels is an error for that mask (save masks
as single-channel grayscale). An alpha channel is ignored.

Classes: these layouts hold no class names, so every instance has one class: the single name in
``classes.txt`` at the source root when that file exists (``#`` comment lines ignored), else ``"object"``.

Problems: an image without any mask is a warning and the image is skipped (an image with no objects needs
an all-zero instance-id mask); a mask without an image is an error; a mask whose size differs from the
image's is an error for that mask; an empty per-instance mask is a warning and is dropped. Image pixels
are not decoded (header only); mask pixels are, to build the RLEs.
"""

from __future__ import annotations

import io
import os
import posixpath
import re

import numpy as np
from PIL import Image, UnidentifiedImageError

from .. import storage
from ..core import ClassMap, Record
from ..problems import DatasetError, ProblemLog
from .geometry import build_record
from .image_files import image_size, nfc, relative_name
from .limits import require_regular_file, size_problem

DEFAULT_CLASS = "object"
MASK_SUFFIXES = (".png", ".tif", ".tiff", ".bmp")
_MASK_STEM = re.compile(r"[_-]mask$", re.IGNORECASE)


def load_mask_png(
    source: str, images: str | None, log: ProblemLog, allow_outside_paths: bool = False
) -> tuple[ClassMap, list[Record]]:
    """Import a folder of mask images (local path or fsspec URL); see the module docstring for layouts.

    Only files listed under ``source`` (and ``images``) are read, so ``allow_outside_paths`` (accepted
    like every importer's) changes nothing.

    Returns a one-class map and one record per image that has masks, sorted by file name.

    Raises:
        DatasetError: the source is not a folder, ``classes.txt`` names more or less than one class, or
            no layout is recognised.
    """
    if not storage.exists(source) or not storage.is_dir(source):
        raise DatasetError("mask-png source must be a folder of images and masks", file=source)
    root = source if storage.is_url(source) else os.path.abspath(source)
    files = storage.list_files(root)  # one listing (one request on a bucket)
    relative = {file: relative_name(root, file) for file in files}
    class_map = ClassMap((_class_name(files, relative),))

    samples = _instance_samples(files, relative)
    if samples:
        return class_map, _load_per_instance(samples, relative, log)
    image_files = files if images is None else storage.list_files(images, storage.IMAGE_SUFFIXES)
    pairs = _pair_instance_id_masks(files, image_files, images is not None)
    if pairs is None:
        raise DatasetError(
            "no mask layout recognised: expected <id>/images/<image> with <id>/masks/*.png (one PNG per "
            "instance), or an images folder and a folder whose name contains 'mask' with files paired by "
            "stem (X.png + X_mask.png, one instance-id PNG per image)",
            file=source,
        )
    return class_map, _load_instance_ids(root, images, pairs, log)


def _class_name(files: list[str], relative: dict[str, str]) -> str:
    classes = [f for f in files if relative[f].lower() == "classes.txt"]
    if not classes:
        return DEFAULT_CLASS
    require_regular_file(classes[0])
    try:
        lines = storage.read_bytes(classes[0]).decode("utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise DatasetError(
            "classes.txt is not UTF-8 text; write one class name in it", file=classes[0]
        ) from None
    names = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    if len(names) != 1:
        raise DatasetError(
            f"classes.txt must name exactly one class (masks carry no class per instance), "
            f"it names {len(names)}: {names[:5]}",
            file=classes[0],
        )
    return names[0]


def _instance_samples(files: list[str], relative: dict[str, str]) -> dict[str, dict[str, list[str]]]:
    """Sample folder (relative, "" for the root) -> {"images": [...], "masks": [...]}, or {} if not this layout."""
    samples: dict[str, dict[str, list[str]]] = {}
    for file in files:
        parts = relative[file].split("/")
        if len(parts) < 2 or parts[-2].lower() not in ("images", "masks"):
            continue
        kind = parts[-2].lower()
        suffixes = storage.IMAGE_SUFFIXES if kind == "images" else MASK_SUFFIXES
        if file.lower().endswith(suffixes):
            samples.setdefault("/".join(parts[:-2]), {"images": [], "masks": []})[kind].append(file)
    if any(_is_one_sample(v) for k, v in samples.items() if k):
        return {k: v for k, v in samples.items() if k}
    # The source folder itself may be one sample.
    return {"": samples[""]} if "" in samples and _is_one_sample(samples[""]) else {}


def _is_one_sample(sample: dict[str, list[str]]) -> bool:
    """One image and masks that do not pair with it by stem (``images/``+``masks/`` of instance-id masks do)."""
    if len(sample["images"]) != 1 or not sample["masks"]:
        return False
    stem = _stem(sample["images"][0])
    return all(_mask_key(m) != stem for m in sample["masks"])


def _stem(location: str) -> str:
    return nfc(posixpath.splitext(storage.basename(location))[0])


def _mask_key(location: str) -> str:
    return _MASK_STEM.sub("", _stem(location))


def _load_per_instance(samples: dict, relative: dict[str, str], log: ProblemLog) -> list[Record]:
    records = []
    for sample in sorted(samples):
        image_files, mask_files = samples[sample]["images"], samples[sample]["masks"]
        if not image_files:
            log.error(
                f"{len(mask_files)} mask(s) but no image in {sample or '.'}/images; masks not used",
                file=storage.parent(mask_files[0]),
            )
            continue
        if len(image_files) > 1:
            log.error(
                f"{len(image_files)} images in {sample or '.'}/images, expected one (the masks cannot be "
                "matched to one of them); sample skipped",
                file=storage.parent(image_files[0]),
            )
            continue
        location = image_files[0]
        name = relative[location]
        if not mask_files:
            log.warn("image has no masks folder or no mask files; image skipped (not annotated)", image=name)
            continue
        size = image_size(log, location, None, None, None, name)
        if size is None:
            continue
        records.append(
            build_record(
                log,
                location=location,
                file_name=name,
                size=size,
                objects=_instance_masks(log, mask_files, name),
                image=name,
            )
        )
    return records


def _instance_masks(log: ProblemLog, mask_files: list[str], image: str):
    """The :func:`~.geometry.build_record` objects of per-instance mask files (non-zero pixels = object)."""
    for mask_file in mask_files:
        mask = _read_mask(log, mask_file, image)
        if mask is None:
            continue
        values = np.unique(mask)
        if len(values) > 2:
            log.error(
                f"a per-instance mask must be binary (0 = background, one value for the object), this one "
                f"has {len(values)} values ({_value_range(values)}): a grayscale image or an instance-id "
                "mask? mask not used",
                file=mask_file,
                image=image,
            )
            continue
        yield {"label": 1, "annotation_id": _stem(mask_file), "mask": mask > 0, "file": mask_file}


def _value_range(values: np.ndarray) -> str:
    return f"{values.min()}..{values.max()}"


def _looks_like_a_ramp(ids: np.ndarray, values: np.ndarray) -> bool:
    """Whether an instance-id mask is rather a grayscale image or a gradient: over 16 values, and nine in ten
    neighbouring non-zero pixels of different values differ by a small step (at most twice the average gap
    between the values present), where touching instances have ids differing by any amount."""
    if len(values) <= 16:
        return False
    step = max(1.0, 2.0 * float(values[-1] - values[0]) / (len(values) - 1))
    steps = []
    for a, b in ((ids[:, 1:], ids[:, :-1]), (ids[1:, :], ids[:-1, :])):
        both = (a != 0) & (b != 0) & (a != b)
        steps.append(np.abs(a[both].astype(np.int64) - b[both].astype(np.int64)))
    differences = np.concatenate(steps)
    return differences.size > 0 and float((differences <= step).mean()) >= 0.9


def _pair_instance_id_masks(files: list[str], image_files: list[str], images_given: bool):
    """``[(image location or None, mask location or None)]`` of the best folder pairing, or ``None``."""
    folders: dict[str, list[str]] = {}
    for file in files:
        if file.lower().endswith(MASK_SUFFIXES) and "mask" in storage.basename(storage.parent(file)).lower():
            folders.setdefault(storage.parent(file), []).append(file)
    image_folders: dict[str, list[str]] = {}
    for file in image_files:
        folder = storage.parent(file)
        if file.lower().endswith(storage.IMAGE_SUFFIXES) and (images_given or folder not in folders):
            image_folders.setdefault(folder, []).append(file)
    pairs = []
    for _, masks in sorted(folders.items()):
        by_key = {_mask_key(m): m for m in masks}
        best, best_count = None, 0
        for image_folder, candidates in sorted(image_folders.items()):
            count = sum(_stem(f) in by_key for f in candidates)
            if count > best_count:
                best, best_count = image_folder, count
        if best is None:
            continue
        by_stem = {_stem(f): f for f in image_folders[best]}
        pairs += [(by_stem.get(key), by_key.get(key)) for key in sorted(set(by_stem) | set(by_key))]
    return pairs or None


def _load_instance_ids(root: str, images: str | None, pairs, log: ProblemLog) -> list[Record]:
    records = []
    for location, mask_file in pairs:
        if location is None:
            log.error(
                f"mask has no image with the stem {_mask_key(mask_file)!r} in the images folder; "
                "mask not used",
                file=mask_file,
            )
            continue
        name = relative_name(images, location) if images is not None else relative_name(root, location)
        if mask_file is None:
            log.warn(
                "image has no instance-id mask (X.png needs X.png or X_mask.png in the masks folder); "
                "image skipped (for an image with no objects, add an all-zero mask)",
                image=name,
            )
            continue
        size = image_size(log, location, None, None, None, name)
        if size is None:
            continue
        width, height, _ = size
        ids = _read_mask(log, mask_file, name)
        if ids is None:
            continue
        if ids.shape != (height, width):
            log.error(
                f"mask is {ids.shape[1]}x{ids.shape[0]} but the image is {width}x{height}; image skipped",
                file=mask_file,
                image=name,
            )
            continue
        # Instance ids are kept as they are (never binarised); 0 is background.
        values = np.unique(ids[ids != 0])
        if _looks_like_a_ramp(ids, values):
            log.error(
                f"mask has {len(values)} values ({_value_range(values)}) that change in small steps between "
                "neighbouring pixels: a grayscale image or gradient, not instance ids (0 = background, 1..N = "
                "one object each); image skipped",
                file=mask_file,
                image=name,
            )
            continue
        objects = ({"label": 1, "annotation_id": int(value), "mask": ids == value} for value in values)
        records.append(
            build_record(
                log, location=location, file_name=name, size=size, objects=objects, file=mask_file, image=name
            )
        )
    return records


def _read_mask(log: ProblemLog, mask_file: str, image: str) -> np.ndarray | None:
    """The mask's values ``(H, W)`` (uint8/int32), or ``None`` after logging an error."""
    try:
        with Image.open(io.BytesIO(storage.read_bytes(mask_file))) as img:
            mode = img.mode
            problem = size_problem(*img.size)
            if problem:
                log.error(f"mask {problem}; not used", file=mask_file, image=image)
                return None
            values = np.asarray(img)
    except Image.DecompressionBombError:
        log.error("mask is far too large (PIL refuses it as a decompression bomb); not used", file=mask_file)
        return None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, MemoryError) as e:
        log.error(f"mask file unreadable ({e}); not used", file=mask_file, image=image)
        return None
    if values.ndim == 3:
        if mode in ("LA", "PA"):
            return values[..., 0]
        colour = values[..., :3]
        if (colour == colour[..., :1]).all():
            return colour[..., 0]
        log.error(
            f"mask is {mode} with differing colour channels; masks must be single-channel grayscale "
            "(mode L, P or I;16) with 0 = background; mask not used",
            file=mask_file,
            image=image,
        )
        return None
    return values
