"""kill -9 at a random moment of a training run, then --resume: at most the epoch in progress is lost and
the run ends with loadable best.pt and last.pt."""

from __future__ import annotations

import csv
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from instaseg.model.checkpoint import load_checkpoint, read_checkpoint
from tests.train.factories import DSB
from tests.train.test_cli_train import subset_splits

EPOCHS = 6


def epochs_logged(run) -> int:
    try:
        with open(run / "metrics.csv") as f:
            return len(list(csv.DictReader(f)))
    except (FileNotFoundError, csv.Error):
        return 0


@pytest.mark.parametrize("seed", [0])
def test_kill_9_during_training_then_resume(tmp_path, seed):
    run = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "instaseg",
        "train",
        str(DSB),
        "--splits",
        subset_splits(tmp_path, 3, 1, 0),
    ]
    command += [
        "--arch",
        "maskrcnn_resnet18_fpn",
        "--weights",
        "none",
        "--image-size",
        "64",
        "--workers",
        "0",
    ]
    command += ["--device", "cpu", "--epochs", str(EPOCHS), "--warmup-steps", "2", "--batch-size", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [*command, "--out", str(run)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    started = time.monotonic()
    while epochs_logged(run) < 1:  # the first epoch's checkpoints are written
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        assert time.monotonic() - started < 300
        time.sleep(0.05)
    first_epoch = time.monotonic() - started
    time.sleep(random.Random(seed).uniform(0, first_epoch))  # a random moment of a later epoch
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = epochs_logged(run)
    assert 1 <= done < EPOCHS, "the run ended before the kill; make it longer"
    state = read_checkpoint(run / "last.pt")
    # last.pt is the last finished epoch, never a partial file; metrics.csv is written just after it, so a
    # kill between the two leaves it one row short (resume rewrites it from last.pt's history)
    assert state["epoch"] in (done, done + 1)
    assert [row["epoch"] for row in state["history"]] == list(range(1, state["epoch"] + 1))
    done = state["epoch"]
    load_checkpoint(run / "best.pt")

    resume = [sys.executable, "-m", "instaseg", "train", str(DSB), "--resume", str(run)]
    resumed = subprocess.run(resume, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming {run} after epoch {done}" in resumed.stdout
    with open(run / "metrics.csv") as f:
        assert [int(row["epoch"]) for row in csv.DictReader(f)] == list(range(1, EPOCHS + 1))
    model, _, _ = load_checkpoint(run / "best.pt")
    assert read_checkpoint(run / "last.pt")["epoch"] == EPOCHS and model is not None
