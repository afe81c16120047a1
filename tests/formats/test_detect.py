"""Format detection on the real datasets and on small synthetic layouts."""

from __future__ import annotations

import json
import zipfile

import pytest

from instaseg.formats.detect import FORMATS, detect_format
from instaseg.problems import DatasetError

DSB_SAMPLE = (
    "dsb2018_nuclei_sample/stage1_train/003cee89357d9fe13516167fd67b609a164651b21934585648c740d2c3d86dc1"
)

REAL_CASES = [
    ("furniture_labelstudio/coco", "coco"),
    ("furniture_labelstudio/coco/result.json", "coco"),
    ("furniture_labelstudio/only-json/project-8-at-2023-12-18-13-17-708e3340.json", "labelstudio-json"),
    ("label_studio_1.23_exports/poly_COCO.zip", "coco"),
    ("label_studio_1.23_exports/poly_COCO_WITH_IMAGES.zip", "coco"),
    ("label_studio_1.23_exports/brush_BRUSH_TO_COCO.zip", "coco"),
    ("label_studio_1.23_exports/brush_COCO.zip", "coco"),
    ("label_studio_1.23_exports/poly_JSON.json", "labelstudio-json"),
    ("label_studio_1.23_exports/poly_JSON_MIN.json", "labelstudio-json"),
    ("label_studio_1.23_exports/brush_JSON.json", "labelstudio-json"),
    ("balloon/val", "via"),
    ("balloon/val/via_region_data.json", "via"),
    ("PennFudanPed", "mask-png"),
    ("dsb2018_nuclei_sample/stage1_train", "mask-png"),
    ("dsb2018_nuclei_sample", "mask-png"),
    (DSB_SAMPLE, "mask-png"),
]


@pytest.mark.parametrize("path, expected", REAL_CASES, ids=[c[0].split("/")[-1][:40] for c in REAL_CASES])
def test_real_datasets(datasets, path, expected):
    assert detect_format(str(datasets / path)) == expected


LABELME = {
    "version": "5.4.1",
    "shapes": [{"label": "a", "points": [[1, 1], [5, 1], [5, 5]], "shape_type": "polygon"}],
    "imagePath": "x.jpg",
    "imageData": None,
}
VIA_PROJECT = {"_via_settings": {}, "_via_img_metadata": {"x.jpg12": {"filename": "x.jpg", "regions": []}}}

# (file name, content) written alone in a folder; the expected format for the file and for the folder.
SYNTHETIC = [
    ("a.json", LABELME, "labelme"),
    ("project.json", VIA_PROJECT, "via"),
    ("coco.json", {"images": [], "annotations": [], "categories": []}, "coco"),
    ("tasks.json", [{"data": {"image": "x.jpg"}, "predictions": []}], "labelstudio-json"),
]


@pytest.mark.parametrize("name, content, expected", SYNTHETIC, ids=[c[2] for c in SYNTHETIC])
def test_synthetic_files_folders_and_zips(tmp_path, name, content, expected):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / name).write_text(json.dumps(content))
    assert detect_format(str(folder / name)) == expected
    assert detect_format(str(folder)) == expected
    with zipfile.ZipFile(tmp_path / "export.zip", "w") as archive:
        archive.write(folder / name, name)
    assert detect_format(str(tmp_path / "export.zip")) == expected


def test_large_json_is_classified_from_its_start(tmp_path):
    path = tmp_path / "big.json"
    images = [{"id": i, "file_name": f"{i:08d}.jpg", "width": 640, "height": 480} for i in range(30000)]
    path.write_text(json.dumps({"images": images, "annotations": [], "categories": []}))
    assert path.stat().st_size > 1 << 20
    assert detect_format(str(path)) == "coco"


def test_folder_of_labelme_files(tmp_path):
    for i in range(4):
        (tmp_path / f"{i}.json").write_text(json.dumps(LABELME))
    assert detect_format(str(tmp_path)) == "labelme"


@pytest.mark.parametrize("content", [b'{"hello": 1}', b"[1, 2]"], ids=["dict", "list"])
def test_unknown_lists_formats_and_suggests_flag(tmp_path, content):
    path = tmp_path / "x.json"
    path.write_bytes(content)
    with pytest.raises(DatasetError) as info:
        detect_format(str(path))
    message = str(info.value)
    assert "--format" in message and all(name in message for name in FORMATS) and str(path) in message


@pytest.mark.parametrize(
    "content, message",
    [
        (b"not json", "not valid JSON"),
        (b'{"images": [', r"not valid JSON \(truncated"),
        (b"", "empty file"),
        (b"  \n", "empty file"),
        (b"\xff\xfe{", "not a JSON text file"),
    ],
    ids=["text", "truncated", "empty", "blank", "binary"],
)
def test_broken_json_says_where_it_breaks(tmp_path, content, message):
    path = tmp_path / "x.json"
    path.write_bytes(content)
    with pytest.raises(DatasetError, match=message) as info:
        detect_format(str(path))
    assert str(path) in str(info.value)


def test_missing_source(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        detect_format(str(tmp_path / "nope.json"))


def test_detect_does_not_import_importers():
    import subprocess
    import sys

    code = (
        "import sys, instaseg.formats.detect as d; "
        "print(sorted(m for m in sys.modules if m.startswith('instaseg.formats.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['instaseg.formats.detect', 'instaseg.formats.limits']"
