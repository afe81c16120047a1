"""Which epoch best.pt keeps (train --select), the weight average (--ema), test losses at the end, and the
epoch line under a budget."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from instaseg.train.ema import WeightAverage
from instaseg.train.logs import epoch_position, epoch_summary
from instaseg.train.selection import (
    KEEP,
    best_map,
    epoch_score,
    in_window,
    needs_map,
    schedule_progress,
    selection_line,
)


def best_of(rule: str, rows: list[dict]) -> int:
    """The epoch fit would keep under ``rule`` (strictly better scores replace the best, as in fit)."""
    best, best_epoch = float("inf"), 0
    for i, row in enumerate(rows):
        score = epoch_score(rule, row["epoch"], row["val_loss"], row.get("val_map"), best_map(rows[:i]))
        if score < best:
            best, best_epoch = score, row["epoch"]
    return best_epoch


# 16 epochs, as the 15-minute DSB run: the loss is lowest at epoch 12, the mAP peaks late
LOSSES = [2.0 - 0.1 * e for e in range(1, 13)] + [0.85, 0.84, 0.83, 0.82]
LOSSES[11] = 0.7
MAPS = {13: 0.44, 14: 0.46, 15: 0.47, 16: 0.46}


def history() -> list[dict]:
    rows = []
    for epoch in range(1, 17):
        row = {"epoch": epoch, "val_loss": LOSSES[epoch - 1]}
        if needs_map("auto", in_window(schedule_progress(epoch, 16, 0.0))):
            row["val_map"] = MAPS[epoch]
        rows.append(row)
    return rows


def test_auto_keeps_the_latest_epoch_of_the_last_quarter_near_its_best_map_and_says_why():
    rows = history()
    assert [r["epoch"] for r in rows if "val_map" in r] == [13, 14, 15, 16]  # epoch 12 ends at 75 %
    assert best_of("loss", rows) == 12
    assert best_of("map", [r for r in rows if "val_map" in r]) == 15
    assert best_of("auto", rows) == 16  # 0.46 is more than 75 % of epoch 15's 0.47
    assert best_of("last", rows) == 16
    line = selection_line("auto", rows, 16, 6)
    assert line.startswith("best.pt: epoch 16 (mask mAP on 6 validation images 0.460, the latest of")
    assert "epochs 13-16 (the last 25% of the schedule) with at least 75% of their best, 0.470" in line
    assert "the loss would have picked epoch 12)" in line
    # the swing of a few validation images between late epochs (DSB: 0.399 then 0.366) keeps the last
    rows[-1]["val_map"] = 0.47 - 0.033
    assert best_of("auto", rows) == 16
    # a last epoch that collapsed below an earlier one of the window is not kept
    rows[-1]["val_map"] = KEEP * 0.47 - 0.001
    assert best_of("auto", rows) == 15
    assert "; the last epoch, 16, had 0.351" in selection_line("auto", rows, 15, 6)
    # no drift: each epoch is compared with the best so far, not with the one before it
    for epoch, value in zip((13, 14, 15, 16), (0.50, 0.42, 0.38, 0.36), strict=True):
        rows[epoch - 1]["val_map"] = value
    assert best_of("auto", rows) == 15
    # before the window every epoch replaces the one before; the first measured one replaces them all
    early = [{"epoch": 1, "val_loss": 1.0}, {"epoch": 2, "val_loss": 2.0}]
    assert best_of("auto", early) == 2
    assert best_of("auto", [*early, {"epoch": 3, "val_loss": 3.0, "val_map": 0.0}]) == 3
    assert "ended before the last 25%" in selection_line("auto", early, 2, 1)
    assert best_map(early) is None and epoch_score("auto", 3, 1.0, 0.18, 0.2) < epoch_score(
        "auto", 2, 1.0, None
    )


def test_the_lowest_loss_checkpoint_is_written_on_a_strictly_lower_finite_loss_only():
    from instaseg.train.state import _lowest_loss

    rows = [{"val_loss": v} for v in (float("nan"), 1.0, 1.2, 1.0, 0.9)]
    assert [_lowest_loss(rows[: i + 1]) for i in range(len(rows))] == [False, True, False, False, True]
    # the epoch it keeps is the one selection_line names as the loss's pick
    history = [{"epoch": i + 1, **row} for i, row in enumerate(rows)]
    assert "the loss would have picked epoch 5" in selection_line("last", history, 5, 4)


def test_under_a_budget_the_window_follows_the_time_and_the_line_the_minutes():
    assert schedule_progress(3, 1000, 0.8) == 0.8 and in_window(0.8) and not in_window(0.74)
    assert not needs_map("auto", False) and needs_map("map", False) and not needs_map("loss", True)
    row = {"epoch": 6, "minutes_used": 4.14}
    assert epoch_position(row, 1000, 8.0) == "epoch 6 · 4.1 of 8 min"
    assert epoch_position(row, 20) == "epoch 6/20"


def test_the_epoch_line_marks_the_epochs_written_to_best_pt_as_such():
    """Under auto every epoch before the mAP window is written to best.pt, however its loss moved: the mark
    says that the file was written, not that the loss fell."""
    from instaseg.model.architectures import LOSS_NAMES

    row = {"epoch": 4, "train_loss": 1.2, "val_loss": 1.5, "lr": 1e-3, "seconds": 14.0}
    row.update({f"val_{name}": 0.3 for name in LOSS_NAMES})
    assert epoch_summary(row, 20, True).endswith("14s  -> best.pt")
    assert epoch_summary(row, 20, False).endswith("14s") and "best" not in epoch_summary(row, 20, False)


def test_weight_average_warms_up_averages_parameters_and_copies_buffers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2))
    average = WeightAverage(model, decay=0.9, warmup=10)
    assert average.current_decay() == pytest.approx(0.9 * (1 - torch.exp(torch.tensor(-0.1)).item()))
    start = model[0].weight.detach().clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)
        model[1].running_mean.fill_(3.0)
    decay = average.current_decay()
    average.update(model)
    expected = decay * start + (1 - decay) * model[0].weight
    torch.testing.assert_close(average.module[0].weight, expected)
    assert torch.equal(average.module[1].running_mean, model[1].running_mean)  # copied, not averaged
    assert not any(p.requires_grad for p in average.module.parameters())
    for _ in range(200):
        average.update(model)
    assert average.current_decay() == pytest.approx(0.9, abs=1e-6)
    torch.testing.assert_close(average.module[0].weight, model[0].weight)  # converges to constant weights
    again = WeightAverage(model, decay=0.9)
    again.load_state_dict(average.state_dict())
    assert again.updates == 201
    with pytest.raises(ValueError, match="decay must be in"):
        WeightAverage(model, decay=1.0)


@pytest.mark.slow
def test_a_run_with_auto_selection_ema_and_copy_paste_resumes_exactly_and_tests_once(tmp_path):
    """fit with --select auto, --ema and --augment copy-paste: mAP measured in the last quarter only, the
    saved model is the weight average (last.pt keeps the trained weights to resume), a stopped and resumed
    run ends as an uninterrupted one, and the test split is measured once, at the end."""
    from instaseg.train.fit import fit
    from tests.train.factories import toy_records
    from tests.train.test_fit import MODEL, config

    (tmp_path / "data").mkdir()
    class_map, records = toy_records(tmp_path / "data", count=6)
    splits = {"train": records[:4], "val": records[4:5], "test": records[5:]}
    options = config(epochs=2, select="auto", ema=0.9, augment="copy-paste", keep_by_loss=True)
    measured = []

    def metric(model, epoch):
        measured.append(epoch)
        return 0.25

    lines = []
    straight = fit(
        splits, class_map, options, MODEL, tmp_path / "a", select_metric=metric, report=lines.append
    )
    assert measured == [2] and [("val_map" in r, "test_loss" in r) for r in straight.history] == [
        (False, False),
        (True, True),
    ]
    assert any(line.startswith("test losses of last.pt (epoch 2, 1 test image") for line in lines)
    assert straight.selection.startswith("best.pt: epoch 2 (mask mAP on 1 validation image 0.250")
    last = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    best = torch.load(tmp_path / "a" / "best.pt", weights_only=True)
    assert last["ema"]["updates"] == straight.steps
    name = "roi_heads.box_predictor.cls_score.weight"
    assert not torch.equal(last["model"][name], last["trained_model"][name])  # the average is saved
    torch.testing.assert_close(best["model"][name], last["model"][name])
    by_loss = torch.load(tmp_path / "a" / "best-by-loss.pt", weights_only=True)
    losses = [row["val_loss"] for row in straight.history]
    assert by_loss["epoch"] == 1 + losses.index(min(losses))

    fit(splits, class_map, options, MODEL, tmp_path / "b", select_metric=metric, stop_after=1)
    fit(splits, class_map, options, MODEL, tmp_path / "b", select_metric=metric, resume=True)
    resumed = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    for key in ("model", "trained_model"):
        for tensor_name, tensor in last[key].items():
            torch.testing.assert_close(
                resumed[key][tensor_name], tensor, rtol=1e-5, atol=1e-6, msg=tensor_name
            )
