"""``instaseg`` command line: one module per command under ``instaseg/cli/``.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.
Commands are imported only when used, so ``instaseg --help`` does not load torch.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from ..problems import DatasetError

# Set to 1 to see the Python traceback of an unexpected error instead of its one-line message.
DEBUG_VARIABLE = "INSTASEG_DEBUG"

# Command name -> module under instaseg.cli. Listed explicitly; the order is the order of `--help`.
COMMANDS: dict[str, str] = {
    "check": "check",
    "convert": "convert",
    "split": "split",
    "upload": "upload",
    "train": "train",
    "evaluate": "evaluate",
    "predict": "predict",
    "export": "export",
    "serve": "serve",
    "label-studio-backend": "label_studio_backend",
    "label-config": "label_config",
    "label-studio-predict": "label_studio_predict",
    "pull-label-studio": "pull_label_studio",
    "quickstart": "quickstart",
}


class UsageError(Exception):
    """A command-line value that cannot be used; printed without a traceback, exit status 2."""


def build_parser(commands: dict[str, object]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="instaseg",
        description="From annotated photos to a custom instance-segmentation model (Mask R-CNN), "
        "masked images and a web demo. Every path may be a local path or a bucket URL (s3://, gs://, ...).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in commands.items():
        p = sub.add_parser(
            name,
            help=module.HELP,
            description=module.HELP,
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )
        module.add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Import only the command asked for (and all of them for --help / unknown commands).
    wanted = [a for a in argv if not a.startswith("-")][:1]
    names = wanted if wanted and wanted[0] in COMMANDS else list(COMMANDS)
    modules = {n: importlib.import_module(f"instaseg.cli.{COMMANDS[n]}") for n in names}
    args = build_parser(modules).parse_args(argv)
    try:
        return int(modules[args.command].run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # the one boundary: a person gets one line, never a traceback
        if os.environ.get(DEBUG_VARIABLE) == "1":
            raise
        print(f"instaseg {args.command}: error: {describe_error(e)}", file=sys.stderr)
        return 2


def describe_error(error: BaseException) -> str:
    """One line for a person: the message of instaseg's own errors, a plain description of the others."""
    if isinstance(error, DatasetError | UsageError):
        return str(error)
    message = " ".join(str(error).split())[:500]
    if isinstance(error, MemoryError):
        return "out of memory; the input is too large for this machine (or malformed: check it)"
    if isinstance(error, RecursionError):
        return "the input is nested too deeply to be read (malformed or hostile file)"
    if isinstance(error, OSError):
        where = f" ({error.filename})" if getattr(error, "filename", None) else ""
        return f"{error.strerror or message}{where}"
    known = type(error).__module__.startswith("instaseg")  # CheckpointError, WeightsError, ImageError...
    if known or isinstance(error, ValueError):
        return message or type(error).__name__
    return (
        f"unexpected {type(error).__name__}: {message} (a bug in instaseg or an input it does not expect; "
        f"set {DEBUG_VARIABLE}=1 to see the traceback and report it)"
    )


if __name__ == "__main__":
    sys.exit(main())
