"""``instaseg serve CHECKPOINT``: the Gradio demo on a loopback port (see :mod:`instaseg.app.gradio_app`)."""

from __future__ import annotations

import argparse
import os

from . import UsageError
from ._common import add_precision_argument, add_tile_argument, parse_tile_argument

HELP = (
    "Serve a trained model (checkpoint or .onnx) as a web demo: drop a photo, compare it before/after, tune "
    "the threshold, classes and style without re-running the model, download the masks and JSON."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "checkpoint",
        metavar="CHECKPOINT",
        help="instaseg checkpoint (.pt), ONNX export (.onnx) or OpenVINO INT8 export (.xml)",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind; 0.0.0.0 exposes the demo to the network"
    )
    parser.add_argument("--port", type=int, default=7860, help="TCP port")
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto (checkpoints only)")
    add_precision_argument(parser)
    parser.add_argument(
        "--max-megapixels",
        type=float,
        default=50.0,
        help="uploads with more pixels are refused with a message",
    )
    add_tile_argument(parser)
    parser.add_argument("--examples", metavar="DIR", default=None, help="folder of example images to offer")
    parser.add_argument(
        "--auth",
        metavar="USER:PASSWORD",
        default=os.environ.get("INSTASEG_SERVE_AUTH"),
        help="require this login (default: $INSTASEG_SERVE_AUTH; none when unset)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=1,
        help="predictions (model runs) at the same time; redraws run beside them",
    )
    parser.add_argument(
        "--max-queue", type=int, default=64, help="requests waiting at most; more are refused"
    )


def split_credentials(value: str | None, flag: str) -> tuple[str, str] | None:
    """``"user:password"`` -> ``("user", "password")``; ``UsageError`` when malformed."""
    if not value:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise UsageError(f"{flag} must be USER:PASSWORD with both parts non-empty")
    return user, password


def load_service(path: str, device: str, tile: str | None = None, precision: str = "auto"):
    """The model behind the demo or the backend; ``tile``: the ``--tile`` text (``UsageError`` when bad);
    ``precision``: the ``--precision`` choice (what runs is printed)."""
    from ..app.service import ModelService
    from ..model.checkpoint import CheckpointError

    if not os.path.isfile(path):
        raise UsageError(
            f"model file {path} not found; pass a checkpoint (best.pt) or an export (.onnx, .xml)"
        )
    tile_config = parse_tile_argument(tile)
    try:
        service = ModelService(path, device=device, tile=tile_config, precision=precision)
    except (CheckpointError, ValueError, OSError) as e:
        raise UsageError(f"cannot load {path}: {e}") from None
    if service.predictor.precision is not None:
        print(f"precision: {service.predictor.precision.reason}", flush=True)
    return service


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a local demo
    from ..app.gradio_app import CSS, build_app
    from ..storage import list_files

    auth = split_credentials(args.auth, "--auth")
    if args.max_megapixels <= 0:
        raise UsageError("--max-megapixels must be positive")
    examples = None
    if args.examples:
        examples = list_files(args.examples, (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"))[:12]
    service = load_service(args.checkpoint, args.device, args.tile, args.precision)
    app = build_app(service, examples=examples, max_pixels=int(args.max_megapixels * 1e6), tile=args.tile)
    app.queue(default_concurrency_limit=args.concurrency, max_size=args.max_queue)
    print(f"instaseg serve: {args.checkpoint} on http://{args.host}:{args.port}", flush=True)
    app.launch(
        server_name=args.host,
        server_port=args.port,
        share=args.share,
        auth=auth,
        show_error=True,
        css=CSS,
        max_file_size="200mb",
        ssr_mode=False,
        inbrowser=False,
        quiet=True,
    )
    return 0
