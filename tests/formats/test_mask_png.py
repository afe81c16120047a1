"""Mask-PNG folders: PennFudanPed (instance-id masks) and DSB 2018 (one PNG per instance), real data."""

from __future__ import annotations

import shutil
import uuid

import fsspec
import numpy as np
import pytest
from PIL import Image

from instaseg.formats.mask_png import load_mask_png
from instaseg.masks import rle_to_mask
from instaseg.problems import DatasetError, ProblemLog


def load(source, images=None):
    log = ProblemLog()
    class_map, records = load_mask_png(str(source), None if images is None else str(images), log)
    return class_map, records, log.problems


def test_pennfudan_instance_id_masks(datasets):
    class_map, records, problems = load(datasets / "PennFudanPed")
    assert problems == []
    assert class_map.names == ("object",)
    assert len(records) == 170
    assert sum(len(r.annotations) for r in records) == 423
    assert all(r.mode == "RGB" for r in records)
    record = next(r for r in records if r.file_name == "PNGImages/FudanPed00001.png")
    assert (record.width, record.height) == (559, 536)
    ids = np.asarray(Image.open(datasets / "PennFudanPed" / "PedMasks" / "FudanPed00001_mask.png"))
    instances = record.instances()
    assert instances.dense_masks().shape == (2, 536, 559)
    for k, mask in enumerate(
        instances.dense_masks(), start=1
    ):  # ids 1..N each become one instance, not binarised
        assert np.array_equal(mask, ids == k)
    # The annotation file's 1-based inclusive box of object 1 is (160, 182) - (302, 431).
    assert instances.boxes[0].tolist() == pytest.approx([159, 181, 302, 431], abs=1)


@pytest.mark.parametrize("level", ["", "stage1_train"])
def test_dsb_one_png_per_instance(datasets, level):
    root = datasets / "dsb2018_nuclei_sample" / level if level else datasets / "dsb2018_nuclei_sample"
    class_map, records, problems = load(root)
    assert problems == []
    assert class_map.names == ("object",)
    assert len(records) == 60
    assert sum(len(r.annotations) for r in records) == 1681
    assert {(r.width, r.height, r.mode) for r in records} == {(256, 256, "RGBA")}
    record = records[0]
    sample = root / record.file_name.split("/images/")[0]
    mask_file = sorted((sample / "masks").iterdir())[0]
    annotation = next(a for a in record.annotations if a.source_id == mask_file.stem)
    assert np.array_equal(rle_to_mask(annotation.rle), np.asarray(Image.open(mask_file)) > 0)
    assert len(record.annotations) == len(list((sample / "masks").iterdir()))


def copy_dsb_samples(datasets, target, count):
    source = datasets / "dsb2018_nuclei_sample" / "stage1_train"
    samples = sorted(source.iterdir())[:count]
    for sample in samples:
        shutil.copytree(sample, target / sample.name)
    return samples


def test_classes_txt_names_the_class(datasets, tmp_path):
    samples = copy_dsb_samples(datasets, tmp_path, 2)
    (tmp_path / "classes.txt").write_text("# one class per folder\nnucleus\n")
    class_map, records, problems = load(tmp_path)
    assert problems == []
    assert class_map.names == ("nucleus",)
    assert [r.file_name for r in records] == [f"{s.name}/images/{s.name}.png" for s in samples]
    assert all(a.label == 1 for r in records for a in r.annotations)


def test_classes_txt_with_two_classes_is_refused(datasets, tmp_path):
    copy_dsb_samples(datasets, tmp_path, 1)
    (tmp_path / "classes.txt").write_text("nucleus\ncell\n")
    with pytest.raises(DatasetError, match="exactly one class"):
        load(tmp_path)


def test_single_sample_folder(datasets, tmp_path):
    sample = copy_dsb_samples(datasets, tmp_path, 1)[0]
    class_map, records, problems = load(tmp_path / sample.name)
    assert problems == []
    assert len(records) == 1
    assert len(records[0].annotations) == len(list((sample / "masks").iterdir()))


def write_png(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path)


def test_paired_folders_16_bit_ids_and_separate_images_folder(tmp_path):
    ids = np.zeros((6, 10), np.uint16)
    ids[0:2, 0:3] = 300  # ids above 255 stay distinct instances
    ids[3:6, 5:10] = 7
    ids[5, 0] = 1
    write_png(tmp_path / "photos" / "a.jpg", np.zeros((6, 10, 3), np.uint8))
    write_png(tmp_path / "data" / "masks" / "a.png", ids)  # 16-bit grayscale PNG
    class_map, records, problems = load(tmp_path / "data", images=tmp_path / "photos")
    assert problems == []
    assert [r.file_name for r in records] == ["a.jpg"]
    assert [a.source_id for a in records[0].annotations] == [1, 7, 300]
    assert [a.area for a in records[0].annotations] == [1.0, 15.0, 6.0]
    assert records[0].annotations[2].box == (0.0, 0.0, 3.0, 2.0)


def test_all_zero_mask_is_an_image_without_objects(tmp_path):
    write_png(tmp_path / "images" / "a.png", np.zeros((4, 5, 3), np.uint8))
    write_png(tmp_path / "masks" / "a_mask.png", np.zeros((4, 5), np.uint8))
    _, records, problems = load(tmp_path)
    assert problems == []
    assert [(r.file_name, r.annotations) for r in records] == [("images/a.png", [])]


def test_fsspec_memory_url():
    root = f"memory:///mask-png-{uuid.uuid4().hex}"
    fs = fsspec.filesystem("memory")
    ids = np.zeros((6, 8), np.uint8)
    ids[1:3, 1:4] = 1
    ids[4:6, 4:8] = 2
    for name, array in (("images/x.png", np.zeros((6, 8, 3), np.uint8)), ("masks/x_mask.png", ids)):
        with fs.open(f"{root}/{name}", "wb") as f:
            Image.fromarray(array).save(f, format="PNG")
    try:
        class_map, records, problems = load(root)
        assert problems == []
        assert records[0].image == f"{root}/images/x.png"
        assert records[0].file_name == "images/x.png"
        assert [a.area for a in records[0].annotations] == [6.0, 8.0]
    finally:
        fs.rm(root.replace("memory://", ""), recursive=True)


def test_not_a_folder_or_no_layout(tmp_path, datasets):
    with pytest.raises(DatasetError, match="must be a folder"):
        load(datasets / "PennFudanPed" / "readme.txt")
    write_png(tmp_path / "pictures" / "a.png", np.zeros((4, 5, 3), np.uint8))
    with pytest.raises(DatasetError, match="no mask layout recognised"):
        load(tmp_path)


def test_through_load_dataset(datasets):
    from instaseg.formats.load import load_dataset

    dataset = load_dataset(str(datasets / "PennFudanPed"), format="mask-png")
    assert (dataset.format, len(dataset.present), dataset.num_instances()) == ("mask-png", 170, 423)
    assert [r.image_id for r in dataset.records] == list(range(1, 171))
    assert dataset.category_counts() == {"object": 423}
