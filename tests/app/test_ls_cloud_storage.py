"""Photos in a bucket, annotated through Label Studio's cloud storage, end to end on loopback.

``instaseg upload`` of sample photos to a real S3-protocol server (moto, ``tests/s3.py``) -> a Label Studio
1.23 project (Personal Access Token, legacy tokens off) whose *Source Cloud Storage* is that bucket
(``s3_endpoint``), synced through its API: tasks of ``s3://bucket/key`` -> annotations made through the API
-> ``instaseg pull-label-studio`` (through Label Studio's presign route, then ``--from-bucket``) -> a short
``instaseg train`` -> the backend started with the trained checkpoint pre-annotates an ``s3://`` task. Then
the same for Label Studio's local-files storage (``/data/local-files/?d=``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import pytest

from instaseg.app.ls_client import LabelStudioClient
from instaseg.formats.labelstudio_images import image_reference

from .conftest import REPO, SAMPLE_IMAGES, start_instaseg, stop
from .loop_helpers import POLYGON_CONFIG, annotate
from .test_label_studio import retrieve_predictions, run_pull

pytest_plugins = ["tests.s3"]
pytestmark = pytest.mark.slow

PHOTOS = sorted(SAMPLE_IMAGES.glob("*.png"))[:4]  # 256x256 nuclei; three annotated, one left for the model


def instaseg(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "instaseg", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
        env=env,
    )


def synced_tasks(client: LabelStudioClient, project: int, kind: str, storage: dict, count: int) -> list[dict]:
    """Create a source storage of ``kind`` (``s3``, ``localfiles``) on ``project`` and sync it through the API,
    as *Settings -> Cloud Storage -> Sync* does; the project's tasks once ``count`` are there."""
    created = client.json("POST", f"/api/storages/{kind}", {"project": project, "title": kind, **storage})
    client.json("POST", f"/api/storages/{kind}/{created['id']}/sync", {})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        tasks = client.json("GET", f"/api/tasks?project={project}&page_size=100")["tasks"]
        if len(tasks) >= count:
            return sorted(tasks, key=lambda t: t["id"])
        time.sleep(1)
    pytest.fail(f"{kind} storage sync made {len(tasks)} tasks, expected {count}: {created}")


def annotate_as_sample(client: LabelStudioClient, tasks: list[dict]) -> None:
    """Annotate the tasks with the sample's ground truth of their photo (``record_of`` reads the upload name
    ``<8 hex>-<sample name>`` from the URL's end: a stand-in prefix keeps the sample's own name)."""
    for task in tasks:
        name = image_reference(task["data"]["image"])[0].rsplit("/", 1)[-1]
        annotate(client, {**task, "data": {"image": "/x-" + name}})


def connect_and_predict(client: LabelStudioClient, project: int, backend: str) -> list[dict]:
    ml = client.json("POST", "/api/ml", {"url": backend, "project": project, "title": "instaseg"})
    assert ml["state"] == "CO", ml
    return retrieve_predictions(client, project)


def test_bucket_project_end_to_end(label_studio, bucket, s3_endpoint, subprocess_env, tmp_path):
    url, token = label_studio
    client = LabelStudioClient(url, token, timeout=300)
    photos = tmp_path / "photos"
    photos.mkdir()
    for photo in PHOTOS:
        shutil.copy(photo, photos / photo.name)
    done = instaseg("upload", "--no-progress", str(photos), f"{bucket}/photos", env=subprocess_env)
    assert done.returncode == 0, done.stderr

    project = client.json("POST", "/api/projects", {"title": "bucket", "label_config": POLYGON_CONFIG})["id"]
    name = bucket.removeprefix("s3://")
    s3 = {
        "bucket": name,
        "prefix": "photos",
        "regex_filter": r".*\.png",
        "use_blob_urls": True,
        "presign": True,
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
        "region_name": "us-east-1",
        "s3_endpoint": s3_endpoint,
    }
    tasks = synced_tasks(client, project, "s3", s3, len(PHOTOS))
    # The task API answers them resolved: /tasks/<id>/resolve/?fileuri=<base64 of s3://...>
    assert {image_reference(t["data"]["image"]) for t in tasks} == {
        (f"s3://{name}/photos/{p.name}", True) for p in PHOTOS
    }
    annotate_as_sample(client, tasks[:3])

    out = tmp_path / "pulled"
    done = run_pull(url, project, token, out)
    assert done.returncode == 0, done.stderr
    assert f"{len(PHOTOS)} images through Label Studio's presign route" in done.stdout, done.stdout
    for photo in PHOTOS:
        assert (out / "images" / photo.name).read_bytes() == photo.read_bytes()
    direct = tmp_path / "direct"
    done = run_pull(url, project, token, direct, env=subprocess_env, extra=["--from-bucket"])
    assert done.returncode == 0, done.stderr
    assert f"{len(PHOTOS)} images straight from the bucket" in done.stdout, done.stdout

    run = tmp_path / "run"
    train = ["train", str(out / "result.json"), "--images", str(out / "images"), "--out", str(run)]
    done = instaseg(
        *train,
        *("--arch", "maskrcnn_resnet18_fpn", "--weights", "none", "--epochs", "1", "--image-size", "128"),
        *("--batch-size", "2", "--workers", "0", "--device", "cpu", "--val-fraction", "0.34"),
        *("--score-threshold", "0.01"),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    checkpoint = run / "best.pt"
    assert checkpoint.is_file(), sorted(p.name for p in run.iterdir())

    log = tmp_path / "backend.log"
    arguments = ["label-studio-backend", str(checkpoint), "--max-megapixels", "1"]
    process, backend = start_instaseg(
        [*arguments, "--label-studio-url", url, "--label-studio-token", token], log, health_path="/health"
    )
    try:
        predicted = connect_and_predict(client, project, backend)
        unlabelled = next(t for t in predicted if t["id"] == tasks[3]["id"])
        predictions = client.json("GET", f"/api/predictions?task={unlabelled['id']}")
        # A prediction is saved only when the backend fetched the s3:// image (else its entry is an error).
        assert len(predictions) == 1, f"{predictions}\n{log.read_text()[-3000:]}"
        assert predictions[0]["model_version"] and isinstance(predictions[0]["result"], list)

        # Label Studio's local-files storage: photos in a folder under its document root.
        folder = label_studio.data / "files" / "photos"
        folder.mkdir(parents=True, exist_ok=True)
        for photo in PHOTOS[:2]:
            shutil.copy(photo, folder / photo.name)
        local = client.json("POST", "/api/projects", {"title": "local", "label_config": POLYGON_CONFIG})["id"]
        storage = {"path": str(folder), "regex_filter": r".*\.png", "use_blob_urls": True}
        local_tasks = synced_tasks(client, local, "localfiles", storage, 2)
        images = [t["data"]["image"] for t in local_tasks]
        assert all("/data/local-files/?d=photos/" in image for image in images), images
        annotate_as_sample(client, local_tasks[:1])
        done = run_pull(url, local, token, tmp_path / "local")
        assert done.returncode == 0, done.stderr
        assert "2 images from Label Studio" in done.stdout, done.stdout
        for photo in PHOTOS[:2]:
            assert (tmp_path / "local" / "images" / photo.name).read_bytes() == photo.read_bytes()
        connect_and_predict(client, local, backend)
        second = client.json("GET", f"/api/predictions?task={local_tasks[1]['id']}")
        assert len(second) == 1, f"{second}\n{log.read_text()[-3000:]}"
    finally:
        stop(process)
    exported = json.loads((out / "result.json").read_text())
    assert sum(bool(t["annotations"]) for t in exported) == 3
