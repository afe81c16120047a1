"""Training runs on tiny data: exact resume, early stopping, what a run writes, bad input."""

from __future__ import annotations

import csv

import pytest
import torch

from instaseg.model.config import ModelConfig
from instaseg.problems import DatasetError
from instaseg.train.config import TrainConfig
from instaseg.train.fit import fit
from tests.train.factories import toy_records

MODEL = ModelConfig(arch="maskrcnn_resnet18_fpn", num_classes=2, image_size=64, pretrained_backbone=False)


def config(**changes) -> TrainConfig:
    values = dict(
        weights="none", epochs=2, batch_size=2, lr=0.01, warmup_steps=1, device="cpu", workers=0, seed=5
    )
    values.update(changes)
    return TrainConfig(**values)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    class_map, records = toy_records(tmp_path_factory.mktemp("toy"), count=6)
    return class_map, {"train": records[:4], "val": records[4:5], "test": records[5:]}


@pytest.mark.slow
def test_resume_ends_with_the_same_weights(toy, tmp_path):
    class_map, splits = toy
    straight = fit(splits, class_map, config(), MODEL, tmp_path / "straight")
    first = fit(splits, class_map, config(), MODEL, tmp_path / "resumed", stop_after=1)
    assert [row["epoch"] for row in first.history] == [1]
    resumed = fit(splits, class_map, config(), MODEL, tmp_path / "resumed", resume=True)
    assert [row["epoch"] for row in resumed.history] == [1, 2]
    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)
    for name, tensor in a["model"].items():
        torch.testing.assert_close(b["model"][name], tensor, rtol=1e-5, atol=1e-6, msg=name)
    for key in ("train_loss", "val_loss", "test_loss"):
        assert resumed.history[1][key] == pytest.approx(straight.history[1][key], rel=1e-5)
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()

    # what a person reads
    run = tmp_path / "straight"
    for name in ("best.pt", "last.pt", "metrics.csv", "loss_curve.png", "config.yaml"):
        assert (run / name).is_file(), name
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert rows[0]["test_loss"] == "" and float(rows[-1]["test_loss"]) > 0  # measured once, at the end
    for column in (
        "train_loss",
        "val_loss",
        "val_loss_classifier",
        "val_loss_box_reg",
        "val_loss_mask",
        "val_loss_objectness",
        "val_loss_rpn_box_reg",
        "lr",
    ):
        assert float(rows[0][column]) >= 0, column
    best = torch.load(run / "best.pt", weights_only=True)
    assert best["epoch"] == straight.best_epoch and "optimizer" not in best


@pytest.mark.slow
def test_early_stopping_and_time_budget(toy, tmp_path):
    class_map, splits = toy
    # selection through the --select map hook: mAP improves at epoch 2 only, patience 1 stops after epoch 3
    maps = {1: 0.5, 2: 0.7, 3: 0.6, 4: 0.9}
    result = fit(
        splits,
        class_map,
        config(epochs=4, patience=1, select="map"),
        MODEL,
        tmp_path / "a",
        select_metric=lambda model, epoch: maps[epoch],
    )
    assert result.stop_reason.startswith("early stop") and [r["epoch"] for r in result.history] == [1, 2, 3]
    assert result.best_epoch == 2 and [r["val_map"] for r in result.history] == [0.5, 0.7, 0.6]
    assert torch.load(tmp_path / "a" / "best.pt", weights_only=True)["epoch"] == 2
    result = fit(splits, class_map, config(epochs=3, minutes=1e-6), MODEL, tmp_path / "b")
    assert "time budget" in result.stop_reason and len(result.history) == 1


def test_unusable_splits_are_refused(toy, tmp_path):
    class_map, splits = toy
    with pytest.raises(DatasetError, match="train split has no images"):
        fit({**splits, "train": []}, class_map, config(), MODEL, tmp_path)
    with pytest.raises(DatasetError, match="val split has no images"):
        fit({**splits, "val": []}, class_map, config(), MODEL, tmp_path)
    bare = [type(r)(r.image, r.file_name, r.width, r.height, [], r.image_id) for r in splits["train"]]
    with pytest.raises(DatasetError, match="nothing to learn from"):
        fit({**splits, "train": bare}, class_map, config(), MODEL, tmp_path)


class Ticking:
    """A clock that advances 0.2 s each time it is read: the schedule's shape, whatever the machine's load."""

    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        self.t += 0.2
        return self.t


@pytest.mark.slow
def test_a_time_budget_shapes_the_schedule_and_resumes(toy, tmp_path):
    """--minutes: the learning rate follows the time used and is at its floor when the budget ends (epochs
    only bound it), and a resumed budgeted run continues the same clock and schedule."""
    from instaseg.train.schedule import TrainingClock

    class_map, splits = toy
    budget = config(epochs=10_000, minutes=0.25, warmup_steps=3, lr=0.01)
    clock = TrainingClock(budget.minutes, now=Ticking())
    result = fit(splits, class_map, budget, MODEL, tmp_path / "budget", clock=clock)
    last = result.history[-1]
    assert "time budget of 0.25 minutes" in result.stop_reason and len(result.history) > 2
    assert last["lr_end"] < 0.03 * 0.01 and max(r["lr_end"] for r in result.history) > 0.5 * 0.01
    assert result.steps == last["steps"] > 3 and 0.9 * 15 <= clock.used() <= 15.5, clock.used()
    rates = [r["lr_end"] for r in result.history]
    assert all(b <= a for a, b in zip(rates[1:], rates[2:], strict=False))  # decays with the time used

    # stopped after epoch 1 and resumed: the clock goes on from the time used before, to the same floor
    fit(
        splits,
        class_map,
        budget,
        MODEL,
        tmp_path / "resumed",
        stop_after=1,
        clock=TrainingClock(0.25, now=Ticking()),
    )
    used = torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)["seconds_used"]
    again = TrainingClock(0.25, now=Ticking())
    resumed = fit(splits, class_map, budget, MODEL, tmp_path / "resumed", resume=True, clock=again)
    assert 0 < used < 15 and again.used_before == used and again.used() <= 15.5
    assert resumed.history[-1]["lr_end"] < 0.03 * 0.01 and resumed.steps > resumed.history[0]["steps"]
