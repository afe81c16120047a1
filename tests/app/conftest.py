"""Fixtures of the deployment tests: a small real checkpoint, and real servers on free loopback ports.

Real components: ``instaseg serve`` / ``instaseg label-studio-backend`` run as subprocesses, Debian's
``/usr/bin/chromium`` (apt ``chromium``) driven by Playwright, and Label Studio 1.23 from its own venv
``.venv-ls`` (``scripts/ci_setup_label_studio.sh``). When one is missing the tests fail under CI
(``CI`` set) and skip with the reason elsewhere.
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import REPO

from .backend_fuzz import backend_client, serve_images

CHROMIUM = Path(os.environ.get("INSTASEG_CHROMIUM", "/usr/bin/chromium"))
LS_VENV = Path(os.environ.get("INSTASEG_LS_VENV", REPO / ".venv-ls"))
SAMPLE_IMAGES = REPO / "instaseg" / "sample_data" / "nuclei" / "images"
ARTIFACTS = REPO / "artifacts"


def require(available: bool, what: str, setup: str) -> None:
    """Fail under CI, skip elsewhere, when a real component the test needs is not installed."""
    if available:
        return
    message = f"{what} is not installed; run {setup}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, process: subprocess.Popen, log: Path, timeout: float) -> None:
    """Poll ``url`` until it answers (any HTTP status); fail with the process log if it dies or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"{url} did not answer within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def start_instaseg(args: list[str], log: Path, health_path: str = "/", timeout: float = 120.0):
    """Start ``instaseg ARGS --port P`` on a free loopback port; returns ``(process, base url)``."""
    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1"}
    handle = open(log, "w")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen(
        [sys.executable, "-m", "instaseg", *args, "--port", str(port)],
        stdout=handle,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=REPO,
    )
    url = f"http://127.0.0.1:{port}"
    wait_for_http(url + health_path, process, log, timeout)
    return process, url


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    """A ``maskrcnn_resnet18_fpn`` checkpoint (class "nucleus", 256 px) with seeded random weights.

    Random weights detect blobs with scores ~0.75 on any image, which is all the serving tests need: real
    pixels in, real masks out. Saved in the format of ``instaseg train`` (``load_checkpoint`` reads it).
    """
    from ..checkpoints import save_light_checkpoint

    path = tmp_path_factory.mktemp("model") / "light.pt"
    return save_light_checkpoint(path, ["nucleus"], 256, score_threshold=0.05, detections_per_image=20)


@pytest.fixture(scope="session")
def sample_image() -> Path:
    """A real 256x256 nuclei image (CC0, bundled)."""
    return sorted(SAMPLE_IMAGES.glob("*.png"))[0]


@pytest.fixture(scope="session")
def image_server():
    """The bundled sample images over plain HTTP on a free loopback port (a thread): its base URL, e.g.
    ``URL/<name>.png`` is a real 256x256 nuclei image."""
    with serve_images(SAMPLE_IMAGES) as url:
        yield url


@pytest.fixture(scope="module")
def ls_backend_client(checkpoint):
    """The Label Studio backend in-process (a test client over the light checkpoint), for one module."""
    with backend_client(checkpoint) as client:
        yield client


@pytest.fixture(scope="module")
def sample_image_url(image_server, sample_image) -> str:
    """The URL of the sample image on :func:`image_server`."""
    return f"{image_server}/{sample_image.name}"


@pytest.fixture(scope="session")
def serve_url(checkpoint, tmp_path_factory):
    """``instaseg serve`` with the test checkpoint (max 1 megapixel), as a subprocess on loopback."""
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    process, url = start_instaseg(
        ["serve", str(checkpoint), "--max-megapixels", "1", "--concurrency", "2"], log
    )
    yield url
    stop(process)


@pytest.fixture(scope="session")
def chromium() -> Path:
    require(
        CHROMIUM.is_file() and shutil.which(str(CHROMIUM)) is not None,
        f"Chromium ({CHROMIUM})",
        "scripts/ci_setup_chromium.sh (apt-get install chromium)",
    )
    try:
        import playwright  # noqa: F401
    except ImportError:
        require(False, "the playwright package", "pip install -e '.[dev]'")
    return CHROMIUM


LS_USER, LS_PASSWORD, LS_TOKEN = (
    "test@instaseg.local",
    "instaseg-test-password",
    "0123456789abcdef0123456789abcdef01234567",
)


class LabelStudioServer(tuple):
    """A running Label Studio: ``url, token = label_studio`` as before; ``.url``, ``.token`` and ``.data``
    (its data folder; local-files storage serves ``.data / "files"``)."""

    def __new__(cls, url: str, token: str, data: Path):
        server = super().__new__(cls, (url, token))
        server.url, server.token, server.data = url, token, data
        return server


def label_studio_env(url: str, data: Path) -> dict[str, str]:
    """The environment of the test server: its own data folder, local ML backends allowed
    (``ML_BLOCK_LOCAL_IP``) and local-files storage served from under ``data/files``."""
    (data / "files").mkdir(exist_ok=True)
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))},
        "LABEL_STUDIO_BASE_DATA_DIR": str(data),
        "LABEL_STUDIO_HOST": url,  # the hostname it gives the ML backend for task images
        "LATEST_VERSION_CHECK": "false",
        "COLLECT_ANALYTICS": "false",
        "ML_BLOCK_LOCAL_IP": "false",
        "SSRF_PROTECTION_ENABLED": "false",
        "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(data / "files"),
        "DJANGO_DB": "sqlite",
    }


@contextmanager
def run_label_studio(data: Path, legacy_tokens: bool, extra_env: dict | None = None):
    """Start Label Studio 1.23 from ``.venv-ls`` on a free loopback port with a fresh data folder (the first
    start migrates its SQLite database, ~30-60 s) and a known user; ``(process, url)`` once it answers.

    ``legacy_tokens`` starts it with ``--enable-legacy-api-token`` (the user's legacy token is
    :data:`LS_TOKEN`); without it the server is as ``label-studio start`` makes it: Personal Access Tokens only.
    """
    binary = LS_VENV / "bin" / "label-studio"
    require(binary.is_file(), f"Label Studio ({binary})", "scripts/ci_setup_label_studio.sh")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**label_studio_env(url, data), **(extra_env or {})}
    log = data / "label-studio.log"
    handle = open(log, "w")  # noqa: SIM115 - closed with the process
    command = [
        str(binary),
        "start",
        "--no-browser",
        "--internal-host",
        "127.0.0.1",
        "--port",
        str(port),
        "--data-dir",
        str(data / "app"),
        "--username",
        LS_USER,
        "--password",
        LS_PASSWORD,
        "--user-token",
        LS_TOKEN,
    ]
    if legacy_tokens:
        command.append("--enable-legacy-api-token")
    process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=data)
    try:
        wait_for_http(url + "/health", process, log, timeout=300)
        yield process, url
    finally:
        stop(process)
        handle.close()


def create_personal_access_token(url: str) -> str:
    """A Personal Access Token made as the Account page makes it: log in (Django session, CSRF cookie),
    then ``POST /api/token/`` (``label_studio/jwt_auth/views.py`` ``LSAPITokenView``); returns its
    ``token`` (a JWT refresh token)."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    opener.open(f"{url}/user/login/", timeout=30).read()
    csrf = next(c.value for c in jar if c.name == "csrftoken")
    form = urllib.parse.urlencode(
        {"email": LS_USER, "password": LS_PASSWORD, "csrfmiddlewaretoken": csrf}
    ).encode()
    opener.open(urllib.request.Request(f"{url}/user/login/", data=form, headers={"Referer": url}), timeout=30)
    csrf = next(c.value for c in jar if c.name == "csrftoken")  # Django rotates it at login
    request = urllib.request.Request(
        f"{url}/api/token/",
        data=b"{}",
        method="POST",
        headers={"Content-Type": "application/json", "X-CSRFToken": csrf, "Referer": url},
    )
    with opener.open(request, timeout=30) as response:
        token = json.loads(response.read())["token"]
    assert token.count(".") == 2, f"not a JWT: {token[:20]}..."
    return token


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory) -> LabelStudioServer:
    """A real Label Studio 1.23 server on a free loopback port, started as a person starts it (legacy tokens
    off, Label Studio's default): ``(base url, Personal Access Token)`` made through its API as the Account
    page does. Local files under ``.data / "files"`` are served as ``/data/local-files/?d=<relative path>``.
    """
    data = tmp_path_factory.mktemp("label-studio")
    with run_label_studio(data, legacy_tokens=False) as (_, url):
        yield LabelStudioServer(url, create_personal_access_token(url), data)


@pytest.fixture(scope="session")
def label_studio_legacy(tmp_path_factory) -> LabelStudioServer:
    """Label Studio 1.23 started with ``--enable-legacy-api-token``: ``(base url, legacy token)``."""
    data = tmp_path_factory.mktemp("label-studio-legacy")
    with run_label_studio(data, legacy_tokens=True) as (_, url):
        yield LabelStudioServer(url, LS_TOKEN, data)


@pytest.fixture(scope="session")
def backend_url(checkpoint, tmp_path_factory):
    """``instaseg label-studio-backend`` with the test checkpoint (basic auth on), as a subprocess."""
    log = tmp_path_factory.mktemp("backend") / "backend.log"
    process, url = start_instaseg(
        ["label-studio-backend", str(checkpoint), "--max-megapixels", "1", "--basic-auth", "ml:secret"],
        log,
        health_path="/health",
    )
    yield url, ("ml", "secret")
    stop(process)


@pytest.fixture(scope="session")
def ls_backend_url(checkpoint, label_studio, tmp_path_factory):
    """``instaseg label-studio-backend`` as a person runs it for a default Label Studio: with
    ``--label-studio-url`` and its Personal Access Token (basic auth on), as a subprocess."""
    log = tmp_path_factory.mktemp("backend-pat") / "backend.log"
    url, token = label_studio
    arguments = [
        "label-studio-backend",
        str(checkpoint),
        "--max-megapixels",
        "1",
        "--basic-auth",
        "ml:secret",
    ]
    process, backend = start_instaseg(
        [*arguments, "--label-studio-url", url, "--label-studio-token", token], log, health_path="/health"
    )
    yield backend, ("ml", "secret")
    stop(process)
