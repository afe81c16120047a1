"""The command line's boundary: hostile or careless input ends with exit 2 and one clear line, never a
traceback, a hang, or the user's own files overwritten."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from instaseg.cli import main

from .checkpoints import save_light_checkpoint
from .conftest import DATASETS

SAMPLE = DATASETS / "label_studio_1.23_exports"


def one_line_error(capsys, code: int, *expected: str) -> str:
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for text in expected:
        assert text in err, err
    return err


def test_convert_onto_its_own_source_is_refused(tmp_path, capsys):
    source = tmp_path / "coco.json"
    shutil.copy(DATASETS / "furniture_labelstudio" / "coco" / "result.json", source)
    before = source.read_bytes()
    one_line_error(capsys, main(["convert", str(source), str(source)]), "is an input of this command")
    assert source.read_bytes() == before


def test_convert_into_the_source_folder_does_not_replace_its_export(tmp_path, capsys):
    folder = tmp_path / "export"
    shutil.copytree(DATASETS / "furniture_labelstudio" / "coco", folder)
    (folder / "annotations.json").write_text((folder / "result.json").read_text())
    before = (folder / "annotations.json").read_bytes()
    one_line_error(
        capsys, main(["convert", str(folder), str(folder)]), "already exists in the dataset folder"
    )
    assert (folder / "annotations.json").read_bytes() == before


def test_export_onto_the_checkpoint_is_refused(tmp_path, capsys):
    checkpoint = save_light_checkpoint(tmp_path / "m.pt", ["a"], 64)
    before = checkpoint.read_bytes()
    code = main(["export", str(checkpoint), "--out", str(checkpoint), "--no-check"])
    one_line_error(capsys, code, "is an input of this command")
    assert checkpoint.read_bytes() == before


@pytest.mark.parametrize("command", ["predict", "train", "evaluate"])
def test_an_output_folder_that_is_a_file_is_refused_before_work(tmp_path, capsys, command):
    blocker = tmp_path / "taken.txt"
    blocker.write_text("mine")
    checkpoint = save_light_checkpoint(tmp_path / "m.pt", ["nucleus"], 64)
    data = str(DATASETS / "dsb2018_nuclei_sample")
    args = {
        "predict": ["predict", str(checkpoint), data, "--out", str(blocker / "sub")],
        "train": ["train", data, "--out", str(blocker)],
        "evaluate": ["evaluate", str(checkpoint), data, "--out", str(blocker), "--format", "mask-png"],
    }[command]
    one_line_error(capsys, main(args), "is a file, not a folder")
    assert blocker.read_text() == "mine"


def test_special_files_are_refused_not_read(tmp_path, capsys):
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)  # reading it would block forever
    one_line_error(capsys, main(["check", str(fifo), "--format", "coco"]), "not a regular file")
    one_line_error(capsys, main(["check", "/dev/zero", "--format", "labelstudio-json"]), "not a regular file")


def test_json_nested_thousands_deep(tmp_path, capsys):
    path = tmp_path / "deep.json"
    path.write_text("[" * 200_000 + "]" * 200_000)
    one_line_error(capsys, main(["check", str(path), "--format", "coco"]), "nested too deeply")


def test_nan_split_fraction(tmp_path, capsys):
    data = str(DATASETS / "dsb2018_nuclei_sample")
    code = main(["split", data, "--out", str(tmp_path / "s.json"), "--val", "nan"])
    one_line_error(capsys, code, "split fractions")


def test_debug_variable_shows_the_traceback(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 200_000 + "]" * 200_000)
    command = [sys.executable, "-m", "instaseg", "check", str(path), "--format", "coco"]
    quiet = subprocess.run(command, capture_output=True, text=True, timeout=120)
    loud = subprocess.run(
        command, capture_output=True, text=True, timeout=120, env={**os.environ, "INSTASEG_DEBUG": "1"}
    )
    assert quiet.returncode == 2 and "Traceback" not in quiet.stderr
    assert loud.returncode != 0 and "Traceback" in loud.stderr


def test_evaluate_predictions_with_overrunning_rle_counts(tmp_path, capsys):
    from instaseg.cli.quickstart import sample_dataset_dir

    bad = [
        {
            "image_id": 1,
            "category_id": 1,
            "score": 0.9,
            "segmentation": {"size": [256, 256], "counts": [10**9]},
        }
    ]
    (tmp_path / "p.json").write_text(json.dumps(bad))
    code = main(
        [
            "evaluate",
            "--predictions",
            str(tmp_path / "p.json"),
            sample_dataset_dir(),
            "--split",
            "all",
            "--out",
            str(tmp_path / "e"),
        ]
    )
    one_line_error(capsys, code, "1 invalid predictions: entry 0", "a count overruns the mask")
