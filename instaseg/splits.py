"""Deterministic train/val/test splits, saved to a JSON file so a run can be reproduced."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import storage
from .core import Record
from .problems import DatasetError

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SplitConfig:
    """Fractions of the present images for train/val/test (they must add up to 1) and the shuffle seed."""

    train: float = 0.7
    val: float = 0.15
    test: float = 0.15
    seed: int = 0

    def __post_init__(self) -> None:
        fractions = (self.train, self.val, self.test)
        if (
            not all(isinstance(f, int | float) and 0 <= f <= 1 for f in fractions)
            or abs(sum(fractions) - 1) > 1e-6
        ):
            raise ValueError(f"split fractions must be >= 0 and add up to 1, got {fractions}")


def assign_splits(records: list[Record], config: SplitConfig = SplitConfig()) -> dict[str, list[str]]:
    """Split the present images; returns ``{"train": [file_name, ...], "val": [...], "test": [...]}``.

    Records that already carry a split (given by the dataset itself) keep it; the others are shuffled with
    ``config.seed`` (order-independent: sorted by file name first) and cut by the fractions, every
    non-empty fraction getting at least one image when there are enough. Sets ``record.split``.
    """
    present = [r for r in records if r.image is not None]
    free = sorted((r for r in present if r.split is None), key=lambda r: r.file_name)
    order = np.random.default_rng(config.seed).permutation(len(free))
    n = len(free)
    n_val = int(round(n * config.val))
    n_test = int(round(n * config.test))
    if n >= 3:
        n_val = max(n_val, 1 if config.val > 0 else 0)
        n_test = max(n_test, 1 if config.test > 0 else 0)
    n_val = min(n_val, n)
    n_test = min(n_test, n - n_val)
    for rank, index in enumerate(order):
        free[index].split = "val" if rank < n_val else "test" if rank < n_val + n_test else "train"
    return {s: sorted(r.file_name for r in present if r.split == s) for s in SPLITS}


def save_splits(splits: dict[str, list[str]], location: str, config: SplitConfig | None = None) -> None:
    """Write the split to a JSON file (``{"train": [...], "val": [...], "test": [...], "config": {...}}``)."""
    payload: dict = {s: splits.get(s, []) for s in SPLITS}
    if config is not None:
        payload["config"] = {
            "train": config.train,
            "val": config.val,
            "test": config.test,
            "seed": config.seed,
        }
    storage.write_json(location, payload, indent=1)


def read_split_file(location: str) -> dict[str, list[str]]:
    """``{split: [file_name, ...]}`` of a split file; ``DatasetError`` when it is unreadable or malformed."""
    try:
        payload = storage.read_json(location)
    except (OSError, ValueError, RecursionError) as e:
        raise DatasetError(f"cannot read split file: {e}", file=location) from None
    if not isinstance(payload, dict):
        raise DatasetError("a split file is a JSON object with train/val/test lists", file=location)
    names = {split: payload.get(split, []) for split in SPLITS}
    for split, listed in names.items():
        if not isinstance(listed, list) or not all(isinstance(n, str) for n in listed):
            raise DatasetError(f"'{split}' must be a list of file names", file=location)
    return names


def split_file_mismatch(records: list[Record], location: str) -> str | None:
    """Why the split file does not describe these records (it names images they lack), or ``None``."""
    listed = [n for names in read_split_file(location).values() for n in names]
    present = {r.file_name for r in records if r.image is not None}
    unknown = [n for n in listed if n not in present]
    if not unknown:
        return None
    return f"{len(unknown)} of its {len(listed)} images are not in this dataset (e.g. {unknown[0]!r})"


def load_splits(records: list[Record], location: str) -> dict[str, list[str]]:
    """Apply a split file written by :func:`save_splits` (or by hand) to the records.

    Raises ``DatasetError`` when the file names an image the dataset does not have, or names one twice.
    """
    by_name = {r.file_name: r for r in records if r.image is not None}
    seen: set[str] = set()
    payload = read_split_file(location)
    for split in SPLITS:
        for name in payload[split]:
            if name not in by_name:
                raise DatasetError(
                    f"split '{split}' names image {name!r}, which the dataset does not have "
                    "(or whose file is missing)",
                    file=location,
                )
            if name in seen:
                raise DatasetError(f"image {name!r} is listed in more than one split", file=location)
            seen.add(name)
            by_name[name].split = split
    return {s: sorted(payload[s]) for s in SPLITS}


def records_of_split(records: list[Record], split: str) -> list[Record]:
    """Present records of one split (``"all"`` for every present record)."""
    if split != "all" and split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}, all")
    return [r for r in records if r.image is not None and (split == "all" or r.split == split)]
