"""``instaseg serve`` in a real browser: Debian's Chromium driven by Playwright, headless.

Uploads a real image, presses Segment, waits for the masked image, checks its size and that it differs
from the photo on the predicted objects, and saves a screenshot to ``artifacts/serve_browser.png``.
"""

from __future__ import annotations

import io
import json
import urllib.request

import numpy as np
import pytest
from PIL import Image

from instaseg.masks import rle_to_mask

from .conftest import ARTIFACTS

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-dev-shm-usage",
]


@pytest.fixture(scope="module")
def page(chromium, serve_url):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(60_000)
        page.goto(serve_url)
        yield page
        browser.close()


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read()


def test_upload_segment_and_screenshot(page, serve_url, sample_image):
    page.locator("#input-image input[type=file]").set_input_files(str(sample_image))
    page.locator("#submit").click()
    output = page.locator("#output-image img")
    output.wait_for(state="visible")
    page.locator("#status").get_by_text("objects on").wait_for()
    page.locator("#downloads a").first.wait_for()
    source = output.get_attribute("src")
    shown = np.asarray(
        Image.open(io.BytesIO(fetch(source if source.startswith("http") else serve_url + source)))
    )
    original = np.asarray(Image.open(sample_image).convert("RGB"))
    assert shown[:, :, :3].shape == original.shape
    links = [
        page.locator("#downloads a").nth(i).get_attribute("href")
        for i in range(page.locator("#downloads a").count())
    ]
    json_url = next(link for link in links if link.split("?")[0].endswith(".json"))
    found = json.loads(fetch(json_url if json_url.startswith("http") else serve_url + json_url))
    assert found["results"], "the test model detects blobs on every image"
    union = np.zeros(original.shape[:2], bool)
    for instance in found["results"]:
        union |= rle_to_mask(instance["segmentation"])
    changed = (shown[:, :, :3] != original).any(axis=2)
    assert changed[union].mean() > 0.9
    # The table is virtualised (only visible rows are in the DOM); its grid states the row count + header.
    rows = int(page.locator("#detections [role=grid]").get_attribute("aria-rowcount"))
    assert rows == len(found["results"]) + 1
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "serve_browser.png"), full_page=True)


def test_corrupt_upload_shows_an_error_and_the_app_keeps_serving(page, sample_image, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(sample_image.read_bytes()[:300])
    page.reload()
    page.locator("#input-image input[type=file]").set_input_files(str(broken))
    page.locator("#submit").click()
    page.get_by_text("corrupt", exact=False).first.wait_for()
    page.screenshot(path=str(tmp_path / "error.png"))
    page.reload()
    page.locator("#input-image input[type=file]").set_input_files(str(sample_image))
    page.locator("#submit").click()
    page.locator("#status").get_by_text("objects on").wait_for()
