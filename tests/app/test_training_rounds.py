"""The labelling loop's bookkeeping without a server: the fixed split, the decision, the project folder,
the labelled tasks of a real Label Studio export, and the debounce of events."""

from __future__ import annotations

import copy
import json
import threading
import time

import pytest

from instaseg.app.loop_data import FixedSplit, hash_split, labelled_tasks, rename_labels
from instaseg.app.rounds import ProjectDir, ServedModel, decide, model_version_name
from instaseg.app.training_loop import LoopSettings, TrainingLoop, project_id
from tests.conftest import DATASETS

EXPORT = DATASETS / "label_studio_1.23_exports" / "poly_JSON.json"


def test_the_split_is_fixed_across_rounds_and_always_has_a_val_image(tmp_path):
    path = tmp_path / "splits.json"
    names = [f"img{i:03d}.png" for i in range(30)]
    first = FixedSplit(path, 0.2).assign(names[:2])
    assert sorted(first.values()) == ["train", "val"]  # two images: one of each, whatever the hashes
    later = FixedSplit(path, 0.5).assign(names)  # a new fraction does not move the saved images
    assert {n: later[n] for n in first} == first
    assert all(later[n] == hash_split(n, 0.2) for n in names[2:])  # the saved fraction is kept
    assert json.loads(path.read_text())["assigned"] == later


def test_the_hash_split_takes_about_the_fraction():
    shares = [hash_split(f"photo_{i}.jpg", 0.2) == "val" for i in range(2000)]
    assert 0.17 < sum(shares) / len(shares) < 0.23
    assert hash_split("a.png", 0.2) == hash_split("a.png", 0.2)


@pytest.mark.parametrize(
    "candidate, current, margin, decision",
    [
        (0.30, 0.25, 0.0, "promoted"),
        (0.25, 0.25, 0.0, "promoted"),  # as good: the newer data wins
        (0.24, 0.25, 0.0, "kept"),
        (0.30, 0.25, 5.0, "promoted"),  # margin in mAP points
        (0.29, 0.25, 5.0, "kept"),
        (None, 0.25, 0.0, "kept"),
    ],
)
def test_promotion_needs_the_mask_map_of_the_served_model_plus_the_margin(
    candidate, current, margin, decision
):
    metrics = {"candidate": {"mask_map": candidate}, "current": {"mask_map": current}}
    assert decide(metrics, margin)[0] == decision


def test_model_versions_are_readable():
    assert model_version_name("Nuclei loop", 3, 0.4123) == "nuclei-loop-r003-mAP41.2"
    assert model_version_name("  ", 12, 0.0) == "project-r012-mAP0.0"


def test_the_project_folder_logs_rounds_and_closes_interrupted_ones(tmp_path):
    folder = ProjectDir(tmp_path)
    assert folder.next_number() == 1 and folder.promoted() is None
    folder.round_dir(1).mkdir(parents=True)
    folder.finish({"round": 1, "decision": "promoted", "checkpoint": "rounds/001/model.pt"})
    folder.set_promoted({"checkpoint": "rounds/001/model.pt", "model_version": "p-r001-mAP1.0", "round": 1})
    folder.round_dir(2).mkdir()  # a backend stopped during round 2
    assert folder.next_number() == 3
    assert folder.close_interrupted() == [2]
    assert [e["decision"] for e in folder.entries()] == ["promoted", "interrupted"]
    assert (folder.round_dir(2) / "decision.json").is_file()
    assert folder.promoted()["checkpoint"] == str(tmp_path / "rounds/001/model.pt")
    assert folder.bind_project(7) == 7
    with pytest.raises(ValueError, match="project 7, not 8"):
        folder.bind_project(8)


def test_only_annotated_tasks_train_and_labels_take_the_model_names():
    tasks = json.loads(EXPORT.read_text())
    unlabelled = {"id": 99, "data": {"image": "/data/upload/1/x.png"}, "annotations": []}
    skipped = {"id": 98, "data": {"image": "x"}, "annotations": [{"was_cancelled": True, "result": []}]}
    kept = labelled_tasks([*copy.deepcopy(tasks), unlabelled, skipped])
    assert [t["id"] for t in kept] == [t["id"] for t in tasks]
    assert rename_labels(kept, {"blob": "Blob"}) == {"Blob", "triangle"}
    labels = {r["value"]["polygonlabels"][0] for t in kept for a in t["annotations"] for r in a["result"]}
    assert labels == {"Blob", "triangle"}


@pytest.mark.parametrize(
    "value, expected", [({"id": 3, "title": "x"}, 3), (3, 3), ("3.1700000000", 3), (None, None), (True, None)]
)
def test_project_ids_of_webhooks(value, expected):
    assert project_id(value) == expected


def test_events_are_debounced_and_other_projects_ignored(tmp_path):
    settings = LoopSettings(project_dir=tmp_path, project=5, train_after=3, quiet_minutes=30)
    loop = TrainingLoop(
        settings, ServedModel(tmp_path / "served.pt", "v0"), lambda project: None, lambda *a: None
    )
    assert loop.on_event("ANNOTATION_CREATED", {"id": 5}).startswith("1 of 3")
    assert loop.on_event("ANNOTATION_UPDATED", {"id": 5}).startswith("2 of 3")
    assert loop.on_event("ANNOTATION_CREATED", {"id": 6}).startswith("ignored")
    assert loop.on_event("PROJECT_UPDATED", {"id": 5}).startswith("ignored")
    assert loop.status()["pending_events"] == 2 and loop.status()["state"] == "idle"
    assert loop.on_event("ANNOTATION_DELETED", {"id": 5}) == "a round starts"


def test_quiet_time_starts_a_round(tmp_path):
    # No Label Studio server is known: the round that starts stops at once, saying so.
    settings = LoopSettings(project_dir=tmp_path, project=5, train_after=100, quiet_minutes=0.005)
    loop = TrainingLoop(
        settings, ServedModel(tmp_path / "served.pt", "v0"), lambda project: None, lambda *a: None
    )
    loop.start()
    try:
        loop.on_event("ANNOTATION_CREATED", {"id": 5})
        deadline = time.monotonic() + 10
        while "no Label Studio URL" not in loop.status()["note"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "no Label Studio URL" in loop.status()["note"] and loop.status()["pending_events"] == 0
    finally:
        loop.stop()


def test_events_during_a_round_make_exactly_one_follow_up_round(tmp_path):
    # Each round asks client_for for the project's server first; here it holds the round open until the
    # test lets it go, then answers "no server known" (the round ends at once, saying so).
    calls, release = [], threading.Semaphore(0)

    def client_for(project):
        calls.append(project)
        release.acquire(timeout=20)
        return None

    settings = LoopSettings(project_dir=tmp_path, project=5, train_after=3, quiet_minutes=30)
    loop = TrainingLoop(settings, ServedModel(tmp_path / "served.pt", "v0"), client_for, lambda *a: None)
    loop.start()
    try:
        assert loop.on_event("START_TRAINING", {"id": 5}) == "a round starts"
        wait_for(lambda: len(calls) == 1)
        assert loop.status()["round"] == 1 and loop.status()["pending_events"] == 0
        answers = [loop.on_event("ANNOTATION_CREATED", {"id": 5}) for _ in range(5)]
        assert set(answers) == {"queued: round 1 is running; one more round follows it"}
        release.release()  # round 1 ends; the 5 events start one round, not five
        wait_for(lambda: len(calls) == 2)
        assert loop.status()["pending_events"] == 0
        release.release()
        wait_for(lambda: loop.status()["round"] is None)
        time.sleep(1.5)  # the loop checks for due rounds every second
        assert len(calls) == 2 and "no Label Studio URL" in loop.status()["note"]
    finally:
        release.release()
        loop.stop()


def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not within 10 s"
        time.sleep(0.02)
