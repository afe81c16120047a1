"""``instaseg serve --auth USER:PASSWORD``: wrong credentials are rejected by the browser login and by
``gradio_client``; the right ones get predictions."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from .conftest import start_instaseg, stop
from .test_browser import CHROMIUM_ARGS

gradio_client = pytest.importorskip("gradio_client")
USER, PASSWORD = "alice", "correct horse battery"


@pytest.fixture(scope="module")
def auth_url(checkpoint, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve-auth") / "serve.log"
    process, url = start_instaseg(["serve", str(checkpoint), "--auth", f"{USER}:{PASSWORD}"], log)
    yield url
    stop(process)


def test_api_needs_the_credentials(auth_url, sample_image):
    with pytest.raises(Exception, match="(?i)login|credential|auth|401|unauthorized"):
        gradio_client.Client(auth_url, auth=(USER, "wrong"), verbose=False)
    with pytest.raises(Exception):  # noqa: B017 - no credentials: the API info itself is refused
        gradio_client.Client(auth_url, verbose=False)
    client = gradio_client.Client(auth_url, auth=(USER, PASSWORD), verbose=False)
    _, table, _, status = client.predict(
        gradio_client.handle_file(str(sample_image)), 0.0, "overlay", [], api_name="/predict"
    )
    assert table["data"] and "objects shown on" in status
    with pytest.raises(urllib.error.HTTPError) as refused:  # the raw API route without a session cookie
        urllib.request.urlopen(auth_url + "/gradio_api/info", timeout=30)
    assert refused.value.code in (401, 403)


def test_browser_login_rejects_a_wrong_password(chromium, auth_url):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.set_default_timeout(60_000)
        page.goto(auth_url)
        page.get_by_label("username").fill(USER)
        page.get_by_label("password").fill("wrong")
        page.get_by_role("button", name="Login").click()
        page.get_by_text("Incorrect Credentials").wait_for()
        assert page.locator("#submit").count() == 0  # the app is not shown
        page.goto(auth_url)
        page.get_by_label("username").fill(USER)
        page.get_by_label("password").fill(PASSWORD)
        page.get_by_role("button", name="Login").click()
        page.locator("#submit").wait_for()
        browser.close()
