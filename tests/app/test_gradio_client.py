"""``instaseg serve`` through its API with ``gradio_client``: outputs, options, and inputs it must refuse."""

from __future__ import annotations

import io
import json

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
    masks_png, predictions = sorted(downloads, key=lambda p: p.endswith(".json"))
    found = json.loads(open(predictions).read())
    assert len(found["results"]) == len(rows) and f"{len(rows)} objects" in status
    assert found["categories"] == [{"id": 1, "name": "nucleus"}]  # the results' category_id 1..K
    ids = np.asarray(Image.open(masks_png))
    assert ids.shape == original.shape[:2] and set(np.unique(ids)) - {0} <= set(range(1, len(rows) + 1))
    union = np.zeros(original.shape[:2], bool)
    for instance in found["results"]:
        union |= rle_to_mask(instance["segmentation"])
    assert union.any()
    changed = (output != original).any(axis=2)
    assert changed[union].mean() > 0.9  # the overlay tints every object pixel


def test_binary_style_class_filter_and_threshold(client, sample_image):
    image_path, table, _, _ = call(client, sample_image, score=0.0, style="binary", classes=["nucleus"])
    binary = np.asarray(Image.open(image_path).convert("L"))
    assert set(np.unique(binary)) <= {0, 255} and (binary == 255).any()
    _, strict_table, _, status = call(client, sample_image, score=0.99)
    assert len(strict_table["data"]) < len(table["data"]) and "objects" in status


@pytest.mark.parametrize(
    "name, data, message",
    [
        ("text.png", b"this is not an image\n" * 10, "not an image"),
        ("empty.png", b"", "empty"),
        ("truncated.png", None, "corrupt"),
        ("huge.png", "huge", "megapixels"),
    ],
)
def test_bad_uploads_give_a_message_and_the_app_keeps_serving(
    client, sample_image, tmp_path, name, data, message
):
    if data is None:  # a real PNG cut in half
        data = sample_image.read_bytes()[: len(sample_image.read_bytes()) // 2]
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
