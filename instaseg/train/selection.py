"""Which epoch ``best.pt`` keeps: the rules of ``train --select``, as pure functions of the epoch's numbers.

- ``loss``: the lowest validation loss.
- ``map``: the highest validation mask mAP, measured after every epoch.
- ``last``: the last epoch.
- ``auto`` (``train``'s default): among the epochs of the last quarter of the schedule (:data:`WINDOW`:
  progress in time under ``--minutes``, in epochs otherwise), where the mask mAP is measured, the latest
  whose mAP is at least :data:`KEEP` (three quarters) of the best mAP measured up to it. So the last epoch,
  unless its validation mAP collapsed (a diverged run, or one overfitting a tiny dataset); a fall of the
  size a few validation images give between late epochs is not taken for one. Before the window opens
  ``best.pt`` follows the last epoch, so an interrupted run still has one.

Why ``auto``: with warmup + cosine laid over the schedule the model at the end is usually the best one, and
the numbers of a small validation split are noise. Measured on held-out DSB nuclei (issue 23, 100 images,
light model from scratch, 6 validation images): after 15 minutes the lowest loss picked epoch 12 of 16 (mask
AP 0.422) against 0.450 for the last epoch; after 8 minutes epoch 8 of 10, 0.394 against 0.414. The highest
mAP of the window was fooled the same way: ``bench/quality.py --minutes 15 --runs 2`` (AMD EPYC Zen 4)
picked epochs 23 and 22 of 27 on DSB's 4 validation images, test mask AP 44.8 and 43.7 against 46.3 and
44.7 for the last epoch; on PennFudan epoch 10 of 12, 20.9 against 21.9. An absolute margin of 0.03 was
fooled too: in a later DSB run the mAP of the 4 validation images swung between 0.32 and 0.40 from one late
epoch to the next (up to 20 % of the best), the last epoch's 0.366 was 0.033 below epoch 31's 0.399, and
epoch 31 scored 42.4 test mask AP against 45.0 for the last.

A score is lower-is-better (``FitResult.best_score`` keeps it across ``--resume``).
"""

from __future__ import annotations

import math

# The share of the schedule at its end whose epochs ``auto`` scores by mask mAP.
WINDOW = 0.25
# The share of the best mAP measured so far in the window that an epoch's mAP must reach to be kept by
# ``auto``: below it the run collapsed; above it the swing is the noise of a few validation images between
# late epochs (up to 20 % measured on DSB's 4).
KEEP = 0.75
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


def best_map(history: list[dict]) -> float | None:
    """The highest validation mask mAP measured in ``history`` (rows of ``metrics.csv``), ``None`` if none."""
    maps = [float(row["val_map"]) for row in history if math.isfinite(row.get("val_map", math.nan))]
    return max(maps) if maps else None


def epoch_score(
    rule: str, epoch: int, val_loss: float, val_map: float | None, earlier_best: float | None = None
) -> float:
    """The epoch's score under ``rule`` (lower is better); ``val_map`` is ``None`` when it was not measured,
    ``earlier_best`` the highest mAP measured before this epoch (``auto`` only).

    ``auto``: in the window, a negative score that falls with the epoch when ``val_map`` is at least
    :data:`KEEP` times ``earlier_best`` (or there is none), ``inf`` (never kept) otherwise; before the
    window a positive score that falls with the epoch. ``last``: falls with the epoch.
    """
    if rule == "loss":
        return float(val_loss)
    if rule == "map":
        return -float(val_map)
    if rule == "last" or val_map is None:
        return _BEFORE_WINDOW / (1 + epoch)
    if earlier_best is not None and not float(val_map) >= KEEP * earlier_best:
        return math.inf
    return -1.0 - 1e-6 * epoch


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
    images = f"{val_images} validation image{'s' * (val_images != 1)}"
    if rule == "map":
        scope = ""
    else:
        top = max(float(r["val_map"]) for r in measured if r["epoch"] <= best_epoch)
        scope = (
            f", the latest of {where} (the last {WINDOW:.0%} of the schedule) with at least {KEEP:.0%} "
            f"of their best, {top:.3f}"
        )
    tail = (
        ""
        if best_epoch == last
        else f"; the last epoch, {last}, had {history[-1].get('val_map', math.nan):.3f}"
    )
    return (
        f"best.pt: epoch {best_epoch} (mask mAP on {images} {row['val_map']:.3f}{scope}; "
        f"the loss would have picked epoch {by_loss}{tail})"
    )
