"""Property-based fuzzing of the Label Studio backend's ``/predict`` body (in-process, the real model).

A valid request (a fetchable image, an unreachable one, the polygon label config), and a valid interactive
request (one task, a smart box and clicks in ``params.context``), are mutated at random
places with the importers' hostile values (:func:`tests.formats.fuzz_targets.mutated`: huge numbers, NaN,
deep nesting, paths, URLs, wrong types). Every answer must be a 200 with one entry per task or a 4xx with
a one-line ``{"error": ...}``: never a 500. ``bench/fuzz.py --targets backend`` runs many more examples.
"""

from __future__ import annotations

from hypothesis import given

from ..formats.fuzz_targets import fixed_budget, mutated
from .backend_fuzz import (
    backend_interactive_body,
    backend_predict_answer,
    backend_predict_body,
)

BUDGET = fixed_budget(120)


def test_mutated_predict_bodies_get_answers_or_a_4xx(ls_backend_client, sample_image_url):
    outcomes = []

    @BUDGET
    @given(mutated(lambda: backend_predict_body(sample_image_url)))
    def run(body):
        outcomes.append(backend_predict_answer(ls_backend_client, body))

    run()
    # The budget reaches both: mutations that leave a task to predict and ones that refuse the request.
    assert {"partly predicted", "refused"} <= set(outcomes), outcomes


def test_mutated_interactive_bodies_get_answers_or_a_4xx(ls_backend_client, sample_image_url):
    outcomes = []

    @BUDGET
    @given(mutated(lambda: backend_interactive_body(sample_image_url)))
    def run(body):
        outcomes.append(backend_predict_answer(ls_backend_client, body))

    run()
    assert {"predicted", "refused"} <= set(outcomes), outcomes


def test_the_unmutated_interactive_body_answers_its_prompts(ls_backend_client, sample_image_url):
    body = backend_interactive_body(sample_image_url)
    assert backend_predict_answer(ls_backend_client, body) == "predicted"
    (prediction,) = ls_backend_client.post("/predict", json=body).json()["results"]
    assert [r["type"] for r in prediction["result"]][:1] == ["brushlabels"]  # the box's region first


def test_the_unmutated_body_predicts_one_task_and_reports_the_other(ls_backend_client, sample_image_url):
    body = backend_predict_body(sample_image_url)
    assert backend_predict_answer(ls_backend_client, body) == "partly predicted"
    first, second = ls_backend_client.post("/predict", json=body).json()["results"]
    assert first["result"] and second["error"].startswith("task 2: cannot fetch the image")
