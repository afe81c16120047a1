"""``instaseg label-config``: print a Label Studio labeling config for a model's or a dataset's classes."""

from __future__ import annotations

import argparse

HELP = (
    "Print a Label Studio labeling config: the brush or polygon control the backend fills, with smart "
    "(interactive) box and click tools beside it, for --classes or a checkpoint's classes."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--classes", help="class names, comma-separated (e.g. cat,dog)")
    source.add_argument("--checkpoint", metavar="CKPT", help="an instaseg checkpoint: its class names")
    parser.add_argument(
        "--control",
        choices=("brush", "polygon"),
        default="brush",
        help="what the backend writes: brush masks (RLE) or polygons",
    )
    parser.add_argument(
        "--image-key", default="image", help="the task data key holding the image URL ($image)"
    )


def run(args: argparse.Namespace) -> int:
    from ..app.ls_protocol import label_config_xml, parse_label_config
    from . import UsageError

    if args.checkpoint is not None:
        from ..model.checkpoint import check_header, read_checkpoint

        class_map, _ = check_header(read_checkpoint(args.checkpoint), args.checkpoint)
        classes = list(class_map.names)
    else:
        classes = args.classes.split(",")
    if not args.image_key.isidentifier():
        raise UsageError(f"--image-key must be a plain name such as image, got {args.image_key!r}")
    try:
        config = label_config_xml(classes, args.control, args.image_key)
    except ValueError as e:
        raise UsageError(f"--classes: {e}") from None
    parse_label_config(config)  # what the backend reads back from the project
    print(config, end="")
    return 0
