"""instaseg.storage on local folders and on s3:// locations served by a real S3-protocol server (moto)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from instaseg import storage
from instaseg.images import load_image
from instaseg.upload import upload

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE = "coco/images/c43e0844-8.jpg"

# The loopback S3 server fixtures (s3_endpoint, bucket), registered once for the whole session.
pytest_plugins = ["tests.s3"]


@pytest.fixture
def locations(datasets, bucket):
    """The furniture dataset as a local folder and as its copy in a fresh bucket: ``(local, s3)``."""
    local = str(datasets / "furniture_labelstudio")
    remote = f"{bucket}/furniture"
    assert len(upload(local, remote, progress=False).copied) == 26
    return local, remote


def relative(files: list[str], root: str) -> list[str]:
    return [f[len(root.rstrip("/")) + 1 :] for f in files]


def test_list_files_same_on_local_and_s3(locations):
    local, remote = locations
    local_images = storage.list_files(os.path.join(local, "coco"), storage.IMAGE_SUFFIXES)
    remote_images = storage.list_files(f"{remote}/coco", storage.IMAGE_SUFFIXES)
    assert len(local_images) == 24
    assert all(f.startswith(f"{remote}/coco/images/") for f in remote_images)  # s3:// URLs, not bare keys
    assert relative(remote_images, f"{remote}/coco") == relative(local_images, os.path.join(local, "coco"))
    assert storage.list_files(remote, (".json",), recursive=True) == [
        f"{remote}/coco/result.json",
        f"{remote}/only-json/project-8-at-2023-12-18-13-17-708e3340.json",
    ]
    assert storage.list_files(f"{remote}/coco", recursive=False) == [f"{remote}/coco/result.json"]


def test_read_json_exists_is_dir_size(locations):
    local, remote = locations
    local_coco = storage.read_json(os.path.join(local, "coco", "result.json"))
    assert storage.read_json(f"{remote}/coco/result.json") == local_coco
    assert len(local_coco["images"]) == 136 and len(local_coco["annotations"]) == 427
    assert storage.exists(f"{remote}/{IMAGE}") and not storage.exists(f"{remote}/coco/images/absent.jpg")
    assert storage.is_dir(f"{remote}/coco/images") and not storage.is_dir(f"{remote}/{IMAGE}")
    assert storage.file_size(f"{remote}/{IMAGE}") == os.path.getsize(os.path.join(local, IMAGE))


def test_write_then_read_back(bucket, tmp_path):
    for root in (bucket, str(tmp_path)):
        location = storage.join(root, "out", "deep", "classes.json")
        storage.write_json(location, {"classes": ["Chair", "Sofa"]})
        assert storage.read_json(location) == {"classes": ["Chair", "Sofa"]}
        assert storage.list_files(storage.join(root, "out")) == [location]
        storage.write_bytes(location, b"not json")
        with pytest.raises(json.JSONDecodeError):
            storage.read_json(location)


@pytest.mark.parametrize(
    ("location", "joined", "name", "folder"),
    [
        ("s3://bucket/data/coco", "s3://bucket/data/coco/images/a.jpg", "coco", "s3://bucket/data"),
        ("s3://bucket/data/coco/", "s3://bucket/data/coco/images/a.jpg", "coco", "s3://bucket/data"),
        ("gs://b/x.json", "gs://b/x.json/images/a.jpg", "x.json", "gs://b"),
        ("data/coco", os.path.join("data/coco", "images", "a.jpg"), "coco", os.path.abspath("data")),
    ],
)
def test_join_basename_parent(location, joined, name, folder):
    assert storage.join(location, "images", "a.jpg") == joined
    assert storage.basename(location) == name
    assert storage.parent(location) == folder


def test_load_image_from_s3_equals_local(locations):
    local, remote = locations
    from_s3 = load_image(f"{remote}/{IMAGE}")
    from_disk = load_image(os.path.join(local, IMAGE))
    assert from_s3.dtype == from_disk.dtype and from_s3.shape == from_disk.shape and from_s3.shape[2] == 3
    assert (from_s3 == from_disk).all()


_LIST_IN_SUBPROCESS = "import sys; from instaseg import storage; print(len(storage.list_files(sys.argv[1])))"


@pytest.mark.parametrize(
    "setting", ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "FSSPEC_S3_ENDPOINT_URL", "AWS_CONFIG_FILE"]
)
def test_custom_endpoint_settings_documented_in_storage(
    locations, s3_endpoint, subprocess_env, setting, tmp_path
):
    """Each way storage.py's docstring names for a custom endpoint reaches the server from a fresh process."""
    _, remote = locations
    env = dict(subprocess_env)
    del env["AWS_ENDPOINT_URL_S3"]
    if setting == "AWS_CONFIG_FILE":
        config = tmp_path / "aws-config"
        config.write_text(f"[profile local]\nendpoint_url = {s3_endpoint}\n")
        env.update(AWS_CONFIG_FILE=str(config), AWS_PROFILE="local")
    else:
        env[setting] = s3_endpoint
    result = subprocess.run(
        [sys.executable, "-c", _LIST_IN_SUBPROCESS, remote],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "26"
