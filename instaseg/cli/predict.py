"""``instaseg predict``: run a trained model over images, folders, globs or buckets and write masked outputs."""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from ..model.config import DEVICES, ENGINES
from ..predict import SAVE_KINDS, check_save_kinds

HELP = "Predict instances on images, folders, globs or bucket URLs; write overlays, masks and JSON."

# PIL modes decoded without conversion; others are converted (reported as a note, not a failure).
_PLAIN_MODES = ("RGB", "RGBA")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "checkpoint", metavar="CHECKPOINT", help="instaseg checkpoint (.pt) or ONNX export (.onnx)"
    )
    parser.add_argument(
        "inputs",
        metavar="INPUT",
        nargs="+",
        help="image file, folder (recursive), glob ('photos/*.jpg', quoted) or bucket URL",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (path or bucket URL)")
    parser.add_argument(
        "--save",
        default="overlay,json",
        metavar="KINDS",
        help=f"comma-separated outputs: {', '.join(SAVE_KINDS)}",
    )
    parser.add_argument("--score-threshold", type=float, default=0.5, help="minimum score of a kept instance")
    parser.add_argument(
        "--mask-threshold",
        type=float,
        default=None,
        help="mask probability that counts as object (default: the checkpoint's, 0.5)",
    )
    parser.add_argument(
        "--classes", default=None, metavar="NAMES", help="comma-separated class names to keep"
    )
    parser.add_argument(
        "--max-detections",
        type=int,
        default=None,
        help="most instances per image (default: the checkpoint's)",
    )
    parser.add_argument("--batch-size", type=int, default=1, help="images per forward pass")
    parser.add_argument(
        "--device",
        default="auto",
        help=f"{', '.join(DEVICES)} or cuda:N (torch engine; auto: CUDA, then MPS, else CPU)",
    )
    parser.add_argument(
        "--engine",
        default=None,
        choices=ENGINES,
        help="torch (a .pt checkpoint) or onnx (ONNX Runtime; default for a .onnx file)",
    )
    parser.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="longest side the model sees (default: the training size)",
    )
    parser.add_argument(
        "--proposals",
        type=int,
        default=None,
        help="RPN proposals kept at test time (default 1000, as torchvision; fewer are faster on images with few objects)",
    )
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    parser.add_argument(
        "--resume", action="store_true", help="skip images whose outputs already exist in --out"
    )
    ls = parser.add_argument_group("label-studio output")
    ls.add_argument("--ls-brush", action="store_true", help="brush RLE masks instead of polygons")
    ls.add_argument("--ls-from-name", default="label", help="name of the labels tag in the labeling config")
    ls.add_argument("--ls-to-name", default="image", help="name of the Image tag in the labeling config")
    ls.add_argument(
        "--ls-image-prefix",
        default=None,
        metavar="URL",
        help="task image = this prefix + the image's relative name (default: its location)",
    )


def _parse_save(value: str) -> list[str]:
    from . import UsageError

    try:
        return check_save_kinds([k.strip() for k in value.split(",") if k.strip()])
    except ValueError as e:
        raise UsageError(f"--save: {e}") from None


def _load(location: str):
    """``(pixels RGB uint8 (H, W, 3), note or None)``; ``ImageError`` when unreadable or undecodable."""
    from .. import storage
    from ..images import ImageError, decode_image, read_header

    try:
        data = storage.read_bytes(location)
    except Exception as e:  # missing file, unreachable host or bucket, permission
        raise ImageError(f"{location}: cannot read ({type(e).__name__}: {e})") from None
    mode = read_header(data, location).mode
    pixels = decode_image(data, location)
    note = None if mode in _PLAIN_MODES else f"{mode} image converted to 8-bit RGB"
    return pixels, note


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from .. import distributed, storage
    from ..model.predictor import DEFAULT_PROPOSALS, Predictor
    from ..predict.inputs import expand_inputs
    from ..predict.outputs import LabelStudioOptions, OutputWriter
    from . import UsageError

    kinds = _parse_save(args.save)
    try:
        storage.check_output_folder(args.out, "--out")
    except storage.OutputError as e:
        raise UsageError(str(e)) from None
    if args.batch_size < 1:
        raise UsageError("--batch-size must be >= 1")
    # Under torchrun (docs/distributed.md) each process predicts every N-th image on its own GPU/cores.
    context = distributed.init_distributed(args.device if args.engine != "onnx" else "cpu")
    if context is not None and args.engine != "onnx":
        args = argparse.Namespace(**{**vars(args), "device": str(context.device)})
    main = context is None or context.is_main
    threads = args.threads or distributed.cpu_threads()
    torch.set_num_threads(threads)
    predictor = _make_predictor(Predictor, args, DEFAULT_PROPOSALS, threads)
    label_studio = LabelStudioOptions(
        brush=args.ls_brush,
        from_name=args.ls_from_name,
        to_name=args.ls_to_name,
        image_prefix=args.ls_image_prefix,
        model_version=os.path.basename(args.checkpoint),
    )
    writer = OutputWriter(args.out, kinds, predictor.class_map, label_studio)

    images, problems = expand_inputs(args.inputs)
    failures = list(problems)
    mine = context.shard(images) if context else images
    todo = [im for im in mine if not (args.resume and writer.is_done(im))]
    skipped = len(mine) - len(todo)
    if skipped:
        print(f"resume: {skipped} of {len(images)} images already done in {args.out}", file=sys.stderr)

    start = time.perf_counter()
    bar = tqdm(
        total=len(todo), unit="img", desc="predicting", file=sys.stderr, disable=None if main else True
    )
    done, instances_total, more, notes = _predict_all(predictor, writer, todo, args.batch_size, bar)
    failures += more
    bar.close()
    if context is not None:  # all ranks' counts; every part file is written once this returns
        gathered = context.all_gather((done, skipped, instances_total, failures[len(problems) :], notes))
        done, skipped, instances_total = (sum(g[i] for g in gathered) for i in range(3))
        failures = list(problems) + [f for g in gathered for f in g[3]]
        notes = [n for g in gathered for n in g[4]]
    written = writer.finish(images) if main else {}
    elapsed = time.perf_counter() - start
    if main:
        _summary(done, skipped, failures, notes, instances_total, elapsed, args.out, written)
    distributed.shutdown(context)
    return 1 if failures else 0


def _predict_all(predictor, writer, todo: list, batch_size: int, bar) -> tuple[int, int, list, list[str]]:
    """Predict and write ``todo`` in batches, decoding the next images in a background thread while the model
    runs (PIL and OpenCV release the GIL). A bad image or a failed write is reported and skipped.

    Returns ``(images done, instances written, failures as (location, message), notes)``.
    """
    from ..images import ImageError

    done = instances_total = 0
    failures: list[tuple[str, str]] = []
    notes: list[str] = []
    with ThreadPoolExecutor(max_workers=1) as pool:
        loads = [pool.submit(_load, im.location) for im in todo[: batch_size * 2]]
        for first in range(0, len(todo), batch_size):
            batch = todo[first : first + batch_size]
            ahead = todo[len(loads) : len(loads) + batch_size]
            loads.extend(pool.submit(_load, im.location) for im in ahead)
            ready = []
            for k, image in enumerate(batch):
                try:
                    pixels, note = loads[first + k].result()
                    loads[first + k] = None  # free the pixels once used
                    ready.append((image, pixels))
                    if note:
                        notes.append(f"{image.location}: {note}")
                except ImageError as e:
                    failures.append((image.location, str(e)))
                    bar.write(f"failed: {e}", file=sys.stderr)
            try:
                predictions = predictor.predict_arrays([p for _, p in ready]) if ready else []
            except (RuntimeError, ValueError) as e:  # e.g. out of memory on one batch: report, go on
                failures.extend((image.location, f"prediction failed: {e}") for image, _ in ready)
                predictions, ready = [], []
            for (image, pixels), instances in zip(ready, predictions, strict=True):
                try:
                    writer.write(image, pixels, instances)
                    done += 1
                    instances_total += len(instances)
                except (OSError, ValueError) as e:
                    failures.append((image.location, f"cannot write outputs: {e}"))
                    bar.write(f"failed: {image.location}: cannot write outputs: {e}", file=sys.stderr)
            bar.update(len(batch))
            bar.set_postfix(ok=done, failed=len(failures))
    return done, instances_total, failures, notes


def _make_predictor(predictor_type, args, default_proposals: int, threads: int):
    from ..model.checkpoint import CheckpointError
    from . import UsageError

    classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None
    try:
        return predictor_type(
            args.checkpoint,
            device=args.device,
            score_threshold=args.score_threshold,
            mask_threshold=args.mask_threshold,
            max_detections=args.max_detections,
            image_size=args.image_size,
            classes=classes,
            proposals=args.proposals or default_proposals,
            engine=args.engine,
            threads=threads,
        )
    except (KeyError, ValueError) as e:
        raise UsageError(str(e).strip("'\"")) from None
    except CheckpointError as e:  # not found, corrupt, another format
        raise UsageError(str(e)) from None


def _summary(done, skipped, failures, notes, instances_total, elapsed, out, written) -> None:
    rate = f", {elapsed / done:.2f} s/image" if done else ""
    print(
        f"predicted {done} image(s), {instances_total} instance(s){rate}; "
        f"{skipped} skipped (already done), {len(failures)} failed; outputs in {out}"
    )
    for kind, location in written.items():
        print(f"  {kind}: {location}")
    for note in notes:
        print(f"  note: {note}")
    if failures:
        print(f"{len(failures)} failure(s):", file=sys.stderr)
        for location, message in failures:
            print(
                f"  {message}" if message.startswith(location) else f"  {location}: {message}",
                file=sys.stderr,
            )
