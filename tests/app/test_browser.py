"""``instaseg serve`` in a real browser: Debian's Chromium driven by Playwright, headless.

A person's session at desktop and phone width: drop a photo and see it before predicting, segment, move
the before/after slider, raise the threshold (the model does not run again; table and legend counts
drop), select a row and click an object (both highlight it), download every output and read it back.
Two browser sessions at once each keep their own photo. The desktop run writes the README's screenshot
``docs/demo.png``.
"""

from __future__ import annotations

import base64
import io
import json
import math
import time
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from instaseg.masks import rle_to_mask

from .conftest import REPO, SAMPLE_IMAGES

gradio_client = pytest.importorskip("gradio_client")

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-dev-shm-usage",
]
HIGHLIGHT_BACKGROUND = "rgb(255, 213, 79)"  # the selected row's colour (#ffd54f, demo_handlers.table)


@pytest.fixture(scope="module")
def browser(chromium):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def fetch(url: str, base: str) -> bytes:
    with urllib.request.urlopen(url if url.startswith("http") else base + url, timeout=30) as response:
        return response.read()


def new_page(browser, url: str, width: int):
    page = browser.new_context(viewport={"width": width, "height": 900}).new_page()
    page.set_default_timeout(60_000)
    page.goto(url)
    return page


# A file dropped as the browser drops it: a DataTransfer holding the file, dragenter/dragover/drop events.
DROP_SCRIPT = """([data, name, type]) => {
    const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
    const transfer = new DataTransfer();
    transfer.items.add(new File([bytes], name, { type }));
    return transfer;
}"""


def drop_photo(page, path) -> None:
    """Drag the photo file onto the photo field (its drop zone: the upload button around the file input)."""
    path = Path(path)
    data = base64.b64encode(path.read_bytes()).decode()
    kind = "image/png" if path.suffix.lower() == ".png" else "image/jpeg"
    transfer = page.evaluate_handle(DROP_SCRIPT, [data, path.name, kind])
    zone = page.locator("#input-image input[type=file]").locator("xpath=..")
    for event in ("dragenter", "dragover", "drop"):
        zone.dispatch_event(event, {"dataTransfer": transfer})
    page.locator("#status").get_by_text("Press Segment").wait_for()


def cell(page, row: int, column: int):
    """A cell of the detections table (row 0 is the first object)."""
    return page.locator(f'#detections [data-row="{row}"][data-col="{column}"]').first


def shown_count(page) -> int:
    """The number of table rows (the grid states rows + header: it is virtualised)."""
    return int(page.locator("#detections [role=grid]").get_attribute("aria-rowcount")) - 1


def picture(page, base: str) -> np.ndarray:
    """The 'after' picture of the slider, as RGB."""
    source = page.locator("#compare img").last.get_attribute("src")
    return np.asarray(Image.open(io.BytesIO(fetch(source, base))).convert("RGB"))


def wait_for_new_picture(page, base: str, old: np.ndarray, timeout: float = 30.0) -> np.ndarray:
    """The 'after' picture once it differs from ``old`` (or the last one seen after ``timeout`` s)."""
    deadline = time.monotonic() + timeout
    while True:
        new = picture(page, base)
        if new.shape != old.shape or (new != old).any() or time.monotonic() > deadline:
            return new
        page.wait_for_timeout(200)


def model_calls(url: str) -> int:
    return gradio_client.Client(url, verbose=False).predict(api_name="/model_calls")["model_calls"]


@pytest.mark.parametrize("width", [1400, 390])
def test_a_session_at_desktop_and_phone_width(browser, serve_url, sample_image, width):
    page = new_page(browser, serve_url, width)
    drop_photo(page, sample_image)
    before = page.locator("#compare img").first
    before.wait_for(state="visible")  # the photo, before any prediction
    calls = model_calls(serve_url)
    page.locator("#submit").click()
    page.locator("#status").get_by_text("model ran 1x").wait_for()
    assert model_calls(serve_url) == calls + 1
    total = shown_count(page)
    assert total > 4, "the test model detects blobs on every image"

    # The before/after slider: drag its handle to a quarter of the picture.
    handle = page.locator("#compare .icon.left").first
    handle.scroll_into_view_if_needed()
    box, frame = handle.bounding_box(), page.locator("#compare img").last.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(frame["x"] + frame["width"] * 0.25, box["y"] + box["height"] / 2, steps=5)
    page.mouse.up()
    moved = handle.bounding_box()
    assert moved["x"] < box["x"] - frame["width"] * 0.1

    # A higher threshold: fewer objects in the table and the legend, no model run.
    scores = [float(cell(page, i, 2).inner_text()) for i in range(5)]
    threshold = math.ceil(scores[4] * 100) / 100 + 0.001
    old_picture = picture(page, serve_url)
    page.locator("#score input[type=number]").fill(f"{threshold:.3f}")
    page.locator("#score input[type=number]").press("Enter")
    page.locator("#status").get_by_text(f"of {total} objects").wait_for()
    page.wait_for_function(f"document.querySelector('#legend .legend').dataset.total != '{total}'")
    fewer = shown_count(page)
    assert 0 < fewer < total
    assert page.locator("#legend .legend-item").first.get_attribute("data-count") == str(fewer)
    assert page.locator("#status").get_by_text("model ran 1x").count() == 1
    assert model_calls(serve_url) == calls + 1
    assert (wait_for_new_picture(page, serve_url, old_picture) != old_picture).any()

    # Select the second row: its cells are highlighted and the picture outlines the object.
    unselected = picture(page, serve_url)
    cell(page, 1, 1).click()
    highlighted = f"[...document.querySelectorAll('#detections [data-row]')].filter(c => getComputedStyle(c).backgroundColor == '{HIGHLIGHT_BACKGROUND}').length"
    page.wait_for_function(f"{highlighted} > 0")
    assert (wait_for_new_picture(page, serve_url, unselected) != unselected).any()

    # Downloads: every output, full size, read back.
    page.locator("#prepare").click()
    page.wait_for_function("document.querySelectorAll('#downloads a').length >= 7")
    links = {
        a.get_attribute("href").split("?")[0].rsplit("_", 1)[-1]: a.get_attribute("href")
        for a in page.locator("#downloads a").all()
    }
    assert set(links) >= {
        "overlay.jpg",
        "binary.png",
        "rgb.png",
        "ids.png",
        "instances.zip",
        "coco.json",
        "studio.json",
    }
    size = Image.open(sample_image).size
    for name in ("overlay.jpg", "binary.png", "rgb.png", "ids.png"):
        assert Image.open(io.BytesIO(fetch(links[name], serve_url))).size == size
    results = json.loads(fetch(links["coco.json"], serve_url))
    assert len(results) == fewer
    with zipfile.ZipFile(io.BytesIO(fetch(links["instances.zip"], serve_url))) as zipped:
        assert len(zipped.namelist()) == fewer
    tasks = json.loads(fetch(links["studio.json"], serve_url))
    assert tasks[0]["predictions"][0]["result"]

    # A click on the first object in the picture highlights the first row.
    page.get_by_role("tab", name="Pick objects").click()
    image = page.locator("#picker img")
    image.wait_for(state="visible")
    image.scroll_into_view_if_needed()
    mask = rle_to_mask(results[0]["segmentation"])
    ys, xs = np.nonzero(mask)
    frame = image.bounding_box()
    scale = frame["width"] / mask.shape[1]
    page.mouse.click(
        frame["x"] + (xs[len(xs) // 2] + 0.5) * scale, frame["y"] + (ys[len(ys) // 2] + 0.5) * scale
    )
    first_row = 'document.querySelector(\'#detections [data-row="0"][data-col="1"]\')'
    page.wait_for_function(f"getComputedStyle({first_row}).backgroundColor == '{HIGHLIGHT_BACKGROUND}'")

    if width == 1400:
        page.get_by_role("tab", name="Before / after").click()
        page.screenshot(path=str(REPO / "docs" / "demo.png"), full_page=True)
    else:  # nothing wider than the phone
        assert page.evaluate("document.documentElement.scrollWidth") <= width + 1
    page.context.close()


def test_two_sessions_at_once_keep_their_own_photo(browser, serve_url):
    first, second = sorted(SAMPLE_IMAGES.glob("*.png"))[:2]
    pages = [new_page(browser, serve_url, 1200), new_page(browser, serve_url, 1200)]
    for page, photo in zip(pages, (first, second), strict=True):
        drop_photo(page, photo)
    for page in pages:
        page.locator("#submit").click()
    for page, photo, other in zip(pages, (first, second), (second, first), strict=True):
        page.locator("#status").get_by_text("model ran 1x").wait_for()
        status = page.locator("#status").inner_text()
        assert photo.name in status and other.name not in status
    pictures = [picture(page, serve_url) for page in pages]
    assert (pictures[0] != pictures[1]).any()
    for page in pages:
        page.context.close()


def test_a_corrupt_upload_shows_a_message_and_the_app_keeps_serving(
    browser, serve_url, sample_image, tmp_path
):
    broken = tmp_path / "broken.png"
    broken.write_bytes(sample_image.read_bytes()[:300])
    page = new_page(browser, serve_url, 1200)
    page.locator("#input-image input[type=file]").set_input_files(str(broken))
    page.get_by_text("corrupt", exact=False).first.wait_for()
    page.reload()
    drop_photo(page, sample_image)
    page.locator("#submit").click()
    page.locator("#status").get_by_text("model ran 1x").wait_for()
    page.context.close()
