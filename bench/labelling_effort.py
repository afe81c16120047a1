"""The labelling loop as a person lives it: how many actions it spares them, batch after batch.

A simulated labeller works through the images of a dataset with ground truth (the DSB nuclei sample by
default; any COCO / Label Studio export or other format ``instaseg.formats.load`` reads), ``--batch``
images at a time, in the loop's order (most uncertain first, :mod:`instaseg.app.uncertainty`, as the Data
Manager sorted by prediction score shows them) or at random (``--order random``):

1. before each batch the served model pre-annotates its images, showing the regions that score at least the
   served round's pre-annotation threshold (chosen by the round on its validation images);
2. the labeller acts as the effort model (:mod:`instaseg.app.effort`) says, with these fixed constants:
   accept a pre-annotated region of mask IoU >= 0.75 with an object (0 actions, one-to-one); else the smart
   box (2 actions: the object's tight box, answered by the served model's mask head through
   ``instaseg.model.prompts.ImagePrompts``) accepted at IoU >= 0.75; else a polygon (one action per vertex
   of the object's outer contour simplified with ``cv2.approxPolyDP`` at 1 px, at least 4 per part); and
   delete every pre-annotated region not accepted (1 action each). "By hand" is the same images with
   neither pre-annotations nor smart box;
3. after each batch a training round of the loop's own code (:meth:`RoundRunner.run_on_data
   <instaseg.app.rounds.RoundRunner.run_on_data>`: what ``label-studio-backend --train-on-annotations`` runs,
   its fixed validation split, ``--round-minutes`` budget and promotion rule) trains on every image labelled
   so far, from a Label Studio JSON export of them, without a Label Studio server.

The first batch has no model to help (unless ``--model``): it is drawn by hand, and the first model is
trained from scratch on it with ``instaseg train``'s automatic recipe within ``--round-minutes``, as a person
starts the loop; its pre-annotation threshold is chosen on its validation images as a round would. A fixed
held-out part of the dataset (``--held-out``, never labelled) measures the mask AP of each served model.

It prints a row per batch and a closing line ``loop: X actions/object vs Y by hand (Z times fewer) over N
images``, and the batch from which the smart box's median IoU is at least 0.80. That median ("smart IoU")
is over every object of the batch (the tool's quality: its answer to each object's tight box); the actions
count it only on the objects the pre-annotations left (``smart_median_iou`` in ``--json``).

Run: ``.venv/bin/python bench/labelling_effort.py`` (about ``batches x (round minutes + 1)`` minutes;
alone on the machine for figures to report). A smoke run: ``--batch 2 --batches 2 --limit 4 --held-out 2
--round-epochs 1``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DSB = REPO.parent / "shared" / "datasets" / "dsb2018_nuclei_sample"
SMART_IOU_GOAL = 0.80


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The module docstring as it is written, and each option's default."""


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=_HelpFormatter)
    parser.add_argument("data", nargs="?", default=str(DSB), help="dataset with ground truth (default: DSB)")
    parser.add_argument("--images", help="image folder of an export whose paths do not lead to the images")
    parser.add_argument("--format", help="the dataset's format (default: detected)")
    parser.add_argument("--batch", type=int, default=5, help="images labelled between two rounds")
    parser.add_argument(
        "--batches", type=int, default=None, help="stop after this many batches (default: all)"
    )
    parser.add_argument(
        "--order",
        choices=("uncertainty", "random"),
        default="uncertainty",
        help="most uncertain first (the served model's, as Label Studio sorts by prediction score), or random",
    )
    parser.add_argument("--held-out", type=float, default=0.2, help="held-out share (< 1) or image count")
    parser.add_argument("--limit", type=int, default=None, help="use at most this many images to label")
    parser.add_argument("--round-minutes", type=float, default=3.0, help="training budget of each round")
    parser.add_argument("--round-epochs", type=int, default=20, help="most epochs of each round")
    parser.add_argument("--train-args", default="", help='more `instaseg train` options, e.g. "--workers 0"')
    parser.add_argument("--model", help="a checkpoint to start from (default: trained on the first batch)")
    parser.add_argument("--no-smart-box", action="store_true", help="pre-annotations only")
    parser.add_argument("--device", default="cpu", help="device of the rounds and predictions")
    parser.add_argument("--seed", type=int, default=0, help="seed of the held-out choice and random order")
    parser.add_argument("--workdir", help="keep the rounds here (default: a temporary folder)")
    parser.add_argument("--json", help="write the rows and the summary here")
    args = parser.parse_args(argv)
    if args.batch < 1 or (args.batches is not None and args.batches < 1):
        parser.error("--batch and --batches must be at least 1")
    if args.round_minutes <= 0 or args.round_epochs < 1:
        parser.error("--round-minutes and --round-epochs must be positive")
    return args


def prepare_records(args: argparse.Namespace, folder: Path):
    """``(class map, pool, held_out)``: the dataset's records with images, labels renumbered in sorted
    class-name order (what a Label Studio JSON export imports to) and images linked into ``folder`` under
    unique flat names (what the round's export names them)."""
    from instaseg import storage
    from instaseg.core import ClassMap
    from instaseg.formats.load import load_dataset
    from instaseg.problems import DatasetError

    try:
        dataset = load_dataset(args.data, args.images, args.format)
    except DatasetError as e:
        raise SystemExit(f"labelling_effort: {e}") from None
    names = sorted(dataset.class_map.names)
    class_map = ClassMap(tuple(names))
    relabel = {dataset.class_map.label(n): class_map.label(n) for n in names}
    folder.mkdir(parents=True, exist_ok=True)
    records, taken = [], set()
    for record in dataset.records:
        if record.image is None or record.width == 0:
            continue
        name = os.path.basename(record.file_name)
        name = name if name not in taken else f"{record.image_id}_{name}"
        taken.add(name)
        target = folder / name
        if not target.exists():
            if os.path.isfile(record.image):
                target.symlink_to(os.path.abspath(record.image))
            else:
                target.write_bytes(storage.read_bytes(record.image))
        annotations = [dataclasses.replace(a, label=relabel[a.label]) for a in record.annotations]
        records.append(
            dataclasses.replace(record, image=str(target), file_name=name, annotations=annotations)
        )
    if not any(a.has_mask for r in records for a in r.annotations):
        raise SystemExit(f"{args.data}: no object has a mask; the effort model compares masks")
    order = np.random.default_rng(args.seed).permutation(len(records))
    held = int(args.held_out) if args.held_out >= 1 else int(round(args.held_out * len(records)))
    held_out = [records[i] for i in sorted(order[:held])]
    pool = [records[i] for i in sorted(order[held:])][: args.limit]
    if len(pool) < 2 or not held_out:
        raise SystemExit(f"{len(pool)} images to label and {len(held_out)} held out: need 2 and 1 at least")
    return class_map, pool, held_out


def write_export(records, class_map, path: Path) -> set[str]:
    """A Label Studio JSON export (brush RLE, exact masks) of ``records``; returns the class names used."""
    from instaseg.formats.labelstudio_export import instances_to_label_studio_regions

    names = dict(enumerate(class_map.names, start=1))
    tasks = []
    for number, record in enumerate(records, start=1):
        regions = instances_to_label_studio_regions(
            record.instances(), names, "brushlabels", "label", "image"
        )
        for region in regions:
            region.pop("score")
        annotation = {"id": number, "result": regions, "was_cancelled": False}
        tasks.append({"id": number, "data": {"image": record.file_name}, "annotations": [annotation]})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(tasks))
    return {class_map.name(a.label) for r in records for a in r.annotations}


def split_files(records, split, folder: Path) -> tuple[Path, dict[str, list[str]]]:
    """``folder/splits.json`` of the loop's fixed split (:class:`~instaseg.app.loop_data.FixedSplit`)."""
    assigned = split.assign([r.file_name for r in records])
    names = {s: sorted(n for n, v in assigned.items() if v == s) for s in ("train", "val")}
    path = folder / "splits.json"
    path.write_text(json.dumps({**names, "test": []}))
    return path, names


def train_first_model(records, class_map, folder: Path, images: Path, args) -> Path:
    """``instaseg train`` from scratch (automatic recipe) on the first labelled images, split by
    ``folder/splits.json``: the first served model."""
    from instaseg.formats.coco_export import records_to_coco

    numbered = [dataclasses.replace(r, image_id=i) for i, r in enumerate(records, start=1)]
    (folder / "labelled.json").write_text(json.dumps(records_to_coco(numbered, class_map)))
    splits = folder / "splits.json"
    command = [sys.executable, "-m", "instaseg", "train", str(folder / "labelled.json"), "--format", "coco"]
    command += ["--images", str(images), "--splits", str(splits), "--out", str(folder / "train")]
    command += ["--minutes", str(args.round_minutes), "--epochs", str(args.round_epochs), "--select", "map"]
    command += ["--no-download", "--device", args.device, "--seed", "0", *args.train_args.split()]
    with open(folder / "train.log", "w") as log:
        code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO).returncode
    best = folder / "train" / "best.pt"
    if code != 0 or not best.is_file():
        raise SystemExit(f"training the first model failed (status {code}); see {folder / 'train.log'}")
    return best


@dataclasses.dataclass
class Served:
    """The model serving a batch: its predictor, pre-annotation threshold and where it came from."""

    checkpoint: Path
    predictor: object
    threshold: float
    version: str


def serve(checkpoint: Path, version: str, threshold: float | None, device: str, val_records=()) -> Served:
    """Load ``checkpoint``; without a round's ``threshold``, choose it on ``val_records`` as a round does."""
    from instaseg.app.round_evaluation import pre_annotation_choice
    from instaseg.evaluate.evaluator import predict_records
    from instaseg.model.predictor import Predictor

    predictor = Predictor(checkpoint, device=device)
    if threshold is None and val_records:
        threshold = pre_annotation_choice(
            val_records, predict_records(predictor, val_records), predictor.score_threshold
        )["threshold"]
    return Served(
        checkpoint, predictor, predictor.score_threshold if threshold is None else threshold, version
    )


def smart_box_of(served: Served, image: np.ndarray):
    """The smart box answered by the served model's mask head for given boxes (``ImagePrompts.boxes``);
    the image's features are computed on the first call only, when some object is left to prompt."""
    from instaseg.model.prompts import ImagePrompts

    prompts = []

    def smart_box(boxes: np.ndarray, labels: np.ndarray):
        if not prompts:
            prompts.append(ImagePrompts(served.predictor, image))
        return prompts[0].boxes(boxes, [int(label) for label in labels])

    return smart_box


def label_batch(batch, predictions, served: Served | None, smart: bool):
    """The :class:`~instaseg.app.effort.Effort` of labelling ``batch`` (records) with ``served``'s help."""
    from instaseg.app.effort import Effort, ImageEffort
    from instaseg.images import load_image

    total = Effort()
    for record in batch:
        truth = record.instances()
        if served is None:
            total = total + ImageEffort(truth, None).count()
            continue
        smart_box = smart_box_of(served, load_image(record.image)) if smart else None
        total = total + ImageEffort(truth, predictions[record.file_name]).count(served.threshold, smart_box)
    return total


def predict_pool(served: Served, records, flip: bool) -> dict:
    """``file name -> (instances, uncertainty value)`` of the served model on ``records`` (``flip``: the
    uncertainty with the mirror image, as the backend measures it)."""
    from instaseg.app.uncertainty import predict_with_uncertainty
    from instaseg.images import load_image

    def predict(image):
        return served.predictor.predict_arrays([image])[0]

    answers = {}
    for record in records:
        instances, uncertainty = predict_with_uncertainty(predict, load_image(record.image), flip=flip)
        answers[record.file_name] = (instances, uncertainty.value)
    return answers


def held_out_ap(served: Served, held_out, class_map) -> float | None:
    from instaseg.evaluate.evaluator import mask_map, predict_records

    predictor = served.predictor
    return mask_map(held_out, class_map, predict_records(predictor, held_out), predictor.max_detections)


def next_model(runner, labelled, class_map, served: Served | None, workdir: Path, args):
    """After a batch: the first model (``served`` is ``None``) or one round of the loop's code on every
    labelled record. Returns ``(entry, the model serving the next batch)``; the entry's ``decision`` is
    ``skipped`` when the labelled images do not show every class or lack a train or a val image yet (the
    loop's data step waits for them too)."""
    from instaseg.app.loop_data import FixedSplit, RoundData
    from instaseg.app.rounds import ServedModel

    used = {class_map.name(a.label) for r in labelled for a in r.annotations}
    if served is not None and used != set(class_map.names):
        missing = sorted(set(class_map.names) - used)
        return {"decision": "skipped", "reason": f"no annotation of {missing} yet"}, served
    number = runner.project_dir.next_number()
    first = workdir / "first_model"
    folder = first if served is None else runner.project_dir.round_dir(number)
    folder.mkdir(parents=True, exist_ok=True)
    split = FixedSplit(runner.project_dir.split_file, runner.settings.val_fraction)
    splits, names = split_files(labelled, split, folder)
    if not names["train"] or not names["val"]:
        if served is not None:
            shutil.rmtree(folder)  # no round ran: no round folder
        return {"decision": "skipped", "reason": "no train or no val image yet"}, served
    images = workdir / "images"
    if served is None:
        checkpoint = train_first_model(labelled, class_map, folder, images, args)
        val = [r for r in labelled if r.file_name in set(names["val"])]
        entry = {"decision": "first model", "reason": "instaseg train from scratch (automatic recipe)"}
        return entry, serve(checkpoint, "first", None, args.device, val)
    write_export(labelled, class_map, folder / "labelled.json")
    counts = (len(names["train"]), len(names["val"]), len(labelled))
    data = RoundData(folder / "labelled.json", images, splits, *counts, "labelling-effort")
    entry = runner.run_on_data(number, data, ServedModel(served.checkpoint, served.version))
    runner.project_dir.finish(entry)
    if entry["decision"] != "promoted":
        return entry, served
    checkpoint = runner.project_dir.root / entry["checkpoint"]
    threshold = entry.get("pre_annotation_threshold")
    return entry, serve(checkpoint, entry["model_version"], threshold, args.device)


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    from instaseg.app.effort import Effort
    from instaseg.app.rounds import ProjectDir, RoundRunner, RoundSettings

    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(args.workdir or scratch).resolve()
        if (workdir / "loop").exists():
            raise SystemExit(f"{workdir} holds the rounds of an earlier run; give a new --workdir")
        class_map, pool, held_out = prepare_records(args, workdir / "images")
        settings = RoundSettings(
            minutes=args.round_minutes,
            epochs=args.round_epochs,
            device=args.device,
            train_args=tuple(args.train_args.split()),
        )
        runner = RoundRunner(ProjectDir(workdir / "loop"), settings)
        print(
            f"{len(pool)} images to label in batches of {args.batch} ({args.order} order), "
            f"{len(held_out)} held out; classes {list(class_map.names)}; work folder {workdir}",
            flush=True,
        )
        served = serve(Path(args.model), "given", None, args.device) if args.model else None
        if served is not None and served.predictor.class_map != class_map:
            raise SystemExit(
                f"{args.model} predicts {list(served.predictor.class_map.names)}, the dataset has "
                f"{list(class_map.names)} (sorted, as a Label Studio export imports them)"
            )
        rng = np.random.default_rng(args.seed)
        labelled, rows, total = [], [], Effort()
        header = (
            "batch images objects  loop/obj  hand/obj  accepted  smart IoU  thresh  round min  decision  AP"
        )
        print(
            "each row: the batch as labelled with the model serving it (its pre-annotation threshold and "
            "its mask AP on the held-out images), then the round trained after it (minutes, decision)"
        )
        print(header, flush=True)
        while len(labelled) < len(pool) and (args.batches is None or len(rows) < args.batches):
            done = {r.file_name for r in labelled}
            left = [r for r in pool if r.file_name not in done]
            predictions, uncertainty = {}, None
            if served is not None and args.order == "uncertainty":
                answers = predict_pool(served, left, flip=True)
                uncertainty = {name: value for name, (_, value) in answers.items()}
                predictions = {name: instances for name, (instances, _) in answers.items()}
            if uncertainty is not None:
                left.sort(key=lambda r: -uncertainty[r.file_name])
            else:
                left = [left[i] for i in rng.permutation(len(left))]
            batch = left[: args.batch]
            if served is not None and not predictions:
                predictions = {name: p for name, (p, _) in predict_pool(served, batch, flip=False).items()}
            effort = label_batch(batch, predictions, served, not args.no_smart_box)
            ap = held_out_ap(served, held_out, class_map) if served is not None else None
            labelled += batch
            total = total + effort
            started = time.monotonic()
            entry, next_served = next_model(runner, labelled, class_map, served, workdir, args)
            row = {
                "batch": len(rows) + 1,
                "images": len(labelled),
                "seen": len(labelled) - len(batch),
                **effort.summary(),
                "accepted_share": effort.accepted_share,
                "threshold": served.threshold if served is not None else None,
                "round_minutes": (time.monotonic() - started) / 60,
                "decision": entry["decision"],
                "reason": entry.get("reason"),
                "mask_ap": ap,
            }
            rows.append(row)
            print(format_row(row), flush=True)
            served = next_served
        final_ap = held_out_ap(served, held_out, class_map)
    summary = closing_lines(rows, total, final_ap)
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "summary": summary}, indent=1))
    return 0


def _number(value, pattern: str, width: int) -> str:
    return (pattern.format(value) if value is not None else "-").rjust(width)


def format_row(row: dict) -> str:
    return " ".join(
        [
            str(row["batch"]).rjust(5),
            str(row["images"]).rjust(6),
            str(row["objects"]).rjust(7),
            _number(row["actions_per_object"], "{:.2f}", 9),
            _number(row["by_hand_per_object"], "{:.2f}", 9),
            _number(None if row["accepted_share"] is None else 100 * row["accepted_share"], "{:.0f}%", 9),
            _number(row["tool_median_iou"], "{:.3f}", 10),
            _number(row["threshold"], "{:.2f}", 7),
            _number(row["round_minutes"], "{:.1f}", 10),
            f"  {row['decision']:9s}",
            _number(None if row["mask_ap"] is None else 100 * row["mask_ap"], "{:.1f}", 4),
        ]
    )


def closing_lines(rows: list[dict], total, final_ap: float | None) -> dict:
    """Print the totals, the last batch's ratio and when the smart box reached :data:`SMART_IOU_GOAL`."""
    loop, hand = total.actions_per_object, total.by_hand_per_object
    ratio = hand / loop if loop else float("inf")
    images = rows[-1]["images"] if rows else 0
    if loop is None:
        print(f"loop: no object in {images} images")
    else:
        print(
            f"loop: {loop:.2f} actions/object vs {hand:.2f} by hand ({ratio:.2f} times fewer) over {images} images"
        )
    last = rows[-1] if rows else {}
    if last.get("actions_per_object"):
        last_ratio = last["by_hand_per_object"] / last["actions_per_object"]
        print(
            f"last batch: {last['actions_per_object']:.2f} vs {last['by_hand_per_object']:.2f} by hand "
            f"({last_ratio:.2f} times fewer)"
        )
    crossed = next((r for r in rows if (r["tool_median_iou"] or 0) >= SMART_IOU_GOAL), None)
    if crossed is None:
        print(f"smart box median IoU: below {SMART_IOU_GOAL:.2f} in every batch")
    else:
        print(
            f"smart box median IoU >= {SMART_IOU_GOAL:.2f} from batch {crossed['batch']} "
            f"(its model had seen {crossed['seen']} labelled images)"
        )
    if final_ap is not None:
        print(f"served model after the last round: mask AP {100 * final_ap:.1f} on the held-out images")
    return {
        "loop_per_object": loop,
        "by_hand_per_object": hand,
        "times_fewer": ratio,
        "images": images,
        "smart_crossed_batch": crossed["batch"] if crossed else None,
        "final_mask_ap": final_ap,
    }


if __name__ == "__main__":
    sys.exit(main())
