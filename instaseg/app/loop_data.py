"""The data of one training round: the project's labelled tasks, and a validation split fixed across rounds.

:func:`prepare_round_data` pulls the project (export + images, :func:`~instaseg.app.pull.pull_project`, the
code of ``instaseg pull-label-studio``) into ``DIR/data/``, keeps the tasks a person has annotated (unlabelled
tasks are not negative images), names their labels as the served model's classes, and writes the round's
``labelled.json`` (a Label Studio JSON export) and ``splits.json`` (train/val file names for
``instaseg train --splits``).

:class:`FixedSplit` (``DIR/splits.json``) assigns each image once, by a hash of its file name (without
Label Studio's upload prefix): an image never moves between train and val from one round to the next, so every round is measured on images no round
trained on, and the validation set only grows.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path

from ..formats.labelstudio_json import image_reference, task_image_field
from .ls_client import LabelStudioClient
from .ls_protocol import LabelConfigError, parse_label_config
from .pull import image_file_name, pull_project


class RoundNotReady(Exception):
    """Not enough usable annotations for a round yet (the message says what is missing); not an error."""


def write_json_atomic(path: Path, value) -> None:
    """Write JSON through a temporary file and a rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(value, indent=1))
    os.replace(temporary, path)


# Label Studio names an uploaded file "<8 hex digits>-<its name>", with new digits at each upload.
_UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-", re.IGNORECASE)


def _digest(name: str) -> bytes:
    """The hash of an image's own name: its file name without folders and upload prefix, so that the
    same photo gets the same split in every project and after being uploaded again."""
    own = _UPLOAD_PREFIX.sub("", posixpath.basename(name.replace("\\", "/")), count=1)
    return hashlib.sha256(own.encode("utf-8")).digest()


def hash_split(name: str, val_fraction: float) -> str:
    """``"val"`` or ``"train"`` for an image name: the same answer on every machine and in every round."""
    return "val" if int.from_bytes(_digest(name)[:8], "big") / 2**64 < val_fraction else "train"


class FixedSplit:
    """File name -> ``"train"``/``"val"``, assigned once and saved in ``path`` (JSON ``{"val_fraction",
    "assigned": {name: split}}``).

    New names get :func:`hash_split`; when no image is in val yet, the new image with the most val-like
    hash goes there instead (a new image, so none ever moves).
    """

    def __init__(self, path: Path, val_fraction: float):
        if not 0 < val_fraction < 1:
            raise ValueError(f"the validation fraction must be between 0 and 1, got {val_fraction}")
        self.path = Path(path)
        self.val_fraction = val_fraction
        self.assigned: dict[str, str] = {}
        if self.path.is_file():
            saved = json.loads(self.path.read_text())
            self.assigned = dict(saved.get("assigned", {}))
            self.val_fraction = float(saved.get("val_fraction", val_fraction))

    def assign(self, names: list[str]) -> dict[str, str]:
        """Assign the names not seen before, save, and return ``{name: split}`` for ``names``."""
        new = sorted(set(names) - set(self.assigned))
        for name in new:
            self.assigned[name] = hash_split(name, self.val_fraction)
        if new and len(self.assigned) >= 2 and "val" not in self.assigned.values():
            closest = min(new, key=_digest)
            self.assigned[closest] = "val"
        if new:
            write_json_atomic(self.path, {"val_fraction": self.val_fraction, "assigned": self.assigned})
        return {name: self.assigned[name] for name in names}


@dataclass
class RoundData:
    """What a round trains and validates on: ``export`` (labelled tasks, Label Studio JSON), ``images``
    (their folder), ``splits`` (the split file), and the counts."""

    export: Path
    images: Path
    splits: Path
    train: int
    val: int
    tasks: int
    project_title: str


def labelled_tasks(tasks: list[dict]) -> list[dict]:
    """The tasks with at least one annotation that was not cancelled (skipped tasks are left out)."""
    return [
        task
        for task in tasks
        if isinstance(task, dict)
        and any(isinstance(a, dict) and not a.get("was_cancelled") for a in task.get("annotations") or [])
    ]


def rename_labels(tasks: list[dict], names: dict[str, str]) -> set[str]:
    """Rename result labels in place (Label Studio value -> model class name); returns the names used.

    The tasks are the round's own copy of the export, never the caller's data."""
    used = set()
    for task in tasks:
        annotations = [a for a in task.get("annotations") or [] if isinstance(a, dict)]
        for result in (r for a in annotations for r in a.get("result") or [] if isinstance(r, dict)):
            value = result.get("value")
            labels = value.get(result.get("type")) if isinstance(value, dict) else None
            if isinstance(labels, list) and labels and isinstance(labels[0], str):
                labels[:] = [names.get(label, label) for label in labels]
                used.add(labels[0])
    return used


def prepare_round_data(
    client: LabelStudioClient,
    project: int,
    project_dir: Path,
    round_dir: Path,
    class_names: tuple[str, ...],
    split: FixedSplit,
) -> RoundData:
    """Pull ``project`` into ``project_dir/data`` and write ``round_dir/labelled.json`` and ``splits.json``.

    Raises:
        RoundNotReady: no train or no val image with annotations yet, or labels the model has no class for.
        LabelStudioError: the server cannot be read.
    """
    from ..core import ClassMap

    details = client.project(project)
    data_dir = project_dir / "data"
    pulled = pull_project(client, project, str(data_dir))
    tasks = labelled_tasks(json.loads(Path(pulled.export).read_text()))
    try:
        target = parse_label_config(details.get("label_config", ""))
        to_model = {v: class_names[k - 1] for k, v in target.label_for(ClassMap(class_names)).items()}
    except LabelConfigError as e:
        raise RoundNotReady(f"project {project}: {e}") from None
    used = rename_labels(tasks, to_model)
    if used and used != set(class_names):
        raise RoundNotReady(
            f"the annotations use the labels {sorted(used)}, the served model has the classes "
            f"{list(class_names)}: a round needs annotations of every class and no other"
        )
    present = []
    for task in tasks:
        url = task_image_field(task.get("data"))
        if url is not None and (data_dir / "images" / image_file_name(url)).is_file():
            present.append((task, image_reference(url)[0]))  # the file name the importer gives the record
    assigned = split.assign([name for _, name in present])
    names = {s: sorted(n for n, v in assigned.items() if v == s) for s in ("train", "val")}
    if not names["train"] or not names["val"]:
        raise RoundNotReady(
            f"{len(present)} annotated images ({len(names['train'])} train, {len(names['val'])} val): a round "
            "needs at least one of each; annotate more images"
        )
    export = round_dir / "labelled.json"
    write_json_atomic(export, [task for task, _ in present])
    splits = round_dir / "splits.json"
    write_json_atomic(splits, {**names, "test": []})
    return RoundData(
        export,
        data_dir / "images",
        splits,
        len(names["train"]),
        len(names["val"]),
        len(present),
        str(details.get("title") or f"project{project}"),
    )
