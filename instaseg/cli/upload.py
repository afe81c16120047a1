"""``instaseg upload LOCAL_DIR URL``: copy a dataset folder to a bucket, skipping files already there."""

from __future__ import annotations

import argparse
import sys

from ..upload import DEFAULT_INCLUDE, upload

HELP = (
    "Copy a dataset folder (images and .json/.txt/.csv annotations) to a bucket or folder; files already "
    "there with the same size and checksum are skipped, so it can be re-run after an interruption."
)

_MB = 1_000_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("local_dir", metavar="LOCAL_DIR", help="folder on this machine to copy")
    parser.add_argument(
        "url",
        metavar="URL",
        help="destination: s3://bucket/prefix (a custom endpoint is set with the "
        "AWS_ENDPOINT_URL_S3 environment variable), another fsspec URL, or a local folder",
    )
    parser.add_argument("--dry-run", action="store_true", help="only say what would be copied")
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar (there is none when stderr is not a terminal)",
    )


def run(args: argparse.Namespace) -> int:
    report = upload(
        args.local_dir,
        args.url,
        include=DEFAULT_INCLUDE,
        progress=not args.no_progress and sys.stderr.isatty(),
        dry_run=args.dry_run,
    )
    for path, reason in report.failed:
        print(f"failed: {path}: {reason}", file=sys.stderr)
    verb = "would copy" if args.dry_run else "copied"
    print(
        f"{verb} {len(report.copied)} files ({report.bytes / _MB:.1f} MB), "
        f"skipped {len(report.skipped)} already there, failed {len(report.failed)}"
    )
    return 1 if report.failed else 0
