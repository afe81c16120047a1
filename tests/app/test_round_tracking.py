"""The labelling loop in MLflow, against a real ``mlflow server`` on loopback: each round a run, each
promoted model a version of the project's registered model, the alias ``served`` on the one served.

The loop's own round path runs (``TrainingLoop._round``: decision, hot swap through ``promote``, the
project folder, then MLflow); only the round's training and evaluation child processes are replaced by the
files they leave in ``rounds/NNN`` (a real light checkpoint, metrics.csv, config.yaml, the reports)."""

from __future__ import annotations

import json

import pytest

from instaseg.app.rounds import RoundFailed, RoundRunner, RoundSettings, ServedModel, model_version_name
from instaseg.app.training_loop import LoopSettings, TrainingLoop
from instaseg.train.logs import write_config, write_metrics_csv
from tests.checkpoints import save_light_checkpoint
from tests.mlflow_server import mlflow_server

TITLE = "Nuclei loop"


def finished_round(root, number: int, candidate: float, current: float, decision: str) -> dict:
    """The folder a round leaves (as its child processes write it) and the entry ``RoundRunner.run``
    returns for it."""
    folder = root / "rounds" / f"{number:03d}"
    (folder / "train").mkdir(parents=True)
    save_light_checkpoint(folder / "model.pt", ["nucleus"], seed=number)
    rows = [
        {"epoch": e, "lr": 1e-3 / e, "train_loss": 2.0 / e, "val_loss": 2.5 / e, "val_map": 0.1 * e}
        for e in (1, 2)
    ]
    write_metrics_csv(folder / "train", rows)
    write_config(folder / "train", {"epochs": 2, "lr": 0.001}, {"arch": "maskrcnn_resnet18_fpn"}, ["nucleus"])
    metrics = {"candidate": {"mask_map": candidate, "box_map": 0.5}, "current": {"mask_map": current}}
    (folder / "evaluation" / "candidate").mkdir(parents=True)
    (folder / "evaluation" / "candidate" / "report.md").write_text("# candidate\n")
    (folder / "evaluation" / "metrics.json").write_text(json.dumps(metrics))
    entry = {"round": number, "project": 5, "project_title": TITLE, "served": "v0", "train_images": 8}
    entry.update(
        val_images=2, decision=decision, reason="compared", checkpoint=f"rounds/{number:03d}/model.pt"
    )
    entry.update(metrics, seconds=12.5)
    if decision == "promoted":
        entry["model_version"] = model_version_name(TITLE, number, candidate)
    return entry


@pytest.mark.slow
def test_rounds_are_runs_and_promoted_models_are_versions_with_the_served_alias(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    root = tmp_path / "project"
    rounds = {
        1: (0.30, 0.00, "promoted"),
        2: (0.20, 0.30, "kept"),
        3: (0.40, 0.30, "promoted"),
        4: (0.50, 0.40, "promoted"),  # its model cannot be loaded: the round fails, nothing registered
    }
    swapped = []

    def promote(checkpoint, version, *threshold):  # the hot swap (and the pre-annotation threshold)
        if "r004" in version:
            raise RuntimeError("out of memory")
        swapped.append(version)

    with mlflow_server(tmp_path / "server") as url:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        settings = LoopSettings(project_dir=root, project=5)  # track="auto": on, since the URI is set
        loop = TrainingLoop(settings, ServedModel(tmp_path / "served.pt", "v0"), lambda p: object(), promote)
        monkeypatch.setattr(
            loop.runner, "run", lambda number, *args, **kwargs: finished_round(root, number, *rounds[number])
        )
        for number in rounds:
            loop._round(number)  # what the loop's thread does once a round is due
        client = MlflowClient(tracking_uri=url)

        assert swapped == ["nuclei-loop-r001-mAP30.0", "nuclei-loop-r003-mAP40.0"]
        experiment = client.get_experiment_by_name("nuclei-loop labelling loop")
        runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
        assert sorted(runs) == ["round 001", "round 002", "round 003", "round 004"]
        assert [runs[f"round 00{n}"].data.params["decision"] for n in rounds] == [
            "promoted",
            "kept",
            "promoted",
            "failed",
        ]
        assert runs["round 004"].info.status == "FAILED" and runs["round 002"].info.status == "FINISHED"
        first = runs["round 001"]
        assert first.data.metrics["candidate.mask_map"] == pytest.approx(0.30)
        assert (
            first.data.params["train.epochs"] == "2"
            and first.data.params["model.arch"] == "maskrcnn_resnet18_fpn"
        )
        history = client.get_metric_history(first.info.run_id, "train_loss")
        assert [(m.step, m.value) for m in history] == [(1, 2.0), (2, 1.0)]
        artifacts = {a.path for a in client.list_artifacts(first.info.run_id, "evaluation/candidate")}
        assert artifacts == {"evaluation/candidate/report.md"}

        versions = sorted(client.search_model_versions("name='nuclei-loop'"), key=lambda v: int(v.version))
        assert [(v.version, v.run_id) for v in versions] == [
            ("1", first.info.run_id),
            ("2", runs["round 003"].info.run_id),
        ]
        served = client.get_model_version_by_alias("nuclei-loop", "served")
        assert served.version == "2" and served.tags["instaseg.model_version"] == loop.served.version
        assert loop.served.version == "nuclei-loop-r003-mAP40.0"  # the backend serves what MLflow says
        stored = client.download_artifacts(served.run_id, "model/model.pt", str(tmp_path / "download"))
        assert open(stored, "rb").read() == (root / "rounds" / "003" / "model.pt").read_bytes()
        assert not client.list_artifacts(runs["round 002"].info.run_id, "model")  # kept: no model logged
    assert [e["decision"] for e in loop.project_dir.entries()] == ["promoted", "kept", "promoted", "failed"]


def test_a_rounds_training_does_not_make_a_run_of_its_own(tmp_path):
    """The round's ``instaseg train`` child gets ``--track none`` (the loop logs the round as one run);
    options of ``train_args`` come after it and win."""
    runner = RoundRunner(None, RoundSettings(train_args=("--workers", "0")))
    commands = []

    def run_child(command, log, what):
        commands.append(command)
        raise RoundFailed("stopped by the test")

    runner._run_child = run_child
    checkpoint = save_light_checkpoint(tmp_path / "served.pt", ["nucleus"])

    class Data:
        export, images, splits = tmp_path / "labelled.json", tmp_path / "images", tmp_path / "splits.json"

    from instaseg.model.checkpoint import check_header, read_checkpoint

    _, model_config = check_header(read_checkpoint(checkpoint), checkpoint)
    (tmp_path / "001").mkdir()
    with pytest.raises(RoundFailed):
        runner._train(tmp_path / "001", Data, ServedModel(checkpoint, "v0"), model_config, {})
    command = commands[0]
    assert command[command.index("--track") + 1] == "none"
    assert command[-2:] == ["--workers", "0"]
