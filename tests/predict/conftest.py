"""Fixtures for prediction tests: a light Mask R-CNN checkpoint with random weights (no training, no download).

Random weights give ~0.5 scores on everything, so with a score threshold of 0 every image has detections:
enough to check geometry, outputs and engines, not accuracy (bench/predict_speed.py measures that).
"""

from __future__ import annotations

import numpy as np
import pytest

from instaseg.images import load_image

from ..checkpoints import save_light_checkpoint

CLASS_NAMES = ["cell", "debris"]
IMAGE_SIZE = 128


def save_random_checkpoint(path, image_size: int = IMAGE_SIZE, seed: int = 0) -> None:
    save_light_checkpoint(path, CLASS_NAMES, image_size, seed, score_threshold=0.0, detections_per_image=20)


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("checkpoint") / "random.pt"
    save_random_checkpoint(path)
    return path


@pytest.fixture(scope="session")
def nuclei_paths(datasets):
    """Paths of 4 real DSB nuclei images (256x256 RGBA PNG)."""
    folder = datasets / "dsb2018_nuclei_sample" / "stage1_train"
    return [next((d / "images").glob("*.png")) for d in sorted(folder.iterdir())[:4]]


@pytest.fixture(scope="session")
def photo(datasets) -> np.ndarray:
    """A real photo (balloon val set), RGB uint8, downscaled to 320 px wide to keep tests fast."""
    import cv2

    path = sorted((datasets / "balloon" / "val").glob("*.jpg"))[0]
    image = load_image(str(path))
    height = round(image.shape[0] * 320 / image.shape[1])
    return cv2.resize(image, (320, height), interpolation=cv2.INTER_AREA)
