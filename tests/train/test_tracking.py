"""``instaseg train --track``: a short real run logged to a real ``mlflow server`` on loopback, a run
continued in its own SQLite store by ``--resume``, and the one-line messages without MLflow installed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from instaseg.cli import main
from tests.conftest import REPO
from tests.mlflow_server import mlflow_server
from tests.train.factories import DSB
from tests.train.test_cli_train import subset_splits


def train_arguments(splits: str, epochs: int) -> list[str]:
    """The light model from scratch on 2 DSB images of 64 px (validation on 1): a few seconds an epoch."""
    return [
        *("--arch", "maskrcnn_resnet18_fpn", "--weights", "none", "--image-size", "64", "--crop", "none"),
        *("--epochs", str(epochs), "--workers", "0", "--device", "cpu", "--splits", splits),
    ]


def only_run(client, experiment: str):
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no experiment {experiment!r}"
    runs = client.search_runs([found.experiment_id])
    assert len(runs) == 1, [r.info.run_name for r in runs]
    return runs[0]


def steps(client, run_id: str, key: str) -> list[int]:
    return [m.step for m in client.get_metric_history(run_id, key)]


@pytest.mark.slow
def test_a_run_on_an_mlflow_server_holds_params_metrics_per_epoch_and_artifacts(
    tmp_path, monkeypatch, capsys
):
    from mlflow import MlflowClient

    with mlflow_server(tmp_path / "server") as url:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "nuclei")
        run_dir = tmp_path / "run"
        splits = subset_splits(tmp_path, 2, 1, 0)
        code = main(
            ["train", str(DSB), "--out", str(run_dir), "--track", "mlflow", *train_arguments(splits, 2)]
        )
        out = capsys.readouterr().out
        assert code == 0, out
        assert f"at {url} (experiment 'nuclei')" in out
        client = MlflowClient(tracking_uri=url)
        run = only_run(client, "nuclei")
        assert run.info.status == "FINISHED" and run.info.run_name == "run"
        params = run.data.params
        assert params["train.epochs"] == "2" and params["model.arch"] == "maskrcnn_resnet18_fpn"
        assert params["model.image_size"] == "64" and params["flag.track"] == "mlflow"
        assert params["command"].startswith("instaseg train ") and "--track mlflow" in params["command"]
        for key in ("train_loss", "val_loss", "val_loss_mask", "lr"):
            assert steps(client, run.info.run_id, key) == [1, 2], key
        history = client.get_metric_history(run.info.run_id, "train_loss")
        csv_rows = (run_dir / "metrics.csv").read_text().splitlines()
        assert len(csv_rows) == 3  # header + 2 epochs, the same losses as MLflow's
        column = csv_rows[0].split(",").index("train_loss")
        assert [float(r.split(",")[column]) for r in csv_rows[1:]] == pytest.approx(
            [m.value for m in history], rel=1e-5
        )  # metrics.csv keeps 6 significant digits: up to 5e-6 of a loss near 1 (3.63262 vs 3.6326160)
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"best.pt", "metrics.csv", "config.yaml", "plots"} <= artifacts
        assert [a.path for a in client.list_artifacts(run.info.run_id, "plots")] == ["plots/loss_curve.png"]
        stored = client.download_artifacts(run.info.run_id, "best.pt", str(tmp_path / "download"))
        assert Path(stored).read_bytes() == (run_dir / "best.pt").read_bytes()
        assert not (run_dir / "mlflow.db").exists()  # the server holds the run, not the run folder


@pytest.mark.slow
def test_without_a_uri_the_run_folder_has_a_sqlite_store_that_resume_continues(tmp_path, monkeypatch, capsys):
    from mlflow import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    run_dir = tmp_path / "run"
    splits = subset_splits(tmp_path, 2, 1, 0)
    assert (
        main(["train", str(DSB), "--out", str(run_dir), "--track", "mlflow", *train_arguments(splits, 1)])
        == 0
    )
    uri = f"sqlite:///{run_dir.resolve() / 'mlflow.db'}"
    assert f"mlflow ui --backend-store-uri {uri}" in capsys.readouterr().out
    assert main(["train", str(DSB), "--resume", str(run_dir), "--epochs", "2", "--track", "mlflow"]) == 0
    client = MlflowClient(tracking_uri=uri)
    run = only_run(client, "instaseg")  # the resumed run continued the same MLflow run
    assert steps(client, run.info.run_id, "train_loss") == [1, 2]
    assert run.info.status == "FINISHED"
    assert run.data.params["train.epochs"] == "1" and run.data.tags["resumed.train.epochs"] == "2"
    assert json.loads((run_dir / "mlflow_run.json").read_text())["run_id"] == run.info.run_id
    local = Path(run.info.artifact_uri.removeprefix("file://"))
    assert local.is_relative_to(run_dir.resolve()) and (local / "best.pt").is_file()


# A child process in which ``import mlflow`` fails, as on an install without the extra.
WITHOUT_MLFLOW = """
import sys
sys.modules["mlflow"] = None
from instaseg.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_asking_to_track_without_mlflow_says_how_to_install_it(tmp_path):
    splits = subset_splits(tmp_path, 2, 1, 0)
    command = [sys.executable, "-c", WITHOUT_MLFLOW, "train", str(DSB), "--out", str(tmp_path / "run")]
    command += ["--track", "mlflow", *train_arguments(splits, 1)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 2, done.stdout + done.stderr
    error = done.stderr.strip().splitlines()
    assert error == [
        "instaseg train: error: --track mlflow needs MLflow, which is not installed: "
        "pip install 'instaseg[mlflow]'"
    ]


AUTO_WITHOUT_MLFLOW = """
import sys
sys.modules["mlflow"] = None
from instaseg.train.tracking import open_tracker
said = []
tracker = open_tracker("auto", sys.argv[1], "x", said.append, {"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"})
print(tracker.enabled, said)
"""


def test_auto_tracking_without_mlflow_says_so_once_and_goes_on(tmp_path):
    command = [sys.executable, "-c", AUTO_WITHOUT_MLFLOW, str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    enabled, said = done.stdout.strip().split(" ", 1)
    assert enabled == "False"
    assert said.count("not installed") == 1 and "pip install 'instaseg[mlflow]'" in said
    assert list(tmp_path.iterdir()) == []  # no store made


def test_tracking_is_off_by_default_without_a_uri_and_the_mode_list_is_checked(tmp_path):
    from instaseg.train.tracking import NoTracker, TrackingError, open_tracker

    assert isinstance(open_tracker("auto", tmp_path, "x", environ={}), NoTracker)
    assert isinstance(
        open_tracker("none", tmp_path, "x", environ={"MLFLOW_TRACKING_URI": "http://h"}), NoTracker
    )
    with pytest.raises(TrackingError, match="valid: auto, mlflow, none"):
        open_tracker("wandb", tmp_path, "x", environ={})


def test_a_server_that_does_not_answer_fails_at_once_in_one_line(tmp_path):
    from instaseg.train.tracking import TrackingError, open_tracker
    from tests.s3 import free_port

    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    tracker = open_tracker("auto", tmp_path, "x", environ={"MLFLOW_TRACKING_URI": uri})
    with pytest.raises(TrackingError) as error:
        tracker.start("run")
    assert str(error.value).startswith(f"cannot reach the MLflow server at {uri} (")
    assert "--track none" in str(error.value) and "\n" not in str(error.value)
