"""Helpers of the labelling-loop tests: a Label Studio project of the bundled nuclei sample, annotations
made from its ground truth through Label Studio's API, and small HTTP calls to the backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from functools import cache
from pathlib import Path

from instaseg.app.ls_client import LabelStudioClient
from instaseg.formats.labelstudio_export import instances_to_label_studio_regions
from instaseg.formats.load import load_dataset

from .conftest import REPO, wait_for_http
from .test_label_studio import upload

SAMPLE = REPO / "instaseg" / "sample_data" / "nuclei"
POLYGON_CONFIG = """<View><Image name="img" value="$image"/>
  <PolygonLabels name="outline" toName="img"><Label value="nucleus"/></PolygonLabels></View>"""


@cache
def sample_records() -> dict[str, object]:
    """Image file name (without Label Studio's upload prefix) -> the sample's ground-truth record."""
    return {Path(r.file_name).name: r for r in load_dataset(str(SAMPLE)).records}


def create_sample_project(client: LabelStudioClient, title: str, images: int = 60) -> tuple[int, list[dict]]:
    """A polygon project with the first ``images`` sample images; returns ``(project id, tasks by id)``."""
    project = client.json("POST", "/api/projects", {"title": title, "label_config": POLYGON_CONFIG})["id"]
    upload(client, project, sorted((SAMPLE / "images").glob("*.png"))[:images])
    tasks = client.json("GET", f"/api/tasks?project={project}&page_size=1000")["tasks"]
    return project, sorted(tasks, key=lambda t: t["id"])


def record_of(task: dict):
    """The ground-truth record of a task (its upload name is ``<8 hex>-<sample file name>``)."""
    uploaded = task["data"]["image"].rsplit("/", 1)[-1]
    return sample_records()[uploaded.split("-", 1)[1]]


def annotate(client: LabelStudioClient, task: dict) -> None:
    """A person's annotation of ``task``: the sample's ground truth, as Label Studio polygons."""
    regions = instances_to_label_studio_regions(
        record_of(task).instances(), {1: "nucleus"}, "polygonlabels", "outline", "img"
    )
    for region in regions:
        region.pop("score")
    client.json("POST", f"/api/tasks/{task['id']}/annotations", {"result": regions, "task": task["id"]})


def get_json(url: str, timeout: float = 30) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def post_json(url: str, body: dict, timeout: float = 120) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def wait_until(condition, timeout: float, what: str, interval: float = 1.0):
    """Poll ``condition()`` until it returns something truthy; ``AssertionError`` naming ``what`` after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout:.0f} s")


def log_entries(project_dir: Path) -> list[dict]:
    path = project_dir / "rounds.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def start_backend(args: list[str], log: Path, port: int, env: dict[str, str] | None = None):
    """``instaseg label-studio-backend ARGS --port PORT`` as a subprocess (one torch thread, as a test
    on a shared CPU should; ``env`` added to the environment); returns it once ``/health`` answers."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    handle = open(log, "a")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen(
        [sys.executable, "-m", "instaseg", "label-studio-backend", *args, "--port", str(port)],
        stdout=handle,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=REPO,
    )
    wait_for_http(f"http://127.0.0.1:{port}/health", process, log, timeout=120)
    return process
