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

from instaseg.app.ls_auth import PAT
from instaseg.app.ls_client import LabelStudioClient, LabelStudioError
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


def connect_backend(client: LabelStudioClient, project: int, backend_url, interactive: bool = False) -> dict:
    """Register the backend (basic auth) as the project's ML backend, for interactive preannotations too
    when ``interactive``; Label Studio checks it answers. Returns Label Studio's ML backend object."""
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
            "is_interactive": interactive,
        },
    )
    assert ml["state"] == "CO", ml  # connected: /health and /setup answered through basic auth
    return ml


def retrieve_predictions(client: LabelStudioClient, project: int) -> list[dict]:
    """Label Studio's *Retrieve predictions* action on every task (one batch to the backend); the tasks."""
    client.json(
        "POST",
        f"/api/dm/actions?id=retrieve_tasks_predictions&project={project}",
        {"selectedItems": {"all": True, "excluded": []}},
    )
    return client.json("GET", f"/api/tasks?project={project}&fields=all&page_size=100")["tasks"]


@pytest.mark.parametrize("kind", ["polygonlabels", "brushlabels"])
def test_backend_predictions_round_trip_through_label_studio(label_studio, ls_backend_url, tmp_path, kind):
    """A default server (Personal Access Token) and the backend started with that token."""
    round_trip(*label_studio, ls_backend_url, tmp_path, kind)


def test_a_legacy_token_server_round_trip(label_studio_legacy, backend_url, tmp_path):
    """A server with legacy tokens on: pull with the legacy token, and the backend started without a token
    fetches the images with the one Label Studio's /setup sends (the project creator's legacy token)."""
    round_trip(*label_studio_legacy, backend_url, tmp_path, "polygonlabels")


def round_trip(url: str, token: str, backend_url, tmp_path, kind: str) -> None:
    """Upload 3 images, backend predictions, accepted as annotations, pulled and imported back."""
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
    done = run_pull(url, project, token, out)
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


def test_an_unreachable_task_image_leaves_the_other_tasks_predicted(label_studio, ls_backend_url):
    """One batch of two uploaded images and a task whose image URL nobody serves: Label Studio saves the
    two predictions and none for the third (the backend's ``{"error"}`` entry has no ``result``)."""
    url, token = label_studio
    client = LabelStudioClient(url, token, timeout=300)
    project = client.json(
        "POST", "/api/projects", {"title": "instaseg partial", "label_config": CONFIGS["polygonlabels"]}
    )["id"]
    upload(client, project, sorted(SAMPLE_IMAGES.glob("*.png"))[3:5])
    client.json("POST", f"/api/projects/{project}/import", [{"image": "http://127.0.0.1:9/gone.png"}])
    connect_backend(client, project, ls_backend_url)
    counts = {
        task["data"]["image"]: len(client.json("GET", f"/api/predictions?task={task['id']}"))
        for task in retrieve_predictions(client, project)
    }
    assert len(counts) == 3 and counts.pop("http://127.0.0.1:9/gone.png") == 0
    assert list(counts.values()) == [1, 1], counts


def run_pull(url: str, project: int, token: str, out, env=None, extra=()) -> subprocess.CompletedProcess:
    """``instaseg pull-label-studio URL --project P --token T --out OUT [EXTRA]`` as a person runs it."""
    command = [sys.executable, "-m", "instaseg", "pull-label-studio", url, "--project", str(project)]
    return subprocess.run(
        [*command, "--token", token, "--out", str(out), *extra],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        env=env,
    )


def test_personal_access_token_is_exchanged_renewed_and_refused_in_one_line(label_studio, tmp_path):
    """On a server started as ``label-studio start`` makes it (legacy tokens off), the Personal Access Token
    works after its exchange for an access token, a revoked access token is renewed after the 401, and a
    tampered PAT or a legacy token get one line naming the kind and where to make a new one."""
    url, token = label_studio
    settings = LabelStudioClient(url, token).json("GET", "/api/jwt/settings")
    assert settings["legacy_api_tokens_enabled"] is False, settings
    client = LabelStudioClient(url, token)
    assert client.token_kind == PAT
    project = client.json(
        "POST", "/api/projects", {"title": "tokens", "label_config": CONFIGS["polygonlabels"]}
    )
    first = client.auth.header()
    assert first.startswith("Bearer ") and first != f"Bearer {token}"
    client.auth._access = first.removeprefix("Bearer ")[:-4] + "AAAA"  # an access token the server refuses
    assert client.project(project["id"])["title"] == "tokens"  # 401, renewed, answered
    assert client.auth.header() not in (first, f"Bearer {client.auth._access[:-4]}AAAA")

    head, payload, signature = token.split(".")
    tampered = f"{head}.{payload}.{signature[::-1]}"
    for wrong, kind, where in [
        (tampered, "Personal Access Token", "Account & Settings → Personal Access Token"),
        ("0123456789abcdef0123456789abcdef01234567", "legacy API token", "Account & Settings → Legacy Token"),
    ]:
        with pytest.raises(LabelStudioError) as e:
            LabelStudioClient(url, wrong).project(project["id"])
        assert f"Label Studio refused the {kind}" in str(e.value) and where in str(e.value), e.value
        done = run_pull(url, project["id"], wrong, tmp_path / "out")
        assert done.returncode == 2, done
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and kind in lines[0] and where in lines[0], done.stderr
