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


@pytest.mark.parametrize("kind", ["polygonlabels", "brushlabels"])
def test_backend_predictions_round_trip_through_label_studio(label_studio, backend_url, tmp_path, kind):
    url, token = label_studio
    backend, (user, password) = backend_url
    client = LabelStudioClient(url, token, timeout=300)
    project = client.json(
        "POST", "/api/projects", {"title": f"instaseg {kind}", "label_config": CONFIGS[kind]}
    )["id"]
    images = sorted(SAMPLE_IMAGES.glob("*.png"))[:3]
    upload(client, project, images)
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
    client.json(
        "POST",
        f"/api/dm/actions?id=retrieve_tasks_predictions&project={project}",
        {"selectedItems": {"all": True, "excluded": []}},
    )
    tasks = client.json("GET", f"/api/tasks?project={project}&fields=all&page_size=100")["tasks"]
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
