"""Prediction lanes: the images of a folder predicted two at a time, each lane with half the CPU threads.

On a CPU, one image's prediction keeps every core busy only in the network's convolutions and matrix
products. The rest (the RPN's box decoding and NMS, RoIAlign, pasting masks, Python between the ops) runs
on one thread while the other cores wait: about a fifth of the time of a light model at 384 px. Two images
in flight, each computed by half the threads, fill that time.

Measured on a 2-core AMD EPYC Zen 4 (bf16), ``bench/predict_speed.py CKPT --count 20 --threads 2``, its folder
rows (20 held-out DSB images, two light 384-px models): at score >= 0.5 two lanes of one thread took 0.088 and
0.080 s/image against 0.098 and 0.091 s one image at a time on two threads (1.11x, 1.14x); at score >= 0.05,
0.088 against 0.108 s (1.23x). ``instaseg predict`` on the 60 images of the sample, overlays and JSON
written: 7.5 against 8.5 s wall. In fp32 with torch capped at AVX2 (a stand-in for a CPU without bf16), 0.140
against 0.151 s/image at score >= 0.5 (1.08x).

Each image is computed by one lane from start to end with the lane's thread count, so its result does not
depend on which images ran beside it or in what order they finished: two lanes of one thread give the same
numbers as one image at a time on one thread. They can differ in the last bits from one image on two
threads (the sums inside the convolutions are split differently), as results differ between machines
with different numbers of cores: ``evaluate`` on the 20 images above, mask AP 48.47 in lanes against 48.50.

- :func:`plan_lanes` ``(engine, device, batches, threads) -> (lanes, threads per lane)``, and
  :func:`lanes_for` the same for a :class:`~instaseg.model.predictor.Predictor`;
- :func:`in_lanes` runs a function over items in that many threads, yielding results in order.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

LANES = 2


def plan_lanes(
    engine: str, device: str, batches: int, threads: int, requested: int | None = None
) -> tuple[int, int]:
    """How many images to predict at once and with how many CPU threads each.

    Args:
        engine: the predictor's engine name; only ``"torch"`` runs in lanes (ONNX Runtime and OpenVINO
            keep one pool of threads and one request for all calls).
        device: the torch device type the model runs on (``"cpu"``, ``"cuda"``, ``"mps"``); lanes on the
            CPU only.
        batches: how many forward passes there are to run (images, or batches of ``--batch-size``).
        threads: the CPU threads for the whole run.
        requested: lanes asked for (``--lanes``); ``None``: the default below.

    Returns:
        ``(lanes, threads per lane)``. By default ``(2, threads // 2)`` for the torch engine on the CPU with
        at least two batches and two threads, else ``(1, threads)``. A request is capped at ``batches``
        and ``threads`` (each lane has at least one thread).

    Raises:
        ValueError: more than one lane requested for another engine or device, or fewer than one.
    """
    if requested is not None and requested < 1:
        raise ValueError(f"--lanes must be >= 1, got {requested}")
    possible = engine == "torch" and device == "cpu"
    if requested is not None and requested > 1 and not possible:
        raise ValueError(f"--lanes applies to the torch engine on the CPU, not to {engine} on {device}")
    wanted = requested if requested is not None else (LANES if possible else 1)
    lanes = max(1, min(wanted, batches, threads))
    return lanes, threads // lanes if lanes > 1 else threads


def lanes_for(predictor, batches: int, threads: int, requested: int | None = None) -> tuple[int, int]:
    """:func:`plan_lanes` for a :class:`~instaseg.model.predictor.Predictor`: its engine and device. A model
    in training mode (a predictor over the model being trained) gets one lane whatever is requested: each
    prediction switches it to eval mode and back, which two lanes at once would interleave."""
    model = predictor.model
    if model is not None and model.training:
        return plan_lanes(predictor.engine_name, "cpu", batches, threads, 1)
    device = getattr(predictor.engine, "device", None)
    return plan_lanes(predictor.engine_name, getattr(device, "type", "cpu"), batches, threads, requested)


def in_lanes(
    work: Callable[[Item], Result], items: Iterable[Item], lanes: int
) -> Iterator[tuple[Item, Future[Result]]]:
    """``(item, future of work(item))`` for each of ``items``, in their order, with up to ``lanes`` calls
    running at once in threads (``lanes`` 1: each call runs in the caller's thread when its item is
    reached). ``items`` is read lazily, one item ahead of each running call; an exception of ``work`` is
    raised by the future's ``result()``, so the caller decides whether the others go on."""
    if lanes <= 1:
        for item in items:
            yield item, _run_now(work, item)
        return
    with ThreadPoolExecutor(max_workers=lanes, thread_name_prefix="instaseg-lane") as pool:
        pending: deque[tuple[Item, Future[Result]]] = deque()
        for item in items:
            pending.append((item, pool.submit(work, item)))
            if len(pending) >= lanes:
                yield pending.popleft()
        while pending:
            yield pending.popleft()


def _run_now(work: Callable[[Item], Result], item: Item) -> Future[Result]:
    future: Future[Result] = Future()
    try:
        future.set_result(work(item))
    except Exception as e:  # handed to the caller through the future, as from a lane's thread
        future.set_exception(e)
    return future
