"""Fixtures of the deployment tests: a small real checkpoint, and real servers on free loopback ports.

Real components: ``instaseg serve`` / ``instaseg label-studio-backend`` run as subprocesses, Debian's
``/usr/bin/chromium`` (apt ``chromium``) driven by Playwright, and Label Studio 1.23 from its own venv
``.venv-ls`` (``scripts/ci_setup_label_studio.sh``). When one is missing the tests fail under CI
(``CI`` set) and skip with the reason elsewhere.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO

from .backend_fuzz import serve_images

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


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory):
    """A real Label Studio 1.23 server on a free loopback port: ``(base url, API token)``.

    Started from ``.venv-ls`` with a fresh data folder (the first start migrates its SQLite database,
    ~30-60 s), a known user and a legacy API token; local ML backends allowed (``ML_BLOCK_LOCAL_IP``).
    """
    binary = LS_VENV / "bin" / "label-studio"
    require(binary.is_file(), f"Label Studio ({binary})", "scripts/ci_setup_label_studio.sh")
    data = tmp_path_factory.mktemp("label-studio")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))},
        "LABEL_STUDIO_BASE_DATA_DIR": str(data),
        "LABEL_STUDIO_HOST": url,  # the hostname it gives the ML backend for task images
        "LATEST_VERSION_CHECK": "false",
        "COLLECT_ANALYTICS": "false",
        "ML_BLOCK_LOCAL_IP": "false",
        "SSRF_PROTECTION_ENABLED": "false",
        "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
        "DJANGO_DB": "sqlite",
    }
    log = data / "label-studio.log"
    handle = open(log, "w")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen(
        [
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
            "--enable-legacy-api-token",
        ],
        stdout=handle,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=data,
    )
    try:
        wait_for_http(url + "/health", process, log, timeout=300)
        yield url, LS_TOKEN
    finally:
        stop(process)
        handle.close()


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
