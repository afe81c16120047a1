"""The same dataset read from a local folder and from s3:// on the loopback server gives identical records."""

from __future__ import annotations

import os
import shutil

import pytest

from instaseg.formats.load import load_dataset
from instaseg.upload import upload

# The loopback S3 server fixtures (s3_endpoint, bucket), registered once for the whole session.
pytest_plugins = ["tests.s3"]


def pennfudan_subset(datasets, tmp_path) -> str:
    """Six PennFudanPed images with their instance-id masks, in the dataset's own layout (outside the repo)."""
    source = datasets / "PennFudanPed"
    folder = tmp_path / "PennFudanPed"
    for sub in ("PNGImages", "PedMasks"):
        (folder / sub).mkdir(parents=True)
    for image in sorted(os.listdir(source / "PNGImages"))[:6]:
        stem = image.rsplit(".", 1)[0]
        shutil.copy(source / "PNGImages" / image, folder / "PNGImages" / image)
        shutil.copy(source / "PedMasks" / f"{stem}_mask.png", folder / "PedMasks" / f"{stem}_mask.png")
    return str(folder)


def dsb_subset(datasets, tmp_path) -> str:
    """Three 2018 Data Science Bowl samples (one mask PNG per nucleus), in their own layout."""
    source = datasets / "dsb2018_nuclei_sample" / "stage1_train"
    folder = tmp_path / "stage1_train"
    for sample in sorted(os.listdir(source))[:3]:
        shutil.copytree(source / sample, folder / sample)
    return str(folder)


# name -> (folder to upload, annotation source inside it, images folder inside it or None, expected format)
CASES = {
    "labelstudio-coco": (lambda d, t: str(d / "furniture_labelstudio"), "coco/result.json", None, "coco"),
    "labelstudio-json": (
        lambda d, t: str(d / "furniture_labelstudio"),
        "only-json/project-8-at-2023-12-18-13-17-708e3340.json",
        "coco/images",
        "labelstudio-json",
    ),
    "via-balloon": (lambda d, t: str(d / "balloon" / "val"), "via_region_data.json", None, "via"),
    "mask-png-pennfudan": (pennfudan_subset, "", None, "mask-png"),
    "mask-png-dsb2018": (dsb_subset, "", None, "mask-png"),
}


def load_both(local_root: str, remote_root: str, source: str, images: str | None):
    def at(root: str, rel: str | None) -> str | None:
        if rel is None:
            return None
        if root.startswith("s3://"):
            return f"{root}/{rel}".rstrip("/")
        return os.path.join(root, rel).rstrip(os.sep)

    local = load_dataset(at(local_root, source), images=at(local_root, images))
    remote = load_dataset(at(remote_root, source), images=at(remote_root, images))
    return local, remote


def relative_image(location: str | None, root: str) -> str | None:
    if location is None:
        return None
    assert location.startswith(root.rstrip("/")), f"{location} is not under {root}"
    return location[len(root.rstrip("/")) :].lstrip("/").replace(os.sep, "/")


@pytest.mark.parametrize("case", list(CASES))
def test_local_and_s3_give_identical_records(case, datasets, tmp_path, bucket):
    make_folder, source, images, expected_format = CASES[case]
    local_root = os.path.abspath(make_folder(datasets, tmp_path))
    remote_root = f"{bucket}/{case}"
    assert upload(local_root, remote_root, progress=False).failed == []

    local, remote = load_both(local_root, remote_root, source, images)
    assert local.format == remote.format == expected_format
    assert local.class_map == remote.class_map and local.class_map.num_classes >= 1
    assert len(local.records) == len(remote.records) > 0
    assert len(local.present) > 0 and sum(len(r.annotations) for r in local.present) > 0
    for mine, theirs in zip(local.records, remote.records, strict=True):
        assert (mine.file_name, mine.width, mine.height) == (theirs.file_name, theirs.width, theirs.height)
        assert relative_image(mine.image, local_root) == relative_image(theirs.image, remote_root)
        assert theirs.image is None or theirs.image.startswith(f"{remote_root}/")  # read from s3, not disk
        assert [(a.label, a.box, a.rle, a.iscrowd) for a in mine.annotations] == [
            (a.label, a.box, a.rle, a.iscrowd) for a in theirs.annotations
        ]
    # The same findings; messages may name the folder they looked in.
    assert [(p.level, p.message.replace(local_root, "ROOT")) for p in local.problems] == [
        (p.level, p.message.replace(remote_root, "ROOT")) for p in remote.problems
    ]


def test_furniture_coco_counts_on_s3(datasets, bucket):
    """The facts PROVENANCE.md states for the furniture COCO export hold when it is read from the bucket."""
    upload(str(datasets / "furniture_labelstudio"), f"{bucket}/f", progress=False)
    dataset = load_dataset(f"{bucket}/f/coco/result.json")
    assert sorted(dataset.class_map.names) == ["Chair", "Painting", "Plant", "Sofa", "Table"]
    assert len(dataset.records) == 136 and len(dataset.present) == 24
    assert sum(len(r.annotations) for r in dataset.present) == 65
    assert all(r.image.startswith(f"{bucket}/f/coco/images/") for r in dataset.present)
