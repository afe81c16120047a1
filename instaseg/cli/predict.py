"""``instaseg predict``: run a trained model over images, folders, globs or buckets and write masked outputs."""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from ..model.config import DEVICES, ENGINES
from ..predict import SAVE_KINDS, check_save_kinds
from ._common import (
    add_lanes_argument,
    add_precision_argument,
    add_tile_argument,
    lanes_line,
    parse_tile_argument,
    set_lanes,
)

HELP = "Predict instances on images, folders, globs or bucket URLs; write overlays, masks and JSON."

# PIL modes decoded without conversion; others are converted (reported as a note, not a failure).
_PLAIN_MODES = ("RGB", "RGBA")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "checkpoint",
        metavar="CHECKPOINT",
        help="instaseg checkpoint (.pt), ONNX export (.onnx) or OpenVINO INT8 export (.xml)",
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
    parser.add_argument(
        "--score-threshold",
        type=float,
        default=0.5,
        help="minimum score of a kept instance (default 0.5, for outputs a person looks at; a checkpoint "
        "has its own, lower threshold, 0.05 from train, down to which evaluate scores detections: the "
        "summary names it when it differs)",
    )
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
        help="torch (a .pt checkpoint), onnx (ONNX Runtime; default for a .onnx file) or openvino (the default "
        "for an .xml from `export --format openvino-int8`; or a .pt "
        "checkpoint converted by OpenVINO for the CPU: half a minute or more the first time, then read from "
        "~/.cache/instaseg/openvino; bf16 where the CPU has it, with the mask RoIAlign in float32 for parity; "
        "on a Zen 4 with bf16 0.7-0.85x the speed of torch's default path; needs pip install "
        "'instaseg[openvino]')",
    )
    add_precision_argument(parser)
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
    add_tile_argument(parser)
    parser.add_argument(
        "--tta",
        default=None,
        choices=["flip"],
        help="test-time augmentation: flip also predicts the mirror image and merges both by mask overlap "
        "(twice the time); scores are averaged over the two views (an object one view missed gets half its "
        "score) before --score-threshold applies",
    )
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    add_lanes_argument(parser)
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
    from ..images import decode_image, read_header, read_image_bytes

    data = read_image_bytes(location)
    mode = read_header(data, location).mode
    pixels = decode_image(data, location)
    note = None if mode in _PLAIN_MODES else f"{mode} image converted to 8-bit RGB"
    return pixels, note


def run(args: argparse.Namespace) -> int:
    from .. import storage
    from ..predict.inputs import expand_inputs
    from . import UsageError

    kinds = _parse_save(args.save)
    tile = parse_tile_argument(args.tile)
    try:
        storage.check_output_folder(args.out, "--out")
    except storage.OutputError as e:
        raise UsageError(str(e)) from None
    if args.batch_size < 1:
        raise UsageError("--batch-size must be >= 1")
    if args.lanes is not None and args.lanes < 1:
        raise UsageError("--lanes must be >= 1")
    images, problems, input_notes = expand_inputs(args.inputs)
    # The first images are read and decoded while torch is imported and the model loads (PIL and OpenCV
    # release the GIL), so that one photo is ready when the model is. Not under torchrun, where each
    # process takes its own share (distributed.launched() would import torch first), nor with --resume.
    loader = ThreadPoolExecutor(max_workers=1)
    early = {}
    if not args.resume and int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        early = {im.location: loader.submit(_load, im.location) for im in images[: args.batch_size]}
    try:
        return _run(args, kinds, tile, (images, problems, input_notes), loader, early)
    finally:
        loader.shutdown(wait=True, cancel_futures=True)


def _run(args, kinds, tile, inputs, loader, early) -> int:
    import torch
    from tqdm import tqdm

    from .. import distributed
    from ..model.predictor import DEFAULT_PROPOSALS, Predictor, default_engine

    # Under torchrun (docs/distributed.md) each process predicts every N-th image on its own GPU/cores.
    cpu_only = (args.engine or default_engine(args.checkpoint)) in ("onnx", "openvino")
    context = distributed.init_distributed("cpu" if cpu_only else args.device)
    if context is not None and not cpu_only:
        args = argparse.Namespace(**{**vars(args), "device": str(context.device)})
    main = context is None or context.is_main
    images, problems, input_notes = inputs
    threads = args.threads or distributed.cpu_threads()
    torch.set_num_threads(threads)
    predictor = _make_predictor(Predictor, args, DEFAULT_PROPOSALS, threads, tile)
    failures = list(problems)
    mine = context.shard(images) if context else images
    writer = _writer(args, kinds, predictor)
    todo = [im for im in mine if not (args.resume and writer.is_done(im))]
    lanes, per_lane = set_lanes(predictor, -(-len(todo) // args.batch_size), threads, args.lanes)
    if main:
        _startup_notes(args, predictor, lanes_line(lanes, per_lane), tile)
    skipped = len(mine) - len(todo)
    if skipped:
        print(f"resume: {skipped} of {len(images)} images already done in {args.out}", file=sys.stderr)

    start = time.perf_counter()
    bar = tqdm(
        total=len(todo), unit="img", desc="predicting", file=sys.stderr, disable=None if main else True
    )
    done, instances_total, more, notes = _predict_all(
        predictor, writer, todo, (args.batch_size, lanes), bar, loader, early
    )
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
        notes = input_notes + notes
        notes.append(_threshold_note(args.score_threshold, predictor.model_config.score_threshold))
        _summary(
            done, skipped, failures, [n for n in notes if n], instances_total, elapsed, args.out, written
        )
    distributed.shutdown(context)
    return 1 if failures else 0


def _predict_all(
    predictor, writer, todo: list, shape: tuple[int, int], bar, loader, early: dict
) -> tuple[int, int, list, list[str]]:
    """Predict and write ``todo`` in batches, ``shape`` = (batch size, lanes): up to ``lanes`` batches are
    predicted at once (:func:`~instaseg.model.lanes.in_lanes`), the next images are decoded in ``loader``'s
    thread and the last batch's outputs written in another while the model runs (PIL, OpenCV and zlib
    release the GIL). ``early``: location -> load already started. A bad image or a failed write is reported
    and skipped.

    Returns ``(images done, instances written, failures as (location, message), notes)``.
    """
    from ..model.lanes import in_lanes

    batch_size, lanes = shape
    counts = [0, 0]  # images done, instances written
    failures: list[tuple[str, str]] = []
    notes: list[str] = []
    writing: list = []  # (image, future, instances) of the batch being written

    def predict(loaded: tuple[list, list]) -> list:
        ready = loaded[1]
        return predictor.predict_arrays([p for _, p in ready]) if ready else []

    loaded = _loaded_batches(todo, batch_size, loader, early, (failures, notes), bar)
    with ThreadPoolExecutor(max_workers=1) as writes:
        for (batch, ready), predicted in in_lanes(predict, loaded, lanes):
            try:
                predictions = predicted.result()
            except (RuntimeError, ValueError) as e:  # e.g. out of memory on one batch: report, go on
                failures.extend((image.location, f"prediction failed: {e}") for image, _ in ready)
                predictions, ready = [], []
            _finish_writes(writing, counts, failures, bar)  # the previous batch's, before queueing more
            writing = [
                (image, writes.submit(writer.write, image, pixels, instances), len(instances))
                for (image, pixels), instances in zip(ready, predictions, strict=True)
            ]
            bar.update(len(batch))
            bar.set_postfix(ok=counts[0], failed=len(failures))
        _finish_writes(writing, counts, failures, bar)
    return counts[0], counts[1], failures, notes


def _loaded_batches(todo: list, batch_size: int, loader, early: dict, reports: tuple[list, list], bar):
    """``(batch, [(image, pixels)])`` for each batch of ``todo``, its images decoded in ``loader``'s thread
    two batches ahead; an image that cannot be read goes to ``reports[0]`` (failures) and is left out,
    a conversion note to ``reports[1]``."""
    from ..images import ImageError

    failures, notes = reports
    loads = [
        early.pop(im.location, None) or loader.submit(_load, im.location) for im in todo[: batch_size * 2]
    ]
    for first in range(0, len(todo), batch_size):
        batch = todo[first : first + batch_size]
        ahead = todo[len(loads) : len(loads) + batch_size]
        loads.extend(loader.submit(_load, im.location) for im in ahead)
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
        yield batch, ready


def _finish_writes(writing: list, counts: list[int], failures: list, bar) -> None:
    """Wait for queued writes; count the images written, report the failed ones."""
    for image, future, instances in writing:
        try:
            future.result()
            counts[0] += 1
            counts[1] += instances
        except (OSError, ValueError) as e:
            failures.append((image.location, f"cannot write outputs: {e}"))
            bar.write(f"failed: {image.location}: cannot write outputs: {e}", file=sys.stderr)


def _startup_notes(args, predictor, lanes: str | None, tile) -> None:
    """What runs, printed before the images: precision, the INT8 note, the lanes line, whether tiles apply."""
    if predictor.precision is not None:
        print(f"precision: {predictor.precision.reason}", file=sys.stderr)
        note = _int8_note(args, predictor)
        if note:
            print(note, file=sys.stderr)
    if lanes:
        print(lanes, file=sys.stderr)
    if tile is not None and tile.size is None and predictor.model_config.crop_size is None:
        print(
            "--tile auto: this model was trained on whole images, not on crops (train --crop), so images "
            "are predicted whole; give --tile SIZE to tile them anyway",
            file=sys.stderr,
        )


def _writer(args, kinds: list[str], predictor):
    from ..predict.outputs import LabelStudioOptions, OutputWriter

    label_studio = LabelStudioOptions(
        brush=args.ls_brush,
        from_name=args.ls_from_name,
        to_name=args.ls_to_name,
        image_prefix=args.ls_image_prefix,
        model_version=os.path.basename(args.checkpoint),
    )
    return OutputWriter(args.out, kinds, predictor.class_map, label_studio)


def _make_predictor(predictor_type, args, default_proposals: int, threads: int, tile=None):
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
            tile=tile,
            tta=args.tta,
            precision=args.precision,
        )
    except (KeyError, ValueError) as e:
        raise UsageError(str(e).strip("'\"")) from None
    except CheckpointError as e:  # not found, corrupt, another format
        raise UsageError(str(e)) from None


def _int8_note(args, predictor, flags: frozenset[str] | None = None) -> str:
    """A note for a checkpoint run in fp32 by ``--precision auto`` on a CPU with INT8 dot products (VNNI) and
    without native bf16, where an INT8 export can be faster ('' otherwise). ``flags``: the CPU's (``None``
    reads this machine's)."""
    from ..model.cpu_features import int8_without_bf16, read_cpu_flags

    precision = predictor.precision
    if args.precision != "auto" or predictor.engine_name != "torch" or precision.device_type != "cpu":
        return ""
    found = int8_without_bf16(read_cpu_flags() if flags is None else flags)
    if precision.name != "fp32" or not found:
        return ""
    return (
        f"note: this CPU has INT8 dot products ({', '.join(found)}) but no native bf16, so the model runs "
        f"fp32; an INT8 export may run faster here (1.65x torch fp32 on a Zen 4 standing in for such a CPU; "
        f"README: ONNX, OpenVINO and fast CPU inference): instaseg export {args.checkpoint} --format "
        "openvino-int8"
    )


def _threshold_note(used: float, checkpoint: float) -> str:
    """The summary's note when ``--score-threshold`` differs from the checkpoint's own ('' otherwise)."""
    if used == checkpoint:
        return ""
    return (
        f"kept instances scoring >= {used:g} (--score-threshold); the checkpoint's own threshold is "
        f"{checkpoint:g} (evaluate scores the detections down to it): "
        f"--score-threshold {checkpoint:g} shows what it would add"
    )


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
