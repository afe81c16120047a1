"""Recipes chosen from the data, on synthetic datasets of small, large, dense and sparse objects."""

from __future__ import annotations

import numpy as np
import pytest

from instaseg.core import Annotation, Record
from instaseg.train.recipe import choose_recipe, measure_objects


def dataset(side: int, sizes: list[float], per_image: int, images: int = 10, seed: int = 0) -> list[Record]:
    """``images`` square images of ``side`` px, each with ``per_image`` square box-only objects whose sides
    are drawn from ``sizes``."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(images):
        annotations = []
        for _ in range(per_image):
            s = float(rng.choice(sizes))
            x, y = rng.uniform(0, side - s, 2)
            annotations.append(Annotation(1, (x, y, x + s, y + s)))
        records.append(Record(f"{i}.png", f"{i}.png", side, side, annotations, image_id=i + 1))
    return records


def test_small_dense_objects_are_upscaled_with_small_anchors_and_many_detections():
    recipe = choose_recipe(measure_objects(dataset(256, [6, 8, 10, 12, 16], per_image=180)), False, "cuda")
    assert recipe.image_size > 256 and recipe.image_size % 32 == 0
    on_cpu = choose_recipe(measure_objects(dataset(256, [6, 8, 10, 12, 16], per_image=180)), False, "cpu")
    assert (
        on_cpu.image_size == 256 and "limited to 1x on a CPU, where a budget buys steps" in on_cpu.reasons[1]
    )  # steps
    stats = measure_objects(dataset(256, [6, 8, 10, 12, 16], per_image=180))
    bf16 = choose_recipe(stats, False, "cpu", precision="bf16")  # the probe decides (test_probe below)
    assert bf16.image_size == 256 and "a step-time probe may afford more" in bf16.reasons[1]
    assert choose_recipe(stats, False, "cpu", precision="fp16").image_size == 256  # counted as fp32
    assert on_cpu.anchor_sizes[0] == 8  # the anchors still fit the small objects
    assert recipe.anchor_sizes[0] <= 16 and recipe.anchor_sizes == tuple(
        recipe.anchor_sizes[0] * 2**k for k in range(5)
    )
    assert recipe.detections_per_image >= 270  # 180 objects on an image, with a margin
    assert recipe.arch == "maskrcnn_resnet18_fpn" and recipe.weights == "none"
    assert len(recipe.reasons) == 4 and "detections per image" in recipe.reasons[3]


def test_large_sparse_objects_are_shrunk_but_keep_detail():
    stats = measure_objects(dataset(1000, [300, 400, 500], per_image=2))
    recipe = choose_recipe(stats, True)
    assert recipe.image_size < 1000 and stats.size_median * recipe.image_size / 1000 >= 96  # typical >= 96 px
    assert recipe.anchor_sizes[0] >= 32 and recipe.anchor_sizes[-1] <= 2 * recipe.image_size
    assert recipe.detections_per_image == 100
    assert (recipe.arch, recipe.weights) == (
        "maskrcnn_resnet50_fpn",
        "coco",
    )  # COCO weights: the seed's model


def test_tiny_objects_on_huge_images_are_capped():
    recipe = choose_recipe(measure_objects(dataset(4000, [10, 12], per_image=20, images=3)), False)
    assert recipe.image_size == 1024  # the cap: such data wants crops at native resolution (tiling)


def test_a_mix_keeps_the_small_ones_visible():
    recipe = choose_recipe(measure_objects(dataset(512, [8, 200], per_image=10)), False)
    assert recipe.image_size >= 512


def test_no_objects_is_an_error():
    with pytest.raises(ValueError, match="no objects"):
        measure_objects([Record("a.png", "a.png", 10, 10, [], image_id=1)])


def test_the_probed_size_is_the_largest_whose_step_costs_little_more():
    from instaseg.train.recipe import STEP_COST_LIMIT, choose_probed_size, probe_sizes

    stats = measure_objects(dataset(256, [6, 8, 10, 12, 16], per_image=180))
    assert probe_sizes(stats) == [256, 384, 512]  # 1x, 1.5x, 2x of the stored size
    assert probe_sizes(measure_objects(dataset(256, [40, 60, 80], per_image=5))) == [256]  # none wanted
    # as measured with native bf16 on Zen 5 (384 px: 1.18x the 256-px step): the upscaled size pays
    size, why = choose_probed_size({256: 1.0, 384: 1.18, 512: 1.9})
    assert size == 384 and "256 px 1.00 s, 384 px 1.18 s, 512 px 1.90 s" in why
    assert choose_probed_size({256: 1.0, 384: 2.2, 512: 3.9})[0] == 256  # fp32: steps cost their pixels
    assert choose_probed_size({256: 0.53, 384: 0.78, 512: 1.13})[0] == 384  # Zen 4, bf16, gather RoIAlign
    assert choose_probed_size({256: 0.36, 384: 0.62, 512: 0.96})[0] == 384  # Zen 4, the 2 x 64 mask head
    assert choose_probed_size({256: 1.0, 384: 1.05, 512: 1.3})[0] == 512  # a GPU-like machine
    assert choose_probed_size({256: 1.0, 384: STEP_COST_LIMIT})[0] == 384  # at the limit: affordable
    alone, why = choose_probed_size({256: 2.0})
    assert alone == 256 and "ran out after 256 px 2.00 s" in why


def test_the_probe_times_real_training_steps_and_stops_when_told(tmp_path):
    import torch

    from instaseg.model.config import ModelConfig
    from instaseg.train.config import TrainConfig
    from instaseg.train.probe import probe_step_times
    from tests.train.factories import toy_records

    _, records = toy_records(tmp_path, count=2, size=64)
    model = ModelConfig(arch="maskrcnn_resnet18_fpn", num_classes=2, image_size=64, pretrained_backbone=False)
    config = TrainConfig(weights="none", batch_size=2, device="cpu", workers=0)
    state = torch.get_rng_state()
    times = probe_step_times(records, model, config, [96, 64], torch.device("cpu"), steps=1)
    assert sorted(times) == [64, 96] and all(t > 0 for t in times.values())
    assert torch.equal(torch.get_rng_state(), state)  # the run's random stream is untouched
    assert list(probe_step_times(records, model, config, [64, 96], torch.device("cpu"), 1, lambda: True)) == [
        64
    ]
    # too close to call: more rounds, each asking `undecided` again, until it decides or max_steps is reached
    asked = []
    undecided = lambda medians: asked.append(dict(medians)) or len(asked) < 2  # noqa: E731
    probe_step_times(records, model, config, [64, 96], torch.device("cpu"), 1, undecided=undecided)
    assert len(asked) == 2 and sorted(asked[0]) == [64, 96]  # round 2 ran; the second answer ended it
    asked.clear()
    always = lambda medians: asked.append(medians) or True  # noqa: E731
    probe_step_times(records, model, config, [64, 96], torch.device("cpu"), 2, undecided=always, max_steps=3)
    assert len(asked) == 1  # after the 2 rounds asked for, one more: max_steps 3


def test_a_ratio_near_the_limit_is_too_close_to_call():
    from instaseg.train.recipe import STEP_COST_LIMIT, too_close_to_call

    assert STEP_COST_LIMIT == 1.8
    assert too_close_to_call({256: 1.0, 384: 1.72, 512: 2.67})  # make demo's probe on a Zen 4
    assert too_close_to_call({256: 1.0, 384: 1.2, 512: 1.9})  # the 2x size near the limit
    assert not too_close_to_call({256: 1.0, 384: 1.18, 512: 2.1})  # Zen 5: clear on both sides
    assert not too_close_to_call({256: 1.0, 384: 1.47})  # Zen 4 with the 2 x 128 mask head
    assert not too_close_to_call({256: 1.0, 384: 2.2})  # fp32: far over
    assert not too_close_to_call({256: 2.0})  # nothing to compare
