"""Fuzzing the Label Studio backend's ``/predict`` body: the valid request, the outcome of one body, and the
real pieces it runs against (the backend in-process, an HTTP server of real images).

Used by ``tests/app/test_ls_backend_fuzz.py`` (a small fixed budget) and ``bench/fuzz.py --targets
backend`` (many more examples).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from ..formats.fuzz_targets import to_json

POLYGON_CONFIG = """<View><Image name="img" value="$image"/>
  <PolygonLabels name="outline" toName="img"><Label value="nucleus"/></PolygonLabels></View>"""


def backend_predict_body(image_url: str) -> dict:
    """A valid ``/predict`` body: task 1's image can be fetched, task 2's cannot (nothing listens on port 9)."""
    return {
        "tasks": [
            {"id": 1, "data": {"image": image_url}, "project": 1},
            {"id": 2, "data": {"image": "http://127.0.0.1:9/data/upload/1/gone.png"}, "project": 1},
        ],
        "label_config": POLYGON_CONFIG,
        "project": "1.1700000000",
        "params": {"login": None, "password": None, "context": None},
    }


INTERACTIVE_CONFIG = """<View><Image name="img" value="$image"/>
  <BrushLabels name="mask" toName="img"><Label value="nucleus"/></BrushLabels>
  <RectangleLabels name="box" toName="img" smart="true"><Label value="nucleus"/></RectangleLabels>
  <KeyPointLabels name="click" toName="img" smart="true"><Label value="nucleus"/></KeyPointLabels></View>"""


def backend_interactive_body(image_url: str) -> dict:
    """A valid interactive ``/predict`` body (Label Studio's interactive-annotating call): one task, a
    smart box, a positive and a negative click in ``params.context``."""
    size = {"original_width": 256, "original_height": 256, "image_rotation": 0}
    return {
        "tasks": [{"id": 1, "data": {"image": image_url}, "project": 1}],
        "label_config": INTERACTIVE_CONFIG,
        "project": "1.1700000000",
        "params": {
            "login": None,
            "password": None,
            "context": {
                "result": [
                    {
                        **size,
                        "type": "rectanglelabels",
                        "from_name": "box",
                        "to_name": "img",
                        "value": {
                            "x": 10,
                            "y": 20,
                            "width": 30,
                            "height": 25,
                            "rectanglelabels": ["nucleus"],
                        },
                    },
                    {
                        **size,
                        "type": "keypointlabels",
                        "is_positive": True,
                        "value": {"x": 50, "y": 50, "width": 0.5, "keypointlabels": ["nucleus"]},
                    },
                    {**size, "type": "keypointlabels", "is_positive": False, "value": {"x": 5.5, "y": 90}},
                ]
            },
        },
    }


def backend_predict_answer(client, body) -> str:
    """POST ``body`` (written as :func:`~tests.formats.fuzz_targets.to_json` does) and check the answer:
    ``"predicted"`` (200, every task has a ``result``), ``"partly predicted"`` (200, some tasks have an
    ``error`` in their place) or ``"refused"`` (a 4xx with a one-line error). ``AssertionError`` for anything
    else: a 500, a traceback, results that do not match the tasks."""
    answer = client.post("/predict", content=to_json(body), headers={"Content-Type": "application/json"})
    payload = answer.json()
    if answer.status_code != 200:
        assert answer.status_code in (400, 422, 424), (answer.status_code, payload)
        error = payload["error"]
        assert isinstance(error, str) and "\n" not in error and "Traceback" not in error, payload
        return "refused"
    results = payload["results"]
    params = body.get("params")
    interactive = isinstance(params, dict) and params.get("context") is not None  # one task, its prompts
    assert isinstance(results, list) and len(results) == (1 if interactive else len(body["tasks"])), payload
    for entry in results:
        assert isinstance(entry.get("result"), list) or isinstance(entry.get("error"), str), entry
    return "partly predicted" if any("error" in entry for entry in results) else "predicted"


@contextmanager
def serve_images(folder: Path) -> Iterator[str]:
    """``folder`` over plain HTTP on a free loopback port (a thread); yields the base URL."""

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    with serve_handler(partial(Quiet, directory=str(folder))) as url:
        yield url


@contextmanager
def serve_handler(handler) -> Iterator[str]:
    """An ``http.server`` request handler on a free loopback port (a thread); yields the base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def backend_client(checkpoint: Path):
    """A test client of the backend serving ``checkpoint`` in-process (no mirror pass, 1-megapixel limit);
    server errors come back as 500 answers instead of being raised."""
    from starlette.testclient import TestClient

    from instaseg.app.ls_backend import create_backend
    from instaseg.app.service import ModelService

    app = create_backend(ModelService(checkpoint), max_pixels=1_000_000, timeout=5.0, flip=False)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client
