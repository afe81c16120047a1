"""``instaseg serve`` through its API with ``gradio_client``: outputs, options, and inputs it must refuse."""

from __future__ import annotations

import io
import json
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from instaseg.masks import rle_to_mask

gradio_client = pytest.importorskip("gradio_client")


@pytest.fixture(scope="module")
def client(serve_url):
    return gradio_client.Client(serve_url, verbose=False)


def call(client, path, score=0.5, style="overlay", classes=()):
    return client.predict(
        gradio_client.handle_file(str(path)), score, style, list(classes), api_name="/predict"
    )


def test_returns_masked_image_table_and_downloads(client, sample_image):
    image_path, table, downloads, status = call(client, sample_image)
    original = np.asarray(Image.open(sample_image).convert("RGB"))
    output = np.asarray(Image.open(image_path).convert("RGB"))
    assert output.shape == original.shape
    assert table["headers"] == ["id", "class", "score", "area", "x_min", "y_min", "x_max", "y_max"]
    rows = table["data"]
    assert rows, "the test model detects blobs on every image"
    assert all(row[1] == "nucleus" and row[2] >= 0.5 and row[3] > 0 for row in rows)
    files = {path.rsplit("_", 1)[-1]: path for path in downloads}
    assert sorted(files) == sorted(
        ["overlay.jpg", "binary.png", "rgb.png", "ids.png", "instances.zip", "coco.json", "studio.json"]
    )
    results = json.loads(open(files["coco.json"]).read())
    assert len(results) == len(rows) and f"{len(rows)} of" in status
    assert {r["category_id"] for r in results} == {1}  # category_id 1..K
    ids = np.asarray(Image.open(files["ids.png"]))
    assert ids.shape == original.shape[:2] and set(np.unique(ids)) - {0} <= set(range(1, len(rows) + 1))
    union = np.zeros(original.shape[:2], bool)
    for instance in results:
        union |= rle_to_mask(instance["segmentation"])
    assert union.any()
    changed = (output != original).any(axis=2)
    assert changed[union].mean() > 0.9  # the overlay tints every object pixel
    tasks = json.loads(open(files["studio.json"]).read())
    assert tasks[0]["predictions"][0]["result"][0]["value"]["polygonlabels"] == ["nucleus"]


def test_model_calls_are_counted(client, sample_image):
    before = client.predict(api_name="/model_calls")["model_calls"]
    call(client, sample_image)
    assert client.predict(api_name="/model_calls")["model_calls"] == before + 1


def test_binary_style_class_filter_and_threshold(client, sample_image):
    image_path, table, _, _ = call(client, sample_image, score=0.0, style="binary", classes=["nucleus"])
    binary = np.asarray(Image.open(image_path).convert("L"))
    assert set(np.unique(binary)) <= {0, 255} and (binary == 255).any()
    _, strict_table, _, status = call(client, sample_image, score=0.99)
    assert len(strict_table["data"]) < len(table["data"]) and "objects" in status


def png_bomb(width: int = 40_000, height: int = 40_000) -> bytes:
    """A 100-byte PNG whose header claims ``width x height`` pixels (PIL's decompression-bomb check)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    "name, data, message",
    [
        ("text.png", b"this is not an image\n" * 10, "not an image"),
        ("empty.png", b"", "empty"),
        ("truncated.png", None, "corrupt"),
        ("huge.png", "huge", "megapixels"),
        ("bomb.png", "bomb", "decompression bomb"),
    ],
)
def test_bad_uploads_give_a_message_and_the_app_keeps_serving(
    client, sample_image, tmp_path, name, data, message
):
    if data is None:  # a real PNG cut in half
        data = sample_image.read_bytes()[: len(sample_image.read_bytes()) // 2]
    elif data == "bomb":
        data = png_bomb()
    elif data == "huge":  # 1200x1000 = 1.2 MP, over the test server's 1 MP limit (small file: one colour)
        buffer = io.BytesIO()
        Image.new("RGB", (1200, 1000), (90, 30, 200)).save(buffer, "PNG")
        data = buffer.getvalue()
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(gradio_client.exceptions.AppError, match=message):
        call(client, path)
    image_path, table, _, _ = call(client, sample_image)
    assert table["data"] and Image.open(image_path).size == Image.open(sample_image).size


@pytest.mark.parametrize("mode", ["I;16", "CMYK"])
def test_16_bit_tiff_and_cmyk_are_converted_and_said_so(client, sample_image, tmp_path, mode):
    rgb = Image.open(sample_image).convert("RGB")
    if mode == "I;16":
        gray = np.asarray(rgb.convert("L")).astype(np.uint16) * 257
        path = tmp_path / "sixteen.tif"
        Image.fromarray(gray).save(path)  # PIL writes uint16 as I;16 TIFF
        assert Image.open(path).mode == "I;16"
    else:
        path = tmp_path / "cmyk.jpg"
        rgb.convert("CMYK").save(path, "JPEG")
    image_path, table, _, status = call(client, path, score=0.0)
    assert mode in status and ("converted" in status or "scaled" in status)
    assert table["data"] and Image.open(image_path).size == rgb.size
