"""instaseg.distributed: shards, the torchrun command of ``--gpus``, and real 2-process gloo jobs on CPU
(collectives, and a failing rank that ends the job with its error instead of hanging)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from instaseg.cli import train as train_cli
from instaseg.distributed import Distributed, launched, torchrun_command
from tests.conftest import REPO


def torchrun(nproc: int, arguments: list[str], env: dict | None = None, timeout: float = 240):
    """Run ``python -m torch.distributed.run --standalone --nproc_per_node N ARGUMENTS`` from the repository;
    returns the CompletedProcess (stdout and stderr merged)."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        environment.pop(name, None)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
    return subprocess.run(
        [*command, *arguments],
        cwd=REPO,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize("count,world_size", [(0, 2), (1, 2), (5, 2), (7, 3), (4, 4), (2, 3)])
def test_shards_are_disjoint_and_merge_back_in_order(count, world_size):
    items = [f"image{i}" for i in range(count)]
    ranks = [Distributed(r, world_size, r, torch.device("cpu"), "gloo") for r in range(world_size)]
    parts = [rank.shard(items) for rank in ranks]
    assert sorted(sum(parts, [])) == sorted(items)
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    processed = [[item.upper() for item in part] for part in parts]
    assert ranks[0].unshard(processed) == [item.upper() for item in items]


def test_gpus_relaunches_the_same_command_through_torchrun(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not launched()
    parser = argparse.ArgumentParser()
    train_cli.add_arguments(parser)
    given = [
        "data",
        "--out",
        "run",
        "--gpus",
        "4",
        "--image-size",
        "512",
        "--no-amp",
        "--sync-bn",
        "--lr",
        "0.02",
    ]
    args = parser.parse_args(given)
    arguments = train_cli._arguments_without_gpus(args)
    command = torchrun_command(4, arguments)
    assert command[:6] == [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "4",
    ]
    assert command[6:9] == ["-m", "instaseg", "train"] and "--gpus" not in command
    # what each process parses equals what was given, --gpus aside
    again = vars(parser.parse_args(arguments[1:]))
    assert again == {**vars(args), "gpus": None}
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert launched()
    assert train_cli.run(args) == 2  # --gpus under torchrun is refused, not run recursively


# Collectives on 2 gloo ranks, then rank 1 fails while rank 0 waits in a barrier.
JOB = textwrap.dedent(
    """
    import json, sys, time
    from instaseg.distributed import init_distributed
    context = init_distributed("cpu", timeout_minutes=2)
    rank = context.rank
    mean = context.all_reduce_mean({"loss": 1.0 + rank, "other": 10.0 * rank}, weight=1 + rank)
    gathered = context.all_gather({"rank": rank, "ids": context.shard(list(range(5)))})
    result = {
        "backend": context.backend, "world_size": context.world_size, "mean": mean,
        "any": [context.any(rank == 1), context.any(False)], "gathered": gathered,
        "broadcast": context.broadcast(f"from {rank}"),
        "merged": context.unshard([g["ids"] for g in gathered]),
    }
    open(f"{sys.argv[1]}/rank{rank}.json", "w").write(json.dumps(result))
    if rank == 1:
        raise RuntimeError("rank 1 broke on purpose")
    context.barrier()
    time.sleep(120)
    """
)


def test_two_gloo_processes_agree_and_a_failing_rank_stops_the_job(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(JOB)
    started = time.monotonic()
    done = torchrun(2, [str(script), str(tmp_path)], timeout=150)
    elapsed = time.monotonic() - started
    assert done.returncode != 0
    assert "rank 1 broke on purpose" in done.stdout
    assert elapsed < 100, f"the job took {elapsed:.0f} s to stop after a rank failed"
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert results[0] == results[1]  # every rank got the same answers
    for result in results:
        assert result["backend"] == "gloo" and result["world_size"] == 2
        # weights 1 and 2: (1*1 + 2*2) / 3 and (0*1 + 10*2) / 3
        assert result["mean"] == pytest.approx({"loss": 5 / 3, "other": 20 / 3})
        assert result["any"] == [True, False]
        assert result["gathered"] == [{"rank": 0, "ids": [0, 2, 4]}, {"rank": 1, "ids": [1, 3]}]
        assert result["broadcast"] == "from 0" and result["merged"] == [0, 1, 2, 3, 4]


@pytest.mark.slow
def test_sharded_predict_equals_one_process(tmp_path, datasets):
    from instaseg.cli import main
    from tests.predict.conftest import save_random_checkpoint

    checkpoint = tmp_path / "random.pt"
    save_random_checkpoint(checkpoint)
    folder = datasets / "dsb2018_nuclei_sample" / "stage1_train"
    images = [str(next((d / "images").glob("*.png"))) for d in sorted(folder.iterdir())[:5]]  # 3 + 2 shards
    options = ["--save", "overlay,ids,json", "--score-threshold", "0.3", "--device", "cpu", "--threads", "1"]
    two = torchrun(
        2, ["-m", "instaseg", "predict", str(checkpoint), *images, "--out", str(tmp_path / "two"), *options]
    )
    assert two.returncode == 0, two.stdout[-3000:]
    assert two.stdout.count("predicted 5 image(s)") == 1  # rank 0 reports for both
    assert main(["predict", str(checkpoint), *images, "--out", str(tmp_path / "one"), *options]) == 0

    merged = json.loads((tmp_path / "two" / "predictions.json").read_text())
    single = json.loads((tmp_path / "one" / "predictions.json").read_text())
    assert len({r["image_id"] for r in single}) == 5 and merged == single
    for kind in ("overlay", "ids"):
        files = sorted(p.name for p in (tmp_path / "one" / kind).iterdir())
        assert len(files) == 5 and sorted(p.name for p in (tmp_path / "two" / kind).iterdir()) == files
        for name in files:
            assert (tmp_path / "two" / kind / name).read_bytes() == (
                tmp_path / "one" / kind / name
            ).read_bytes()
