"""What a person reads of a run, all under RUN_DIR, rewritten after each epoch:

- ``metrics.csv``: one row per epoch (``epoch``, ``lr``, ``seconds``, ``train_*``, ``val_*`` losses, and
  ``val_map`` when measured); the last row may add ``test_*`` losses at the end of the run;
- ``tensorboard/``: event files with the same scalars (``tensorboard --logdir RUN_DIR``);
- ``loss_curve.png``: train / validation (/ test) total loss per epoch;
- ``config.yaml``: the resolved training and model configuration.
"""

from __future__ import annotations

import csv
from pathlib import Path

import yaml

from ..model.architectures import LOSS_NAMES


def write_config(run_dir: Path, train_config: dict, model_config: dict, class_names: list[str]) -> Path:
    path = run_dir / "config.yaml"
    payload = {"train": train_config, "model": model_config, "class_names": list(class_names)}
    path.write_text(yaml.safe_dump(payload, sort_keys=False))
    return path


def write_metrics_csv(run_dir: Path, history: list[dict]) -> Path:
    """All epochs' metrics as CSV; columns are the union of keys, in first-seen order."""
    columns: list[str] = []
    for row in history:
        columns.extend(k for k in row if k not in columns)
    path = run_dir / "metrics.csv"
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in history:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    tmp.replace(path)
    return path


def plot_losses(run_dir: Path, history: list[dict]) -> Path:
    """``loss_curve.png``: total train/val/test loss against epoch (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4), dpi=100)
    axes = figure.subplots()
    epochs = [row["epoch"] for row in history]
    for key, label in (("train_loss", "train"), ("val_loss", "validation"), ("test_loss", "test")):
        points = [(e, row[key]) for e, row in zip(epochs, history, strict=True) if row.get(key) is not None]
        if points:
            axes.plot(*zip(*points, strict=True), marker="o", label=label)
    axes.set_xlabel("epoch")
    axes.set_ylabel("loss (sum of the 5 Mask R-CNN losses)")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path = run_dir / "loss_curve.png"
    figure.savefig(path)
    return path


class TensorBoardLog:
    """Scalars of each epoch in ``RUN_DIR/tensorboard``; on resume, events after ``start_epoch`` are purged."""

    def __init__(self, run_dir: Path, start_epoch: int = 0):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=start_epoch + 1 or None)

    def write(self, row: dict) -> None:
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)):
                group, _, name = key.partition("_")
                self.writer.add_scalar(f"{group}/{name}" if name else key, value, row["epoch"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def budget_line(minutes: float, used_before: float, epochs: int) -> str:
    """The line that says how a time budget shapes the run (:mod:`instaseg.train.schedule`)."""
    before = f", {used_before / 60:.1f} of them used before this resume" if used_before else ""
    return (
        f"time budget: {minutes:g} minutes{before}; the learning rate follows the time used and reaches its "
        f"floor when the budget runs out (validation and checkpoints included); at most {epochs} epochs"
    )


def epoch_position(row: dict, epochs: int, minutes: float = 0.0) -> str:
    """Where the run is: ``epoch 6/20``, or under a time budget (where ``epochs`` is only an upper bound)
    ``epoch 6 · 4.1 of 8 min`` from the row's ``minutes_used``."""
    if minutes and "minutes_used" in row:
        return f"epoch {row['epoch']} · {row['minutes_used']:.1f} of {minutes:g} min"
    return f"epoch {row['epoch']}/{epochs}"


def epoch_summary(row: dict, epochs: int, best: bool, minutes: float = 0.0) -> str:
    """The line a person reads after each epoch: where the run is (:func:`epoch_position`), losses
    (validation per component), mAP, lr, seconds, and ``-> best.pt`` when ``best``: the epoch was written
    to ``best.pt`` under ``--select`` (under ``auto`` every epoch before its mAP window is, so the mark
    does not say that the validation loss fell)."""
    parts = " ".join(f"{n.removeprefix('loss_')[:5]} {row['val_' + n]:.3f}" for n in LOSS_NAMES)
    test = f"  test {row['test_loss']:.4f}" if "test_loss" in row else ""
    metric = f"  mAP {row['val_map']:.4f}" if "val_map" in row else ""
    return (
        f"{epoch_position(row, epochs, minutes)}  train {row['train_loss']:.4f}  val {row['val_loss']:.4f} "
        f"({parts}){test}{metric}  lr {row['lr']:.2e}  {row['seconds']:.0f}s"
        + ("  -> best.pt" if best else "")
    )
