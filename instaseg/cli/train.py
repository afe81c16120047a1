"""``instaseg train``: fine-tune a Mask R-CNN on an annotated dataset (or train one from scratch)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..model.config import ARCH_NAMES, DEVICES, RESIZE_MODES
from ..problems import DatasetError
from ..train.config import AUGMENTATIONS, OPTIMIZERS, SCHEDULERS, SELECT_RULES, default_workers
from ._common import add_dataset_arguments

HELP = "Train a Mask R-CNN on an annotated dataset (COCO transfer learning by default); writes RUN_DIR."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataset_arguments(parser)
    parser.add_argument(
        "--out", metavar="RUN_DIR", help="folder for checkpoints, metrics and logs (required unless --resume)"
    )
    parser.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR from its last.pt "
        "(its own configuration; --epochs/--minutes may extend it)",
    )
    model = parser.add_argument_group("model")
    model.add_argument(
        "--arch",
        default="maskrcnn_resnet50_fpn",
        choices=ARCH_NAMES,
        help="architecture; maskrcnn_resnet18_fpn is light enough to train from scratch on a CPU",
    )
    model.add_argument(
        "--weights",
        default=None,
        help="coco (torchvision's COCO weights, from $TORCH_HOME or "
        "downloaded), none (from scratch) or a file (torchvision state dict or instaseg "
        "checkpoint). Default: coco for the ResNet-50 models, none for the light one",
    )
    model.add_argument("--no-download", action="store_true", help="never download COCO weights")
    model.add_argument(
        "--trainable-backbone-layers",
        type=int,
        default=None,
        metavar="0-5",
        help="backbone stages that train (default 3 with pretrained weights, 5 from scratch)",
    )
    model.add_argument(
        "--image-size",
        type=int,
        default=1024,
        help="longest image side in pixels, for "
        "training and prediction (the model's own resize uses the same size)",
    )
    model.add_argument(
        "--resize",
        default="keep",
        choices=RESIZE_MODES,
        help="keep the aspect ratio, or resize to a square",
    )
    model.add_argument("--score-threshold", type=float, default=0.05, help="test-time minimum score")
    model.add_argument("--nms-threshold", type=float, default=0.5, help="test-time NMS IoU")
    model.add_argument("--detections-per-image", type=int, default=100, help="test-time maximum detections")
    opt = parser.add_argument_group("optimisation")
    opt.add_argument("--epochs", type=int, default=None, help="epochs (default 20)")
    opt.add_argument("--minutes", type=float, default=None, help="time budget in minutes (default 0: none)")
    opt.add_argument("--batch-size", type=int, default=2)
    opt.add_argument("--accumulate", type=int, default=1, help="batches per optimizer step")
    opt.add_argument("--lr", type=float, default=0.005, help="peak learning rate")
    opt.add_argument("--optimizer", default="sgd", choices=OPTIMIZERS)
    opt.add_argument("--weight-decay", type=float, default=1e-4)
    opt.add_argument("--scheduler", default="cosine", choices=SCHEDULERS)
    opt.add_argument("--warmup-steps", type=int, default=100)
    opt.add_argument("--grad-clip", type=float, default=10.0, help="max gradient norm (0: off)")
    opt.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    opt.add_argument("--augment", default="default", choices=AUGMENTATIONS)
    opt.add_argument("--patience", type=int, default=0, help="early stopping patience in epochs (0: off)")
    opt.add_argument(
        "--select",
        default="loss",
        choices=SELECT_RULES,
        help="best.pt by lowest validation loss, or highest validation mask mAP",
    )
    run = parser.add_argument_group("run")
    run.add_argument("--device", default="auto", choices=DEVICES)
    run.add_argument("--seed", type=int, default=0)
    run.add_argument(
        "--workers",
        type=int,
        default=None,
        help="DataLoader worker processes (default: CPU cores - 1, at most 8: on a 2-core CPU, two workers "
        "compete with training for the cores)",
    )
    run.add_argument(
        "--splits",
        metavar="FILE",
        help="split file (JSON); default: split the images with "
        "--val-fraction/--test-fraction, saved as RUN_DIR/splits.json",
    )
    run.add_argument("--val-fraction", type=float, default=0.15)
    run.add_argument("--test-fraction", type=float, default=0.15)
    several = parser.add_argument_group(
        "several GPUs / machines (torchrun; see docs/distributed.md)",
        "Under torchrun each process trains on its share of the images with --batch-size images per batch "
        "(global batch = processes x batch size); rank 0 alone writes RUN_DIR.",
    )
    several.add_argument(
        "--gpus",
        type=int,
        default=None,
        metavar="N",
        help="start N processes on this machine with torchrun (one per GPU; with --device cpu, N CPU "
        "processes) running this same command",
    )
    several.add_argument(
        "--sync-bn", action="store_true", help="synchronise BatchNorm statistics across GPUs (DDP on CUDA)"
    )
    several.add_argument(
        "--dist-timeout",
        type=float,
        default=30.0,
        metavar="MINUTES",
        help="a process waiting this long for the others gives up with an error",
    )


def _arguments_without_gpus(args: argparse.Namespace) -> list[str]:
    """The command line of ``args`` (options that differ from their defaults), without ``--gpus``."""
    parser = argparse.ArgumentParser(add_help=False)
    add_arguments(parser)
    positional, options = [], []
    for action in parser._actions:
        value = getattr(args, action.dest, None)
        if action.dest == "gpus":
            continue
        if not action.option_strings:
            positional.append(str(value))
        elif isinstance(action, argparse._StoreTrueAction):
            options += [action.option_strings[-1]] if value else []
        elif value is not None and value != action.default:
            options += [action.option_strings[-1], str(value)]
    return ["train", *positional, *options]


def _select_metric(records, class_map, model_config, context=None):
    """(model, epoch) -> validation mask mAP, through the one prediction path (:class:`Predictor`) and the
    evaluation module. Under torchrun each rank predicts its shard of ``records``; the predictions are
    gathered and every rank scores all of them."""
    from ..evaluate.evaluator import mask_map, predict_records
    from ..model.predictor import Predictor

    def metric(model, epoch: int) -> float:
        mine = context.shard(records) if context else records
        predictions = predict_records(Predictor.from_model(model, class_map, model_config), mine)
        if context is not None:
            predictions = context.unshard(context.all_gather(predictions))
        value = mask_map(records, class_map, predictions, max_dets=model_config.detections_per_image)
        return 0.0 if value is None else float(value)

    return metric


def run(args: argparse.Namespace) -> int:
    from .. import distributed

    if args.gpus is not None:
        if distributed.launched():
            print(
                "instaseg train: error: --gpus starts torchrun itself; under torchrun leave it out",
                file=sys.stderr,
            )
            return 2
        import subprocess

        command = distributed.torchrun_command(args.gpus, _arguments_without_gpus(args))
        print(f"starting {args.gpus} processes: {' '.join(command)}", flush=True)
        return subprocess.run(command).returncode
    try:
        context = distributed.init_distributed(args.device, args.dist_timeout)
    except distributed.DistributedError as e:
        print(f"instaseg train: error: {e}", file=sys.stderr)
        return 2
    try:
        return _run(args, context)
    finally:
        distributed.shutdown(context)


class _Refused(Exception):
    """A training run that cannot start; printed as ``instaseg train: error: ...``, exit status 2."""


def _configs(args: argparse.Namespace):
    """``(run_dir, TrainConfig, ModelConfig, resumed checkpoint or None)`` from the flags (or ``last.pt``)."""
    from ..model.checkpoint import CHECKPOINT_FORMAT, check_header, read_checkpoint
    from ..model.config import ModelConfig
    from ..storage import OutputError, check_output_folder
    from ..train.config import TrainConfig

    if args.resume:
        run_dir = Path(args.resume)
        state = read_checkpoint(run_dir / "last.pt")
        _, model_config = check_header(state, run_dir / "last.pt")
        config = TrainConfig.from_dict(state.get("train_config"))
        config.epochs = args.epochs or config.epochs
        config.minutes = config.minutes if args.minutes is None else args.minutes
        return run_dir, config, model_config, state
    if not args.out:
        raise _Refused("--out RUN_DIR is required (or --resume RUN_DIR)")
    run_dir = Path(args.out)
    try:
        check_output_folder(str(run_dir), "--out")
    except OutputError as e:
        raise _Refused(str(e)) from None
    if (run_dir / "last.pt").exists():
        raise _Refused(
            f"{run_dir} already holds a run; continue it with --resume {run_dir} or choose another --out"
        )
    weights = args.weights or ("none" if args.arch == "maskrcnn_resnet18_fpn" else "coco")
    pretrained = weights != "none"
    if weights not in ("coco", "none") and Path(weights).is_file():
        payload = read_checkpoint(weights)
        if payload.get("format") == CHECKPOINT_FORMAT:  # continue with the checkpoint's layer types
            pretrained = check_header(payload, weights)[1].pretrained_backbone
    config = TrainConfig(
        data=args.data,
        images=args.images,
        format=args.format,
        weights=weights,
        epochs=args.epochs or 20,
        batch_size=args.batch_size,
        accumulate=args.accumulate,
        lr=args.lr,
        optimizer=args.optimizer,
        weight_decay=args.weight_decay,
        scheduler=args.scheduler,
        warmup_steps=args.warmup_steps,
        grad_clip=args.grad_clip,
        amp=not args.no_amp,
        device=args.device,
        seed=args.seed,
        patience=args.patience,
        select=args.select,
        workers=args.workers if args.workers is not None else default_workers(),
        augment=args.augment,
        minutes=args.minutes or 0.0,
        splits=args.splits,
        split_seed=args.seed,
    )
    model_config = ModelConfig(
        arch=args.arch,
        image_size=args.image_size,
        resize=args.resize,
        pretrained_backbone=pretrained,
        trainable_backbone_layers=args.trainable_backbone_layers,
        score_threshold=args.score_threshold,
        nms_threshold=args.nms_threshold,
        detections_per_image=args.detections_per_image,
    )
    return run_dir, config, model_config, None


def _split(args, dataset, config, run_dir: Path, main: bool) -> dict:
    """Assign the splits (the run's own file on resume, a given file, or seeded fractions), save them as
    ``run_dir/splits.json`` on a new run, and return ``{split: records}``."""
    from ..splits import SplitConfig, assign_splits, load_splits, records_of_split, save_splits

    split_file = run_dir / "splits.json"
    if args.resume or config.splits:
        load_splits(dataset.records, str(split_file if args.resume else config.splits))
    else:
        fractions = {"val": args.val_fraction, "test": args.test_fraction}
        split = SplitConfig(
            train=1 - fractions["val"] - fractions["test"], **fractions, seed=config.split_seed
        )
        assign_splits(dataset.records, split)
    if not args.resume and main:  # the split is seeded: every rank computed the same one
        names = {
            s: [r.file_name for r in records_of_split(dataset.records, s)] for s in ("train", "val", "test")
        }
        save_splits(names, str(split_file))
    return {s: records_of_split(dataset.records, s) for s in ("train", "val", "test")}


def _run(args: argparse.Namespace, context) -> int:
    from ..distributed import StepTrace
    from ..formats.load import load_dataset
    from ..model.checkpoint import CheckpointError
    from ..model.config import ModelConfig
    from ..model.weights import WeightsError
    from ..train.engine import TrainingError
    from ..train.fit import fit

    def fail(message: str) -> int:
        print(f"instaseg train: error: {message}", file=sys.stderr)
        return 2

    try:
        run_dir, config, model_config, state = _configs(args)
    except (_Refused, ValueError, CheckpointError) as e:
        return fail(str(e))
    main = context is None or context.is_main
    say = print if main else (lambda *values, **options: None)
    dataset = load_dataset(config.data, config.images, config.format)
    errors = [p for p in dataset.problems if p.level == "error"]
    say(
        f"{dataset.format} dataset {dataset.source}: {len(dataset.present)} images, "
        f"{dataset.num_instances()} objects, classes {', '.join(dataset.class_map.names)}; "
        f"{len(dataset.problems)} problems ({len(errors)} errors; see `instaseg check`)"
    )
    if state is not None and tuple(state["class_names"]) != dataset.class_map.names:
        return fail(
            f"{run_dir / 'last.pt'} was trained on classes {list(state['class_names'])}, the dataset "
            f"has {list(dataset.class_map.names)}; resume with the same dataset"
        )
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
    splits = _split(args, dataset, config, run_dir, main)
    say(
        f"split: {', '.join(f'{len(v)} {k}' for k, v in splits.items())} (saved in {run_dir / 'splits.json'})"
    )
    try:
        model_config = ModelConfig.from_dict(
            {**model_config.to_dict(), "num_classes": dataset.class_map.num_classes}
        )
        select = None
        if config.select == "map":
            select = _select_metric(splits["val"], dataset.class_map, model_config, context)
        result = fit(
            splits,
            dataset.class_map,
            config,
            model_config,
            run_dir,
            resume=bool(args.resume),
            select_metric=select,
            progress=True,
            report=print,
            download=not args.no_download,
            distributed=context,
            sync_batchnorm=args.sync_bn,
            trace=StepTrace.from_environment(context.rank if context else 0),
        )
    except (WeightsError, CheckpointError, TrainingError, ValueError) as e:
        return fail(str(e))
    except DatasetError:
        raise
    say(
        f"{result.stop_reason}; best epoch {result.best_epoch} -> {run_dir / 'best.pt'}; last -> "
        f"{run_dir / 'last.pt'}; metrics {run_dir / 'metrics.csv'}, curve {run_dir / 'loss_curve.png'}, "
        f"tensorboard --logdir {run_dir / 'tensorboard'}"
    )
    return 0
