"""``instaseg convert`` end to end on real exports."""

from __future__ import annotations

import json

import numpy as np

from instaseg.cli import main
from instaseg.formats.load import load_dataset

LS = "label_studio_1.23_exports"


def test_convert_label_studio_zip_with_copied_images(datasets, tmp_path, capsys):
    out = tmp_path / "out"
    status = main(
        [
            "convert",
            str(datasets / LS / "poly_COCO.zip"),
            str(out),
            "--images",
            str(datasets / LS / "images"),
            "--copy-images",
            "--masks",
            "rle",
        ]
    )
    assert status == 0
    line = capsys.readouterr().out.strip()
    assert line == (
        f"coco -> COCO: 3 images, 6 instances, 2 classes written to {out / 'annotations.json'} "
        "with images copied; problems: 0 errors, 0 warnings"
    )
    coco = json.loads((out / "annotations.json").read_text())
    assert [i["file_name"] for i in coco["images"]] == [
        "images/img0.png",
        "images/img1.png",
        "images/img2.png",
    ]
    assert all(isinstance(a["segmentation"]["counts"], str) for a in coco["annotations"])
    source = load_dataset(str(datasets / LS / "poly_COCO.zip"), images=str(datasets / LS / "images"))
    again = load_dataset(str(out))
    for a, b in zip(source.records, again.records, strict=True):
        np.testing.assert_array_equal(a.instances().dense_masks(), b.instances().dense_masks())


def test_convert_with_missing_images_reports_and_writes_present_ones(datasets, tmp_path, capsys):
    out = tmp_path / "furniture.json"
    status = main(["convert", str(datasets / "furniture_labelstudio" / "coco"), str(out)])
    captured = capsys.readouterr()
    assert status == 0  # missing images and clipped polygons are warnings
    assert "24 images (112 missing, not written), 65 instances, 5 classes" in captured.out
    assert "112 of 136 listed images were not found" in captured.err
    coco = json.loads(out.read_text())
    assert len(coco["images"]) == 24 and len(coco["annotations"]) == 65


def test_convert_exit_codes(tmp_path, capsys):
    coco = {
        "images": [{"id": 1, "file_name": "a.png", "width": 4, "height": 4}],
        "categories": [{"id": 1, "name": "x"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 9, "bbox": [0, 0, 2, 2]}],
    }
    (tmp_path / "bad.json").write_text(json.dumps(coco))
    assert main(["convert", str(tmp_path / "bad.json"), str(tmp_path / "out")]) == 1  # errors, still written
    assert (tmp_path / "out" / "annotations.json").is_file()
    assert "unknown category id 9" in capsys.readouterr().err
    (tmp_path / "broken.json").write_text('{"images": [')
    assert main(["convert", str(tmp_path / "broken.json"), str(tmp_path / "out2"), "--format", "coco"]) == 2
    assert "not valid JSON" in capsys.readouterr().err
