"""``instaseg train``: fine-tune a Mask R-CNN on an annotated dataset (or train one from scratch)."""

from __future__ import annotations

import argparse
import contextlib
import shlex
import sys
from pathlib import Path

from ..model.config import ARCH_NAMES, DEVICES, RESIZE_MODES
from ..train.config import AUGMENTATIONS, OPTIMIZERS, SCHEDULERS, SELECT_RULES
from ..train.tracking import TRACK_MODES
from ._common import add_dataset_arguments, add_precision_argument
from .train_setup import BUDGET_EPOCHS, DEFAULT_EPOCHS, Refused, anchor_sizes

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
        default="auto",
        choices=("auto", *ARCH_NAMES),
        help="architecture. auto (default): the seed's maskrcnn_resnet50_fpn fine-tuned from COCO when its "
        "weights are cached or downloadable, else maskrcnn_resnet18_fpn (light enough to train from scratch "
        "on a CPU). Every choice left to auto is printed as 'recipe: ...' with its reason",
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
        default=None,
        help="longest image side in pixels, for training and prediction (the model's own resize uses the "
        "same size). Default: from the object sizes (small objects are upscaled to stay visible, large ones "
        "shrunk for speed), 256..1024",
    )
    model.add_argument(
        "--crop",
        metavar="SIZE|auto",
        default="auto",
        help="train on random SIZE x SIZE crops at the images' native resolution instead of shrinking "
        "whole images (large photos with small objects; predict them with --tile); sets --image-size to "
        "SIZE. auto (default): crops when shrinking to --image-size would make the small objects too "
        "small; none: whole images",
    )
    model.add_argument(
        "--anchor-sizes",
        type=anchor_sizes,
        default=None,
        metavar="S1,...,S5",
        help="RPN anchor sizes in pixels at the model's input, one per FPN level. Default: doubling from "
        "the 10th-percentile object size of the training images (as YOLO's autoanchor fits the boxes)",
    )
    model.add_argument(
        "--resize",
        default="keep",
        choices=RESIZE_MODES,
        help="keep the aspect ratio, or resize to a square",
    )
    model.add_argument("--score-threshold", type=float, default=0.05, help="test-time minimum score")
    model.add_argument("--nms-threshold", type=float, default=0.5, help="test-time NMS IoU")
    model.add_argument(
        "--detections-per-image",
        type=int,
        default=None,
        help="test-time maximum detections. Default: 1.5x the most objects on one training image, at least "
        "100",
    )
    opt = parser.add_argument_group("optimisation")
    opt.add_argument(
        "--epochs",
        type=int,
        default=None,
        help=f"epochs (default {DEFAULT_EPOCHS}; with --minutes an upper bound, default {BUDGET_EPOCHS})",
    )
    opt.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="time budget in minutes, validation and checkpoints included: warmup + cosine are laid over the "
        "time, so the learning rate reaches its floor when the budget runs out, on any machine and under any "
        "load (default: none, the schedule spans --epochs). --resume continues the same budget",
    )
    opt.add_argument("--batch-size", type=int, default=2)
    opt.add_argument("--accumulate", type=int, default=1, help="batches per optimizer step")
    opt.add_argument(
        "--lr",
        type=float,
        default=None,
        help="peak learning rate (default 0.01 for sgd, 0.001 for adamw)",
    )
    opt.add_argument(
        "--optimizer",
        default=None,
        choices=OPTIMIZERS,
        help="default: sgd to fine-tune COCO weights, adamw from scratch",
    )
    opt.add_argument("--weight-decay", type=float, default=1e-4)
    opt.add_argument("--scheduler", default="cosine", choices=SCHEDULERS)
    opt.add_argument("--warmup-steps", type=int, default=100)
    opt.add_argument("--grad-clip", type=float, default=10.0, help="max gradient norm (0: off)")
    opt.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA (fp32 there)")
    add_precision_argument(opt, resumable=True)
    opt.add_argument(
        "--augment",
        default="default",
        choices=AUGMENTATIONS,
        help="training augmentations: default (the seed's flips, colour and blur), scale-jitter (default "
        "plus a zoom of the content by 0.75..1.33), copy-paste (default plus, on each image, a random half of "
        "the objects of another training image pasted with their masks, as Ghiasi et al. 2021; one more "
        "image read per sample), none (resize only)",
    )
    opt.add_argument("--patience", type=int, default=0, help="early stopping patience in epochs (0: off)")
    opt.add_argument(
        "--select",
        default="auto",
        choices=SELECT_RULES,
        help="which epoch best.pt keeps. auto (default): validation mask mAP is measured in the last 25%% of "
        "the schedule (of the time under --minutes, else of --epochs), and best.pt is the latest epoch there "
        "whose mAP is at least 75%% of the best measured up to it: the last one unless the run collapsed; "
        "before that best.pt follows the last epoch (with the learning rate laid over the schedule the end is "
        "usually best, and a small validation split's loss or mAP is noise: issue 23 measured 2.8 mask AP "
        "lost to the loss, 1.0-1.5 to the highest mAP, 2.6 to a 0.03 margin). loss: lowest validation "
        "loss; map: highest mask mAP, measured every epoch; last: the last epoch. The log's 'best.pt: epoch ...' line says what was "
        "chosen and what the loss would have picked",
    )
    opt.add_argument(
        "--keep-by-loss",
        action="store_true",
        help="with --select auto, map or last, also write best-by-loss.pt: the epoch of the lowest validation "
        "loss (the rule before auto), to compare the two on test images with `instaseg evaluate`",
    )
    opt.add_argument(
        "--ema",
        type=float,
        nargs="?",
        const=0.999,
        default=0.0,
        metavar="DECAY",
        help="keep an exponential moving average of the weights (decay 0.999 unless given, warming up over "
        "the first ~100 steps, as Ultralytics and detectron2 do): it is what is validated and saved in "
        "best.pt/last.pt (default: off)",
    )
    run = parser.add_argument_group("run")
    run.add_argument("--device", default="auto", choices=DEVICES)
    run.add_argument("--seed", type=int, default=0)
    run.add_argument(
        "--track",
        default="auto",
        choices=TRACK_MODES,
        help="track the run in MLflow: its recipe and flags as params, per-epoch losses, mAP and lr as "
        "metrics, best.pt, metrics.csv and plots as artifacts. auto (default): when MLFLOW_TRACKING_URI is "
        "set; mlflow: always (without MLFLOW_TRACKING_URI in a SQLite store RUN_DIR/mlflow.db; needs pip "
        "install 'instaseg[mlflow]'); none: never",
    )
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


def _select_metric(records, class_map, model_config, context=None, precision: str = "auto"):
    """(model, epoch) -> validation mask mAP, through the one prediction path (:class:`Predictor`) and the
    evaluation module. Under torchrun each rank predicts its shard of ``records``; the predictions are
    gathered and every rank scores all of them."""
    from ..evaluate.evaluator import mask_map, predict_records
    from ..model.predictor import Predictor

    def metric(model, epoch: int) -> float:
        mine = context.shard(records) if context else records
        # tile="auto": a model trained on crops predicts large validation images in tiles.
        predictor = Predictor.from_model(model, class_map, model_config, tile="auto", precision=precision)
        predictions = predict_records(predictor, mine)
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


def _split(args, dataset, run_dir: Path, main: bool, given: str | None, seed: int) -> dict:
    """Assign the splits (the run's own file on resume, the ``given`` file, or fractions seeded with
    ``seed``), save them as ``run_dir/splits.json`` on a new run, and return ``{split: records}``."""
    from ..splits import SplitConfig, assign_splits, load_splits, records_of_split, save_splits

    split_file = run_dir / "splits.json"
    if args.resume or given:
        load_splits(dataset.records, str(split_file if args.resume else given))
    else:
        fractions = {"val": args.val_fraction, "test": args.test_fraction}
        split = SplitConfig(train=1 - fractions["val"] - fractions["test"], **fractions, seed=seed)
        assign_splits(dataset.records, split)
    if not args.resume and main:  # the split is seeded: every rank computed the same one
        names = {
            s: [r.file_name for r in records_of_split(dataset.records, s)] for s in ("train", "val", "test")
        }
        save_splits(names, str(split_file))
    return {s: records_of_split(dataset.records, s) for s in ("train", "val", "test")}


def _fail(message: str) -> int:
    print(f"instaseg train: error: {message}", file=sys.stderr)
    return 2


def _run(args: argparse.Namespace, context) -> int:
    from ..formats.load import load_dataset
    from ..model.checkpoint import CheckpointError
    from ..model.weights import WeightsError
    from ..train.engine import TrainingError
    from ..train.schedule import TrainingClock
    from ..train.tracking import TrackingError
    from .train_setup import new_configs, new_run_dir, resumed_configs

    try:
        if args.resume:
            run_dir, config, model_config, state = resumed_configs(args)
            source = (config.data, config.images, config.format)
        else:
            run_dir, state, source = new_run_dir(args), None, (args.data, args.images, args.format)
    except (Refused, ValueError, CheckpointError) as e:
        return _fail(str(e))
    main = context is None or context.is_main
    say = print if main else (lambda *values, **options: None)
    dataset = load_dataset(*source, args.allow_outside_paths)
    errors = [p for p in dataset.problems if p.level == "error"]
    say(
        f"{dataset.format} dataset {dataset.source}: {len(dataset.present)} images, "
        f"{dataset.num_instances()} objects, classes {', '.join(dataset.class_map.names)}; "
        f"{len(dataset.problems)} problems ({len(errors)} errors; see `instaseg check`)"
    )
    if state is not None and tuple(state["class_names"]) != dataset.class_map.names:
        return _fail(
            f"{run_dir / 'last.pt'} was trained on classes {list(state['class_names'])}, the dataset "
            f"has {list(dataset.class_map.names)}; resume with the same dataset"
        )
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
    given, seed = (config.splits, config.split_seed) if state is not None else (args.splits, args.seed)
    splits = _split(args, dataset, run_dir, main, given, seed)
    say(
        f"split: {', '.join(f'{len(v)} {k}' for k, v in splits.items())} (saved in {run_dir / 'splits.json'})"
    )
    try:
        clock = None
        if state is None:  # a new run's budget starts before the recipe's step-time probe, which it includes
            clock = TrainingClock(args.minutes or 0.0)
            num_classes = dataset.class_map.num_classes
            config, model_config = new_configs(
                args, splits["train"], num_classes, say, clock=clock, probe=context is None
            )
        result = _fit(args, context, splits, dataset.class_map, config, model_config, run_dir, clock)
    except (Refused, WeightsError, CheckpointError, TrainingError, TrackingError, ValueError) as e:
        return _fail(str(e))
    say(
        f"{result.stop_reason}: {result.steps} optimizer steps ({result.epochs_done:.1f} epochs); best epoch "
        f"{result.best_epoch} -> {run_dir / 'best.pt'}; last -> {run_dir / 'last.pt'}; metrics "
        f"{run_dir / 'metrics.csv'}, curve {run_dir / 'loss_curve.png'}, tensorboard --logdir "
        f"{run_dir / 'tensorboard'}"
    )
    return 0


def _fit(args, context, splits, class_map, config, model_config, run_dir, clock=None):
    """:func:`~instaseg.train.fit.fit` with the command line's options (and ``--select map``'s metric)."""
    from ..distributed import StepTrace
    from ..train.fit import fit
    from ..train.tracking import TrackingError, finish_training_run

    select = None
    if config.select in ("map", "auto"):
        select = _select_metric(splits["val"], class_map, model_config, context, config.precision)
    tracker = _tracker(args, context, config, model_config, run_dir)
    try:
        result = fit(
            splits,
            class_map,
            config,
            model_config,
            run_dir,
            resume=bool(args.resume),
            select_metric=select,
            progress=sys.stderr.isatty(),  # a bar on a terminal; in a log file the epoch lines only
            report=print,
            download=not args.no_download,
            distributed=context,
            sync_batchnorm=args.sync_bn,
            trace=StepTrace.from_environment(context.rank if context else 0),
            on_epoch=tracker.log_epoch,
            clock=clock,
        )
    except BaseException as e:
        status = "KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED"
        with contextlib.suppress(TrackingError):  # the training error is the one to tell
            finish_training_run(tracker, run_dir, [], status)
        raise
    finish_training_run(tracker, run_dir, result.history)
    return result


def _tracker(args, context, config, model_config, run_dir):
    """The MLflow tracker of ``--track`` (rank 0 only), its run started with the recipe and the flags."""
    from ..train.tracking import flatten_params, start_training_run

    flags = {k: v for k, v in vars(args).items() if isinstance(v, (str, int, float)) and k != "command"}
    params = flatten_params({"train": config.to_dict(), "model": model_config.to_dict(), "flag": flags})
    params["command"] = shlex.join(["instaseg", *_arguments_without_gpus(args)])
    main = context is None or context.is_main
    return start_training_run(args.track if main else "none", run_dir, params)
