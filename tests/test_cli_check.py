"""`instaseg check`, `split` and `demo` as a person runs them: output, JSON keys and exit statuses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from instaseg.cli import main

FURNITURE = "furniture_labelstudio"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "instaseg", *args], capture_output=True, text=True, timeout=300
    )


def test_check_json_on_the_real_label_studio_coco_export(datasets):
    result = run_cli("check", str(datasets / FURNITURE / "coco" / "result.json"), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)  # exactly one JSON object on stdout
    assert summary["format"] == "coco"
    assert (summary["images"], summary["images_missing"], summary["instances"]) == (136, 112, 65)
    assert summary["categories"] == {"Chair": 5, "Painting": 20, "Plant": 14, "Sofa": 9, "Table": 17}
    assert {"level", "file", "image", "annotation", "message"} <= set(summary["problems"][0])
    assert all(p["level"] == "warning" for p in summary["problems"])


def test_check_json_export_gives_the_same_counts(datasets):
    export = datasets / FURNITURE / "only-json" / "project-8-at-2023-12-18-13-17-708e3340.json"
    result = run_cli(
        "check", str(export), "--images", str(datasets / FURNITURE / "coco" / "images"), "--json"
    )
    summary = json.loads(result.stdout)
    assert summary["format"] == "labelstudio-json"
    assert (summary["images"], summary["images_missing"], summary["instances"]) == (136, 112, 65)
    assert summary["categories"] == {"Chair": 5, "Painting": 20, "Plant": 14, "Sofa": 9, "Table": 17}


def write_coco_with_an_unknown_category(tmp_path) -> Path:
    """One image, one good annotation and one (id 2) of an undeclared category: an import error."""
    coco = {
        "images": [{"id": 1, "file_name": "a.png", "width": 10, "height": 10}],
        "categories": [{"id": 1, "name": "thing"}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "segmentation": [[1, 1, 8, 1, 8, 8]],
                "bbox": [1, 1, 7, 7],
            },
            {
                "id": 2,
                "image_id": 1,
                "category_id": 7,
                "segmentation": [[1, 1, 8, 1, 8, 8]],
                "bbox": [1, 1, 7, 7],
            },
        ],
    }
    from PIL import Image

    Image.new("RGB", (10, 10)).save(tmp_path / "a.png")
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    return tmp_path / "ann.json"


def test_check_human_summary_and_exit_1_on_errors(tmp_path, capsys):
    write_coco_with_an_unknown_category(tmp_path)
    assert main(["check", str(tmp_path / "ann.json")]) == 1
    out = capsys.readouterr().out
    assert "instances: 1 in present images" in out and "1 errors" in out and "annotation 2" in out


@pytest.mark.parametrize(
    "content, message",
    [
        (b'{"images": [', "not valid JSON"),
        (b"", "empty file"),
        (b'{"x": 1}', "cannot tell the annotation format"),
    ],
)
def test_unusable_input_is_one_message_and_exit_2(tmp_path, content, message):
    path = tmp_path / "broken.json"
    path.write_bytes(content)
    result = run_cli("check", str(path))
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr and str(path) in result.stderr


def test_check_deep_reports_a_corrupt_image(tmp_path):
    import numpy as np
    from PIL import Image

    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "a.png")
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "a.png").write_bytes(data[: len(data) // 2])  # header intact, pixels cut
    (tmp_path / "ann.json").write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 64}],
                "categories": [{"id": 1, "name": "thing"}],
                "annotations": [],
            }
        )
    )
    shallow = json.loads(run_cli("check", str(tmp_path / "ann.json"), "--json").stdout)
    deep = run_cli("check", str(tmp_path / "ann.json"), "--json", "--deep")
    assert not any(p["level"] == "error" for p in shallow["problems"])
    assert deep.returncode == 1
    assert any("corrupt or truncated" in p["message"] for p in json.loads(deep.stdout)["problems"])


def test_split_command_writes_a_reproducible_split(datasets, tmp_path):
    for name in ("a.json", "b.json"):
        assert (
            main(["split", str(datasets / "balloon" / "val"), "--out", str(tmp_path / name), "--seed", "3"])
            == 0
        )
    first = json.loads((tmp_path / "a.json").read_text())
    assert first == json.loads((tmp_path / "b.json").read_text())
    assert sum(len(first[s]) for s in ("train", "val", "test")) == 13


def test_split_writes_the_split_and_exits_1_when_the_dataset_has_errors(tmp_path, capsys):
    data = write_coco_with_an_unknown_category(tmp_path)
    assert main(["split", str(data), "--out", str(tmp_path / "s.json")]) == 1
    captured = capsys.readouterr()
    assert "annotation 2" in captured.err and "problems: 1 errors" in captured.out
    split = json.loads((tmp_path / "s.json").read_text())
    assert sum(len(split[s]) for s in ("train", "val", "test")) == 1
