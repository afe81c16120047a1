"""Each round's pre-annotation threshold: chosen by the effort model on validation images, recorded, and used
by the backend's whole-image pre-annotations and ``label-studio-predict`` (a model not made by the loop:
the flag's or the checkpoint's)."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from instaseg.app.effort import THRESHOLD_GRID
from instaseg.app.ls_backend import create_backend
from instaseg.app.ls_protocol import parse_label_config
from instaseg.app.round_evaluation import pre_annotation_choice
from instaseg.app.rounds import ProjectDir, RoundSettings
from instaseg.app.service import ModelService
from instaseg.app.training_loop import LoopSettings
from instaseg.cli import UsageError, label_studio_backend, label_studio_predict
from instaseg.core import Instances
from instaseg.formats.load import load_dataset
from instaseg.images import load_image
from instaseg.masks import masks_to_boxes
from tests.conftest import DATASETS

from .loop_helpers import POLYGON_CONFIG, SAMPLE


def shifted(truth: Instances, dy: int, score: float) -> Instances:
    """The ground truth moved ``dy`` pixels down (mask IoU well under 0.75 for nuclei), at ``score``."""
    masks = np.roll(truth.dense_masks(), dy, axis=1)
    return Instances(masks_to_boxes(masks), truth.labels, masks, np.full(len(truth), score))


def test_the_threshold_that_spares_the_person_most_is_chosen_on_real_nuclei():
    records = load_dataset(str(DATASETS / "dsb2018_nuclei_sample")).records[:4]
    predictions = []
    for record in records:
        truth = record.instances()
        right = Instances(truth.boxes, truth.labels, truth.masks, np.full(len(truth), 0.72))
        wrong = shifted(truth, 6, 0.5)  # a false alarm per nucleus below the right regions
        predictions.append(
            Instances(
                np.concatenate([right.boxes, wrong.boxes]),
                np.concatenate([right.labels, wrong.labels]),
                np.concatenate([right.dense_masks(), wrong.dense_masks()]),
                np.concatenate([right.scores, wrong.scores]),
            )
        )
    choice = pre_annotation_choice(records, predictions, min_score=0.05)
    assert choice["threshold"] == 0.7  # the false alarms hidden, every right region still shown
    assert choice["actions_per_object"] == 0.0 and choice["accepted_share"] == 1.0
    objects = choice["objects"]
    assert objects == sum(len(r.annotations) for r in records) > 50
    assert choice["by_threshold"]["0.3"] == 1.0  # one deletion per object
    assert choice["by_threshold"]["0.75"] == choice["by_hand_per_object"] > 4
    # A model that returns nothing under 0.6 is not offered the thresholds below.
    assert list(pre_annotation_choice(records, predictions, min_score=0.6)["by_threshold"]) == [
        f"{t:g}" for t in THRESHOLD_GRID if t >= 0.6
    ]


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return load_image(str(sorted((SAMPLE / "images").glob("*.png"))[0]))


def test_whole_image_pre_annotations_show_regions_from_the_served_threshold(checkpoint, image, tmp_path):
    service = ModelService(checkpoint)
    scores = service.predict(image).scores
    assert len(scores) > 4 and service.pre_annotation_threshold == service.min_score == 0.05
    settings = LoopSettings(project_dir=tmp_path / "loop", project=1, rounds=RoundSettings(device="cpu"))
    app = create_backend(service, training=settings, load_model=lambda path: ModelService(path))
    backend = app.state.backend
    backend.task_image = lambda task, target, client: image
    target = parse_label_config(POLYGON_CONFIG)

    def region_scores(served) -> list[float]:
        prediction = backend.predict_task(served, {"id": 1, "data": {"image": "x"}}, target, None)
        return sorted({r["score"] for r in prediction["result"]})

    assert len(region_scores(backend.service)) == len(set(np.round(scores, 5)))
    middle = float(np.median(scores))
    backend.loop.promote(checkpoint, "loop-r001-mAP1.0", middle)  # a round promoted with its threshold
    assert backend.service.version == "loop-r001-mAP1.0"
    assert backend.service.pre_annotation_threshold == middle
    shown = region_scores(backend.service)
    assert shown and min(shown) >= round(middle, 5) and len(shown) < len(set(np.round(scores, 5)))
    backend.loop.promote(checkpoint, "loop-r002-mAP1.0", None)  # no choice (no val objects): its own
    assert backend.service.pre_annotation_threshold == 0.05


def arguments(threshold=None) -> argparse.Namespace:
    return argparse.Namespace(pre_annotation_threshold=threshold)


def test_the_promoted_rounds_threshold_wins_then_the_flag_then_the_checkpoints(checkpoint):
    service = ModelService(checkpoint)
    choose = label_studio_predict.pre_annotation_threshold
    assert choose(arguments(), service) == 0.05
    assert choose(arguments(0.6), service) == 0.6
    assert choose(arguments(0.6), service, {"pre_annotation_threshold": 0.85}) == 0.85
    assert choose(arguments(0.6), service, {"pre_annotation_threshold": None}) == 0.6
    for bad in (1.5, -0.1, float("nan")):
        with pytest.raises(UsageError, match="--pre-annotation-threshold must be between 0 and 1"):
            choose(arguments(bad), service)


def test_a_restarted_backend_and_label_studio_predict_serve_the_promoted_threshold(checkpoint, tmp_path):
    folder = ProjectDir(tmp_path / "loop")
    folder.round_dir(1).mkdir(parents=True)
    (folder.round_dir(1) / "model.pt").write_bytes(checkpoint.read_bytes())
    promoted = {"checkpoint": "rounds/001/model.pt", "model_version": "p-r001-mAP9.0", "round": 1}
    folder.set_promoted({**promoted, "pre_annotation_threshold": 0.65})
    parser = argparse.ArgumentParser()
    label_studio_backend.add_arguments(parser)
    args = parser.parse_args(
        [str(checkpoint), "--train-on-annotations", "--project-dir", str(folder.root)]
        + ["--pre-annotation-threshold", "0.4"]
    )
    service = label_studio_backend._served_model(args, label_studio_backend._loop_settings(args))
    assert (service.version, service.pre_annotation_threshold) == ("p-r001-mAP9.0", 0.65)
    # Without a round's choice, the flag's; without the flag, the checkpoint's.
    args = parser.parse_args([str(checkpoint), "--pre-annotation-threshold", "0.4"])
    assert label_studio_backend._served_model(args, None).pre_annotation_threshold == 0.4

    parser = argparse.ArgumentParser()
    label_studio_predict.add_arguments(parser)
    args = parser.parse_args(["http://127.0.0.1:9", "--project", "1", "--project-dir", str(folder.root)])
    assert label_studio_predict._model(args).pre_annotation_threshold == 0.65
    args = parser.parse_args(["http://127.0.0.1:9", "--project", "1", "--model", str(checkpoint)])
    assert label_studio_predict._model(args).pre_annotation_threshold == 0.05
    assert json.loads(folder.promoted_file.read_text())["pre_annotation_threshold"] == 0.65
