"""Training recipes chosen from the data: image size, anchor sizes, detections per image and architecture.

:func:`measure_objects` summarises the training images' objects (sizes in pixels, objects per image, image
sizes); :func:`choose_recipe` turns that, with whether COCO weights are available, into a :class:`Recipe`
whose every choice carries the reason a person reads in the log. Each choice can be overridden by its
command-line flag; the CLI only fills what was left to ``auto``.

Sizes: an object's size is the square root of its mask area (its box area for box-only objects), in pixels
of the image as stored; at the model's input it is multiplied by ``image_size / longest image side``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..core import Record

# The model should see the small objects (10th percentile) at least this many pixels wide: the ResNet-FPN's
# finest level has a stride of 4 px, and smaller objects are upscaled up to this size.
MIN_OBJECT_PIXELS = 14.0
# Large objects are shrunk (for speed) only while the typical object stays this wide, so that Mask R-CNN's
# 28x28 mask head still sees detail, and the small ones stay twice MIN_OBJECT_PIXELS.
TYPICAL_OBJECT_PIXELS = 96.0
# Image sizes a recipe may choose (longest side, multiples of 32). Upscaling beyond 4x the stored size adds
# no detail; the cap keeps a CPU step within seconds.
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE, MAX_UPSCALE = 256, 1024, 4.0
# On a CPU in fp32 a step costs about as much as its pixels, so upscaling 2x buys a time budget ~4x fewer
# steps. From scratch, steps matter most (a budget is hundreds of steps), so the upscaling there is what a
# step-time probe on this machine affords (choose_probed_size, instaseg.train.probe); without a probe, none.
# Fine-tuning COCO weights needs fewer steps and gains from objects nearer COCO's scales: up to 2x.
CPU_UPSCALE = {
    ("scratch", "fp32"): 1.0,
    ("scratch", "bf16"): 1.0,
    ("pretrained", "fp32"): 2.0,
    ("pretrained", "bf16"): 2.0,
}
# From scratch, an upscaled size is worth its steps while a step costs at most this many times the step at
# the stored size. The probe only runs for small objects (below MIN_OBJECT_PIXELS at the stored size), where
# resolution paid more than steps in every run measured on DSB nuclei (2 cores, 15 minutes): Zen 5, 384 px
# at 1.18x the 256-px step (674 steps against 795), mask AP 46.8 against 44.3; Zen 4, 384 px at 1.47x
# after RoIAlign became a gather (805 steps against 1042), 48.7 against 45.9; the same Zen 4 in fp32 with
# torch capped at AVX2 (a stand-in for a CPU without bf16), 384 px at 1.44x (489 steps against 702), 47.5
# against 43.7. Where a 1.5x step costs ~2.2x the time, as fp32 did on earlier machines and code (the
# table's fp32 entry before the probe), 1x stays. The probe's ratio reads above the run's own: with the light
# model's 2 x 64 mask head, on the Zen 4, probes read 384/256 = 1.58 and 1.72 while the runs' steps gave 1.32
# and 1.37 (1357 against 1027, 1333 against 974); there 384 px still won, mask AP 50.0 and 48.5 against
# 47.0 and 45.5 (seeds 0 and 1). The limit was 1.6 until then, and `make demo`'s probe read 1.72 and chose
# 256 px. Upscales the probe tries:
STEP_COST_LIMIT = 1.8
PROBE_UPSCALES = (1.0, 1.5, 2.0)
# Detections kept per image: at least torchvision's 100, and this many times the densest training image.
DENSITY_MARGIN = 1.5
# The light model's mask head in new trainings: two 3x3 convolutions of 64 channels (and a 64-channel
# upsampling) instead of 128, a third of the multiply-adds per instance (25 M against 71 M). Measured (issue
# 25; AMD EPYC Zen 4, 2 cores, bf16; `bench/quality.py --minutes 15`, one run each): DSB nuclei 974 steps
# and mask AP 50.0 against 831 steps and 48.2 with two of 128; PennFudan 1150 steps, 32.2 against 1079,
# 32.3. Prediction on DSB's 20 test images 1.10x as fast at score >= 0.5 (0.098 against 0.107 s/image) and
# 1.19x at 0.05. A second seed at 384 px gave 48.5 (1027 steps); the head of 128 has one run. Checkpoints
# trained before keep their own head (None in their ModelConfig); a run continued from a checkpoint keeps
# the checkpoint's.
LIGHT_MASK_HEAD = (64, 64)


@dataclass(frozen=True)
class ObjectStats:
    """What the training images hold (sizes in pixels of the stored images)."""

    images: int
    objects: int
    size_p10: float
    size_median: float
    size_p90: float
    max_objects_per_image: int
    median_objects_per_image: float
    longest_side: int  # median longest side of the images


def measure_objects(records: list[Record]) -> ObjectStats:
    """Statistics of the non-crowd objects of ``records`` (no pixel is read: areas come from the RLEs)."""
    sizes, counts, sides = [], [], []
    for record in records:
        objects = [a for a in record.annotations if not a.iscrowd]
        counts.append(len(objects))
        sides.append(max(record.width, record.height))
        sizes.extend(math.sqrt(max(a.area, 1.0)) for a in objects)
    if not sizes:
        raise ValueError("the training images have no objects: nothing to choose a recipe from")
    p10, median, p90 = np.percentile(sizes, [10, 50, 90]).tolist()
    return ObjectStats(
        images=len(records),
        objects=len(sizes),
        size_p10=p10,
        size_median=median,
        size_p90=p90,
        max_objects_per_image=max(counts),
        median_objects_per_image=float(np.median(counts)),
        longest_side=int(np.median(sides)),
    )


@dataclass
class Recipe:
    """The choices for a training run, with why each was made (one line each, for the log)."""

    arch: str
    weights: str
    image_size: int
    anchor_sizes: tuple[int, ...]
    detections_per_image: int
    optimizer: str = "sgd"
    lr: float = 0.01
    reasons: list[str] = field(default_factory=list)


def _round32(value: float) -> int:
    return int(max(32, 32 * round(value / 32)))


def choose_image_size(stats: ObjectStats, max_upscale: float = MAX_UPSCALE) -> tuple[int, str]:
    """Longest side the model works at, so that small objects stay visible (upscaled by at most
    ``max_upscale``) and typical ones are well sized."""
    upscale = MIN_OBJECT_PIXELS / max(stats.size_p10, 1e-6)
    if upscale > 1:
        scale = min(max_upscale, upscale)
    else:  # shrink no further than the typical and the small objects allow
        scale = min(
            1.0, max(TYPICAL_OBJECT_PIXELS / stats.size_median, 2 * MIN_OBJECT_PIXELS / stats.size_p10)
        )
    size = min(MAX_IMAGE_SIZE, max(MIN_IMAGE_SIZE, _round32(stats.longest_side * scale)))
    seen = stats.size_median * size / stats.longest_side
    why = (
        f"image size {size} px: images {stats.longest_side} px (median longest side), objects "
        f"{stats.size_p10:.0f}/{stats.size_median:.0f}/{stats.size_p90:.0f} px (10th/median/90th "
        f"percentile); the typical object is then {seen:.0f} px at the model's input"
    )
    return size, why


def choose_anchors(stats: ObjectStats, image_size: int) -> tuple[tuple[int, ...], str]:
    """Five anchor sizes, one per FPN level, doubling from one that fits the small objects (as YOLO's
    autoanchor fits anchors to the boxes) at the model's input scale."""
    scale = image_size / stats.longest_side
    small = max(8.0, stats.size_p10 * scale)
    first = int(2 ** math.floor(math.log2(small)))  # anchors regress outwards more easily than inwards
    first = min(max(first, 8), max(8, 2 * image_size // 16))  # the largest stays within twice the image
    sizes = tuple(first * 2**k for k in range(5))
    why = f"anchors {'/'.join(map(str, sizes))} px: the 10th-percentile object is {stats.size_p10 * scale:.0f} px"
    return sizes, why


def probe_sizes(stats: ObjectStats) -> list[int]:
    """The image sizes a step-time probe compares: the size without upscaling, then :data:`PROBE_UPSCALES`
    of it up to the size the small objects want (:func:`choose_image_size`); one size when none is wanted."""
    base = choose_image_size(stats, 1.0)[0]
    wanted = choose_image_size(stats, MAX_UPSCALE)[0]
    sizes = {min(wanted, MAX_IMAGE_SIZE, _round32(base * u)) for u in PROBE_UPSCALES}
    return sorted(s for s in sizes if s >= base)


def choose_probed_size(times: dict[int, float], limit: float = STEP_COST_LIMIT) -> tuple[int, str]:
    """From step times ``{image size: seconds}`` (the smallest size is the one without upscaling), the
    largest size whose step costs at most ``limit`` times the smallest's, and the reason a person reads."""
    if not times:
        raise ValueError("no step times to choose an image size from")
    base = min(times)
    affordable = [s for s in times if times[s] <= limit * times[base]]
    chosen = max(affordable)
    measured = ", ".join(f"{s} px {times[s]:.2f} s" for s in sorted(times))
    if len(times) == 1:
        return chosen, (
            f"image size {chosen} px: the step-time probe's share of the budget ran out after {measured} "
            "per step, before an upscaled size was timed"
        )
    why = (
        f"image size {chosen} px from a step-time probe on this machine ({measured} per step): the largest "
        f"whose step costs at most {limit:g}x the {base}-px step (from scratch, a budget buys steps)"
    )
    return chosen, why


def too_close_to_call(times: dict[int, float], limit: float = STEP_COST_LIMIT, margin: float = 0.08) -> bool:
    """Whether an upscaled size's step time, relative to the smallest size's, lies within ``margin``
    (relative) of ``limit`` (1.66-1.94x for 1.8x): :func:`choose_probed_size` would then choose by the
    noise of a few steps, and the probe times more (:func:`~instaseg.train.probe.probe_step_times`)."""
    base = min(times)
    return any(abs(times[s] / (limit * times[base]) - 1) <= margin for s in times if s != base)


def choose_detections(stats: ObjectStats) -> tuple[int, str]:
    """Detections kept per image: room for the densest training image with a margin, at least 100."""
    needed = int(math.ceil(stats.max_objects_per_image * DENSITY_MARGIN / 50.0) * 50)
    chosen = min(1000, max(100, needed))
    why = f"{chosen} detections per image: up to {stats.max_objects_per_image} objects on one training image"
    return chosen, why


def choose_recipe(
    stats: ObjectStats, coco_available: bool, device_type: str = "cpu", precision: str = "fp32"
) -> Recipe:
    """The automatic recipe. With COCO weights, fine-tune the seed's ResNet-50 Mask R-CNN; without them,
    the light ResNet-18 model trains from scratch (a ResNet-50 from scratch does not converge in a CPU
    budget: mask AP 0.0 after 15 minutes on DSB nuclei). On ``device_type`` ``"cpu"`` the upscaling of
    small objects is limited by :data:`CPU_UPSCALE` for ``precision`` (``"bf16"``: the CPU's native bf16 is
    used; anything else counts as fp32)."""
    if coco_available:
        arch, weights, optimizer, lr = "maskrcnn_resnet50_fpn", "coco", "sgd", 0.01
        why_arch = (
            "architecture maskrcnn_resnet50_fpn fine-tuned from COCO weights (cached or downloadable), "
            "SGD lr 0.01 (torchvision's fine-tuning recipe)"
        )
    else:
        arch, weights, optimizer, lr = "maskrcnn_resnet18_fpn", "none", "adamw", 0.001
        why_arch = (
            "architecture maskrcnn_resnet18_fpn from scratch (no COCO weights available), AdamW lr 0.001 "
            "(from scratch it converges faster than SGD in a CPU budget)"
        )
    cpu_precision = "bf16" if precision == "bf16" else "fp32"
    start = "pretrained" if coco_available else "scratch"
    limit = CPU_UPSCALE[start, cpu_precision] if device_type == "cpu" else MAX_UPSCALE
    image_size, why_size = choose_image_size(stats, limit)
    if limit < MAX_UPSCALE and MIN_OBJECT_PIXELS / max(stats.size_p10, 1e-6) > limit:
        cpu = (
            "on a CPU, where a budget buys steps; a step-time probe may afford more (choose_probed_size)"
            if start == "scratch"
            else "on a CPU in fp32, where steps cost their pixels"
            if cpu_precision == "fp32"
            else "on a CPU with native bf16"
        )
        why_size += f" (upscaling limited to {limit:g}x {cpu})"
    anchors, why_anchors = choose_anchors(stats, image_size)
    detections, why_detections = choose_detections(stats)
    reasons = [why_arch, why_size, why_anchors, why_detections]
    return Recipe(arch, weights, image_size, anchors, detections, optimizer, lr, reasons)
