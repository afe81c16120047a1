"""Shared test fixtures. Real datasets live in ../shared/datasets relative to the repository root."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATASETS = (REPO / ".." / "shared" / "datasets").resolve()


@pytest.fixture(scope="session")
def datasets() -> Path:
    """The folder of real datasets; the suite fails (not skips) when it is absent, as CI has it."""
    assert DATASETS.is_dir(), f"real datasets expected at {DATASETS}"
    return DATASETS
