"""The configuration of an ``instaseg train`` run: its flags, with what was left to ``auto`` chosen from the
data (:mod:`instaseg.train.recipe`), or the configuration a stopped run saved in ``last.pt``."""

from __future__ import annotations

import argparse
from pathlib import Path

LIGHT_ARCH = "maskrcnn_resnet18_fpn"
PRETRAINED_ARCH = "maskrcnn_resnet50_fpn"
# --epochs when not given: without a budget, and as the upper bound of a budgeted run (the time decides).
DEFAULT_EPOCHS, BUDGET_EPOCHS = 20, 1000
# Peak learning rate of an optimizer chosen by flag when the recipe chose the other one.
DEFAULT_LR = {"sgd": 0.01, "adamw": 0.001}


class Refused(Exception):
    """A training run that cannot start; printed as ``instaseg train: error: ...``, exit status 2."""


def holds_run(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a training run (its ``last.pt``): a new run refuses it, ``--resume`` continues it."""
    return (Path(run_dir) / "last.pt").exists()


def new_run_dir(args: argparse.Namespace) -> Path:
    """``--out`` of a new run, checked before any work (a file in the way, a finished run there)."""
    from ..storage import OutputError, check_output_folder

    if not args.out:
        raise Refused("--out RUN_DIR is required (or --resume RUN_DIR)")
    run_dir = Path(args.out)
    try:
        check_output_folder(str(run_dir), "--out")
    except OutputError as e:
        raise Refused(str(e)) from None
    if holds_run(run_dir):
        raise Refused(
            f"{run_dir} already holds a run; continue it with --resume {run_dir} or choose another --out"
        )
    return run_dir


def resumed_configs(args: argparse.Namespace):
    """``(run_dir, TrainConfig, ModelConfig, last.pt's payload)`` of ``--resume RUN_DIR``: the run's own
    configuration; ``--epochs``/``--minutes`` may extend it and the precision is chosen anew."""
    from ..model.checkpoint import check_header, read_checkpoint
    from ..train.config import TrainConfig

    run_dir = Path(args.resume)
    state = read_checkpoint(run_dir / "last.pt")
    _, model_config = check_header(state, run_dir / "last.pt")
    config = TrainConfig.from_dict(state.get("train_config"))
    config.epochs = args.epochs or config.epochs
    config.minutes = config.minutes if args.minutes is None else args.minutes
    config.precision = getattr(args, "precision", config.precision)  # a run-time choice
    return run_dir, config, model_config, state


def architecture(args: argparse.Namespace) -> tuple[str, str, bool, str, object]:
    """``(arch, weights, pretrained backbone, why, the checkpoint's ModelConfig or None)`` from
    ``--arch``/``--weights``.

    ``--arch auto`` with no ``--weights``: the seed's ResNet-50 fine-tuned from COCO when its weights are
    cached or can be downloaded now, the light model from scratch otherwise. ``--weights FILE`` of an
    instaseg checkpoint continues with its architecture and layer types.
    """
    from ..model.checkpoint import CHECKPOINT_FORMAT, check_header, read_checkpoint
    from ..model.weights import coco_weights_available

    arch = None if args.arch == "auto" else args.arch
    weights = args.weights
    if weights is None and arch is None:
        available, why = coco_weights_available(PRETRAINED_ARCH, download=not args.no_download)
        if available:
            return PRETRAINED_ARCH, "coco", True, f"COCO weights {why}: fine-tune {PRETRAINED_ARCH}", None
        return LIGHT_ARCH, "none", False, f"{LIGHT_ARCH} from scratch: {why.split('. ')[0]}", None
    if weights is None:
        weights = "none" if arch == LIGHT_ARCH else "coco"
    if weights not in ("coco", "none") and Path(weights).is_file():
        payload = read_checkpoint(weights)
        if payload.get("format") == CHECKPOINT_FORMAT:  # continue with the checkpoint's layer types
            saved = check_header(payload, weights)[1]
            why = f"{arch or saved.arch}, continued from {weights}"
            return arch or saved.arch, weights, saved.pretrained_backbone, why, saved
    if arch is None:
        arch = LIGHT_ARCH if weights == "none" else PRETRAINED_ARCH
    how = {"coco": "fine-tuned from COCO weights", "none": "from scratch"}.get(weights, f"from {weights}")
    return arch, weights, weights != "none", f"{arch} {how} (--arch/--weights)", None


def new_configs(
    args: argparse.Namespace, records: list, num_classes: int, say, clock=None, probe: bool = True
):
    """``(TrainConfig, ModelConfig)`` of a new run on the training ``records``: the flags given, and for
    each left to ``auto`` the recipe's choice, printed with its reason (``recipe: ...``).

    From scratch on a CPU with small objects, the image size comes from a step-time probe
    (:func:`_probe_image_size`) when ``probe`` (not under torchrun, where ranks would measure differently);
    ``clock`` (the run's budget, which the probe's seconds count in) ends it early past 3 % of the budget."""
    from ..model.config import ModelConfig
    from ..model.device import resolve_device
    from ..model.precision import resolve_precision
    from ..train.config import TrainConfig, default_workers
    from ..train.recipe import LIGHT_MASK_HEAD, choose_anchors, choose_recipe, measure_objects

    arch, weights, pretrained, why_arch, saved = architecture(args)
    if saved is not None:
        mask_head = saved.mask_head_channels  # None: the architecture's own, as the checkpoint was trained
    else:
        mask_head = LIGHT_MASK_HEAD if arch == LIGHT_ARCH else None
    stats = measure_objects(records)
    device = resolve_device(args.device)
    planned = (
        "fp32" if getattr(args, "precision", "auto") == "fp32" else resolve_precision("auto", device).name
    )
    recipe = choose_recipe(stats, coco_available=pretrained, device_type=device.type, precision=planned)
    reasons = [f"architecture {why_arch}"]
    if saved is not None:  # continuing an instaseg model: its sizes, anchors and detections, unless flagged
        args = _with_checkpoint_defaults(args, saved)
        reasons.append(
            f"image size, crop, anchors, detections per image and mask head of {weights} (flags override "
            "all but the mask head)"
        )
    elif mask_head is not None:
        widths = ", ".join(map(str, mask_head))
        reasons.append(f"mask head: convolutions of {widths} channels (the light model's)")
    crop = crop_size(args.crop)
    image_size = crop or args.image_size or recipe.image_size
    if not (crop or args.image_size):
        probed = None
        if probe and saved is None and not pretrained and device.type == "cpu" and args.crop == "auto":
            probed = _probe_image_size(
                args, records, stats, arch, mask_head, num_classes, device, planned, clock
            )
        if probed is not None:
            image_size, why_size = probed
            reasons.append(why_size)
        else:
            reasons.append(recipe.reasons[1])
    if crop is None and args.crop == "auto":
        crop = auto_crop(records, image_size, reasons)
        image_size = crop or image_size
    # Anchors fit the objects at the model's input: native size in crops, resized with whole images.
    anchors, why = choose_anchors(stats, stats.longest_side if crop else image_size)
    if args.anchor_sizes is not None:
        anchors = args.anchor_sizes
    elif saved is not None:
        anchors = saved.anchor_sizes  # None: the architecture's own, as the checkpoint was trained
    else:
        reasons.append(why)
    if args.detections_per_image is None:
        reasons.append(recipe.reasons[3])
    optimizer = args.optimizer or recipe.optimizer
    lr = args.lr or (recipe.lr if optimizer == recipe.optimizer else DEFAULT_LR[optimizer])
    if args.optimizer is None or args.lr is None:
        reasons.append(f"{optimizer} lr {lr:g} ({'fine-tuning' if pretrained else 'from scratch'})")
    for line in reasons:
        say(f"recipe: {line}")
    config = TrainConfig(
        data=args.data,
        images=args.images,
        format=args.format,
        weights=weights,
        epochs=args.epochs or (BUDGET_EPOCHS if args.minutes else DEFAULT_EPOCHS),
        batch_size=args.batch_size,
        accumulate=args.accumulate,
        lr=lr,
        optimizer=optimizer,
        weight_decay=args.weight_decay,
        scheduler=args.scheduler,
        warmup_steps=args.warmup_steps,
        grad_clip=args.grad_clip,
        amp=not args.no_amp,
        precision=getattr(args, "precision", "auto"),
        device=args.device,
        seed=args.seed,
        patience=args.patience,
        select=args.select,
        keep_by_loss=getattr(args, "keep_by_loss", False),
        ema=args.ema,
        workers=args.workers if args.workers is not None else default_workers(),
        augment=args.augment,
        minutes=args.minutes or 0.0,
        splits=args.splits,
        split_seed=args.seed,
    )
    model_config = ModelConfig(
        arch=arch,
        num_classes=num_classes,
        image_size=image_size,
        crop_size=crop,
        resize=args.resize,
        pretrained_backbone=pretrained,
        trainable_backbone_layers=args.trainable_backbone_layers,
        score_threshold=args.score_threshold,
        nms_threshold=args.nms_threshold,
        detections_per_image=args.detections_per_image or recipe.detections_per_image,
        anchor_sizes=anchors,
        mask_head_channels=mask_head,
    )
    return config, model_config


def _probe_image_size(args, records, stats, arch, mask_head, num_classes, device, precision, clock):
    """``(size, reason)`` from :func:`~instaseg.train.probe.probe_step_times` (the run's architecture and
    mask-head widths) at the sizes of
    :func:`~instaseg.train.recipe.probe_sizes` and :func:`~instaseg.train.recipe.choose_probed_size`, or
    ``None`` when there is only one size to try."""
    from ..model.config import ModelConfig
    from ..train.config import TrainConfig
    from ..train.probe import probe_step_times
    from ..train.recipe import choose_anchors, choose_probed_size, probe_sizes, too_close_to_call

    sizes = probe_sizes(stats)
    if len(sizes) < 2:
        return None
    model_config = ModelConfig(
        arch=arch,
        num_classes=num_classes,
        image_size=sizes[0],
        resize=args.resize,
        pretrained_backbone=False,
        anchor_sizes=choose_anchors(stats, sizes[0])[0],
        mask_head_channels=mask_head,
    )
    config = TrainConfig(
        weights="none", batch_size=args.batch_size, precision=precision, device=args.device, workers=0
    )
    limit = 0.03 * clock.budget if clock is not None and clock.limited else None
    stop = (lambda: clock.used() > limit) if limit else None
    times = probe_step_times(
        records, model_config, config, sizes, device, stop=stop, undecided=too_close_to_call
    )
    return choose_probed_size(times)


def _with_checkpoint_defaults(args: argparse.Namespace, saved) -> argparse.Namespace:
    """``args`` with the options left to auto taken from the checkpoint's ``ModelConfig`` ``saved``."""
    values = vars(args).copy()
    if args.crop == "auto" and args.image_size is None:
        values["crop"] = str(saved.crop_size) if saved.crop_size else "none"
    values["image_size"] = args.image_size or saved.image_size
    values["detections_per_image"] = args.detections_per_image or saved.detections_per_image
    return argparse.Namespace(**values)


def crop_size(value: str | None) -> int | None:
    """``--crop``: a size in pixels, or ``None`` for ``none``/``auto`` (auto is decided from the data)."""
    if value is None or value in ("auto", "none"):
        return None
    if not value.isdigit() or not 32 <= int(value) <= 8192:
        raise Refused(f"--crop must be a size in pixels (32..8192), auto or none, got {value!r}")
    return int(value)


def auto_crop(records: list, image_size: int, reasons: list[str]) -> int | None:
    """The crop :func:`~instaseg.train.crops.suggest_crop` picks for ``--crop auto`` (``None``: whole
    images); its reason is added to ``reasons`` when it crops."""
    from ..train.crops import suggest_crop

    crop, reason = suggest_crop(records, image_size)
    if crop is not None:
        reasons.append(reason)
    return crop


def anchor_sizes(value: str) -> tuple[int, ...]:
    """``--anchor-sizes 16,32,64,128,256``: five sizes in pixels, one per FPN level."""
    try:
        sizes = tuple(int(v) for v in value.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"five comma-separated sizes in pixels, got {value!r}") from None
    if len(sizes) != 5 or min(sizes) < 2:
        raise argparse.ArgumentTypeError(f"five comma-separated sizes in pixels (>= 2), got {value!r}")
    return sizes
