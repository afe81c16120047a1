"""A real ``mlflow server`` on a free loopback port (SQLite backend store, artifacts in a folder), for the
tracking tests of ``instaseg train --track`` and of the labelling loop's rounds."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.s3 import free_port

MLFLOW = Path(sys.executable).parent / "mlflow"


@contextlib.contextmanager
def mlflow_server(folder: Path, timeout: float = 180.0) -> Iterator[str]:
    """Start ``mlflow server`` with ``sqlite:///folder/mlflow.db`` and artifacts in ``folder/artifacts``;
    yields its URL once ``/health`` answers, stops it (and its workers) afterwards. Fails under CI and
    skips elsewhere when mlflow is not installed (``pip install 'instaseg[mlflow]'``)."""
    if not MLFLOW.is_file():
        message = f"mlflow is not installed ({MLFLOW} missing): pip install 'instaseg[mlflow]'"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [str(MLFLOW), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    command += ["--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}"]
    command += ["--artifacts-destination", str(folder / "artifacts")]
    log_path = folder / "server.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                pytest.fail(
                    f"mlflow server exited with {process.returncode}:\n{log_path.read_text()[-3000:]}"
                )
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"mlflow server did not answer within {timeout:g} s:\n{log_path.read_text()[-3000:]}"
                )
            time.sleep(0.5)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
