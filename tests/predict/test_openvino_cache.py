"""The OpenVINO engine's model cache: the first run converts and saves the model, a later run with the same
checkpoint and settings reads it (no conversion) and predicts the same; other settings get their own entry."""

from __future__ import annotations

import numpy as np
import pytest

from instaseg.images import load_image
from instaseg.model.predictor import Predictor

openvino = pytest.importorskip("openvino")

from instaseg.model.openvino_engine import OpenVinoEngine, default_cache_dir  # noqa: E402


@pytest.mark.slow  # one conversion (~30-60 s on 2 cores) and three compilations
def test_a_second_run_reads_the_converted_model_from_the_cache(
    checkpoint, nuclei_paths, tmp_path, monkeypatch
):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "instaseg" / "openvino"
    image = load_image(str(nuclei_paths[0]))
    first = Predictor(checkpoint, engine="openvino", precision="fp32", threads=2)
    expected = first.predict(image)
    assert not first.engine.converted_from_cache
    saved = sorted(default_cache_dir().glob("*/model.xml"))
    assert len(saved) == 1 and saved[0].with_suffix(".bin").stat().st_size > 1_000_000  # float32 weights

    def no_conversion(self, example):
        raise AssertionError("converted again although the cache holds this model")

    monkeypatch.setattr(OpenVinoEngine, "_convert", no_conversion)
    second = Predictor(checkpoint, engine="openvino", precision="fp32", threads=2)
    again = second.predict(image)
    assert second.engine.converted_from_cache
    assert len(expected) == len(again) > 0
    np.testing.assert_array_equal(expected.boxes, again.boxes)
    np.testing.assert_array_equal(expected.scores, again.scores)
    assert any((saved[0].parent / "compiled").iterdir())  # OpenVINO's compiled blob, read by later runs

    monkeypatch.undo()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    other = Predictor(checkpoint, engine="openvino", precision="fp32", threads=2, score_threshold=0.3)
    other.predict(image)
    assert not other.engine.converted_from_cache  # another score threshold is another graph
    assert len(list(default_cache_dir().glob("*/model.xml"))) == 2
