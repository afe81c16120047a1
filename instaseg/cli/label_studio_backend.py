"""``instaseg label-studio-backend CHECKPOINT``: a Label Studio ML backend (see :mod:`instaseg.app.ls_backend`);
with ``--train-on-annotations --project-dir DIR`` it also retrains on the project's annotations in the
background and serves each better model (:mod:`instaseg.app.training_loop`)."""

from __future__ import annotations

import argparse
import os
import shlex

from . import UsageError
from ._common import LABEL_STUDIO_TOKEN_HELP, add_precision_argument, add_tile_argument
from .label_studio_predict import add_pre_annotation_threshold_argument, pre_annotation_threshold
from .serve import load_service, split_credentials

HELP = "Pre-annotate Label Studio tasks with a trained model: a Label Studio ML backend (polygons or brush)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "checkpoint", metavar="CHECKPOINT", help="instaseg checkpoint (.pt) or ONNX export (.onnx)"
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind; 0.0.0.0 for Label Studio elsewhere"
    )
    parser.add_argument("--port", type=int, default=9090, help="TCP port")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto (checkpoints only)")
    add_precision_argument(parser)
    parser.add_argument(
        "--label-studio-url",
        default=os.environ.get("LABEL_STUDIO_URL"),
        help="Label Studio server for task images when its /setup call sends no hostname "
        "(default: $LABEL_STUDIO_URL)",
    )
    parser.add_argument(
        "--label-studio-token",
        default=os.environ.get("LABEL_STUDIO_API_KEY"),
        help=LABEL_STUDIO_TOKEN_HELP
        + "; used for task images, exports and predictions in preference to the token Label Studio's "
        "/setup sends (the project creator's legacy token, refused when legacy tokens are off) "
        "(default: $LABEL_STUDIO_API_KEY)",
    )
    parser.add_argument(
        "--basic-auth",
        metavar="USER:PASSWORD",
        default=os.environ.get("INSTASEG_BACKEND_AUTH"),
        help="require HTTP basic auth, as set in Label Studio's model settings "
        "(default: $INSTASEG_BACKEND_AUTH; none when unset)",
    )
    parser.add_argument("--max-megapixels", type=float, default=50.0, help="larger task images are refused")
    add_pre_annotation_threshold_argument(parser)
    add_tile_argument(parser)
    parser.add_argument(
        "--no-flip",
        action="store_true",
        help="uncertainty (the prediction score) from the scores alone, not also the mirror image: "
        "half the prediction time",
    )
    _add_training_arguments(parser)


def _add_training_arguments(parser: argparse.ArgumentParser) -> None:
    loop = parser.add_argument_group(
        "training on annotations",
        "Retrain in the background as people annotate. Label Studio's webhook (added when the backend is "
        "connected) sends each created, updated or deleted annotation to /webhook; a round starts after "
        "--train-after of them, --quiet-minutes after the last one, or at once with Start Training in "
        "Settings > Model. A round pulls the project, fine-tunes the served model in a child process "
        "(instaseg train, at most --round-minutes), evaluates it and the served one on validation images "
        "fixed across rounds, and serves the new model from the next request on only when its mask mAP is "
        "at least the served model's (+ --promote-margin). One round at a time: events during a round make "
        "one follow-up round. Each round leaves DIR/rounds/NNN/ and a line in DIR/rounds.jsonl; "
        "/health shows the running round.",
    )
    loop.add_argument("--train-on-annotations", action="store_true", help="enable the training loop")
    loop.add_argument(
        "--project-dir",
        metavar="DIR",
        help="folder of the rounds (required with training); started again with the same DIR, the backend "
        "serves its last promoted model instead of CHECKPOINT",
    )
    loop.add_argument(
        "--train-project", type=int, default=None, help="project id to train for (default: the first event's)"
    )
    loop.add_argument(
        "--train-after",
        type=int,
        default=10,
        metavar="N",
        help="start a round after N new annotation events (created, updated or deleted)",
    )
    loop.add_argument(
        "--quiet-minutes",
        type=float,
        default=5.0,
        metavar="T",
        help="...or T minutes after the last event, when fewer than N came",
    )
    loop.add_argument(
        "--round-minutes",
        type=float,
        default=10.0,
        help="training time budget of a round (instaseg train --minutes: the learning rate is laid over it)",
    )
    loop.add_argument(
        "--round-epochs",
        type=int,
        default=20,
        help="most epochs of a round (it stops at whichever comes first)",
    )
    loop.add_argument(
        "--promote-margin",
        type=float,
        default=0.0,
        metavar="POINTS",
        help="promote when the candidate's mask mAP >= the served one's + POINTS (mAP in percent)",
    )
    loop.add_argument(
        "--val-fraction",
        type=float,
        default=0.2,
        help="share of images assigned to validation, once per image (by a hash of its name; saved in "
        "DIR/splits.json, so an image never moves between train and val)",
    )
    loop.add_argument("--train-device", default="auto", help="device of the rounds (auto, cpu, cuda...)")
    loop.add_argument(
        "--train-args",
        default="",
        metavar='"OPTIONS"',
        help="more `instaseg train` options for every round, after the ones the round sets (so they win), "
        'e.g. "--workers 0 --lr 0.001"',
    )
    loop.add_argument(
        "--predict-after-promotion",
        action="store_true",
        help="after each promotion, pre-annotate the unlabelled tasks with the new model "
        "(instaseg label-studio-predict --only-unlabeled in a child process; output in DIR/predict.log)",
    )


def _loop_settings(args: argparse.Namespace):
    """The training loop's settings from the flags, or ``None`` without ``--train-on-annotations``."""
    from ..app.rounds import RoundSettings
    from ..app.training_loop import LoopSettings

    if not args.train_on_annotations:
        return None
    if not args.project_dir:
        raise UsageError("--train-on-annotations needs --project-dir DIR (where the rounds are kept)")
    if args.checkpoint.lower().endswith((".onnx", ".xml")):
        raise UsageError(
            "an ONNX or OpenVINO export cannot be fine-tuned: serve the .pt checkpoint to train on annotations"
        )
    if args.train_after < 1 or args.quiet_minutes <= 0 or args.round_minutes <= 0 or args.round_epochs < 1:
        raise UsageError(
            "--train-after, --quiet-minutes, --round-minutes and --round-epochs must be positive"
        )
    if not 0 < args.val_fraction < 1:
        raise UsageError("--val-fraction must be between 0 and 1")
    rounds = RoundSettings(
        minutes=args.round_minutes,
        epochs=args.round_epochs,
        margin=args.promote_margin,
        val_fraction=args.val_fraction,
        device=args.train_device,
        train_args=tuple(shlex.split(args.train_args)),
    )
    return LoopSettings(
        project_dir=os.path.abspath(args.project_dir),
        project=args.train_project,
        train_after=args.train_after,
        quiet_minutes=args.quiet_minutes,
        rounds=rounds,
        predict_after_promotion=args.predict_after_promotion,
    )


def _served_model(args: argparse.Namespace, training):
    """The model to serve: the last promoted one of --project-dir when there is one, else CHECKPOINT."""
    from pathlib import Path

    from ..app.rounds import ProjectDir

    promoted = ProjectDir(training.project_dir).promoted() if training is not None else None
    if promoted is None:
        service = load_service(args.checkpoint, args.device, args.tile, args.precision)
        service.pre_annotation_threshold = pre_annotation_threshold(args, service)
        return service
    service = load_service(promoted["checkpoint"], args.device, args.tile, args.precision)
    service.version = promoted["model_version"]
    service.pre_annotation_threshold = pre_annotation_threshold(args, service, promoted)
    print(f"serving the last promoted model {service.version} ({Path(promoted['checkpoint'])})", flush=True)
    return service


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from ..app.ls_backend import create_backend

    credentials = split_credentials(args.basic_auth, "--basic-auth")
    training = _loop_settings(args)
    service = _served_model(args, training)
    app = create_backend(
        service,
        label_studio_url=args.label_studio_url,
        token=args.label_studio_token,
        basic_auth=credentials,
        max_pixels=int(args.max_megapixels * 1e6),
        flip=not args.no_flip,
        training=training,
        load_model=lambda path: load_service(str(path), args.device, args.tile, args.precision),
    )
    print(f"instaseg label-studio-backend: {args.checkpoint} on http://{args.host}:{args.port}", flush=True)
    if training is not None:
        print(f"training on annotations: rounds in {training.project_dir}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
