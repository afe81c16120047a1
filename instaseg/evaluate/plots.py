"""PNG figures of an evaluation: precision-recall curves and the confusion matrix (matplotlib, Agg backend).

Each function returns the PNG bytes; the caller decides where they go (local path or bucket).
"""

from __future__ import annotations

import io

import numpy as np

from .cocoeval import CocoMetrics
from .matching import MatchResult


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display: figures are only written to files
    import matplotlib.pyplot as plt

    return plt


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def pr_curves_png(metrics: CocoMetrics, class_names: tuple[str, ...]) -> bytes:
    """Interpolated precision against recall (COCO's 101 recall points, area "all", ``max_dets``), one line
    per class with ground truth, at IoU 0.50 (solid) and 0.75 (dashed); the legend gives AP50/AP75."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6.4, 4.8))
    recall = metrics.recall_thresholds
    at = {iou: int(np.argmin(abs(metrics.iou_thresholds - iou))) for iou in (0.5, 0.75)}
    colors = plt.get_cmap("tab10")
    drawn = 0
    for k, name in enumerate(class_names):
        curve50 = metrics.precision[at[0.5], :, k]
        if (curve50 < 0).all():
            continue  # no ground truth of this class: no curve
        color = colors(drawn % 10)
        ap50, ap75 = metrics.per_class[name]["AP50"], metrics.per_class[name]["AP75"]
        axes.plot(recall, np.clip(curve50, 0, 1), color=color, label=f"{name} (AP50 {ap50:.3f})")
        axes.plot(
            recall,
            np.clip(metrics.precision[at[0.75], :, k], 0, 1),
            color=color,
            linestyle="--",
            label=f"{name} @0.75 (AP75 {ap75:.3f})",
        )
        drawn += 1
    kind = "mask" if metrics.iou_type == "segm" else "box"
    axes.set(
        xlabel="recall",
        ylabel="precision",
        xlim=(0, 1),
        ylim=(0, 1.02),
        title=f"Precision-recall, {kind} IoU 0.50 (solid) and 0.75 (dashed)",
    )
    axes.grid(alpha=0.3)
    if drawn:
        axes.legend(loc="lower left", fontsize="small")
    else:
        axes.text(0.5, 0.5, "no ground truth", ha="center", va="center")
    try:
        return _png(figure)
    finally:
        plt.close(figure)


def confusion_png(matching: MatchResult, class_names: tuple[str, ...]) -> bytes:
    """Counts of (true class, predicted class) pairs with background, as in :class:`.matching.MatchResult`."""
    plt = _pyplot()
    labels = ["background", *class_names]
    matrix = matching.confusion
    size = max(4.0, 0.7 * len(labels) + 2)
    figure, axes = plt.subplots(figsize=(size, size * 0.85))
    image = axes.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    axes.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axes.set_yticks(range(len(labels)), labels)
    axes.set(xlabel="predicted class", ylabel="true class")
    kind = "mask" if matching.iou_type == "segm" else "box"
    axes.set_title(
        f"Confusion matrix ({kind} IoU >= {matching.iou_threshold:g}, score >= {matching.score_threshold:g})",
        fontsize="medium",
    )
    high = matrix.max() if matrix.size else 0
    for row in range(len(labels)):
        for col in range(len(labels)):
            if row == 0 and col == 0:
                axes.text(col, row, "-", ha="center", va="center", color="gray")
                continue
            value = int(matrix[row, col])
            axes.text(
                col,
                row,
                str(value),
                ha="center",
                va="center",
                color="white" if high and value > high / 2 else "black",
            )
    try:
        return _png(figure)
    finally:
        plt.close(figure)
