"""Load test of ``instaseg serve``: N requests at C concurrent through ``gradio_client``, loopback only.

Starts ``instaseg serve CHECKPOINT`` on a free 127.0.0.1 port (or uses ``--url`` of a running loopback
server), sends ``--requests`` predictions of a real image with ``--concurrency`` client threads, and prints
failures, median/p95 latency, throughput and the server's RSS before and after.

    .venv/bin/python bench/serve_load.py CHECKPOINT [--requests 200] [--concurrency 8]
    .venv/bin/python bench/serve_load.py --requests 2000 --concurrency 8 --warmup 200   # the soak test

Without CHECKPOINT it builds a seeded random ``maskrcnn_resnet18_fpn`` checkpoint (256 px), like the tests.
Bounded: every request has a timeout and the whole run stops after ``--max-minutes``.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = sorted((REPO / "instaseg" / "sample_data" / "nuclei" / "images").glob("*.png"))[0]


def rss_mb(pid: int) -> float:
    """Resident set size of a process and its children (MB), from /proc."""
    total = 0
    pids = [pid] + [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    for p in pids:
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


def random_checkpoint(folder: Path) -> Path:
    import torch

    from instaseg.model.architectures import build_model
    from instaseg.model.checkpoint import library_versions, save_atomic
    from instaseg.model.config import ModelConfig

    torch.manual_seed(0)
    config = ModelConfig(
        arch="maskrcnn_resnet18_fpn",
        num_classes=1,
        image_size=256,
        pretrained_backbone=False,
        detections_per_image=20,
    )
    path = folder / "random_light.pt"
    save_atomic(
        {
            "format": "instaseg-checkpoint",
            "format_version": 1,
            "model": build_model(config).state_dict(),
            "class_names": ["nucleus"],
            "model_config": config.to_dict(),
            "train_config": {},
            "epoch": 0,
            "metrics": {},
            "versions": {k: str(v) for k, v in library_versions().items()},
        },
        path,
    )
    return path


def wait_until_up(url: str, process: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"server exited with status {process.returncode}")
        try:
            urllib.request.urlopen(url, timeout=5).close()
            return
        except OSError:
            time.sleep(0.5)
    sys.exit(f"{url} did not answer within {timeout:.0f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="?", help="model to serve (default: a random light checkpoint)")
    parser.add_argument(
        "--url", help="a running server on loopback instead of starting one (RSS not measured)"
    )
    parser.add_argument("--image", default=str(SAMPLE), help="image to send")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--server-concurrency", type=int, default=1, help="--concurrency of instaseg serve")
    parser.add_argument(
        "--warmup", type=int, default=1, help="requests sent (at --concurrency) before measuring"
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    parser.add_argument("--rss-every", type=int, default=250, help="sample the server's RSS every N requests")
    parser.add_argument("--max-minutes", type=float, default=20.0, help="stop submitting after this long")
    args = parser.parse_args()
    from gradio_client import Client, handle_file

    process = None
    work = Path(tempfile.mkdtemp(prefix="serve-load-"))
    if args.url:
        host = urllib.parse.urlsplit(args.url).hostname
        if host not in ("127.0.0.1", "localhost", "::1"):
            sys.exit(f"--url must be a loopback server (127.0.0.1), got {host}")
        url = args.url
    else:
        checkpoint = args.checkpoint or str(random_checkpoint(work))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
        log = open(work / "serve.log", "w")  # noqa: SIM115
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "instaseg",
                "serve",
                checkpoint,
                "--port",
                str(port),
                "--concurrency",
                str(args.server_concurrency),
                "--max-queue",
                "256",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO,
        )
        url = f"http://127.0.0.1:{port}"
        wait_until_up(url, process)
    try:
        client = Client(url, verbose=False)
        image = handle_file(args.image)
        with ThreadPoolExecutor(args.concurrency) as pool:  # warm-up (not counted)
            list(
                pool.map(
                    lambda _: client.predict(image, 0.5, "overlay", [], api_name="/predict"),
                    range(args.warmup),
                )
            )
        rss_before = rss_mb(process.pid) if process else None
        latencies, failures = [], []
        deadline = time.monotonic() + 60 * args.max_minutes

        def one(i: int) -> float:
            if time.monotonic() > deadline:
                raise TimeoutError("run time budget spent")
            started = time.monotonic()
            job = client.submit(image, 0.5, "overlay", [], api_name="/predict")
            result = job.result(timeout=args.timeout)
            if not result[1]["data"]:
                raise AssertionError(f"request {i}: empty detections table")
            return time.monotonic() - started

        started = time.monotonic()
        samples = []  # (requests done, server RSS MB): whether memory levels off or keeps growing
        with ThreadPoolExecutor(args.concurrency) as pool:
            futures = [pool.submit(one, i) for i in range(args.requests)]
            for done, future in enumerate(as_completed(futures), start=1):
                try:
                    latencies.append(future.result())
                except Exception as e:  # noqa: BLE001 - every failure is counted and shown
                    failures.append(f"{type(e).__name__}: {str(e)[:200]}")
                if process and (done % args.rss_every == 0 or done == args.requests):
                    samples.append((done, rss_mb(process.pid)))
        elapsed = time.monotonic() - started
        rss_after = rss_mb(process.pid) if process else None
    finally:
        if process:
            process.terminate()
            process.wait(timeout=30)
    latencies.sort()
    p95 = (
        latencies[min(len(latencies) - 1, int(round(0.95 * len(latencies))) - 1)]
        if latencies
        else float("nan")
    )
    print(
        f"requests {args.requests} (after {args.warmup} warm-up), concurrency {args.concurrency}, "
        f"image {Path(args.image).name}"
    )
    print(f"failures {len(failures)}")
    for failure in failures[:10]:
        print(f"  {failure}")
    if latencies:
        print(
            f"latency median {statistics.median(latencies):.2f} s, p95 {p95:.2f} s, max {latencies[-1]:.2f} s"
        )
    print(f"throughput {len(latencies) / elapsed:.2f} requests/s over {elapsed:.1f} s")
    if rss_before is not None:
        growth = 100 * (rss_after - rss_before) / rss_before
        print(
            f"server RSS after warm-up {rss_before:.0f} MB, at the end {rss_after:.0f} MB ({growth:+.1f} %)"
        )
        print("server RSS by requests done: " + ", ".join(f"{n}: {mb:.0f} MB" for n, mb in samples))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
