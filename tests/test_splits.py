"""Splits: deterministic, complete, disjoint, honouring given splits, saved and reloaded."""

from __future__ import annotations

import pytest

from instaseg.core import Record
from instaseg.problems import DatasetError
from instaseg.splits import SplitConfig, assign_splits, load_splits, records_of_split, save_splits


def make_records(n: int, missing: int = 0) -> list[Record]:
    records = [
        Record(image=f"/img/{i:03d}.png", file_name=f"{i:03d}.png", width=8, height=8) for i in range(n)
    ]
    for r in records[:missing]:
        r.image = None
    return records


def test_default_split_is_70_15_15_disjoint_and_complete():
    splits = assign_splits(make_records(100))
    assert [len(splits[s]) for s in ("train", "val", "test")] == [70, 15, 15]
    names = splits["train"] + splits["val"] + splits["test"]
    assert sorted(names) == [f"{i:03d}.png" for i in range(100)]


def test_same_seed_same_split_regardless_of_record_order():
    a = assign_splits(make_records(40), SplitConfig(seed=3))
    b = assign_splits(list(reversed(make_records(40))), SplitConfig(seed=3))
    c = assign_splits(make_records(40), SplitConfig(seed=4))
    assert a == b
    assert a != c


def test_missing_images_are_not_split_and_small_sets_get_every_split():
    records = make_records(5, missing=2)
    splits = assign_splits(records)
    assert sum(len(v) for v in splits.values()) == 3
    assert all(len(v) == 1 for v in splits.values())
    assert all(r.split is None for r in records[:2])


def test_given_splits_are_honoured():
    records = make_records(20)
    for r in records[:5]:
        r.split = "test"
    splits = assign_splits(records)
    assert set(f"{i:03d}.png" for i in range(5)) <= set(splits["test"])


@pytest.mark.parametrize("fractions", [(0.5, 0.5, 0.5), (1.2, -0.1, -0.1)])
def test_bad_fractions_are_rejected(fractions):
    with pytest.raises(ValueError, match="add up to 1"):
        SplitConfig(*fractions)


def test_save_and_load_round_trip(tmp_path):
    records = make_records(30)
    splits = assign_splits(records, SplitConfig(seed=7))
    save_splits(splits, str(tmp_path / "splits.json"), SplitConfig(seed=7))
    fresh = make_records(30)
    assert load_splits(fresh, str(tmp_path / "splits.json")) == splits
    assert [r.split for r in fresh] == [r.split for r in records]
    assert len(records_of_split(fresh, "val")) == len(splits["val"])
    assert len(records_of_split(fresh, "all")) == 30


def test_split_file_naming_an_unknown_image_is_an_error(tmp_path):
    (tmp_path / "s.json").write_text('{"train": ["nope.png"], "val": [], "test": []}')
    with pytest.raises(DatasetError, match="nope.png"):
        load_splits(make_records(3), str(tmp_path / "s.json"))
