"""The backend's ``/predict`` keeps every part of a mask: brush regions give the masks, polygon regions
of the same prediction come back through the importer part for part."""

from __future__ import annotations

import functools
import http.server
import threading

from instaseg.formats.brush import brush_rle_to_mask
from tests.ls_round_trip import check_every_part_comes_back

from ..checkpoints import save_light_checkpoint
from .conftest import start_instaseg, stop
from .test_ls_backend import post

CONFIG = """<View><Image name="img" value="$image"/>
  <{tag} name="outline" toName="img"><Label value="nucleus"/></{tag}></View>"""


def serve_folder(folder):
    """A loopback HTTP server for ``folder`` (the task image's public URL); returns ``(server, base url)``."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def test_backend_polygons_hold_every_part(sample_image, tmp_path):
    # Random weights at 128 px with every score kept: ragged masks, a few of them in several parts.
    checkpoint = save_light_checkpoint(tmp_path / "ragged.pt", ["nucleus"], 128, score_threshold=0.0)
    backend, url = start_instaseg(["label-studio-backend", str(checkpoint)], tmp_path / "log", "/health")
    server, base = serve_folder(sample_image.parent)
    names = sorted(p.name for p in sample_image.parent.glob("*.png"))[:6]
    tasks = [{"id": k, "data": {"image": f"{base}/{name}"}} for k, name in enumerate(names)]
    answers = {}
    try:
        for tag in ("BrushLabels", "PolygonLabels"):
            body = {"tasks": tasks, "label_config": CONFIG.format(tag=tag)}
            status, answer = post(url + "/predict", body, None)
            assert status == 200, answer
            answers[tag] = [r["result"] for r in answer["results"]]
    finally:
        server.shutdown()
        stop(backend)
    several = 0
    for k, (brush, polygons) in enumerate(zip(answers["BrushLabels"], answers["PolygonLabels"], strict=True)):
        height, width = brush[0]["original_height"], brush[0]["original_width"]
        masks = [brush_rle_to_mask(r["value"]["rle"], height, width) for r in brush]
        assert all(m.any() for m in masks)
        several += check_every_part_comes_back(polygons, masks, width, height, tmp_path / str(k))
        assert sorted({r["score"] for r in polygons}) == sorted({r["score"] for r in brush})
    assert several >= 1, "no mask in several parts: the test proves nothing"
