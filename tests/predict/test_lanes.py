"""Prediction lanes on a real model and real images: two lanes of one thread give exactly the numbers of one
image at a time on one thread, in ``Predictor`` use, ``evaluate``'s ``predict_records`` and ``instaseg
predict``."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from instaseg.cli import main
from instaseg.evaluate import predict_records
from instaseg.formats.load import load_dataset
from instaseg.images import load_image
from instaseg.model.checkpoint import load_checkpoint
from instaseg.model.lanes import in_lanes, lanes_for
from instaseg.model.predictor import Predictor


@pytest.fixture()
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _same(a, b) -> None:
    assert len(a) == len(b) > 0
    np.testing.assert_array_equal(a.boxes, b.boxes)
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.dense_masks(), b.dense_masks())


def test_two_lanes_give_the_numbers_of_one_image_at_a_time(checkpoint, nuclei_paths, photo, one_thread):
    predictor = Predictor(checkpoint, device="cpu", score_threshold=0.0)
    images = [load_image(str(p)) for p in nuclei_paths] + [photo]
    alone = [predictor.predict_arrays([im])[0] for im in images]
    for _ in range(2):  # which lane an image gets, and what runs beside it, changes nothing
        lanes = [f.result() for _, f in in_lanes(lambda im: predictor.predict_arrays([im])[0], images, 2)]
        for a, b in zip(alone, lanes, strict=True):
            _same(a, b)


def test_evaluate_predicts_records_in_lanes_with_the_same_numbers(checkpoint, datasets, one_thread):
    records = load_dataset(str(datasets / "dsb2018_nuclei_sample")).records[:4]
    predictor = Predictor(checkpoint, device="cpu", score_threshold=0.0)
    done = []
    one = predict_records(predictor, records)
    two = predict_records(predictor, records, progress=done.append, lanes=2)
    assert done == [1, 2, 3, 4]
    for a, b in zip(one, two, strict=True):
        _same(a, b)


def test_lanes_for_a_checkpoint_and_for_a_model_being_trained(checkpoint):
    assert lanes_for(Predictor(checkpoint, device="cpu"), batches=10, threads=2) == (2, 1)
    model, class_map, config = load_checkpoint(checkpoint, device="cpu")
    model.train()
    training = Predictor.from_model(model, class_map, config)
    assert lanes_for(training, batches=10, threads=2, requested=2) == (1, 2)  # one lane, whatever is asked


def test_predict_folder_in_lanes_matches_one_image_at_a_time(checkpoint, nuclei_paths, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for path in nuclei_paths:
        shutil.copy(path, folder / path.name)
    base = ["predict", str(checkpoint), str(folder), "--save", "json", "--score-threshold", "0.3"]
    assert main([*base, "--out", str(tmp_path / "lanes"), "--threads", "2"]) == 0
    assert "lanes: 2 images at once, 1 thread(s) each" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "one"), "--threads", "1"]) == 0
    assert "lanes:" not in capsys.readouterr().err
    in_lanes_ = json.loads((tmp_path / "lanes" / "predictions.json").read_text())
    one_by_one = json.loads((tmp_path / "one" / "predictions.json").read_text())
    assert len(in_lanes_) > 0 and in_lanes_ == one_by_one
    assert main([*base, "--out", str(tmp_path / "bad"), "--lanes", "0"]) == 2
    assert "--lanes must be >= 1" in capsys.readouterr().err
