"""Architectures on CPU with tiny inputs, no downloaded weights; COCO weights from a stand-in cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

from instaseg.core import ClassMap
from instaseg.model.architectures import (
    ARCHITECTURES,
    LOSS_NAMES,
    build_model,
    compute_losses,
    frozen_statistics,
)
from instaseg.model.config import ARCH_NAMES, ModelConfig
from instaseg.model.predictor import Predictor
from instaseg.model.weights import WeightsError, apply_weights, coco_cache_path

K = 2


def tiny_batch(empty_second: bool = False):
    """Two 96x128 images; the first with two objects, the second with one (or none)."""
    torch.manual_seed(0)
    images = [torch.rand(3, 96, 128), torch.rand(3, 96, 128)]
    targets = []
    for boxes in ([(10, 10, 50, 60), (60, 20, 120, 90)], [] if empty_second else [(5, 30, 40, 80)]):
        masks = torch.zeros(len(boxes), 96, 128, dtype=torch.uint8)
        for i, (x0, y0, x1, y1) in enumerate(boxes):
            masks[i, y0:y1, x0:x1] = 1
        targets.append(
            {
                "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                "labels": torch.arange(1, len(boxes) + 1, dtype=torch.int64).clamp(max=K),
                "masks": masks,
            }
        )
    return images, targets


def test_cli_lists_every_architecture():
    assert tuple(ARCHITECTURES) == ARCH_NAMES
    with pytest.raises(ValueError, match="valid: maskrcnn_resnet50_fpn, maskrcnn_resnet50_fpn_v2"):
        ModelConfig(arch="yolo")


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_forward_backward_and_predictors(arch):
    model = build_model(ModelConfig(arch=arch, num_classes=K, image_size=128, pretrained_backbone=False))
    assert model.roi_heads.box_predictor.cls_score.out_features == K + 1
    assert model.roi_heads.box_predictor.bbox_pred.out_features == 4 * (K + 1)
    assert model.roi_heads.mask_predictor.mask_fcn_logits.out_channels == K + 1
    assert model.transform.min_size == (128,) and model.transform.max_size == 128
    losses = compute_losses(model, *tiny_batch(empty_second=True))  # the second image is a negative
    assert set(losses) == set(LOSS_NAMES)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    grads = [p.grad for p in model.roi_heads.mask_predictor.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_negative_only_batch_and_prediction():
    config = ModelConfig(
        arch="maskrcnn_resnet18_fpn",
        num_classes=K,
        image_size=128,
        pretrained_backbone=False,
        score_threshold=0.0,
    )
    model = build_model(config)
    images, _ = tiny_batch()
    empty = {
        "boxes": torch.zeros(0, 4),
        "labels": torch.zeros(0, dtype=torch.int64),
        "masks": torch.zeros(0, 96, 128, dtype=torch.uint8),
    }
    losses = compute_losses(model, images, [empty, empty])
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_mask"].item() == 0.0 and losses["loss_box_reg"].item() == 0.0
    rgb = [np.zeros((150, 200, 3), np.uint8), np.full((60, 40, 3), 200, np.uint8)]
    predictions = Predictor.from_model(model, ClassMap(("a", "b")), config).predict_arrays(rgb)
    for image, instances in zip(rgb, predictions, strict=True):
        assert (
            instances.dense_masks().shape == (len(instances), *image.shape[:2])
            and instances.dense_masks().dtype == bool
        )
        assert instances.scores is not None and len(instances.scores) == len(instances)
        assert len(instances) <= 100
        if len(instances):
            assert instances.labels.min() >= 1 and instances.labels.max() <= K
    assert model.training  # compute_losses left it in train mode; prediction gives it back so


def test_validation_mode_leaves_batchnorm_statistics_alone():
    model = build_model(
        ModelConfig(arch="maskrcnn_resnet50_fpn", num_classes=K, image_size=128, pretrained_backbone=False)
    )  # from scratch: trainable BatchNorm
    bn = model.backbone.body.bn1
    assert isinstance(bn, torch.nn.BatchNorm2d)
    before = bn.running_mean.clone()
    with torch.no_grad(), frozen_statistics(model):
        losses = model(*tiny_batch())
    assert set(losses) == set(LOSS_NAMES)  # train-mode output...
    torch.testing.assert_close(bn.running_mean, before)  # ...without updating BatchNorm
    assert model.training and bn.training  # modes restored


@pytest.mark.parametrize("arch", ["maskrcnn_resnet50_fpn"])
def test_coco_weights_from_stand_in_cache(tmp_path, monkeypatch, arch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    path = coco_cache_path(arch)
    assert path.name == "maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth"
    assert path.parent == tmp_path / "hub" / "checkpoints"
    with pytest.raises(WeightsError, match=r"maskrcnn_resnet50_fpn_coco-bf2d0c1e\.pth.*--weights none"):
        apply_weights(
            build_model(ModelConfig(arch=arch, num_classes=K)), arch, "coco", ("a", "b"), download=False
        )

    torch.manual_seed(1)
    coco = torchvision.models.detection.maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=91
    )
    # the published file comes from a FrozenBatchNorm model: no num_batches_tracked buffers
    stand_in = {k: v for k, v in coco.state_dict().items() if not k.endswith("num_batches_tracked")}
    path.parent.mkdir(parents=True)
    torch.save(stand_in, path)

    torch.manual_seed(2)
    model = build_model(ModelConfig(arch=arch, num_classes=K, pretrained_backbone=True))
    fresh_conv5 = model.roi_heads.mask_predictor.conv5_mask.weight.clone()
    apply_weights(model, arch, "coco", ("a", "b"), download=False)
    state = model.state_dict()
    for name in (
        "backbone.body.conv1.weight",
        "backbone.body.layer4.2.conv3.weight",
        "backbone.fpn.layer_blocks.0.0.weight",
        "rpn.head.conv.0.0.weight",
        "roi_heads.box_head.fc7.weight",
        "roi_heads.mask_head.0.0.weight",
        "backbone.body.bn1.running_var",
    ):
        torch.testing.assert_close(state[name], stand_in[name], msg=name)
    # new heads: K+1 outputs, freshly initialised (not the 91-class stand-in's, not loaded from it)
    assert state["roi_heads.box_predictor.cls_score.weight"].shape == (K + 1, 1024)
    assert state["roi_heads.mask_predictor.mask_fcn_logits.weight"].shape[0] == K + 1
    assert stand_in["roi_heads.box_predictor.cls_score.weight"].shape[0] == 91
    torch.testing.assert_close(state["roi_heads.mask_predictor.conv5_mask.weight"], fresh_conv5)
    assert not torch.equal(
        state["roi_heads.mask_predictor.conv5_mask.weight"],
        stand_in["roi_heads.mask_predictor.conv5_mask.weight"],
    )
    # frozen layers: conv1 and layer1 do not train with the default 3 trainable layers
    assert (
        not model.backbone.body.conv1.weight.requires_grad
        and model.backbone.body.layer4[0].conv1.weight.requires_grad
    )


def test_light_arch_has_no_coco_weights():
    model = build_model(ModelConfig(arch="maskrcnn_resnet18_fpn", num_classes=1, pretrained_backbone=False))
    with pytest.raises(WeightsError, match="--weights none"):
        apply_weights(model, "maskrcnn_resnet18_fpn", "coco", ("a",), download=False)


def test_arch_auto_fine_tunes_the_seeds_resnet50_when_coco_weights_are_cached(tmp_path, monkeypatch):
    """--arch auto: from scratch with the light model when COCO weights cannot be had; the seed's ResNet-50
    fine-tuned from COCO once they are in the cache (a stand-in state dict here); flags still win."""
    import argparse

    from instaseg.cli import train as train_command
    from instaseg.cli.train_setup import architecture

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    parser = argparse.ArgumentParser()
    train_command.add_arguments(parser)
    args = parser.parse_args(["data", "--out", "run", "--no-download"])
    arch, weights, pretrained, why, _ = architecture(args)
    assert (arch, weights, pretrained) == ("maskrcnn_resnet18_fpn", "none", False)
    assert "not in the cache" in why and str(tmp_path) in why
    path = coco_cache_path("maskrcnn_resnet50_fpn")
    path.parent.mkdir(parents=True)
    model = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    torch.save(model.state_dict(), path)
    assert architecture(args)[:3] == ("maskrcnn_resnet50_fpn", "coco", True)
    explicit = parser.parse_args(["data", "--out", "run", "--weights", "none"])
    assert architecture(explicit)[:3] == ("maskrcnn_resnet18_fpn", "none", False)


def test_continuing_an_instaseg_checkpoint_keeps_its_sizes_unless_flagged(tmp_path):
    """--weights CHECKPOINT (what a labelling-loop round does): the recipe does not re-choose the image size,
    anchors or detections the served model was trained with; flags still override."""
    import argparse

    from instaseg.cli import train as train_command
    from instaseg.cli.train_setup import new_configs
    from instaseg.formats.load import load_dataset
    from instaseg.model.precision import resolve_precision
    from instaseg.train.recipe import LIGHT_MASK_HEAD, choose_recipe, measure_objects, probe_sizes
    from tests.checkpoints import save_light_checkpoint

    checkpoint = save_light_checkpoint(
        tmp_path / "served.pt",
        ["nucleus"],
        192,
        anchor_sizes=(16, 32, 64, 128, 256),
        detections_per_image=120,
    )
    records = load_dataset("instaseg/sample_data/nuclei").records[:6]
    parser = argparse.ArgumentParser()
    train_command.add_arguments(parser)
    said = []
    args = parser.parse_args(["data", "--out", "run", "--weights", str(checkpoint)])
    _, model = new_configs(args, records, 1, said.append)
    assert (model.arch, model.image_size, model.anchor_sizes) == (
        "maskrcnn_resnet18_fpn",
        192,
        (16, 32, 64, 128, 256),
    )
    assert model.detections_per_image == 120 and model.crop_size is None
    assert model.mask_head_channels is None  # the old checkpoint's own head, not the new default
    assert any("of " + str(checkpoint) in line for line in said)
    flagged = parser.parse_args(["d", "--out", "r", "--weights", str(checkpoint), "--image-size", "256"])
    assert new_configs(flagged, records, 1, said.append)[1].image_size == 256
    fresh = parser.parse_args(["d", "--out", "r", "--weights", "none"])
    said.clear()
    chosen = new_configs(fresh, records, 1, said.append)[1]  # from the data: small nuclei, upscaled
    planned = resolve_precision("auto", "cpu").name
    recipe = choose_recipe(measure_objects(records), coco_available=False, precision=planned)
    # from scratch on a CPU the step-time probe on this machine chooses among the upscaled sizes
    assert (
        chosen.image_size in probe_sizes(measure_objects(records)) and chosen.image_size >= recipe.image_size
    )
    assert any("from a step-time probe on this machine" in line for line in said), said
    assert recipe.image_size > max(r.width for r in records) / 2
    assert chosen.anchor_sizes[0] == 8 and chosen.detections_per_image == recipe.detections_per_image
    assert chosen.mask_head_channels == LIGHT_MASK_HEAD  # a new light model gets the light mask head
    assert any(line.startswith("recipe: mask head: convolutions of 64, 64 channels") for line in said), said


def test_the_light_mask_head_has_its_widths_and_old_checkpoints_keep_theirs(tmp_path):
    """ModelConfig.mask_head_channels builds the light model's mask head at those widths; a checkpoint
    written before the field existed (no key) rebuilds the 2 x 128 head and loads, and the widths survive
    a checkpoint's round trip."""
    from instaseg.model.checkpoint import load_checkpoint
    from tests.checkpoints import save_light_checkpoint

    def widths(model):
        convs = [m for m in model.roi_heads.mask_head.modules() if isinstance(m, torch.nn.Conv2d)]
        return [c.out_channels for c in convs], model.roi_heads.mask_predictor.conv5_mask.out_channels

    light = ModelConfig(arch="maskrcnn_resnet18_fpn", num_classes=2, pretrained_backbone=False)
    assert widths(build_model(light)) == ([128, 128], 128)
    slim = ModelConfig.from_dict({**light.to_dict(), "mask_head_channels": [64, 64]})
    assert slim.mask_head_channels == (64, 64) and widths(build_model(slim)) == ([64, 64], 64)
    old = light.to_dict()
    del old["mask_head_channels"]
    assert ModelConfig.from_dict(old).mask_head_channels is None
    path = save_light_checkpoint(tmp_path / "slim.pt", ["a", "b"], mask_head_channels=(64,))
    model, _, config = load_checkpoint(path, device="cpu")
    assert config.mask_head_channels == (64,) and widths(model) == ([64], 64)
    for bad, message in (
        ({"mask_head_channels": [48]}, "multiples of 32"),
        ({"mask_head_channels": []}, "1 to 8 widths"),
        ({"mask_head_channels": [64], "arch": "maskrcnn_resnet50_fpn"}, "maskrcnn_resnet18_fpn only"),
    ):
        with pytest.raises(ValueError, match=message):
            ModelConfig.from_dict({**light.to_dict(), **bad})
