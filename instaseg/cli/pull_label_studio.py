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


def run(args: argparse.Namespace) -> int:
    from ..app.ls_client import LabelStudioClient, LabelStudioError
    from ..app.pull import pull_project

    if not args.token:
        raise UsageError("a Label Studio API token is needed: --token or $LABEL_STUDIO_API_KEY")
    try:
        client = LabelStudioClient(args.url, args.token)
        result = pull_project(client, args.project, args.out)
    except LabelStudioError as e:
        raise UsageError(str(e)) from None
    print(f"{result.tasks} tasks, {result.images} images -> {result.export}")
    for problem in result.failed[:20]:
        print(f"  not downloaded: {problem}", file=sys.stderr)
    if result.failed:
        print(f"{len(result.failed)} images not downloaded", file=sys.stderr)
    print(f"next: instaseg check {result.export} --images {os.path.dirname(result.export) or '.'}")
    return 1 if result.failed else 0
