"""``instaseg label-studio-backend`` over HTTP (a real server subprocess): routes, auth and bad requests."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request

import pytest

POLYGON_CONFIG = """<View><Image name="img" value="$image"/>
  <PolygonLabels name="outline" toName="img"><Label value="nucleus"/></PolygonLabels></View>"""


def post(url: str, body: bytes | dict, auth: tuple[str, str] | None) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    request = urllib.request.Request(url, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_setup_accepts_a_polygon_project(backend_url):
    url, auth = backend_url
    status, answer = post(
        url + "/setup",
        {
            "project": "1.1700000000",
            "schema": POLYGON_CONFIG,
            "hostname": "http://127.0.0.1:9",
            "access_token": "x",
        },
        auth,
    )
    assert status == 200 and answer["model_version"].startswith("instaseg-")


@pytest.mark.parametrize(
    "body, auth, status, message",
    [
        ({"tasks": []}, None, 401, "basic authentication"),
        ({"tasks": []}, ("ml", "wrong"), 401, "basic authentication"),
        (b"{not json", "ok", 400, "not valid JSON"),
        (b"[1, 2]", "ok", 422, "JSON object"),
        ({"tasks": "x", "label_config": POLYGON_CONFIG}, "ok", 422, "'tasks' must be a list"),
        (
            {"tasks": [], "label_config": "<View><Text name='t' value='$text'/></View>"},
            "ok",
            422,
            "no <PolygonLabels> or <BrushLabels>",
        ),
        ({"tasks": [], "label_config": "<View><Image"}, "ok", 422, "not valid XML"),
        (
            {
                "tasks": [],
                "label_config": POLYGON_CONFIG.replace('"nucleus"/>', '"car"/><Label value="bus"/>'),
            },
            "ok",
            422,
            "none of the model's classes",
        ),
        # Port 9 on loopback: nothing listens there, the connection is refused.
        (
            {
                "tasks": [{"id": 7, "data": {"image": "http://127.0.0.1:9/data/upload/1/x.png"}}],
                "label_config": POLYGON_CONFIG,
                "project": "1.1700000000",
            },
            "ok",
            424,
            "task 7: cannot fetch the image",
        ),
        (
            {"tasks": [{"id": 8, "data": {"text": "hello"}}], "label_config": POLYGON_CONFIG},
            "ok",
            422,
            "no 'image' image URL",
        ),
    ],
)
def test_bad_requests_get_a_4xx_with_a_message(backend_url, body, auth, status, message):
    url, credentials = backend_url
    code, answer = post(url + "/predict", body, credentials if auth == "ok" else auth)
    assert code == status and message in answer["error"], answer
    assert "Traceback" not in answer["error"]


def test_health_and_webhook(backend_url):
    url, auth = backend_url
    request = urllib.request.Request(
        url + "/health",
        headers={"Authorization": "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        health = json.loads(response.read())
    assert health["status"] == "UP" and health["classes"] == ["nucleus"]
    status, answer = post(url + "/webhook", {"action": "ANNOTATION_CREATED", "annotation": {"id": 1}}, auth)
    assert status == 200 and answer["action"] == "ANNOTATION_CREATED" and answer["received"] >= 1
    status, answer = post(url + "/webhook", {"project": {}}, auth)
    assert status == 422 and "action" in answer["error"]


def test_one_unreachable_image_fails_only_its_task(backend_url, image_server, sample_image):
    """A batch of a fetchable image, an unreachable one and a task without an image: the first is
    predicted, the other two keep their places as errors (Label Studio skips entries without a
    ``result``); a batch where every task fails is refused as a whole."""
    url, auth = backend_url
    tasks = [
        {"id": 1, "data": {"image": f"{image_server}/{sample_image.name}"}},
        {"id": 2, "data": {"image": "http://127.0.0.1:9/data/upload/1/gone.png"}},  # refused at once
        {"id": 3, "data": {"text": "no image"}},
    ]
    status, answer = post(url + "/predict", {"tasks": tasks, "label_config": POLYGON_CONFIG}, auth)
    assert status == 200, answer
    first, unreachable, imageless = answer["results"]
    assert first["result"] and all(r["type"] == "polygonlabels" for r in first["result"])
    assert "result" not in unreachable and unreachable["error"].startswith("task 2: cannot fetch the image")
    assert "result" not in imageless and "task 3" in imageless["error"]

    status, answer = post(url + "/predict", {"tasks": tasks[1:], "label_config": POLYGON_CONFIG}, auth)
    assert status == 424, answer
    assert (
        answer["error"].startswith("all 2 tasks failed: task 2: cannot fetch") and "task 3" in answer["error"]
    )
