"""The ROI heads' RoIAlign (roi_heads.roi_features: float32 levels converted once; on the CPU a weighted
gather of channels-last rows, gather_roi_align) gives torchvision's roi_align / MultiScaleRoIAlign numbers
up to float32 rounding, in fp32 and under bf16 autocast, at the edges of the map too, and the engine's
detections stay torchvision's eval-mode RoIHeads' on real DSB nuclei images."""

from __future__ import annotations

import pytest
import torch
from torchvision.models.detection.faster_rcnn import TwoMLPHead
from torchvision.ops import MultiScaleRoIAlign, roi_align

from instaseg.images import load_image
from instaseg.model.architectures import RoiGroupNorm
from instaseg.model.checkpoint import load_checkpoint
from instaseg.model.engine import TorchEngine, prepare_image
from instaseg.model.gather_roi_align import feature_rows, gather_roi_align
from instaseg.model.roi_heads import (
    GatherRoIAlign,
    pool_features,
    roi_features,
    run_box_head,
    use_gather_roi_align,
)

from ..checkpoints import save_light_checkpoint
from ..conftest import DATASETS

# float32 sums in another order: a few units in the last place of values around 1..5
TOLERANCE = {"atol": 2e-5, "rtol": 1e-5}


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


@pytest.mark.parametrize("output_size", [(7, 7), (14, 14), (3, 5)])
@pytest.mark.parametrize("sampling_ratio", [1, 2, 3])
def test_gather_roi_align_equals_torchvision(output_size, sampling_ratio):
    """Two levels of a two-image batch in one table (non-square maps); boxes inside, across and beyond the
    edges (more than a cell outside: torchvision's empty samples), smaller than a cell, degenerate."""
    generator = torch.Generator().manual_seed(4)
    fine = torch.randn(2, 8, 20, 30, generator=generator)  # scale 1/4 of a 80 x 120 input
    coarse = torch.randn(2, 8, 10, 15, generator=generator).contiguous(memory_format=torch.channels_last)
    table = feature_rows([fine, coarse], [0.25, 0.125], torch.float32)
    edges = torch.tensor(
        [
            [0, 0.0, 0.0, 119.9, 79.9],  # the whole map
            [1, 110.0, 70.0, 125.0, 90.0],  # across the far corner, past it by more than a cell
            [0, -12.0, -9.0, 6.0, 3.0],  # across the near corner
            [1, 50.0, 30.0, 50.5, 30.2],  # smaller than a cell
            [0, 40.0, 40.0, 40.0, 40.0],  # zero-size
            [1, 116.0, 76.0, 120.0, 80.0],  # on the last cells
        ]
    )
    corner = torch.rand(200, 2, generator=generator) * torch.tensor([120.0, 80.0])
    side = torch.rand(200, 2, generator=generator) * 60
    random = torch.cat([torch.randint(0, 2, (200, 1), generator=generator).float(), corner, corner + side], 1)
    rois = torch.cat([edges, random])
    levels = torch.arange(len(rois)) % 2
    ours = gather_roi_align(table, rois, levels, output_size, sampling_ratio)
    assert ours.shape == (len(rois), *output_size, 8)
    for level, (maps, scale) in enumerate(((fine, 0.25), (coarse, 0.125))):
        expected = roi_align(
            maps, rois[levels == level], output_size, scale, sampling_ratio
        )  # (R, C, S_h, S_w)
        torch.testing.assert_close(ours[levels == level].permute(0, 3, 1, 2), expected, **TOLERANCE)
    empty = gather_roi_align(table, rois[:0], levels[:0], output_size, 2)
    assert empty.shape == (0, *output_size, 8)
    with pytest.raises(ValueError, match="sampling_ratio"):
        gather_roi_align(table, rois, levels, output_size, 0)


@pytest.mark.parametrize("count", [0, 5, 300])
@pytest.mark.parametrize("output_size", [7, 14])
def test_roi_features_equal_torchvision_pooler(count, output_size):
    maps, boxes = fpn_maps(), [random_boxes(count)]
    pooler = MultiScaleRoIAlign(["0", "1", "2", "3"], output_size, 2)
    reference = pooler(maps, boxes, [(1024, 1024)])
    ours = roi_features(pooler, pool_features(pooler, maps, [(1024, 1024)]), boxes, [(1024, 1024)])
    assert ours.dtype == reference.dtype == torch.float32
    assert ours.shape == (count, 16, output_size, output_size)
    torch.testing.assert_close(ours, reference, **TOLERANCE)
    if count > 100:
        assert len(torch.unique(pooler.map_levels(boxes))) == 4  # the test covers every level


def test_adaptive_sampling_ratio_runs_torchvision_kernel():
    maps, boxes = fpn_maps(), [random_boxes(40)]
    pooler = MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 0)  # sampling ratio from each RoI's size
    reference = pooler(maps, boxes, [(1024, 1024)])
    ours = roi_features(pooler, pool_features(pooler, maps, [(1024, 1024)]), boxes, [(1024, 1024)])
    assert torch.equal(ours, reference)


def test_roi_features_under_bf16_autocast_agree_with_torchvision():
    """Under bf16 autocast torchvision pools the bf16 maps in float32 and rounds the result to bf16; the
    gather reads the bf16 maps with bf16 bilinear weights, sums in float32 and rounds: bf16 agreement (a
    bf16 step or two of the values' scale), and float32 rows (training's) agree to one rounding."""
    maps, boxes = fpn_maps(dtype=torch.bfloat16), [random_boxes(300)]
    pooler = MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        reference = pooler(maps, boxes, [(1024, 1024)]).float()
        ours = roi_features(pooler, pool_features(pooler, maps, [(1024, 1024)]), boxes, [(1024, 1024)])
        rows32 = pool_features(pooler, maps, [(1024, 1024)], rows_dtype=torch.float32)
        ours32 = roi_features(pooler, rows32, boxes, [(1024, 1024)])
    assert ours.dtype == ours32.dtype == torch.bfloat16
    scale = reference.abs().max()
    assert (ours.float() - reference).abs().max() <= 2 * 2**-8 * scale
    assert (ours.float() - reference).abs().mean() <= 2**-10 * scale
    torch.testing.assert_close(ours32.float(), reference, atol=1e-5, rtol=2**-7)
    assert (ours32.float() != reference).float().mean() < 0.01


def test_two_images_keep_their_own_rois():
    maps = {k: torch.cat([v, v.flip(-1)]) for k, v in fpn_maps().items()}  # (2, C, h, w)
    boxes = [random_boxes(150, seed=2), random_boxes(90, seed=3)]
    pooler = MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2)
    reference = pooler(maps, boxes, [(1024, 1024)] * 2)
    ours = roi_features(pooler, pool_features(pooler, maps, [(1024, 1024)] * 2), boxes, [(1024, 1024)] * 2)
    torch.testing.assert_close(ours, reference, **TOLERANCE)


@pytest.mark.parametrize("output_size", [7, 14])
def test_gather_pooler_gradients_equal_torchvision(output_size):
    """The training step's pooler: the same features and the same gradients to the FPN maps."""
    boxes, sizes = [random_boxes(120, seed=5), random_boxes(60, seed=6)], [(1024, 1024)] * 2
    torchvision_pooler = MultiScaleRoIAlign(["0", "1", "2", "3"], output_size, 2)
    gather_pooler = GatherRoIAlign.like(torchvision_pooler)
    results = []
    for pooler in (torchvision_pooler, gather_pooler):
        maps = {k: torch.cat([v, v.flip(-1)]).requires_grad_() for k, v in fpn_maps().items()}
        pooled = pooler(maps, boxes, sizes)
        weights = torch.linspace(-1, 1, pooled.numel()).reshape(pooled.shape)
        (pooled * weights).sum().backward()
        results.append((pooled.detach(), [maps[k].grad for k in maps]))
    (expected, expected_grads), (ours, our_grads) = results
    torch.testing.assert_close(ours, expected, **TOLERANCE)
    for mine, theirs in zip(our_grads, expected_grads, strict=True):
        assert theirs.abs().sum() > 0
        torch.testing.assert_close(mine, theirs, **TOLERANCE)


def test_use_gather_roi_align_swaps_poolers_and_traces_torchvision_op(checkpoint):
    model, _, _ = load_checkpoint(checkpoint, device="cpu")
    before = model.state_dict()
    use_gather_roi_align(model)
    assert type(model.roi_heads.box_roi_pool) is GatherRoIAlign
    assert type(model.roi_heads.mask_roi_pool) is GatherRoIAlign
    assert model.state_dict().keys() == before.keys()  # no parameters: checkpoints unchanged
    norms = [m for m in model.roi_heads.mask_head.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert norms and all(type(m) is RoiGroupNorm for m in norms)  # the light model from scratch
    pooler, maps = model.roi_heads.box_roi_pool, fpn_maps(channels=128, size=256)
    boxes = random_boxes(20, size=256)
    traced = torch.jit.trace(
        lambda m0, b: pooler({**maps, "0": m0}, [b], [(256, 256)]), (maps["0"], boxes), check_trace=False
    )
    assert "torchvision::roi_align" in str(traced.graph)  # exports get the RoIAlign op ONNX/OpenVINO know
    assert "embedding_bag" not in str(traced.graph)


def test_run_box_head_reads_channels_last_features_as_torchvision_head():
    torch.manual_seed(0)
    head = TwoMLPHead(16 * 7 * 7, 32)
    pooled = torch.randn(50, 7, 7, 16).permute(0, 3, 1, 2)  # channels-last, as the CPU gather gives it
    assert not pooled.is_contiguous()
    torch.testing.assert_close(run_box_head(head, pooled), head(pooled), **TOLERANCE)
    contiguous = pooled.contiguous()
    assert torch.equal(run_box_head(head, contiguous), head(contiguous))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_roi_group_norm_equals_group_norm_on_channels_last_rois(dtype):
    torch.manual_seed(0)
    reference = torch.nn.GroupNorm(32, 64)
    torch.nn.init.normal_(reference.weight)
    ours = RoiGroupNorm(32, 64)
    ours.load_state_dict(reference.state_dict())  # the same parameters: checkpoints load unchanged
    rois = torch.randn(30, 64, 14, 14).to(dtype).contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(
        ours.to(dtype)(rois).float(), reference.to(dtype)(rois).float(), atol=1e-2, rtol=1e-2
    )
    if dtype == torch.float32:
        torch.testing.assert_close(ours(rois), reference(rois), **TOLERANCE)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "light.pt"
    return save_light_checkpoint(path, ["nucleus"], 256, score_threshold=0.05, detections_per_image=100)


@pytest.mark.parametrize("channels_last", [False, True])
def test_engine_detections_equal_torchvision_roi_heads(checkpoint, channels_last):
    """On real nuclei images the engine's detections are torchvision's eval-mode ``RoIHeads`` output on the
    same features and proposals (fp32): the same detections, coordinates and probabilities up to the float32
    rounding of the RoIAlign sums."""
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
        assert torch.equal(ours.labels, expected["labels"])
        torch.testing.assert_close(ours.boxes, expected["boxes"], atol=1e-3, rtol=1e-5)
        torch.testing.assert_close(ours.scores, expected["scores"], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(ours.mask_probs, expected["masks"][:, 0], atol=1e-4, rtol=1e-4)
