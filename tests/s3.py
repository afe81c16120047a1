"""A real S3-protocol server for tests: moto's server mode on 127.0.0.1, as s3fs's own test suite uses.

One ``python -m moto.server`` subprocess per pytest session, started by the first test that asks for the
``s3_endpoint`` fixture and stopped when the session ends. Test modules register this file as a plugin,
``pytest_plugins = ["tests.s3"]``, so the session fixture exists once however many modules use it. s3fs is pointed at the server the standard
way, with the ``AWS_ENDPOINT_URL_S3`` environment variable (see ``instaseg/storage.py``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

import pytest

# Dummy credentials: the server accepts anything, botocore refuses to sign without some.
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_MAX_ATTEMPTS": "2",
}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto_server(timeout: float = 30.0) -> tuple[subprocess.Popen, str]:
    """Start ``python -m moto.server`` on a free loopback port; ``(process, endpoint URL)`` once it answers."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    # The server logs every request: to a file, since an unread pipe fills up and blocks the server.
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1):
                return process, endpoint
        except OSError:
            if process.poll() is not None:
                log.seek(0)
                raise RuntimeError(
                    f"moto server exited: {log.read().decode(errors='replace')[-2000:]}"
                ) from None
            if time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"moto server did not answer on {endpoint} within {timeout} s") from None
            time.sleep(0.1)


def stop_server(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def s3_endpoint():
    """The loopback S3 endpoint URL; s3fs in this process is pointed at it through the environment."""
    import s3fs

    process, endpoint = start_moto_server()
    saved = {k: os.environ.get(k) for k in (*AWS_ENV, "AWS_ENDPOINT_URL_S3")}
    os.environ.update(AWS_ENV, AWS_ENDPOINT_URL_S3=endpoint)
    s3fs.S3FileSystem.clear_instance_cache()  # a filesystem made before would still talk to AWS
    try:
        yield endpoint
    finally:
        stop_server(process)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        s3fs.S3FileSystem.clear_instance_cache()


def s3_env(endpoint: str) -> dict[str, str]:
    """Environment for a subprocess (e.g. the CLI) that reaches the server through ``AWS_ENDPOINT_URL_S3``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FSSPEC_"))}
    env.update(AWS_ENV, AWS_ENDPOINT_URL_S3=endpoint)
    return env


@pytest.fixture
def bucket(s3_endpoint):
    """A new empty bucket for one test: ``"s3://<name>"``; deleted with its objects afterwards."""
    import fsspec

    name = f"test-{uuid.uuid4().hex[:12]}"
    fs = fsspec.filesystem("s3")
    fs.mkdir(name)
    yield f"s3://{name}"
    fs.rm(name, recursive=True)


@pytest.fixture
def subprocess_env(s3_endpoint) -> dict[str, str]:
    """Environment for a child process (e.g. the CLI) that reaches the server via ``AWS_ENDPOINT_URL_S3``."""
    return s3_env(s3_endpoint)


@pytest.fixture
def unreachable_endpoint() -> str:
    """An endpoint URL on 127.0.0.1 where nothing listens."""
    return f"http://127.0.0.1:{free_port()}"
