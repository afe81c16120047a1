"""``instaseg label-studio-backend CHECKPOINT``: a Label Studio ML backend (see :mod:`instaseg.app.ls_backend`)."""

from __future__ import annotations

import argparse
import os

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
    parser.add_argument(
        "--label-studio-url",
        default=os.environ.get("LABEL_STUDIO_URL"),
        help="Label Studio server for task images when its /setup call sends no hostname "
        "(default: $LABEL_STUDIO_URL)",
    )
    parser.add_argument(
        "--label-studio-token",
        default=os.environ.get("LABEL_STUDIO_API_KEY"),
        help="API token for those images (default: $LABEL_STUDIO_API_KEY)",
    )
    parser.add_argument(
        "--basic-auth",
        metavar="USER:PASSWORD",
        default=os.environ.get("INSTASEG_BACKEND_AUTH"),
        help="require HTTP basic auth, as set in Label Studio's model settings "
        "(default: $INSTASEG_BACKEND_AUTH; none when unset)",
    )
    parser.add_argument("--max-megapixels", type=float, default=50.0, help="larger task images are refused")


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from ..app.ls_backend import create_backend

    credentials = split_credentials(args.basic_auth, "--basic-auth")
    service = load_service(args.checkpoint, args.device)
    app = create_backend(
        service,
        label_studio_url=args.label_studio_url,
        token=args.label_studio_token,
        basic_auth=credentials,
        max_pixels=int(args.max_megapixels * 1e6),
    )
    print(f"instaseg label-studio-backend: {args.checkpoint} on http://{args.host}:{args.port}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
