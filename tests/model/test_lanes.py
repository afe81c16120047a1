"""Prediction lanes: the plan (how many, how many threads each) and the runner's order, laziness and errors."""

from __future__ import annotations

import threading
import time

import pytest

from instaseg.model.lanes import in_lanes, plan_lanes


def test_plan_two_lanes_for_the_torch_engine_on_the_cpu_only():
    assert plan_lanes("torch", "cpu", batches=20, threads=2) == (2, 1)
    assert plan_lanes("torch", "cpu", batches=20, threads=16) == (2, 8)
    assert plan_lanes("torch", "cpu", batches=20, threads=3) == (2, 1)
    assert plan_lanes("torch", "cpu", batches=1, threads=2) == (1, 2)  # one image: all threads on it
    assert plan_lanes("torch", "cpu", batches=20, threads=1) == (1, 1)
    assert plan_lanes("torch", "cuda", batches=20, threads=8) == (1, 8)
    assert plan_lanes("onnx", "cpu", batches=20, threads=8) == (1, 8)
    assert plan_lanes("openvino", "cpu", batches=20, threads=8) == (1, 8)


def test_plan_honours_a_request_within_the_images_and_threads():
    assert plan_lanes("torch", "cpu", 20, 2, requested=1) == (1, 2)
    assert plan_lanes("torch", "cpu", 20, 8, requested=4) == (4, 2)
    assert plan_lanes("torch", "cpu", 3, 8, requested=4) == (3, 2)  # no more lanes than images
    assert plan_lanes("torch", "cpu", 20, 2, requested=4) == (2, 1)  # nor than threads
    assert plan_lanes("onnx", "cpu", 20, 8, requested=1) == (1, 8)
    with pytest.raises(ValueError, match="torch engine on the CPU"):
        plan_lanes("onnx", "cpu", 20, 8, requested=2)
    with pytest.raises(ValueError, match="torch engine on the CPU"):
        plan_lanes("torch", "cuda", 20, 8, requested=2)
    with pytest.raises(ValueError, match=">= 1"):
        plan_lanes("torch", "cpu", 20, 8, requested=0)


def test_results_come_in_order_with_at_most_lanes_running_and_items_read_lazily():
    running, most, read = [0], [0], []
    lock = threading.Lock()

    def work(item: int) -> int:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.02 if item % 3 == 0 else 0.001)  # later items often finish first
        with lock:
            running[0] -= 1
        return item * item

    def items():
        for i in range(12):
            read.append(i)
            yield i

    seen = []
    for item, future in in_lanes(work, items(), lanes=2):
        assert len(read) <= item + 2  # never more than one item ahead of each lane
        seen.append((item, future.result()))
    assert seen == [(i, i * i) for i in range(12)]
    assert most[0] == 2


def test_an_error_stays_with_its_item():
    def work(item: int) -> int:
        if item == 2:
            raise ValueError("bad image 2")
        return item

    for lanes in (1, 2):
        outcomes = []
        for _, future in in_lanes(work, range(5), lanes):
            try:
                outcomes.append(future.result())
            except ValueError as e:
                outcomes.append(str(e))
        assert outcomes == [0, 1, "bad image 2", 3, 4]


def test_one_lane_runs_in_the_callers_thread_and_two_in_their_own():
    def name(_):
        return threading.current_thread().name

    assert [f.result() for _, f in in_lanes(name, [0, 1], 1)] == [threading.current_thread().name] * 2
    assert all(f.result().startswith("instaseg-lane") for _, f in in_lanes(name, [0, 1, 2], 2))
