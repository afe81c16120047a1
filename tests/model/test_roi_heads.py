"""The ROI heads' RoIAlign (roi_heads.roi_features: float32 levels converted once, RoIs split over threads)
gives torchvision's MultiScaleRoIAlign's numbers, in fp32 and under bf16 autocast, and the engine's
detections stay torchvision's eval-mode RoIHeads' on real DSB nuclei images."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import MultiScaleRoIAlign

from instaseg.images import load_image
from instaseg.model.checkpoint import load_checkpoint
from instaseg.model.engine import TorchEngine, prepare_image
from instaseg.model.roi_heads import ROIS_PER_THREAD, pool_features, roi_features

from ..checkpoints import save_light_checkpoint
from ..conftest import DATASETS


def fpn_maps(channels: int = 16, size: int = 1024, dtype=torch.float32) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    maps = {}
    for level, stride in enumerate((4, 8, 16, 32)):
        side = size // stride
        maps[str(level)] = torch.randn(1, channels, side, side, generator=generator).to(dtype)
    return {k: v.contiguous(memory_format=torch.channels_last) for k, v in maps.items()}


def random_boxes(count: int, size: int = 1024, seed: int = 1) -> torch.Tensor:
    """Boxes of 2..1000 px inside the image, so that every FPN level gets RoIs."""
    generator = torch.Generator().manual_seed(seed)
    side = 2 + torch.rand(count, 2, generator=generator) ** 2 * 998
    corner = torch.rand(count, 2, generator=generator) * (size - side)
    return torch.cat([corner, corner + side], dim=1)


@pytest.mark.parametrize("count", [0, 5, 4 * ROIS_PER_THREAD + 3])
@pytest.mark.parametrize("output_size", [7, 14])
def test_roi_features_equal_torchvision_pooler(count, output_size):
    maps, boxes = fpn_maps(), [random_boxes(count)]
    pooler = MultiScaleRoIAlign(["0", "1", "2", "3"], output_size, 2)
    reference = pooler(maps, boxes, [(1024, 1024)])
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # at least two jobs per level with enough RoIs
    try:
        ours = roi_features(pooler, pool_features(pooler, maps), boxes, [(1024, 1024)])
    finally:
        torch.set_num_threads(threads)
    assert ours.dtype == reference.dtype == torch.float32
    assert ours.shape == (count, 16, output_size, output_size)
    assert torch.equal(ours, reference)
    if count > 100:
        assert len(torch.unique(pooler.map_levels(boxes))) == 4  # the test covers every level


def test_roi_features_under_bf16_autocast_equal_torchvision():
    maps, boxes = fpn_maps(dtype=torch.bfloat16), [random_boxes(300)]
    pooler = MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        reference = pooler(maps, boxes, [(1024, 1024)])
        ours = roi_features(pooler, pool_features(pooler, maps), boxes, [(1024, 1024)])
    assert reference.dtype == ours.dtype == torch.bfloat16
    assert torch.equal(ours, reference)


def test_two_images_keep_their_own_rois():
    maps = {k: torch.cat([v, v.flip(-1)]) for k, v in fpn_maps().items()}  # (2, C, h, w)
    boxes = [random_boxes(150, seed=2), random_boxes(90, seed=3)]
    pooler = MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2)
    reference = pooler(maps, boxes, [(1024, 1024)] * 2)
    ours = roi_features(pooler, pool_features(pooler, maps), boxes, [(1024, 1024)] * 2)
    assert torch.equal(ours, reference)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "light.pt"
    return save_light_checkpoint(path, ["nucleus"], 256, score_threshold=0.05, detections_per_image=100)


@pytest.mark.parametrize("channels_last", [False, True])
def test_engine_detections_equal_torchvision_roi_heads(checkpoint, channels_last):
    """On real nuclei images the engine's detections are exactly torchvision's eval-mode ``RoIHeads``
    output on the same features and proposals (fp32)."""
    model, _, _ = load_checkpoint(checkpoint, device="cpu")
    engine = TorchEngine(model, channels_last=channels_last)
    engine.configure(0.05, 100, 1000)
    folder = DATASETS / "dsb2018_nuclei_sample" / "stage1_train"
    for directory in sorted(folder.iterdir())[40:42]:
        image = load_image(str(next((directory / "images").glob("*.png"))))
        features = engine.extract_features([prepare_image(image, 256, "keep")])
        proposals = engine.propose(features)
        ours = engine.detect_features(features)[0]
        with torch.inference_mode():
            model.eval()
            expected, _ = model.roi_heads(features.maps, proposals, features.image_sizes)
        expected = expected[0]
        assert len(ours.boxes) > 5  # the seeded random model finds blobs: the comparison has content
        assert torch.equal(ours.boxes, expected["boxes"])
        assert torch.equal(ours.scores, expected["scores"])
        assert torch.equal(ours.labels, expected["labels"])
        assert torch.equal(ours.mask_probs, expected["masks"][:, 0])
