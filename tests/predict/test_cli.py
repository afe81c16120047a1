"""``instaseg predict`` end to end on real images: every output, bad files, resume, Label Studio import."""

from __future__ import annotations

import json
import os
import shutil

import cv2
import numpy as np
import pytest
from PIL import Image

from instaseg.cli import main
from instaseg.formats.brush import brush_rle_to_mask
from instaseg.images import load_image
from instaseg.masks import rle_to_mask
from instaseg.model.predictor import Predictor

ALL = "overlay,binary,rgb,ids,json,label-studio,instance-masks"


def _read(path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


@pytest.fixture()
def folder(tmp_path, nuclei_paths, photo):
    """Two real nuclei images, a real photo in a sub-folder, and broken files."""
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    for path in nuclei_paths[:2]:
        shutil.copy(path, folder / path.name)
    Image.fromarray(photo).save(folder / "sub" / "photo.jpg", quality=92)
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.jpg").write_text("not an image")
    (folder / "truncated.png").write_bytes(nuclei_paths[2].read_bytes()[:400])
    (folder / "notes.txt").write_text("ignored: not an image suffix")
    return folder


def test_folder_with_broken_files_finishes_the_others(checkpoint, folder, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(
        [
            "predict",
            str(checkpoint),
            str(folder),
            "--out",
            str(out),
            "--save",
            ALL,
            "--score-threshold",
            "0.3",
            "--max-detections",
            "6",
            "--threads",
            "1",
        ]
    )
    captured = capsys.readouterr()
    assert code == 1
    assert "predicted 3 image(s)" in captured.out and "3 failed" in captured.out
    for name in ("empty.png", "text.jpg", "truncated.png"):
        assert name in captured.err
    assert "empty file" in captured.err and "not an image" in captured.err and "truncated" in captured.err

    results = json.loads((out / "predictions.json").read_text())
    names = sorted({r["file_name"] for r in results})
    good = sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.suffix in (".png", ".jpg") and p.stat().st_size > 1000
    )
    assert names == good and len(good) == 3
    # image ids are 1-based in input (sorted file) order
    order = {r["file_name"]: r["image_id"] for r in results}
    assert sorted(order.values()) == sorted(set(order.values())) and min(order.values()) >= 1

    for name in good:
        stem = name.rsplit(".", 1)[0]
        image = load_image(str(folder / name))
        mine = [r for r in results if r["file_name"] == name]
        masks = np.array([rle_to_mask(r["segmentation"]) for r in mine])  # (N, H, W)
        assert masks.shape[1:] == image.shape[:2]
        binary = _read(out / "binary" / f"{stem}.png")
        np.testing.assert_array_equal(binary > 0, masks.any(axis=0))
        ids = _read(out / "ids" / f"{stem}.png")
        assert set(np.unique(ids)) <= set(range(len(mine) + 1))
        for i in range(len(mine)):  # each id paints only pixels of its own mask
            assert masks[i][ids == i + 1].all()
        np.testing.assert_array_equal(ids > 0, masks.any(axis=0))
        rgb = cv2.cvtColor(_read(out / "rgb" / f"{stem}.png"), cv2.COLOR_BGR2RGB)
        assert (rgb[~masks.any(axis=0)] == 0).all() and (rgb[masks.any(axis=0)].max(axis=1) > 0).all()
        overlay = cv2.cvtColor(_read(out / "overlay" / f"{stem}.jpg"), cv2.COLOR_BGR2RGB)
        assert overlay.shape == image.shape
        instance_files = sorted((out / "instances" / stem).glob("*.png"))
        assert len(instance_files) == len(mine)
        for path, mask in zip(instance_files, masks, strict=True):
            np.testing.assert_array_equal(_read(path) > 0, mask)


def test_outputs_equal_the_predictors(checkpoint, nuclei_paths, tmp_path):
    """The JSON written by the CLI holds exactly the Predictor's instances (same thresholds)."""
    out = tmp_path / "out"
    assert (
        main(
            [
                "predict",
                str(checkpoint),
                str(nuclei_paths[0]),
                "--out",
                str(out),
                "--save",
                "json",
                "--score-threshold",
                "0.4",
                "--threads",
                "1",
            ]
        )
        == 0
    )
    results = json.loads((out / "predictions.json").read_text())
    expected = Predictor(checkpoint, device="cpu", score_threshold=0.4).predict(str(nuclei_paths[0]))
    assert len(results) == len(expected) > 0
    for r, mask, score in zip(results, expected.dense_masks(), expected.scores, strict=True):
        np.testing.assert_array_equal(rle_to_mask(r["segmentation"]), mask)
        assert abs(r["score"] - score) < 1e-4 and r["image_id"] == 1


def test_resume_skips_done_images(checkpoint, nuclei_paths, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for path in nuclei_paths[:2]:
        shutil.copy(path, folder / path.name)
    out = tmp_path / "out"
    options = ["--out", str(out), "--threads", "1", "--score-threshold", "0.3"]
    assert main(["predict", str(checkpoint), str(folder / nuclei_paths[0].name), *options]) == 0
    overlay = out / "overlay" / f"{nuclei_paths[0].stem}.jpg"
    before = overlay.stat().st_mtime_ns
    capsys.readouterr()
    assert main(["predict", str(checkpoint), str(folder), "--resume", *options]) == 0
    captured = capsys.readouterr()
    assert "1 of 2 images already done" in captured.err and "predicted 1 image(s)" in captured.out
    assert overlay.stat().st_mtime_ns == before  # not redone
    results = json.loads((out / "predictions.json").read_text())
    assert {r["file_name"] for r in results} == {p.name for p in nuclei_paths[:2]}  # run-wide JSON has both


def test_grayscale_16_bit_and_cmyk_are_converted_not_failed(checkpoint, photo, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    gray = photo[:, :, 1]
    Image.fromarray(gray).save(folder / "gray.png")
    Image.fromarray(gray.astype(np.uint16) * 257).save(folder / "deep.png")  # 16-bit
    Image.fromarray(photo).convert("CMYK").save(folder / "print.jpg")
    out = tmp_path / "out"
    assert (
        main(
            ["predict", str(checkpoint), str(folder), "--out", str(out), "--save", "binary", "--threads", "1"]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert "predicted 3 image(s)" in captured.out
    assert "I;16 image converted" in captured.out and "CMYK image converted" in captured.out
    assert "L image converted" in captured.out
    for name in ("gray", "deep", "print"):
        assert _read(out / "binary" / f"{name}.png").shape == photo.shape[:2]


def test_label_studio_polygons_and_brush(checkpoint, nuclei_paths, tmp_path):
    image = str(nuclei_paths[0])
    expected = Predictor(checkpoint, device="cpu", score_threshold=0.4).predict(image)
    for brush in (False, True):
        out = tmp_path / f"out_{brush}"
        args = [
            "predict",
            str(checkpoint),
            image,
            "--out",
            str(out),
            "--save",
            "label-studio",
            "--score-threshold",
            "0.4",
            "--ls-image-prefix",
            "s3://bucket/imgs/",
            "--threads",
            "1",
        ]
        assert main(args + (["--ls-brush"] if brush else [])) == 0
        tasks = json.loads((out / "label_studio.json").read_text())
        assert len(tasks) == 1 and tasks[0]["data"]["image"] == f"s3://bucket/imgs/{nuclei_paths[0].name}"
        result = tasks[0]["predictions"][0]["result"]
        h, w = expected.dense_masks().shape[1:]
        assert all(r["original_width"] == w and r["original_height"] == h for r in result)
        if brush:
            drawn_masks = [m for m in expected.dense_masks() if m.any()]  # an empty mask is no region
            assert [r["type"] for r in result] == ["brushlabels"] * len(drawn_masks)
            for r, mask in zip(result, drawn_masks, strict=True):
                np.testing.assert_array_equal(brush_rle_to_mask(r["value"]["rle"], h, w), mask)
                assert r["value"]["brushlabels"] == ["cell"] or r["value"]["brushlabels"] == ["debris"]
        else:
            assert result and all(r["type"] == "polygonlabels" for r in result)
            drawn = np.zeros((h, w), np.uint8)
            for r in result:
                points = np.array(r["value"]["points"]) * [w / 100, h / 100]
                assert (points >= 0).all() and (points <= [w, h]).all()
                cv2.fillPoly(drawn, [np.round(points - 0.5).astype(np.int32)], 1)
            union = expected.dense_masks().any(axis=0)
            iou = (union & (drawn > 0)).sum() / (union | (drawn > 0)).sum()
            assert iou > 0.85


def test_missing_glob_unreachable_url_and_fifo_are_counted(checkpoint, nuclei_paths, tmp_path, capsys):
    out = tmp_path / "out"
    os.mkfifo(tmp_path / "pipe.png")  # reading it would block
    code = main(
        [
            "predict",
            str(checkpoint),
            str(nuclei_paths[0]),
            str(tmp_path / "nothing" / "*.jpg"),
            "http://127.0.0.1:9/missing.jpg",
            str(tmp_path / "pipe.png"),
            "--out",
            str(out),
            "--threads",
            "1",
        ]
    )
    captured = capsys.readouterr()
    assert code == 1 and "predicted 1 image(s)" in captured.out and "3 failed" in captured.out
    assert (
        "no image files in this glob" in captured.err
        and "127.0.0.1:9/missing.jpg: cannot read" in captured.err
        and "pipe.png: cannot read (not a regular file" in captured.err
    )
    assert "Error" not in captured.err  # reasons in words, not exception class names


def test_bad_options_are_usage_errors(checkpoint, nuclei_paths, tmp_path, capsys):
    base = ["predict", str(checkpoint), str(nuclei_paths[0]), "--out", str(tmp_path / "o")]
    assert main(base + ["--save", "overlay,heatmap"]) == 2
    assert "valid: overlay, binary" in capsys.readouterr().err
    assert main(base + ["--classes", "dog"]) == 2
    assert "known classes: cell, debris" in capsys.readouterr().err
    assert (
        main(["predict", str(tmp_path / "none.pt"), str(nuclei_paths[0]), "--out", str(tmp_path / "o")]) == 2
    )
    assert "not found" in capsys.readouterr().err


def test_label_studio_pre_annotations_keep_every_part(checkpoint, nuclei_paths, tmp_path):
    """An object in several parts is written as one polygon region per part; imported back, every part
    is there pixel for pixel (holes filled, as Label Studio polygons have none)."""
    from tests.ls_round_trip import check_every_part_comes_back

    out = tmp_path / "out"
    args = [
        "predict",
        str(checkpoint),
        str(nuclei_paths[0]),
        "--out",
        str(out),
        "--save",
        "json,label-studio",
    ]
    assert main(args + ["--score-threshold", "0", "--threads", "1"]) == 0
    results = json.loads((out / "predictions.json").read_text())
    (task,) = json.loads((out / "label_studio.json").read_text())
    regions = task["predictions"][0]["result"]
    masks = [rle_to_mask(r["segmentation"]) for r in results]
    height, width = masks[0].shape
    assert check_every_part_comes_back(regions, masks, width, height, tmp_path / "ls") >= 1


def test_a_folder_counts_the_images_of_other_formats_it_skips(checkpoint, nuclei_paths, tmp_path, capsys):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(nuclei_paths[0], folder / "cells.png")
    Image.open(nuclei_paths[1]).convert("RGB").save(folder / "sub" / "animation.gif")
    (folder / "phone.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic")  # a phone photo PIL cannot read
    (folder / "notes.txt").write_text("not an image: not counted")
    base = ["predict", str(checkpoint), "--threads", "1", "--save", "json"]
    assert main([*base, str(folder), "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert "predicted 1 image(s)" in out
    assert "skipped 2 file(s) of this folder with suffixes it does not pick up (1 .gif, 1 .heic;" in out
    assert main([*base, str(folder / "*"), "--out", str(tmp_path / "b")]) == 0  # a glob: the same
    assert (
        "skipped 1 file(s) of this glob with suffixes it does not pick up (1 .heic;"
        in capsys.readouterr().out
    )
    # named explicitly, the GIF is read (its first frame) and predicted
    assert main([*base, str(folder / "sub" / "animation.gif"), "--out", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert "predicted 1 image(s)" in out and "does not pick up" not in out
