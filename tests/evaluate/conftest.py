from __future__ import annotations

import pytest

from .factories import pennfudan_records


@pytest.fixture(scope="session")
def pennfudan(datasets):
    """PennFudanPed ground truth as records (170 images, 423 pedestrians, 1 class)."""
    return pennfudan_records(datasets / "PennFudanPed")
