"""``instaseg label-studio-predict URL --project ID``: pre-annotate a whole Label Studio project
(see :mod:`instaseg.app.ls_predict`)."""

from __future__ import annotations

import argparse
import sys
import time

from . import UsageError
from ._common import add_label_studio_arguments

HELP = (
    "Pre-annotate every task of a Label Studio project (predictions API, resumable), with an uncertainty "
    "score to sort tasks by."
)


EPILOG = (
    "Tasks are read page by page and each prediction is stored with one short POST /api/predictions, so no "
    "Label Studio request waits for the model. A task that already holds a prediction of the same model "
    "version is skipped: run the same command again after an interruption and it posts only the missing "
    "ones. Each prediction's score is 1 - uncertainty: in the Data Manager, show the Prediction score "
    "column and sort it ascending to label the images the model is least sure of first."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    add_label_studio_arguments(parser)
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--model", metavar="CHECKPOINT", help="instaseg checkpoint (.pt) or ONNX export")
    model.add_argument(
        "--project-dir",
        metavar="DIR",
        help="the backend's --project-dir: use its last promoted model and model version",
    )
    parser.add_argument(
        "--model-version",
        default=None,
        help="version written on the predictions; tasks holding one of this version are skipped "
        "(default: the promoted model's version with --project-dir, the checkpoint's name with --model)",
    )
    parser.add_argument(
        "--only-unlabeled",
        action="store_true",
        help="leave out tasks a person annotated or skipped (the usual choice after a promotion)",
    )
    parser.add_argument(
        "--use-for-prelabeling",
        action="store_true",
        help="at the end, select this model version in the project's Settings > Annotation > Prelabeling: "
        "the Data Manager's Prediction score column (empty while the ML backend itself is selected there) "
        "and the order by it then use these predictions, and opened tasks show them instead of asking the "
        "backend",
    )
    parser.add_argument("--batch-size", type=int, default=50, help="tasks read from Label Studio per page")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto")
    parser.add_argument(
        "--no-flip",
        action="store_true",
        help="uncertainty from the detection scores alone, not also the mirror image (half the time)",
    )
    parser.add_argument("--max-megapixels", type=float, default=50.0, help="larger task images are refused")
    add_pre_annotation_threshold_argument(parser)


def add_pre_annotation_threshold_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pre-annotation-threshold",
        type=float,
        default=None,
        metavar="SCORE",
        help="lowest score of a region written as a pre-annotation, for a model not made by the labelling "
        "loop (default: the checkpoint's score threshold); a model promoted by a round uses the threshold "
        "that round chose (the fewest actions for a person on its validation images, in rounds.jsonl)",
    )


def pre_annotation_threshold(args: argparse.Namespace, service, promoted: dict | None = None) -> float:
    """The pre-annotation threshold: the promoted round's, else ``--pre-annotation-threshold``, else the
    model's score threshold. ``UsageError`` for a flag outside 0..1."""
    flag = args.pre_annotation_threshold
    if flag is not None and not 0 <= flag <= 1:  # also NaN
        raise UsageError(f"--pre-annotation-threshold must be between 0 and 1, got {flag:g}")
    chosen = (promoted or {}).get("pre_annotation_threshold")
    if chosen is not None:
        return float(chosen)
    return service.min_score if flag is None else float(flag)


def _model(args: argparse.Namespace):
    """The model service and the version to write, from --model or --project-dir."""
    from ..app.rounds import ProjectDir
    from .serve import load_service

    if args.model:
        service = load_service(args.model, args.device)
        service.pre_annotation_threshold = pre_annotation_threshold(args, service)
    else:
        promoted = ProjectDir(args.project_dir).promoted()
        if promoted is None:
            raise UsageError(
                f"{args.project_dir} has no promoted model yet (no promoted.json); pass --model CHECKPOINT"
            )
        service = load_service(promoted["checkpoint"], args.device)
        service.version = promoted["model_version"]
        service.pre_annotation_threshold = pre_annotation_threshold(args, service, promoted)
    if args.model_version:
        service.version = args.model_version
    return service


def run(args: argparse.Namespace) -> int:
    from ..app.ls_client import LabelStudioClient, LabelStudioError
    from ..app.ls_predict import predict_project
    from ..app.ls_protocol import LabelConfigError

    if not args.token:
        raise UsageError("a Label Studio API token is needed: --token or $LABEL_STUDIO_API_KEY")
    if args.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    service = _model(args)
    started = time.monotonic()

    def progress(summary, total: int) -> None:
        rate = summary.posted / max(time.monotonic() - started, 1e-9)
        print(
            f"{summary.tasks}/{total} tasks: {summary.posted} posted, {summary.already_predicted} already "
            f"predicted, {summary.labelled} labelled, {len(summary.failed)} failed ({rate:.2f}/s)",
            flush=True,
        )

    print(
        f"model version {service.version}, regions scoring >= {service.pre_annotation_threshold:g}",
        flush=True,
    )
    try:
        client = LabelStudioClient(args.url, args.token)
        summary = predict_project(
            client,
            args.project,
            service,
            only_unlabeled=args.only_unlabeled,
            batch_size=args.batch_size,
            flip=not args.no_flip,
            max_pixels=int(args.max_megapixels * 1e6),
            progress=progress,
        )
        if args.use_for_prelabeling and summary.posted + summary.already_predicted:
            client.select_model_version(args.project, service.version)
            print(f"the project's prelabeling now uses {service.version}", flush=True)
    except (LabelStudioError, LabelConfigError) as e:
        raise UsageError(str(e)) from None
    print(
        f"done: {summary.posted} predictions posted, {summary.already_predicted} tasks already had one of "
        f"{service.version}, {summary.labelled} labelled tasks left out, {len(summary.failed)} failed "
        f"({time.monotonic() - started:.0f} s)"
    )
    for problem in summary.failed[:20]:
        print(f"  failed: {problem}", file=sys.stderr)
    return 1 if summary.failed else 0
