"""The backend's interactive ``/predict`` (``params.context``), in-process with the light model and real images."""

from __future__ import annotations

import numpy as np
import pytest

from instaseg.app.ls_interactive import MAX_PROMPTS
from instaseg.app.ls_protocol import label_config_xml
from instaseg.app.service import ModelService
from instaseg.formats.brush import brush_rle_to_mask
from instaseg.images import load_image
from instaseg.model.prompts import ImagePrompts

from ..checkpoints import save_light_checkpoint

BRUSH = label_config_xml(["nucleus"], "brush")
POLYGON = label_config_xml(["nucleus"], "polygon")


def box(x, y, w, h, labels=("nucleus",)):
    return {
        "type": "rectanglelabels",
        "from_name": "box_prompt",
        "to_name": "image",
        "original_width": 256,
        "original_height": 256,
        "value": {"x": x, "y": y, "width": w, "height": h, "rotation": 0, "rectanglelabels": list(labels)},
    }


def click(x, y, positive=True):
    return {
        "type": "keypointlabels",
        "is_positive": positive,
        "original_width": 256,
        "original_height": 256,
        "value": {"x": x, "y": y, "width": 0.5, "keypointlabels": ["nucleus"]},
    }


def body(sample_image_url, prompts, config=BRUSH, task_id=7):
    return {
        "tasks": [{"id": task_id, "data": {"image": sample_image_url}}],
        "label_config": config,
        "project": "3.1700000000",
        "params": {"login": None, "password": None, "context": {"result": prompts}},
    }


def test_box_prompt_gives_the_mask_head_answer_as_brush(
    ls_backend_client, sample_image_url, checkpoint, sample_image
):
    answer = ls_backend_client.post("/predict", json=body(sample_image_url, [box(10, 20, 30, 25)]))
    assert answer.status_code == 200, answer.text
    (prediction,) = answer.json()["results"]
    (region,) = prediction["result"]
    assert region["type"] == "brushlabels" and region["from_name"] == "label" and region["readonly"] is False
    assert region["value"]["brushlabels"] == ["nucleus"]
    mask = brush_rle_to_mask(region["value"]["rle"], 256, 256)
    # The same answer as ImagePrompts on the same image and model: x 10..40 %, y 20..45 % of 256 px.
    direct = ImagePrompts(ModelService(checkpoint).predictor, load_image(str(sample_image)))
    expected = direct.boxes([[25.6, 51.2, 102.4, 115.2]], [1]).masks.mask(0)
    np.testing.assert_array_equal(mask, expected)
    assert prediction["model_version"] == ls_backend_client.app.state.backend.service.version


def test_polygon_config_and_clicks(ls_backend_client, sample_image_url):
    backend = ls_backend_client.app.state.backend
    detections = ImagePrompts(backend.service.predictor, load_image_from(sample_image_url)).detections()
    rows, cols = np.nonzero(detections.masks.mask(0))
    x, y = (cols[len(cols) // 2] + 0.5) / 2.56, (rows[len(rows) // 2] + 0.5) / 2.56  # percent
    prompts = [box(50, 50, 20, 20), click(x, y), click(1, 1, positive=False)]
    answer = ls_backend_client.post("/predict", json=body(sample_image_url, prompts, POLYGON, task_id=8))
    assert answer.status_code == 200, answer.text
    regions = answer.json()["results"][0]["result"]
    assert [r["type"] for r in regions] == ["polygonlabels", "polygonlabels"]  # one per prompt
    assert all(r["readonly"] is False and len(r["value"]["points"]) >= 3 for r in regions)


def load_image_from(url):
    import urllib.request

    from instaseg.app.service import decode_upload

    with urllib.request.urlopen(url) as response:
        return decode_upload(response.read(), url)


def test_context_without_prompts_and_without_context(ls_backend_client, sample_image_url):
    answer = ls_backend_client.post("/predict", json=body(sample_image_url, []))
    assert answer.status_code == 200 and answer.json()["results"][0]["result"] == []
    whole = body(sample_image_url, [])
    whole["params"]["context"] = None  # an ordinary pre-annotation request
    answer = ls_backend_client.post("/predict", json=whole)
    assert answer.status_code == 200 and len(answer.json()["results"][0]["result"]) > 1


def test_features_are_cached_per_image_and_dropped_on_swap(ls_backend_client, sample_image_url, tmp_path):
    backend = ls_backend_client.app.state.backend
    old = backend.service
    backend.prompt_cache.clear()
    for x in (10, 40, 60):
        assert (
            ls_backend_client.post(
                "/predict", json=body(sample_image_url, [box(x, 10, 20, 20)], task_id=9)
            ).status_code
            == 200
        )
    assert len(backend.prompt_cache) == 1  # one image, three prompts
    other = save_light_checkpoint(tmp_path / "other.pt", ["nucleus"], 256, seed=5, score_threshold=0.05)
    new = ModelService(other)
    try:
        backend.swap(new)
        assert len(backend.prompt_cache) == 0
        answer = ls_backend_client.post(
            "/predict", json=body(sample_image_url, [box(10, 20, 30, 25)], task_id=9)
        ).json()
        assert answer["results"][0]["model_version"] == new.version != old.version
        mask = brush_rle_to_mask(answer["results"][0]["result"][0]["value"]["rle"], 256, 256)
        direct = ImagePrompts(new.predictor, load_image_from(sample_image_url)).boxes(
            [[25.6, 51.2, 102.4, 115.2]], [1]
        )
        np.testing.assert_array_equal(mask, direct.masks.mask(0))  # the new model's answer
    finally:
        backend.swap(old)


@pytest.mark.parametrize(
    ("prompts", "message"),
    [
        ([box(90, 10, 20, 20)], "leaves the image"),
        ([box(-5, 10, 20, 20)], "outside the image"),
        ([box(10, 10, 0, 20)], "zero size"),
        ([box(10, 10, 0.1, 20)], "under one pixel"),
        ([box(float("nan"), 10, 20, 20)], "finite number"),  # NaN (accepted by the JSON parser)
        ([box(10, 10, 20, 20, labels=["cat"])], "not in the labeling config"),
        ([box(10, 10, 20, 20, labels=[3])], "list of label names"),
        ([box("10", 10, 20, 20)], "must be a number"),
        ([{**box(10, 10, 20, 20), "type": "polygonlabels"}], "is not a prompt"),
        ([{**click(10, 10), "is_positive": "yes"}], "is_positive"),
        ([{**box(10, 10, 20, 20), "value": {**box(10, 10, 20, 20)["value"], "rotation": 30}}], "rotated"),
        ([click(10, 10)] * 10_000, f"at most {MAX_PROMPTS}"),
        ([5], "must be an object"),
        ("x", "must be a list"),
    ],
)
def test_bad_prompts_get_one_line_422(ls_backend_client, sample_image_url, prompts, message):
    import json

    request = body(sample_image_url, prompts)
    content = json.dumps(request, allow_nan=True)
    answer = ls_backend_client.post("/predict", content=content, headers={"Content-Type": "application/json"})
    assert answer.status_code in (400, 422), answer.text
    error = answer.json()["error"]
    assert message in error and "\n" not in error


def test_interactive_request_needs_one_task(ls_backend_client, sample_image_url):
    request = body(sample_image_url, [box(10, 10, 20, 20)])
    request["tasks"] *= 2
    answer = ls_backend_client.post("/predict", json=request)
    assert answer.status_code == 422 and "exactly one task" in answer.json()["error"]
