"""The labelling loop against a real Label Studio 1.23 server: annotations made through Label Studio's API
fire its webhooks at the backend, a round trains in the background, is evaluated and promoted, and the next
predictions carry its model version; a restarted backend serves the last promoted model; a killed round and a
worse round leave the served model; and ``instaseg label-studio-predict`` (started by the backend after a
promotion, and by hand) posts one prediction per task of the 60-task project, resuming after an interruption.

The tests run in file order on one project (each step needs the previous one's model). The served model
starts with random weights (a light ResNet-18 Mask R-CNN at 256 px); round 1 trains it for 16 steps.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
from types import SimpleNamespace

import pytest

from instaseg.app.effort import THRESHOLD_GRID
from instaseg.app.ls_client import LabelStudioClient

from ..checkpoints import save_light_checkpoint
from ..mlflow_server import mlflow_server
from .conftest import REPO, free_port, stop
from .loop_helpers import (
    POLYGON_CONFIG,
    annotate,
    create_sample_project,
    get_json,
    log_entries,
    post_json,
    start_backend,
    wait_until,
)

pytestmark = pytest.mark.slow

ANNOTATED = 10  # --train-after: the 10th annotation starts round 1
PREDICT_VERSION = "loop-test-predict"
# Four epochs (16 steps on the 8 train images) whatever the machine's load: the budget is far larger than
# the round needs, so the learning rate follows the steps, not the time (train lays its schedule over the
# larger of the two). A model with random weights (mask mAP ~0.3 % on these nuclei, which look like its
# random blobs) then reaches 1-3 %, and the best epoch by val mAP is what the round offers.
GOOD_ROUND = [
    "--round-epochs",
    "4",
    "--round-minutes",
    "30",
    "--train-args",
    "--optimizer adamw --lr 0.001 --warmup-steps 6 --workers 0",
]
# One optimizer step (one epoch, the 8 train images in one batch) at a learning rate 50 times too high: a
# model that is worse, for sure and at once (its val loss ~1e6, mask mAP 0). A round with a near-zero time
# budget would not do: train's learning rate follows the budget's time, so a budget spent before the first
# step trains at rate 0, and the candidate is the served model again (a tie, which is promoted).
WORSE_ROUND = [
    "--round-epochs",
    "1",
    "--round-minutes",
    "5",
    "--train-args",
    "--optimizer adamw --lr 0.05 --warmup-steps 0 --batch-size 8 --workers 0",
]


@pytest.fixture(scope="module")
def loop(label_studio, tmp_path_factory):
    """A 60-task project of the bundled sample, and the backend training on it (connected to Label
    Studio, which creates the webhook to the backend's /webhook itself), its rounds tracked in a real
    MLflow server on loopback (``MLFLOW_TRACKING_URI``)."""
    url, token = label_studio
    root = tmp_path_factory.mktemp("loop")
    with mlflow_server(root / "mlflow") as tracking:
        yield from _loop(url, token, root, tracking)


def _loop(url: str, token: str, root, tracking: str):
    client = LabelStudioClient(url, token, timeout=300)
    project, tasks = create_sample_project(client, "Nuclei loop", 60)
    state = SimpleNamespace(client=client, url=url, token=token, project=project, tasks=tasks)
    state.dir, state.log, state.port = root / "dir", root / "backend.log", free_port()
    state.backend = f"http://127.0.0.1:{state.port}"
    state.arguments = [
        str(save_light_checkpoint(root / "random.pt", ["nucleus"], 256, detections_per_image=50)),
        "--train-on-annotations",
        "--project-dir",
        str(state.dir),
        "--train-after",
        str(ANNOTATED),
        "--quiet-minutes",
        "30",
        "--val-fraction",
        "0.3",
        "--train-device",
        "cpu",
        "--label-studio-url",
        url,
        "--label-studio-token",
        token,
        "--max-megapixels",
        "1",
        "--predict-after-promotion",
    ]
    state.tracking, state.env = tracking, {"MLFLOW_TRACKING_URI": tracking}
    state.process = start_backend(state.arguments + GOOD_ROUND, state.log, state.port, state.env)
    ml = client.json("POST", "/api/ml", {"url": state.backend, "project": project, "title": "instaseg"})
    assert ml["state"] == "CO", ml
    state.ml = ml["id"]
    yield state
    stop(state.process)


def served_in_mlflow(loop):
    """The version of the registered model ``nuclei-loop`` under the alias ``served``, or ``None``."""
    import mlflow

    client = mlflow.MlflowClient(loop.tracking)
    try:
        return client.get_model_version_by_alias("nuclei-loop", "served")
    except mlflow.exceptions.MlflowException:
        return None


def health(loop) -> dict:
    return get_json(loop.backend + "/health")


def predict(loop, task: dict) -> tuple[int, dict]:
    body = {"tasks": [task], "project": f"{loop.project}.1700000000", "label_config": POLYGON_CONFIG}
    return post_json(loop.backend + "/predict", body)


def predictions_of(loop, version: str) -> list[dict]:
    """The loop project's predictions of one model version, as Label Studio stores them."""
    everything = loop.client.json("GET", f"/api/predictions?project={loop.project}")
    return [p for p in everything if p["model_version"] == version]


def training_state(loop, state: str):
    """The backend's training status once it is in ``state`` with a child process, else ``None``."""
    status = health(loop)["training"]
    return status if status["state"] == state and status["pid"] else None


def test_annotations_train_a_round_that_is_promoted_and_served(loop):
    before = health(loop)["model_version"]
    for task in loop.tasks[: ANNOTATED - 1]:
        annotate(loop.client, task)
    status = health(loop)["training"]
    assert status["state"] == "idle" and status["pending_events"] == ANNOTATED - 1, status  # debounced
    annotate(loop.client, loop.tasks[ANNOTATED - 1])
    wait_until(lambda: training_state(loop, "training"), 60, "round 1 to start training")

    # /predict keeps answering while the round trains and evaluates.
    answers = [predict(loop, task) for task in loop.tasks[20:30]]
    assert [code for code, _ in answers] == [200] * 10, [a for a in answers if a[0] != 200][:2]
    assert all(a["results"][0]["model_version"] == before for _, a in answers)
    assert health(loop)["training"]["round"] == 1, "the round ended before the requests did: not measured"

    entry = wait_until(lambda: log_entries(loop.dir), 300, "round 1 to be logged")[-1]
    assert entry["round"] == 1 and entry["decision"] == "promoted", entry
    assert entry["train_images"] + entry["val_images"] == ANNOTATED
    assert entry["candidate"]["mask_map"] >= entry["current"]["mask_map"]
    # MLflow: the round is a run, its promoted model a version of the project's registered model, served.
    tracked = wait_until(lambda: served_in_mlflow(loop), 60, "the promoted model in MLflow")
    assert tracked.tags.get("instaseg.model_version") == entry["model_version"], tracked.tags
    # The round chose the threshold of its pre-annotations on its val images; the promotion serves it.
    assert entry["pre_annotation_threshold"] in THRESHOLD_GRID, entry
    promoted = json.loads((loop.dir / "promoted.json").read_text())
    assert promoted["pre_annotation_threshold"] == entry["pre_annotation_threshold"]
    version = entry["model_version"]
    assert re.fullmatch(r"nuclei-loop-r001-mAP\d+\.\d", version), version
    folder = loop.dir / "rounds" / "001"
    for name in ("model.pt", "decision.json", "labelled.json", "splits.json", "train/metrics.csv"):
        assert (folder / name).is_file(), name
    for name in ("candidate/report.md", "current/report.json", "metrics.json"):
        assert (folder / "evaluation" / name).is_file(), name
    assert health(loop)["model_version"] == version
    code, answer = predict(loop, loop.tasks[40])
    assert code == 200 and answer["results"][0]["model_version"] == version
    assert 0 <= answer["results"][0]["score"] <= 1
    assigned = json.loads((loop.dir / "splits.json").read_text())["assigned"]
    assert len(assigned) == ANNOTATED and set(assigned.values()) == {"train", "val"}
    # --predict-after-promotion: the new model pre-annotates the unlabelled tasks on its own.
    wait_until(lambda: predictions_of(loop, version), 120, "a prediction of the promoted model", 2)


def test_restart_kill_and_worse_round_leave_the_served_model(loop):
    served = health(loop)["model_version"]
    stop(loop.process)  # the backend comes back on the last promoted model, with a recipe that hurts
    loop.process = start_backend(loop.arguments + WORSE_ROUND, loop.log, loop.port, loop.env)
    assert health(loop)["model_version"] == served

    loop.client.json("POST", f"/api/ml/{loop.ml}/train")  # Label Studio's "Start training" button
    status = wait_until(lambda: training_state(loop, "training"), 60, "round 2 to start training", 0.2)
    os.kill(status["pid"], signal.SIGKILL)
    entry = wait_until(lambda: log_entries(loop.dir)[1:], 60, "round 2 to be logged")[-1]
    assert entry["round"] == 2 and entry["decision"] == "failed" and "signal 9" in entry["reason"], entry
    assert health(loop)["model_version"] == served
    code, answer = predict(loop, loop.tasks[41])
    assert code == 200 and answer["results"][0]["model_version"] == served

    loop.client.json("POST", f"/api/ml/{loop.ml}/train")  # the next event: a clean round 3
    entry = wait_until(lambda: log_entries(loop.dir)[2:], 240, "round 3 to be logged")[-1]
    assert entry["round"] == 3 and entry["decision"] == "kept", entry
    assert entry["candidate"]["mask_map"] < entry["current"]["mask_map"], entry
    assert health(loop)["model_version"] == served
    assert json.loads((loop.dir / "promoted.json").read_text())["round"] == 1
    assert [e["decision"] for e in log_entries(loop.dir)] == ["promoted", "failed", "kept"]


def label_studio_predict(loop, *options: str) -> subprocess.Popen:
    """``instaseg label-studio-predict`` on the loop's project with its last promoted model, under the
    version ``PREDICT_VERSION`` (so that the backend's own pre-annotations do not count)."""
    command = [sys.executable, "-m", "instaseg", "label-studio-predict", loop.url, "--project"]
    command += [str(loop.project), "--project-dir", str(loop.dir), "--model-version", PREDICT_VERSION]
    command += ["--batch-size", "8", *options]
    command += ["--no-flip"]  # half the time; the mirror view is covered by the backend's /predict above
    # Two threads: nothing else of the test runs meanwhile (the backend is idle).
    env = {**os.environ, "OMP_NUM_THREADS": "2", "LABEL_STUDIO_API_KEY": loop.token}
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO
    )


def finish(process: subprocess.Popen) -> dict[str, int]:
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output[-2000:]
    done = re.search(r"done: (\d+) predictions posted, (\d+) tasks already had one .* (\d+) labelled", output)
    assert done, output[-2000:]
    return {"posted": int(done[1]), "already": int(done[2]), "labelled": int(done[3])}


def test_label_studio_predict_posts_one_prediction_per_task_and_resumes(loop):
    # After round 1's promotion the backend pre-annotated the unlabelled tasks with the promoted model
    # until the restart above stopped it: never twice on one task.
    promoted = json.loads((loop.dir / "promoted.json").read_text())["model_version"]
    assert "label-studio-predict" in (loop.dir / "predict.log").read_text()
    by_backend = [p["task"] for p in predictions_of(loop, promoted)]
    assert by_backend and len(by_backend) == len(set(by_backend)), by_backend
    assert not set(by_backend) & {task["id"] for task in loop.tasks[:ANNOTATED]}  # --only-unlabeled

    started = time.monotonic()
    process = label_studio_predict(loop)
    for line in process.stdout:  # interrupted once it has posted 5 predictions
        posted = re.search(r"(\d+) posted", line)
        if posted and int(posted[1]) >= 5:
            process.kill()
            break
    process.wait()
    time.sleep(1)
    first = len(predictions_of(loop, PREDICT_VERSION))
    assert 5 <= first < len(loop.tasks)
    again = finish(label_studio_predict(loop, "--use-for-prelabeling"))  # only the missing ones
    assert again == {"posted": len(loop.tasks) - first, "already": first, "labelled": 0}
    seconds = time.monotonic() - started
    mine = predictions_of(loop, PREDICT_VERSION)
    assert len(mine) == len(loop.tasks) == 60 and {p["task"] for p in mine} == {t["id"] for t in loop.tasks}
    assert all(0 <= p["score"] <= 1 for p in mine)
    # Regions are shown from the threshold the promoted round chose (fewest actions on its validation
    # images), so a young model may show few; none scores under it.
    chosen = json.loads((loop.dir / "promoted.json").read_text())["pre_annotation_threshold"]
    regions = [r for p in mine for r in p["result"]]
    assert all(r["score"] >= chosen - 1e-5 for r in regions), chosen
    print(f"label-studio-predict: 60 predictions in {seconds:.0f} s (2 runs, the first interrupted)")

    # Sorting by uncertainty, as README says: with --use-for-prelabeling the project's prelabeling uses
    # this model version, and the Data Manager ordered by Prediction score lists the least certain task first.
    assert loop.client.project(loop.project)["model_version"] == PREDICT_VERSION
    query = urllib.parse.quote(json.dumps({"ordering": ["tasks:predictions_score"]}))
    listed = loop.client.json(
        "GET", f"/api/tasks?project={loop.project}&page_size=100&fields=all&query={query}"
    )
    order = [(task["id"], task["predictions_score"]) for task in listed["tasks"]]
    scores = {p["task"]: p["score"] for p in mine}
    assert [score for _, score in order] == pytest.approx(sorted(scores.values()))
    assert order[0][0] in {task for task, score in scores.items() if score == min(scores.values())}
