"""Write an evaluation to a folder: ``report.json`` (for programs), ``report.md`` (for a person) and the PNGs
(``pr_segm.png``, ``pr_bbox.png``, ``confusion.png``). The folder may be local or a bucket URL."""

from __future__ import annotations

from .. import storage
from .evaluator import NA, Evaluation
from .plots import confusion_png, pr_curves_png

_SUMMARY_ROWS = (
    ("AP", "AP @ IoU 0.50:0.95 (the COCO score)"),
    ("AP50", "AP @ IoU 0.50"),
    ("AP75", "AP @ IoU 0.75"),
    ("APs", "AP, small objects (< 32² px)"),
    ("APm", "AP, medium objects (32²–96² px)"),
    ("APl", "AP, large objects (> 96² px)"),
)


def write_report(evaluation: Evaluation, out: str) -> dict[str, str]:
    """Write the report files into ``out``; returns file kind -> location."""
    written = {}
    figures = {}
    for metrics in (evaluation.segm, evaluation.bbox):
        if metrics is not None:
            figures[f"pr_{metrics.iou_type}"] = pr_curves_png(metrics, evaluation.class_names)
    figures["confusion"] = confusion_png(evaluation.matching, evaluation.class_names)
    for name, png in figures.items():
        written[name] = storage.join(out, f"{name}.png")
        storage.write_bytes(written[name], png)
    written["json"] = storage.join(out, "report.json")
    storage.write_json(written["json"], evaluation.to_json(), indent=2)
    written["markdown"] = storage.join(out, "report.md")
    storage.write_bytes(written["markdown"], report_markdown(evaluation, sorted(figures)).encode("utf-8"))
    return written


def _value(v) -> str:
    return NA if v is None or v == NA else f"{v:.3f}"


def _percent(v) -> str:
    return NA if v is None else f"{100 * v:.1f} %"


def report_markdown(evaluation: Evaluation, figures: list[str]) -> str:
    """The text of ``report.md``; ``figures`` are the PNG names (without ``.png``) written beside it."""
    numbers = evaluation.to_json()  # unavailable values are "n/a"
    lines = [
        *_header_section(evaluation),
        *_plain_words_section(evaluation),
        *_coco_section(evaluation, numbers),
        *_per_class_section(evaluation, numbers),
        *_losses_section(evaluation),
        *_confusion_section(evaluation),
        *_figures_section(figures),
    ]
    if evaluation.notes:
        lines += ["## Notes", ""] + [f"- {note}" for note in evaluation.notes] + [""]
    return "\n".join(lines)


def _kind(evaluation: Evaluation) -> str:
    """What the matching overlaps: ``"mask"`` or ``"box"``."""
    return "mask" if evaluation.matching.iou_type == "segm" else "box"


def _header_section(e: Evaluation) -> list[str]:
    """Title, what was evaluated on what, and the class names."""
    lines = ["# Evaluation report", ""]
    for key, label in (
        ("checkpoint", "Model"),
        ("predictions", "Predictions"),
        ("data", "Data"),
        ("split", "Split"),
    ):
        if key in e.source:
            lines.append(f"- **{label}:** `{e.source[key]}`")
    return lines + [
        f"- **Images:** {e.images}, with {e.instances} ground-truth objects; **predictions:** "
        f"{e.predictions}",
        f"- **Classes:** {', '.join(e.class_names)}",
        "",
    ]


def _plain_words_section(e: Evaluation) -> list[str]:
    """Recall, precision, F1, mean IoU and AP in sentences."""
    m, kind = e.matching, _kind(e)
    lines = ["## In plain words", ""]
    found = m.tp + m.fn
    if found:
        who = "the model" if "checkpoint" in e.source else "the predictions"
        lines.append(
            f"Keeping predictions with a score of at least {m.score_threshold:g}, {who} found "
            f"**{m.tp} of {found}** objects (recall {_percent(m.recall)}); of the {m.tp + m.fp} "
            f"objects reported, {m.tp} were right (precision {_percent(m.precision)}); "
            f"F1 {_value(m.f1)}. An object counts as found when a prediction of its class overlaps "
            f"it with {kind} IoU ≥ {m.iou_threshold:g}."
        )
    else:
        lines.append("There is no ground-truth object on these images.")
    if m.mean_iou is not None:
        lines.append(
            f"The {kind}s of found objects overlap the ground truth by **{_percent(m.mean_iou)}** "
            "on average (mean IoU)."
        )
    main = e.segm or e.bbox
    if main is not None and main.summary["AP"] is not None:
        lines.append(
            f"COCO {kind} AP, the usual single score (0 to 1, higher is better), is "
            f"**{main.summary['AP']:.3f}**."
        )
    return lines + [""]


def _coco_section(e: Evaluation, j: dict) -> list[str]:
    """The COCO AP/AR table, masks and boxes side by side; ``j`` is ``e.to_json()``."""
    lines = [
        "## COCO metrics",
        "",
        "Average precision (AP) over every score threshold, and average recall (AR) with at most "
        f"N detections per image (max detections: {e.config.max_dets}).",
        "",
        "| Metric | Masks (segm) | Boxes (bbox) |",
        "|---|---:|---:|",
    ]
    ar_rows = [
        (k, f"AR, at most {k[2:]} detection{'s' if k != 'AR1' else ''} per image")
        for k in j["bbox"]
        if k.startswith("AR") and k[2:].isdigit()
    ]
    ar_rows += [("ARs", "AR, small objects"), ("ARm", "AR, medium objects"), ("ARl", "AR, large objects")]
    for key, label in (*_SUMMARY_ROWS, *ar_rows):
        segm = j["segm"][key] if e.segm else NA
        lines.append(f"| {label} | {_value(segm)} | {_value(j['bbox'][key])} |")
    return lines + ["", "n/a: not available (no masks, or no ground truth of that size).", ""]


def _per_class_section(e: Evaluation, j: dict) -> list[str]:
    """One table row per class: objects, mask/box AP, precision, recall, F1; ``j`` is ``e.to_json()``."""
    m = e.matching
    lines = [
        "## Per class",
        "",
        f"AP at IoU 0.50:0.95 and 0.50; precision, recall and F1 at score ≥ {m.score_threshold:g} "
        f"and {_kind(e)} IoU ≥ {m.iou_threshold:g}.",
        "",
        "| Class | Objects | Mask AP | Mask AP50 | Box AP | Box AP50 | Precision | Recall | F1 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in j["per_class"].items():
        segm, bbox, match = row["segm"], row["bbox"], row["matching"]
        cells = [
            name,
            str(row["instances"]),
            _value(segm["AP"] if segm != NA else NA),
            _value(segm["AP50"] if segm != NA else NA),
            _value(bbox["AP"]),
            _value(bbox["AP50"]),
            _value(match["precision"]),
            _value(match["recall"]),
            _value(match["f1"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def _losses_section(e: Evaluation) -> list[str]:
    """The losses per split (total and each component), or n/a."""
    lines = ["## Losses", ""]
    if e.losses:
        # The training module names the total "loss" (torchvision's components are "loss_*").
        total = "loss" if any("loss" in v for v in e.losses.values()) else "total"
        components = sorted({c for split in e.losses.values() for c in split if c != total})
        lines += [
            "| Split | Total | " + " | ".join(components) + " |",
            "|---|---:|" + "---:|" * len(components),
        ]
        for split, values in e.losses.items():
            cells = [f"{values.get(c, float('nan')):.4f}" for c in (total, *components)]
            lines.append(f"| {split} | " + " | ".join(cells) + " |")
    else:
        lines.append("n/a (see the notes below).")
    return lines + [""]


def _confusion_section(e: Evaluation) -> list[str]:
    """The confusion matrix, background first."""
    m = e.matching
    labels = ["background", *e.class_names]
    lines = [
        "## Confusion matrix",
        "",
        f"Rows: true class; columns: predicted class (score ≥ {m.score_threshold:g}, {_kind(e)} IoU ≥ "
        f"{m.iou_threshold:g}, matched regardless of class). The *background* row counts false alarms, "
        "the *background* column missed objects.",
        "",
        "| true \\ predicted | " + " | ".join(labels) + " |",
        "|---|" + "---:|" * len(labels),
    ]
    for row, label in enumerate(labels):
        cells = ["–" if row == col == 0 else str(int(m.confusion[row, col])) for col in range(len(labels))]
        lines.append(f"| **{label}** | " + " | ".join(cells) + " |")
    return lines + [""]


def _figures_section(figures: list[str]) -> list[str]:
    """Links to the PNGs written beside the report; nothing when there are none."""
    if not figures:
        return []
    lines = ["## Figures", ""]
    titles = {
        "pr_segm": "Precision-recall, masks",
        "pr_bbox": "Precision-recall, boxes",
        "confusion": "Confusion matrix",
    }
    for name in sorted(figures, key=["pr_segm", "pr_bbox", "confusion"].index):
        lines += [f"![{titles.get(name, name)}]({name}.png)", ""]
    return lines
