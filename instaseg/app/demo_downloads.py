"""The web demo's downloads of one photo, at full size, written by ``instaseg predict``'s own writer.

:func:`write_downloads` runs :class:`~instaseg.predict.outputs.OutputWriter` (the converters of
``predict --save``) into a fresh folder and returns the files a person downloads: overlay JPEG, binary PNG,
R/G/B PNG, instance-id PNG, a ZIP of the per-instance mask PNGs, COCO results JSON and Label Studio JSON.
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from pathlib import Path

from ..core import ClassMap, Instances
from ..predict.inputs import ImageInput
from ..predict.outputs import LabelStudioOptions, OutputWriter

DOWNLOAD_KINDS = ["overlay", "binary", "rgb", "ids", "instance-masks", "json", "label-studio"]
KEPT_FOLDERS = 64  # download folders kept on disk; Gradio serves its own copies of the files


def new_folder(root: Path, kept: int = KEPT_FOLDERS) -> Path:
    """A fresh folder under ``root``; the oldest beyond ``kept`` are removed."""
    root.mkdir(parents=True, exist_ok=True)
    folders = sorted(root.iterdir(), key=lambda p: p.stat().st_mtime)
    for old in folders[: max(0, len(folders) - kept + 1)]:
        shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(dir=root))


def write_downloads(
    root: Path, name: str, photo, instances: Instances, class_map: ClassMap, model_version: str
) -> list[str]:
    """Write every download of one photo (RGB uint8 ``(H, W, 3)``, full size) and its ``instances``.

    Returns the file paths: ``<stem>_overlay.jpg``, ``_binary.png``, ``_rgb.png``, ``_ids.png``,
    ``_instances.zip`` (``001_<class>.png``...), ``_coco.json`` (COCO results with ``image_id`` 1,
    ``file_name``, ``category_id`` 1..K) and ``_label_studio.json`` (one task, polygon pre-annotations).
    """
    folder = new_folder(root)
    stem = Path(name).stem or "photo"
    image_name = f"{stem}{Path(name).suffix or '.png'}"
    work = folder / "work"
    writer = OutputWriter(
        str(work), DOWNLOAD_KINDS, class_map, LabelStudioOptions(model_version=model_version)
    )
    image = ImageInput(location=image_name, name=image_name)
    writer.write(image, photo, instances)
    written = writer.finish([image])
    out = []
    for kind, suffix in (("overlay", ".jpg"), ("binary", ".png"), ("rgb", ".png"), ("ids", ".png")):
        target = folder / f"{stem}_{kind}{suffix}"
        Path(writer.path(kind, image_name)).replace(target)
        out.append(target)
    archive = folder / f"{stem}_instances.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zipped:  # PNGs are compressed already
        instance_folder = Path(writer.path("instances", image_name))
        for png in sorted(instance_folder.glob("*.png")) if instance_folder.is_dir() else []:
            zipped.write(png, png.name)
    out.append(archive)
    for kind, suffix in (("json", "_coco.json"), ("label-studio", "_label_studio.json")):
        target = folder / f"{stem}{suffix}"
        Path(written[kind]).replace(target)
        out.append(target)
    shutil.rmtree(work, ignore_errors=True)
    return [str(p) for p in out]
