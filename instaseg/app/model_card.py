"""The model card of the web demo: classes, the model version, training data size and test mask mAP.

Read from what a training run leaves beside its checkpoint (``instaseg train --out RUN`` writes
``RUN/best.pt`` and ``RUN/splits.json``; ``instaseg evaluate RUN/best.pt DATA`` writes
``RUN/eval-test/report.json``; ``instaseg quickstart`` puts ``splits.json`` and ``evaluation/report.json``
one folder up). A file that is not there leaves its line out; nothing is guessed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

REPORT_PLACES = ("eval-test/report.json", "../evaluation/report.json", "../eval-test/report.json")
SPLIT_PLACES = ("splits.json", "../splits.json")


@dataclass(frozen=True)
class ModelCard:
    """What the page says about the model.

    Attributes:
        file: the checkpoint's file name.
        classes: class names in label order.
        version: the ``model_version`` the Label Studio backend reports for this file
            (:attr:`~instaseg.app.service.ModelService.version`).
        train_images: images of the run's train split (``None`` when no split file is beside it).
        test_mask_map: COCO mask AP @ IoU 0.50:0.95 on the test split, 0..1 (``None`` without a report).
        test_images: images the test report scored.
        report: where the report was read.
    """

    file: str
    classes: tuple[str, ...]
    version: str
    train_images: int | None = None
    test_mask_map: float | None = None
    test_images: int | None = None
    report: str | None = None


def _read_json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def model_card(service) -> ModelCard:
    """The card of a loaded :class:`~instaseg.app.service.ModelService`."""
    folder = service.path.parent
    train_images = None
    for place in SPLIT_PLACES:
        splits = _read_json(folder / place)
        if splits is not None and isinstance(splits.get("train"), list):
            train_images = len(splits["train"])
            break
    mask_map = test_images = report_path = None
    for place in REPORT_PLACES:
        report = _read_json(folder / place)
        segm = report.get("segm") if report else None
        if isinstance(segm, dict) and isinstance(segm.get("AP"), int | float):
            mask_map, report_path = float(segm["AP"]), str((folder / place).resolve())
            test_images = report.get("images") if isinstance(report.get("images"), int) else None
            break
    return ModelCard(
        service.path.name,
        tuple(service.class_map.names),
        service.version,
        train_images,
        mask_map,
        test_images,
        report_path,
    )


def card_markdown(card: ModelCard, max_pixels: int) -> str:
    """The card as Markdown for the page."""
    lines = [
        f"**Model** `{card.file}` · version `{card.version}`",
        f"**Classes** ({len(card.classes)}): {', '.join(card.classes)}",
        "**Training images**: "
        + (str(card.train_images) if card.train_images is not None else "unknown (no splits.json beside it)"),
    ]
    if card.test_mask_map is not None:
        images = f" on {card.test_images} test images" if card.test_images else ""
        lines.append(f"**Test mask mAP**: {100 * card.test_mask_map:.1f}{images}")
    else:
        lines.append("**Test mask mAP**: not measured (no eval-test/report.json beside the checkpoint)")
    lines.append(f"**Largest photo**: {max_pixels / 1e6:g} megapixels")
    return "  \n".join(lines)
