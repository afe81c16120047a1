"""Interactive pre-annotations through the real Label Studio 1.23: a smart box and a click on an uploaded
sample image, sent as its editor sends them (``POST /api/ml/<id>/interactive-annotating``), come back as a
region of the project's control over the object under the prompt (IoU against the image's ground truth).

The backend serves the light model with random weights (tests/app/conftest.py): what is checked is the
path (Label Studio -> ``params.context`` -> percent to pixels -> mask head -> region -> Label Studio), that
the region lies on the prompted nucleus and on no other; model quality is measured by benches.
"""

from __future__ import annotations

import numpy as np
import pytest

from instaseg.app.ls_client import LabelStudioClient
from instaseg.app.ls_protocol import label_config_xml
from instaseg.formats.brush import brush_rle_to_mask
from instaseg.formats.load import load_dataset
from instaseg.masks import polygons_to_rle, rle_to_mask

from .conftest import REPO, SAMPLE_IMAGES
from .test_label_studio import connect_backend, upload

pytestmark = pytest.mark.slow

SAMPLE = REPO / "instaseg" / "sample_data" / "nuclei"


def ground_truth(name: str) -> np.ndarray:
    """``(N, 256, 256)`` bool: the sample image's ground-truth nuclei."""
    dataset = load_dataset(str(SAMPLE / "result.json"), str(SAMPLE / "images"))
    (record,) = [r for r in dataset.records if r.file_name.endswith(name)]
    return record.instances().masks.to_dense()


def region_mask(region: dict) -> np.ndarray:
    value = region["value"]
    if region["type"] == "brushlabels":
        return brush_rle_to_mask(value["rle"], 256, 256)
    flat = [c * 2.56 for point in value["points"] for c in point]
    return rle_to_mask(polygons_to_rle([flat], 256, 256))


def ious(masks: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return (masks & mask).sum((1, 2)) / np.maximum((masks | mask).sum((1, 2)), 1)


@pytest.mark.parametrize("control", ["brush", "polygon"])
def test_smart_box_and_click_through_label_studio(label_studio, ls_backend_url, control):
    url, token = label_studio
    client = LabelStudioClient(url, token, timeout=300)
    config = label_config_xml(["nucleus"], control)
    project = client.json("POST", "/api/projects", {"title": f"smart {control}", "label_config": config})[
        "id"
    ]
    image = sorted(SAMPLE_IMAGES.glob("*.png"))[0]
    upload(client, project, [image])
    ml = connect_backend(client, project, ls_backend_url, interactive=True)
    assert ml["is_interactive"], ml
    (task,) = client.json("GET", f"/api/tasks?project={project}")["tasks"]

    truth = ground_truth(image.name)
    k = int(truth.sum((1, 2)).argmax())  # the largest nucleus
    rows, cols = np.nonzero(truth[k])
    x0, y0, x1, y1 = cols.min(), rows.min(), cols.max() + 1, rows.max() + 1
    size = {"original_width": 256, "original_height": 256, "image_rotation": 0}
    rectangle = {
        **size,
        "type": "rectanglelabels",
        "from_name": "box_prompt",
        "to_name": "image",
        "value": {
            "x": x0 / 2.56,
            "y": y0 / 2.56,
            "width": (x1 - x0) / 2.56,
            "height": (y1 - y0) / 2.56,
            "rotation": 0,
            "rectanglelabels": ["nucleus"],
        },
    }
    cx, cy = int(cols[len(cols) // 2]), int(rows[len(rows) // 2])
    keypoint = {
        **size,
        "type": "keypointlabels",
        "from_name": "click_prompt",
        "to_name": "image",
        "is_positive": True,
        "value": {
            "x": (cx + 0.5) / 2.56,
            "y": (cy + 0.5) / 2.56,
            "width": 0.5,
            "keypointlabels": ["nucleus"],
        },
    }
    kind = f"{control}labels"
    for prompt, least in ((rectangle, 0.5), (keypoint, 0.1)):
        answer = client.json(
            "POST",
            f"/api/ml/{ml['id']}/interactive-annotating",
            {"task": task["id"], "context": {"result": [prompt]}},
        )
        assert "errors" not in answer, answer
        (region,) = answer["data"]["result"]
        assert region["type"] == kind and region["from_name"] == "label" and region["readonly"] is False
        assert region["value"][kind] == ["nucleus"]
        overlap = ious(truth, region_mask(region))
        # On the prompted nucleus, more than on any other one.
        assert overlap[k] >= least and overlap[k] == overlap.max(), (
            prompt["type"],
            overlap[k],
            overlap.max(),
        )
        if prompt is keypoint and control == "brush":
            assert region_mask(region)[cy, cx]  # the region holds the click
