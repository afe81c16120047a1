"""instaseg.upload and ``instaseg upload`` against a real S3-protocol server (moto) on 127.0.0.1."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys

import fsspec
import pytest

from instaseg.cli import main
from instaseg.problems import DatasetError
from instaseg.upload import DEFAULT_INCLUDE, multipart_etag, upload

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The loopback S3 server fixtures (s3_endpoint, bucket), registered once for the whole session.
pytest_plugins = ["tests.s3"]


@pytest.fixture(scope="module")
def furniture(datasets) -> str:
    return str(datasets / "furniture_labelstudio")


def expected_files(folder: str) -> dict[str, int]:
    """Relative path -> size of the files upload() should copy, computed independently of it."""
    found = {}
    for root, _, files in os.walk(folder):
        for name in files:
            if name.lower().endswith(DEFAULT_INCLUDE) and not name.startswith("."):
                path = os.path.join(root, name)
                found[os.path.relpath(path, folder).replace(os.sep, "/")] = os.path.getsize(path)
    return found


def test_furniture_upload_is_idempotent_and_resumes(furniture, bucket):
    url = f"{bucket}/furniture"
    expected = expected_files(furniture)
    assert len(expected) == 26  # 24 images + COCO result.json + Label Studio JSON; PROVENANCE.md is not data

    first = upload(furniture, url, progress=False)
    assert sorted(first.copied) == sorted(expected) and first.skipped == [] and first.failed == []
    assert first.bytes == sum(expected.values())
    fs = fsspec.filesystem("s3")
    listed = {p.split("/furniture/", 1)[1]: info["size"] for p, info in fs.find(url, detail=True).items()}
    assert listed == expected
    local_json = open(os.path.join(furniture, "coco", "result.json"), "rb").read()
    assert fs.cat_file(f"{url}/coco/result.json") == local_json

    second = upload(furniture, url, progress=False)
    assert second.copied == [] and sorted(second.skipped) == sorted(expected) and second.bytes == 0

    # An interrupted run: one object missing, one cut short.
    fs.rm(f"{url}/coco/images/1dfed48c-3.jpg")
    truncated = "only-json/project-8-at-2023-12-18-13-17-708e3340.json"
    fs.pipe_file(f"{url}/{truncated}", local_json[:1000])
    third = upload(furniture, url, progress=False)
    assert sorted(third.copied) == sorted(["coco/images/1dfed48c-3.jpg", truncated])
    assert len(third.skipped) == 24 and third.failed == []
    assert third.bytes == expected["coco/images/1dfed48c-3.jpg"] + expected[truncated]
    assert fs.size(f"{url}/{truncated}") == expected[truncated]


def test_same_size_different_content_is_copied_again(furniture, bucket):
    url = f"{bucket}/f"
    upload(furniture, url, progress=False)
    fs = fsspec.filesystem("s3")
    key = f"{url}/coco/images/c43e0844-8.jpg"
    data = bytearray(fs.cat_file(key))
    data[len(data) // 2] ^= 0xFF  # same size, one byte flipped: only the ETag (MD5) tells
    fs.pipe_file(key, bytes(data))
    report = upload(furniture, url, progress=False)
    assert report.copied == ["coco/images/c43e0844-8.jpg"]
    local = open(os.path.join(furniture, "coco/images/c43e0844-8.jpg"), "rb").read()
    assert fs.cat_file(key) == local


def test_multipart_etag_is_recognised(bucket, tmp_path, furniture):
    # A > 10 MiB file from the real images, uploaded by s3fs in 5 MiB parts (multipart ETag "<md5>-3").
    big = tmp_path / "src" / "big.jpg"
    big.parent.mkdir()
    with open(big, "wb") as out:
        while out.tell() < 11 * 2**20:
            for name in sorted(os.listdir(os.path.join(furniture, "coco/images"))):
                out.write(open(os.path.join(furniture, "coco/images", name), "rb").read())
    fs = fsspec.filesystem("s3")
    fs.put_file(str(big), f"{bucket}/m/big.jpg", chunksize=5 * 2**20)
    etag = fs.info(f"{bucket}/m/big.jpg")["ETag"].strip('"')
    assert etag.endswith("-3") and etag == multipart_etag(str(big), 5 * 2**20)
    assert upload(str(big.parent), f"{bucket}/m", progress=False).skipped == ["big.jpg"]


def test_local_destination_and_hidden_files(furniture, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(os.path.join(furniture, "only-json"), src / "only-json")
    (src / ".hidden.json").write_text("{}")
    (src / ".git").mkdir()
    (src / ".git" / "config.json").write_text("{}")
    (src / "notes.md").write_text("not data")
    dest = tmp_path / "dest"
    report = upload(str(src), str(dest), progress=False)
    assert report.copied == ["only-json/project-8-at-2023-12-18-13-17-708e3340.json"]
    assert sorted(p.name for p in dest.rglob("*") if p.is_file()) == [
        "project-8-at-2023-12-18-13-17-708e3340.json"
    ]
    assert upload(str(src), str(dest), progress=False).skipped == report.copied
    # A half-written local copy of the same size is caught by the MD5 of the destination file.
    copy = dest / report.copied[0]
    data = copy.read_bytes()
    copy.write_bytes(b"\0" * len(data))
    again = upload(str(src), str(dest), progress=False)
    assert again.copied == report.copied
    assert hashlib.md5(copy.read_bytes()).hexdigest() == hashlib.md5(data).hexdigest()


def test_missing_bucket_and_missing_folder_are_dataset_errors(furniture, s3_endpoint, tmp_path):
    with pytest.raises(DatasetError, match="create the bucket first"):
        upload(furniture, "s3://no-such-bucket-here/x", progress=False)
    with pytest.raises(DatasetError, match="existing folder"):
        upload(str(tmp_path / "absent"), str(tmp_path / "dest"), progress=False)


def test_cli_upload_in_process(furniture, bucket, capsys):
    assert main(["upload", furniture, f"{bucket}/c", "--no-progress", "--dry-run"]) == 0
    assert (
        capsys.readouterr().out.strip() == "would copy 26 files (6.1 MB), skipped 0 already there, failed 0"
    )
    assert fsspec.filesystem("s3").find(f"{bucket}/c") == []
    assert main(["upload", furniture, f"{bucket}/c", "--no-progress"]) == 0
    assert capsys.readouterr().out.strip() == "copied 26 files (6.1 MB), skipped 0 already there, failed 0"
    assert main(["upload", furniture, f"{bucket}/c", "--no-progress"]) == 0
    assert capsys.readouterr().out.strip() == "copied 0 files (0.0 MB), skipped 26 already there, failed 0"


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "instaseg", "upload", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_subprocess_reaches_the_endpoint_from_the_environment(furniture, bucket, subprocess_env):
    result = run_cli(os.path.join(furniture, "only-json"), f"{bucket}/sub", env=subprocess_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "copied 1 files (0.5 MB), skipped 0 already there, failed 0"
    assert fsspec.filesystem("s3").exists(f"{bucket}/sub/project-8-at-2023-12-18-13-17-708e3340.json")


def test_cli_subprocess_errors_are_one_message(furniture, subprocess_env, unreachable_endpoint, tmp_path):
    missing = run_cli(str(tmp_path / "absent"), "s3://whatever/x", env=subprocess_env)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "existing folder on this machine" in missing.stderr
    unreachable_env = dict(subprocess_env, AWS_ENDPOINT_URL_S3=unreachable_endpoint, AWS_MAX_ATTEMPTS="1")
    unreachable = run_cli(furniture, "s3://some-bucket/x", env=unreachable_env)
    assert unreachable.returncode == 2 and "Traceback" not in unreachable.stderr
    assert "cannot list the destination" in unreachable.stderr and len(unreachable.stderr.splitlines()) == 1
