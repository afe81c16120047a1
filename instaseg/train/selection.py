"""Which epoch ``best.pt`` keeps: the rules of ``train --select``, as pure functions of the epoch's numbers.

- ``loss``: the lowest validation loss.
- ``map``: the highest validation mask mAP, measured after every epoch.
- ``last``: the last epoch.
- ``auto`` (``train``'s default): the highest validation mask mAP among the epochs of the last quarter of
  the schedule (:data:`WINDOW`: progress in time under ``--minutes``, in epochs otherwise), measured only
  there; an equal mAP goes to the later epoch. Before the window opens ``best.pt`` follows the last epoch,
  so an interrupted run still has one.

Why ``auto``: with warmup + cosine laid over the schedule the model at the end is usually the best one, and
the validation loss of a small split is noise. Measured on held-out DSB nuclei (issue 23, 100 images, light
model from scratch, 6 validation images): after 15 minutes the lowest loss picked epoch 12 of 16 (mask AP
0.422) against 0.450 for the last epoch; after 8 minutes epoch 8 of 10, 0.394 against 0.414. The mAP in the
last quarter costs a few predictions of the validation images per epoch there, and still catches a late
epoch that is worse than the one before it (the last epoch alone would not).

A score is lower-is-better (``FitResult.best_score`` keeps it across ``--resume``).
"""

from __future__ import annotations

import math

# The share of the schedule at its end whose epochs ``auto`` scores by mask mAP.
WINDOW = 0.25
# Scores of epochs before the window: positive and decreasing, so each is better than the one before and
# any mAP (a score <= 0) is better than all of them.
_BEFORE_WINDOW = 1.0


def schedule_progress(epoch: int, epochs: int, time_progress: float) -> float:
    """How far through its schedule a run is after ``epoch`` of at most ``epochs``: the larger of the share
    of epochs and of the time budget used (``time_progress``, 0 without a budget), 0..1."""
    return min(1.0, max(epoch / max(1, epochs), time_progress))


def in_window(progress: float) -> bool:
    """Whether an epoch that ended at ``progress`` (0..1) of the schedule, past its first 75 %, is scored by
    ``auto``'s mAP (epochs 13-16 of 16; 4 of 4)."""
    return progress > 1.0 - WINDOW + 1e-9


def needs_map(rule: str, window_open: bool) -> bool:
    """Whether the epoch's mask mAP must be measured under ``rule``."""
    return rule == "map" or (rule == "auto" and window_open)


def epoch_score(rule: str, epoch: int, val_loss: float, val_map: float | None) -> float:
    """The epoch's score under ``rule`` (lower is better); ``val_map`` is ``None`` when it was not measured.

    ``auto``: ``-mAP`` minus a tie-breaker that favours later epochs, or (before the window) a positive score
    that falls with the epoch. ``last``: falls with the epoch.
    """
    if rule == "loss":
        return float(val_loss)
    if rule == "map":
        return -float(val_map)
    later = 1e-9 * epoch  # an equal mAP goes to the later epoch, and each epoch beats the one before
    if rule == "last" or val_map is None:
        return _BEFORE_WINDOW / (1 + epoch)
    return -float(val_map) - later


def selection_line(rule: str, history: list[dict], best_epoch: int, val_images: int) -> str:
    """The line that says which epoch ``best.pt`` holds and why, e.g. ``best.pt: epoch 16 (mask mAP on 6
    validation images 0.470; the loss would have picked epoch 12)``."""
    if not history:
        return "best.pt: no epoch finished"
    losses = [
        (row["val_loss"], row["epoch"]) for row in history if math.isfinite(row.get("val_loss", math.nan))
    ]
    by_loss = min(losses)[1] if losses else None
    row = next((r for r in history if r["epoch"] == best_epoch), history[-1])
    last = history[-1]["epoch"]
    if rule == "loss":
        return f"best.pt: epoch {best_epoch} (lowest validation loss on {val_images} validation image{'s' * (val_images != 1)}, {row['val_loss']:.4f})"
    if rule == "last":
        return f"best.pt: epoch {best_epoch}, the last (--select last; the loss would have picked epoch {by_loss})"
    measured = [r for r in history if "val_map" in r]
    if "val_map" not in row:  # auto, interrupted before the window: the last epoch
        return (
            f"best.pt: epoch {best_epoch}, the last (the run ended before the last {WINDOW:.0%} of its schedule, "
            f"where --select auto compares mask mAP; the loss would have picked epoch {by_loss})"
        )
    where = (
        f"epochs {measured[0]['epoch']}-{measured[-1]['epoch']}"
        if len(measured) > 1
        else f"epoch {measured[0]['epoch']}"
    )
    scope = "" if rule == "map" else f", compared over {where}, the last {WINDOW:.0%} of the schedule"
    tail = (
        ""
        if best_epoch == last
        else f"; the last epoch, {last}, had {history[-1].get('val_map', math.nan):.3f}"
    )
    return (
        f"best.pt: epoch {best_epoch} (mask mAP on {val_images} validation image{'s' * (val_images != 1)} {row['val_map']:.3f}{scope}; "
        f"the loss would have picked epoch {by_loss}{tail})"
    )
