"""``instaseg pull-label-studio URL --project ID --out DIR``: a project's export and images as a dataset."""

from __future__ import annotations

import argparse
import os
import sys

from . import UsageError
from ._common import add_label_studio_arguments

HELP = (
    "Download a Label Studio project's annotations (JSON export) and images into a dataset folder or bucket."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_label_studio_arguments(parser)
    parser.add_argument("--out", required=True, help="dataset folder or bucket URL to write")
    parser.add_argument(
        "--from-bucket",
        action="store_true",
        help="for a project whose Source Cloud Storage is a bucket (tasks of s3:// or gs:// images): read "
        "the images straight from the bucket with your own credentials (AWS_* variables, ~/.aws, "
        "GOOGLE_APPLICATION_CREDENTIALS; AWS_ENDPOINT_URL_S3 for MinIO and others). Default: through "
        "Label Studio's presign route with --token, no bucket credentials needed",
    )


def run(args: argparse.Namespace) -> int:
    from ..app.ls_client import LabelStudioClient, LabelStudioError
    from ..app.pull import pull_project

    def progress(done: int, total: int) -> None:
        if sys.stderr.isatty():
            print(f"\rimages: {done}/{total} tasks", end="", file=sys.stderr, flush=True)

    if not args.token:
        raise UsageError("a Label Studio API token is needed: --token or $LABEL_STUDIO_API_KEY")
    try:
        client = LabelStudioClient(args.url, args.token)
        result = pull_project(client, args.project, args.out, progress, args.from_bucket)
    except LabelStudioError as e:
        raise UsageError(str(e)) from None
    if sys.stderr.isatty():
        print(file=sys.stderr)
    print(f"{result.tasks} tasks, {result.images} images -> {result.export}")
    for source, count in result.sources.items():
        print(f"  {count} images {source}")
    if result.kept:
        print(f"  {result.kept} images already in the folder, kept")
    for problem in result.failed[:20]:
        print(f"  not downloaded: {problem}", file=sys.stderr)
    if result.failed:
        print(f"{len(result.failed)} images not downloaded", file=sys.stderr)
    print(f"next: instaseg check {result.export} --images {os.path.dirname(result.export) or '.'}")
    return 1 if result.failed else 0
