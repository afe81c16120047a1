"""A smoke run of ``bench/labelling_effort.py`` on the DSB sample: 2 batches of 2 images, one epoch per round.

The model is barely trained, so the numbers are not the loop's worth; what must hold is that the loop's
real code ran (the first model, a round of :meth:`RoundRunner.run_on_data` with its threshold choice), the
table and the closing lines are printed, and the counts agree with each other.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

from instaseg.app.effort import THRESHOLD_GRID

from ..conftest import DATASETS, REPO

CLOSING = re.compile(
    r"^loop: (\d+\.\d\d) actions/object vs (\d+\.\d\d) by hand \((\d+\.\d\d) times fewer\) over (\d+) images$"
)


def test_a_smoke_run_prints_the_table_and_the_closing_line(tmp_path):
    command = [
        sys.executable,
        str(REPO / "bench" / "labelling_effort.py"),
        str(DATASETS / "dsb2018_nuclei_sample"),
    ]
    command += ["--batch", "2", "--batches", "2", "--limit", "4", "--held-out", "2", "--round-epochs", "1"]
    command += ["--train-args", "--workers 0 --image-size 128", "--workdir", str(tmp_path / "work")]
    command += ["--json", str(tmp_path / "effort.json")]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("batch images objects"))
    rows = [line.split() for line in lines[header + 1 : header + 3]]
    assert [row[:2] for row in rows] == [["1", "2"], ["2", "4"]]
    assert "first model" in lines[header + 1]  # the first batch is drawn by hand, then a model trains
    assert rows[1][-2] in ("promoted", "kept")  # a round of the loop's code ran after the second batch

    closing = next(CLOSING.match(line) for line in lines if line.startswith("loop: "))
    loop, hand, fewer, images = float(closing[1]), float(closing[2]), float(closing[3]), int(closing[4])
    assert images == 4 and 4 <= hand < 40 and 0 < loop < 3 * hand
    assert abs(fewer - hand / loop) < 0.02
    assert any(line.startswith("smart box median IoU") for line in lines)

    saved = json.loads((tmp_path / "effort.json").read_text())
    first, second = saved["rows"]
    assert first["actions"] == first["by_hand"]  # no model yet: every object drawn by hand
    assert first["objects"] > 0 and second["objects"] > 0 and saved["summary"]["images"] == 4
    total = (first["actions"] + second["actions"]) / (first["objects"] + second["objects"])
    assert abs(total - loop) < 0.01
    assert second["smart_boxes"] == second["objects"] - second["accepted"]  # the smart box was tried
    assert 0 <= second["tool_median_iou"] <= 1 and first["tool_median_iou"] is None  # no model: no tool
    assert second["threshold"] in THRESHOLD_GRID and 0 <= second["mask_ap"] <= 1

    entry = json.loads((tmp_path / "work" / "loop" / "rounds.jsonl").read_text().splitlines()[0])
    assert entry["decision"] in ("promoted", "kept") and entry["pre_annotation_threshold"] in THRESHOLD_GRID
    assert entry["candidate"]["pre_annotation"]["objects"] > 0
