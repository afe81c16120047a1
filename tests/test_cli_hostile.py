"""Hostile datasets through the command line: each ends with exit 1 (problems found, the clear line among
them) or 2 (one line on stderr), never a traceback, a crash or a hang."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import pytest

from instaseg.cli import main
from tests.test_cli_boundary import one_line_error

from .formats.hostile import FORMATS, write_dataset, write_image


def problem_line(capsys, code: int, *expected: str) -> str:
    """The one printed problem holding every ``expected`` fragment, of a command that exited with 1."""
    captured = capsys.readouterr()
    assert code == 1, captured.out + captured.err
    lines = [line for line in (captured.out + captured.err).splitlines() if all(t in line for t in expected)]
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.out + captured.err
    return lines[0]


@pytest.mark.timeout(60)
def test_a_fifo_or_a_device_as_data(tmp_path, capsys):
    fifo = tmp_path / "export"
    os.mkfifo(fifo)
    one_line_error(capsys, main(["check", str(fifo)]), "not a regular file", str(fifo))
    one_line_error(capsys, main(["check", "/dev/zero"]), "not a regular file", "/dev/zero")
    one_line_error(capsys, main(["convert", str(fifo), str(tmp_path / "out.json")]), "not a regular file")


def test_a_zip_bomb_as_the_export(tmp_path, capsys):
    export = tmp_path / "export.zip"
    with zipfile.ZipFile(export, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("result.json", b"{" + b" " * (30 << 20) + b"}")
    one_line_error(capsys, main(["check", str(export)]), "expands", "a zip bomb?")


def test_a_huge_declared_size_does_not_crash_the_process(tmp_path):
    document = FORMATS["coco"][0]("missing.png", 10**8, 10**8, [[0, 0, 9e7, 0, 9e7, 9e7]])
    source = write_dataset(tmp_path, "coco", document, image=False)
    done = subprocess.run(
        [sys.executable, "-m", "instaseg", "check", str(source)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1, done.stderr  # a segmentation fault is -11
    assert "image size 100000000 x 100000000 is over the limit of 178,956,970 pixels" in done.stdout


@pytest.mark.parametrize("format", ["labelstudio-json", "labelme"])
def test_a_huge_declared_size_of_a_missing_image_is_one_problem(tmp_path, capsys, format):
    factory = FORMATS[format][0]
    source = write_dataset(tmp_path, format, factory("missing.png", 10**8, 10**8), image=False)
    problem_line(capsys, main(["check", str(source)]), "image size 100000000 x 100000000 is over the limit")


def test_huge_numbers_give_short_problem_lines(tmp_path, capsys):
    document = FORMATS["coco"][0]()
    document["annotations"].append({**document["annotations"][0], "id": 8, "iscrowd": 10**400})
    document["annotations"].append({"id": 9, "image_id": 1, "category_id": 1, "bbox": [10**400, 1e300, 1, 1]})
    source = write_dataset(tmp_path, "coco", document)
    line = problem_line(
        capsys, main(["check", str(source)]), "iscrowd must be 0 or 1, got <a 401-digit number>"
    )
    assert len(line) < 200, line
    line = problem_line(capsys, main(["check", str(source)]), "bbox must be [x, y, width, height]")
    assert "<a 401-digit number>" in line and len(line) < 250, line
    (tmp_path / "result.json").write_text('{"images": [{"id": 1' + "0" * 5000 + "}]}")
    one_line_error(capsys, main(["check", str(source)]), "a number has more than 4,300 digits")


def test_class_names_that_are_paths_are_reported_by_check(tmp_path, capsys):
    document = FORMATS["coco"][0]()
    document["categories"][0]["name"] = "../../../tmp/x"
    source = write_dataset(tmp_path, "coco", document)
    assert main(["check", str(source)]) == 0  # a warning: outputs use the safe form
    line = capsys.readouterr().out
    assert "warning: class name '../../../tmp/x' cannot be part of a file name" in line
    assert "use '_.._.._tmp_x'" in line


@pytest.mark.timeout(60)
def test_a_device_or_a_fifo_as_an_image(tmp_path, capsys):
    os.mkfifo(tmp_path / "pipe.png")
    document = FORMATS["coco"][0]("pipe.png")
    document["images"].append({"id": 2, "file_name": "/dev/zero", "width": 40, "height": 30})
    source = write_dataset(tmp_path, "coco", document, image=False)
    code = main(["check", str(source), "--allow-outside-paths", "--deep"])
    problem_line(capsys, code, "image file unusable: not a regular file", "image pipe.png")
    code = main(["check", str(source), "--allow-outside-paths"])
    problem_line(capsys, code, "image file unusable: not a regular file", "image /dev/zero")


def test_an_absolute_image_path_is_refused_unless_allowed(tmp_path, capsys):
    secret = write_image(tmp_path / "someone-else" / "secret.png")
    folder = tmp_path / "labelme"
    write_dataset(folder, "labelme", FORMATS["labelme"][0](str(secret)), image=False)
    problem_line(capsys, main(["check", str(folder)]), "leads outside the dataset", "--allow-outside-paths")
    assert main(["check", str(folder), "--allow-outside-paths"]) == 0
    assert "1 present" in capsys.readouterr().out
    code = main(["convert", str(folder), str(tmp_path / "coco.json")])
    problem_line(capsys, code, "leads outside the dataset")


def test_a_via_filename_leading_outside_is_refused(tmp_path, capsys):
    write_image(tmp_path / "someone-else" / "secret.png")
    folder = tmp_path / "via"
    write_dataset(folder, "via", FORMATS["via"][0]("../someone-else/secret.png"), image=False)
    problem_line(
        capsys, main(["check", str(folder)]), "'../someone-else/secret.png' leads outside the dataset"
    )


def test_json_nested_too_deeply_in_a_folder(tmp_path, capsys):
    (tmp_path / "via_region_data.json").write_text("[" * 100_000 + "]" * 100_000)
    one_line_error(capsys, main(["check", str(tmp_path)]), "nested too deeply")


def test_a_label_studio_result_that_is_a_string(tmp_path, capsys):
    tasks = FORMATS["labelstudio-json"][0]()
    tasks[0]["annotations"][0]["result"] = "polygon"
    source = write_dataset(tmp_path, "labelstudio-json", tasks)
    problem_line(capsys, main(["check", str(source)]), "'result' must be a list of regions, got str")


def test_an_image_url_that_cannot_be_fetched(tmp_path, capsys):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    source = write_dataset(
        tmp_path, "coco", FORMATS["coco"][0](f"http://127.0.0.1:{port}/a.png"), image=False
    )
    problem_line(capsys, main(["check", str(source)]), f"http://127.0.0.1:{port}/a.png cannot be fetched")


def test_evaluate_predictions_with_negative_rle_counts(tmp_path, capsys):
    from instaseg.cli.quickstart import sample_dataset_dir

    bad = [
        {"image_id": 1, "category_id": 1, "score": 0.9, "segmentation": {"size": [256, 256], "counts": [-1]}}
    ]
    (tmp_path / "p.json").write_text(json.dumps(bad))
    code = main(["evaluate", "--predictions", str(tmp_path / "p.json"), sample_dataset_dir(), "--split", "all",
                 "--out", str(tmp_path / "e")])  # fmt: skip
    one_line_error(capsys, code, "1 invalid predictions: entry 0", "a count is negative")


@pytest.mark.timeout(60)
def test_evaluate_predictions_that_are_not_a_file_or_declare_a_huge_mask(tmp_path, capsys):
    from instaseg.cli.quickstart import sample_dataset_dir

    def evaluate(predictions) -> int:
        return main(["evaluate", "--predictions", str(predictions), sample_dataset_dir(), "--split", "all",
                     "--out", str(tmp_path / "e")])  # fmt: skip

    os.mkfifo(tmp_path / "fifo.json")
    for special in (tmp_path / "fifo.json", "/dev/zero"):
        one_line_error(capsys, evaluate(special), "the predictions file is not a regular file")
    huge = {"size": [10**8, 10**8], "counts": "PPYo1"}
    items = [{"image_id": 1, "category_id": 1, "score": 0.9, "segmentation": huge}]
    items.append({**items[0], "segmentation": [[0, 0, 9e7, 0, 9e7, 9e7]]})  # clipped to the image: kept
    (tmp_path / "p.json").write_text(json.dumps(items))
    one_line_error(
        capsys, evaluate(tmp_path / "p.json"), "1 invalid predictions: entry 0", "mask size [100000000"
    )


@pytest.mark.parametrize("command", ["check", "convert", "train", "split", "evaluate"])
def test_help_states_the_limits(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--allow-outside-paths" in text
    for limit in ("178,956,970 pixels", "10,000 objects per image", "4 GiB", "more than 100x", "timeout"):
        assert limit in text, limit
