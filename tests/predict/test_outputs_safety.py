"""Outputs never leave --out and never mix two inputs up: hostile class names, same-stem inputs."""

from __future__ import annotations

import json
import shutil

import numpy as np
from PIL import Image

from instaseg.cli import main

from ..checkpoints import save_light_checkpoint


def test_class_names_cannot_write_outside_the_output_folder(tmp_path, nuclei_paths):
    checkpoint = save_light_checkpoint(
        tmp_path / "m.pt", ["../../../escaped", "/abs/x"], 64, score_threshold=0.0, detections_per_image=4
    )
    out = tmp_path / "deep" / "out"
    args = ["predict", str(checkpoint), str(nuclei_paths[0]), "--out", str(out), "--save", "instance-masks"]
    assert main(args + ["--score-threshold", "0", "--threads", "1"]) == 0
    written = [p for p in tmp_path.rglob("*.png") if p != nuclei_paths[0]]
    assert written and all(out in p.parents for p in written)
    assert not (tmp_path / "escaped").exists() and not list(tmp_path.glob("*escaped*"))


def test_inputs_with_the_same_stem_get_their_own_outputs(tmp_path, nuclei_paths, checkpoint):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(nuclei_paths[0], folder / "photo.png")
    flipped = np.asarray(Image.open(nuclei_paths[1]).convert("RGB"))
    Image.fromarray(flipped).save(folder / "photo.jpg", quality=95)
    out = tmp_path / "out"
    args = ["predict", str(checkpoint), str(folder), "--out", str(out), "--save", "overlay,json"]
    assert main(args + ["--score-threshold", "0", "--threads", "1"]) == 0
    overlays = sorted(p.name for p in (out / "overlay").iterdir())
    assert len(overlays) == 2 and len({o.lower() for o in overlays}) == 2
    results = json.loads((out / "predictions.json").read_text())
    names = {r["file_name"] for r in results}
    assert len(names) == 2 and {r["image_id"] for r in results} == {1, 2}
    by_image = {n: [r for r in results if r["file_name"] == n] for n in names}
    first, second = by_image.values()
    assert [r["bbox"] for r in first] != [r["bbox"] for r in second]  # each image its own detections


def decompression_bomb_png(path, width: int = 40_000, height: int = 40_000) -> None:
    """A tiny PNG whose header claims ``width x height`` pixels (PIL refuses > 2 x 89 megapixels)."""
    import io
    import struct
    import zlib

    buffer = io.BytesIO()
    Image.new("L", (8, 8)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    ihdr = 8  # the IHDR chunk follows the 8-byte signature: length, type, width, height, ...
    data[ihdr + 8 : ihdr + 16] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr + 4 : ihdr + 8 + 13]))
    data[ihdr + 8 + 13 : ihdr + 8 + 17] = struct.pack(">I", crc)
    path.write_bytes(bytes(data))


def test_a_decompression_bomb_is_reported_and_the_batch_goes_on(tmp_path, nuclei_paths, checkpoint, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    decompression_bomb_png(folder / "bomb.png")
    shutil.copy(nuclei_paths[0], folder / "fine.png")
    code = main(["predict", str(checkpoint), str(folder), "--out", str(tmp_path / "out"), "--threads", "1"])
    captured = capsys.readouterr()
    assert code == 1 and "predicted 1 image(s)" in captured.out and "1 failed" in captured.out
    assert "bomb.png: the image is far too large" in captured.err and "Traceback" not in captured.err
    assert main(["check", str(folder / "bomb.png")]) == 2  # not an annotation file, said in one line
