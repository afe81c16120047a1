"""instaseg's ML backend against a real Label Studio 1.23 server, and ``pull-label-studio`` from it.

Creates a polygon project and a brush project, uploads real images, registers the backend (basic auth),
asks Label Studio for predictions, accepts them as annotations, pulls the export + images with
``instaseg pull-label-studio`` and imports them with instaseg's Label Studio importer: every predicted
region comes back as one instance, brush masks pixel for pixel.
"""

from __future__ import annotations

import subprocess
import sys
import uuid

import numpy as np
import pytest

from instaseg.app.ls_client import LabelStudioClient
from instaseg.formats.brush import brush_rle_to_mask
from instaseg.formats.labelstudio_json import load_labelstudio_json
from instaseg.problems import ProblemLog

from .conftest import REPO, SAMPLE_IMAGES

pytestmark = pytest.mark.slow

CONFIGS = {
    "polygonlabels": """<View><Image name="img" value="$image"/>
      <PolygonLabels name="outline" toName="img"><Label value="nucleus"/><Label value="debris"/></PolygonLabels></View>""",
    "brushlabels": """<View><Image name="img" value="$image"/>
      <BrushLabels name="paint" toName="img"><Label value="Nucleus"/></BrushLabels></View>""",
}


def upload(client: LabelStudioClient, project: int, paths) -> None:
    """Import image files into a project (multipart upload, as the browser does)."""
    boundary = uuid.uuid4().hex
    body = b""
    for path in paths:
        body += (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{path.name}"; filename="{path.name}"\r\n'
                "Content-Type: image/png\r\n\r\n"
            ).encode()
            + path.read_bytes()
            + b"\r\n"
        )
    body += f"--{boundary}--\r\n".encode()
    client.request(
        "POST",
        f"/api/projects/{project}/import",
        data=body,
        content_type=f"multipart/form-data; boundary={boundary}",
    )


def connect_backend(client: LabelStudioClient, project: int, backend_url) -> None:
    """Register the backend (basic auth) as the project's ML backend; Label Studio checks it answers."""
    backend, (user, password) = backend_url
    ml = client.json(
        "POST",
        "/api/ml",
        {
            "url": backend,
            "project": project,
            "title": "instaseg",
            "auth_method": "BASIC_AUTH",
            "basic_auth_user": user,
            "basic_auth_pass": password,
        },
    )
    assert ml["state"] == "CO", ml  # connected: /health and /setup answered through basic auth


def retrieve_predictions(client: LabelStudioClient, project: int) -> list[dict]:
    """Label Studio's *Retrieve predictions* action on every task (one batch to the backend); the tasks."""
    client.json(
        "POST",
        f"/api/dm/actions?id=retrieve_tasks_predictions&project={project}",
        {"selectedItems": {"all": True, "excluded": []}},
    )
    return client.json("GET", f"/api/tasks?project={project}&fields=all&page_size=100")["tasks"]


@pytest.mark.parametrize("kind", ["polygonlabels", "brushlabels"])
def test_backend_predictions_round_trip_through_label_studio(label_studio, backend_url, tmp_path, kind):
    url, token = label_studio
    client = LabelStudioClient(url, token, timeout=300)
    project = client.json(
        "POST", "/api/projects", {"title": f"instaseg {kind}", "label_config": CONFIGS[kind]}
    )["id"]
    images = sorted(SAMPLE_IMAGES.glob("*.png"))[:3]
    upload(client, project, images)
    connect_backend(client, project, backend_url)
    tasks = retrieve_predictions(client, project)
    assert len(tasks) == len(images)
    predicted = {}
    for task in tasks:
        predictions = client.json("GET", f"/api/predictions?task={task['id']}")
        assert len(predictions) == 1, f"task {task['id']}: {predictions}"
        result = predictions[0]["result"]
        assert result and all(r["type"] == kind and r["original_width"] == 256 for r in result)
        predicted[task["data"]["image"].rsplit("/", 1)[-1]] = result
        # A person accepts the pre-annotation as it is.
        client.json("POST", f"/api/tasks/{task['id']}/annotations", {"result": result, "task": task["id"]})

    out = tmp_path / "pulled"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "instaseg",
            "pull-label-studio",
            url,
            "--project",
            str(project),
            "--token",
            token,
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(predicted)
    log = ProblemLog()
    class_map, records = load_labelstudio_json(str(out / "result.json"), str(out / "images"), log)
    assert not log.has_errors, log
    assert class_map.names == (("Nucleus",) if kind == "brushlabels" else ("nucleus",))
    assert len(records) == len(images)
    for record in records:
        result = predicted[record.file_name.rsplit("/", 1)[-1]]
        assert len(record.annotations) == len(result)
        if kind == "brushlabels":
            imported = record.instances().dense_masks()
            for mask, region in zip(imported, result, strict=True):
                assert np.array_equal(mask, brush_rle_to_mask(region["value"]["rle"], 256, 256))


def test_an_unreachable_task_image_leaves_the_other_tasks_predicted(label_studio, backend_url):
    """One batch of two uploaded images and a task whose image URL nobody serves: Label Studio saves the
    two predictions and none for the third (the backend's ``{"error"}`` entry has no ``result``)."""
    url, token = label_studio
    client = LabelStudioClient(url, token, timeout=300)
    project = client.json(
        "POST", "/api/projects", {"title": "instaseg partial", "label_config": CONFIGS["polygonlabels"]}
    )["id"]
    upload(client, project, sorted(SAMPLE_IMAGES.glob("*.png"))[3:5])
    client.json("POST", f"/api/projects/{project}/import", [{"image": "http://127.0.0.1:9/gone.png"}])
    connect_backend(client, project, backend_url)
    counts = {
        task["data"]["image"]: len(client.json("GET", f"/api/predictions?task={task['id']}"))
        for task in retrieve_predictions(client, project)
    }
    assert len(counts) == 3 and counts.pop("http://127.0.0.1:9/gone.png") == 0
    assert list(counts.values()) == [1, 1], counts
