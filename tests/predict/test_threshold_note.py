"""``predict``'s summary names the checkpoint's own score threshold when ``--score-threshold`` differs."""

from __future__ import annotations

import json

from instaseg.cli import main


def test_summary_names_the_checkpoints_threshold_when_the_flag_differs(
    checkpoint, nuclei_paths, tmp_path, capsys
):
    # the random checkpoint keeps everything (its threshold is 0); predict's default 0.5 drops part of it
    assert (
        main(
            [
                "predict",
                str(checkpoint),
                str(nuclei_paths[0]),
                "--out",
                str(tmp_path / "a"),
                "--save",
                "json",
                "--threads",
                "1",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert (
        "note: kept instances scoring >= 0.5 (--score-threshold); the checkpoint's own threshold is 0" in out
    )
    kept = json.loads((tmp_path / "a" / "predictions.json").read_text())
    assert all(r["score"] >= 0.5 for r in kept)
    args = ["predict", str(checkpoint), str(nuclei_paths[0]), "--out", str(tmp_path / "b"), "--save", "json"]
    assert main([*args, "--threads", "1", "--score-threshold", "0"]) == 0
    assert "checkpoint's own threshold" not in capsys.readouterr().out
    every = json.loads((tmp_path / "b" / "predictions.json").read_text())
    assert len(every) > len(kept) and min(r["score"] for r in every) < 0.5
