"""One training round of the labelling loop, and the folder that keeps every round.

A round (:class:`RoundRunner`): pull the project's labelled tasks (:mod:`.loop_data`), fine-tune the served
checkpoint on them with ``instaseg train --weights <served checkpoint> --select map`` in a child process
(its own architecture, image size and recipe, a time budget), evaluate the candidate and the served model on the
fixed validation images in another child process (:mod:`.round_evaluation`), and decide: the candidate is
promoted when its mask mAP is at least the served model's plus a margin. The evaluation also chooses the
candidate's pre-annotation score threshold, the one with the fewest actions for a person on the validation
images (:mod:`.effort`); the entry records it as ``pre_annotation_threshold``.

The project folder (:class:`ProjectDir`)::

    DIR/project.json          the Label Studio project this folder trains for
    DIR/data/                 the pulled export (result.json) and images/
    DIR/splits.json           the fixed train/val assignment (loop_data.FixedSplit)
    DIR/rounds/NNN/           labelled.json, splits.json, train/ (instaseg train's run folder), model.pt
                              (the candidate), evaluation/{candidate,current}/report.md, metrics.json,
                              decision.json, round.log (the child processes' output)
    DIR/rounds.jsonl          one JSON line per finished round (append-only): what a person reads
    DIR/promoted.json         the model being served: checkpoint, model_version, round, mask mAP and
                              pre_annotation_threshold (the score from which its regions are shown)

A killed or crashed child process fails its round (logged); the served model is untouched, since only the
backend itself swaps models, after a decision.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .loop_data import FixedSplit, RoundData, prepare_round_data, write_json_atomic
from .ls_client import LabelStudioClient


class RoundFailed(Exception):
    """A round that could not finish (a child process failed or was killed); the message says why."""


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def project_slug(project_title: str) -> str:
    """The project's title as a name: ``"Nuclei loop"`` -> ``nuclei-loop`` (also the MLflow model's name)."""
    return re.sub(r"[^A-Za-z0-9]+", "-", project_title).strip("-").lower()[:40] or "project"


def model_version_name(project_title: str, number: int, mask_map: float) -> str:
    """A readable model version: ``<project>-r003-mAP41.2`` (mask mAP in percent on the val images)."""
    return f"{project_slug(project_title)}-r{number:03d}-mAP{100 * mask_map:.1f}"


class ProjectDir:
    """The folder of one project's rounds (layout in the module docstring); local paths only."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.rounds = self.root / "rounds"
        self.log = self.root / "rounds.jsonl"
        self.promoted_file = self.root / "promoted.json"
        self.split_file = self.root / "splits.json"

    def bind_project(self, project: int) -> int:
        """Record that this folder trains for ``project``; ``ValueError`` if it already trains another."""
        path = self.root / "project.json"
        if path.is_file():
            known = json.loads(path.read_text()).get("project")
            if known != project:
                raise ValueError(
                    f"{self.root} holds the rounds of Label Studio project {known}, not {project}; "
                    "give each project its own --project-dir"
                )
            return project
        write_json_atomic(path, {"project": project})
        return project

    def bound_project(self) -> int | None:
        path = self.root / "project.json"
        return json.loads(path.read_text()).get("project") if path.is_file() else None

    def round_dir(self, number: int) -> Path:
        return self.rounds / f"{number:03d}"

    def next_number(self) -> int:
        numbers = [int(p.name) for p in self.rounds.glob("[0-9][0-9][0-9]*") if p.name.isdigit()]
        return max(numbers, default=0) + 1

    def entries(self) -> list[dict]:
        """The rounds logged so far, oldest first."""
        if not self.log.is_file():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]

    def finish(self, entry: dict) -> None:
        """Write the round's ``decision.json`` and append the entry to ``rounds.jsonl``."""
        write_json_atomic(self.round_dir(entry["round"]) / "decision.json", entry)
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.log, "a") as log:
            log.write(json.dumps(entry) + "\n")

    def promoted(self) -> dict | None:
        """``{"checkpoint", "model_version", "round", "mask_map"}`` of the last promotion, or ``None``."""
        if not self.promoted_file.is_file():
            return None
        entry = json.loads(self.promoted_file.read_text())
        entry["checkpoint"] = str(self.root / entry["checkpoint"])
        return entry

    def set_promoted(self, entry: dict) -> None:
        write_json_atomic(self.promoted_file, entry)

    def close_interrupted(self) -> list[int]:
        """Log the rounds a stopped backend left unfinished (a folder without a log entry) as
        ``interrupted``; returns their numbers."""
        logged = {e.get("round") for e in self.entries()}
        closed = []
        for folder in sorted(self.rounds.glob("[0-9][0-9][0-9]*")):
            if folder.name.isdigit() and int(folder.name) not in logged:
                number = int(folder.name)
                self.finish(
                    {
                        "round": number,
                        "decision": "interrupted",
                        "reason": "the backend stopped before the round finished",
                        "finished": now(),
                    }
                )
                closed.append(number)
        return closed


@dataclass(frozen=True)
class RoundSettings:
    """How rounds train and decide.

    Attributes:
        minutes: training time budget of a round (``instaseg train --minutes``); ``epochs`` its maximum.
        margin: promote when candidate mask mAP >= served mask mAP + ``margin`` (mAP points, 0..100).
        val_fraction: share of new images assigned to the fixed validation split.
        device: training and evaluation device (``auto``, ``cpu``, ``cuda``...).
        train_args: more ``instaseg train`` options, appended last (so they win), e.g. ``--workers 0``.
        nice: niceness added to the child processes, so that the backend keeps answering first.
    """

    minutes: float = 10.0
    epochs: int = 20
    margin: float = 0.0
    val_fraction: float = 0.2
    device: str = "auto"
    train_args: tuple[str, ...] = ()
    nice: int = 10


@dataclass(frozen=True)
class ServedModel:
    """The model the backend serves: its checkpoint and ``model_version``."""

    checkpoint: Path
    version: str


def decide(metrics: dict, margin: float) -> tuple[str, str]:
    """``("promoted" | "kept", reason)`` from ``{"candidate": {"mask_map"}, "current": {"mask_map"}}``."""
    candidate, current = metrics["candidate"]["mask_map"], metrics["current"]["mask_map"]
    if candidate is None or current is None:
        return "kept", "mask mAP is undefined on the validation images (no objects with masks)"
    compared = f"candidate mask mAP {100 * candidate:.2f} vs served {100 * current:.2f} + margin {margin:g}"
    if candidate >= current + margin / 100:
        return "promoted", compared
    return "kept", compared + ": not better"


def _exit_description(code: int) -> str:
    if code < 0:
        try:
            return f"signal {-code} ({signal.Signals(-code).name})"
        except ValueError:
            return f"signal {-code}"
    return f"status {code}"


class RoundRunner:
    """Runs rounds one at a time; :attr:`stage` and :attr:`pid` tell what the running one is doing."""

    def __init__(self, project_dir: ProjectDir, settings: RoundSettings, python: str = sys.executable):
        self.project_dir, self.settings, self.python = project_dir, settings, python
        self.stage: str | None = None
        self._process: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._cancelled = False

    @property
    def pid(self) -> int | None:
        """The process id of the running child (training or evaluation), or ``None``."""
        with self._lock:
            return self._process.pid if self._process is not None else None

    def cancel(self) -> None:
        """Stop the running child process (and its workers); the round fails as cancelled."""
        with self._lock:
            self._cancelled = True
            process = self._process
        if process is not None:
            _kill_group(process)

    def run(
        self,
        number: int,
        client: LabelStudioClient,
        project: int,
        served: ServedModel,
        say: Callable[[str], None] = lambda line: None,
    ) -> dict:
        """Run round ``number`` and return its log entry (``decision``: promoted, kept or failed).

        Raises:
            RoundNotReady: not enough annotations yet (the round folder is removed again).
        """
        return self._run(number, served, say, project, client=client)

    def run_on_data(
        self,
        number: int,
        data: RoundData,
        served: ServedModel,
        say: Callable[[str], None] = lambda line: None,
    ) -> dict:
        """Run round ``number`` on data already in place (no Label Studio server: e.g.
        ``bench/labelling_effort.py``); ``data.export`` is a Label Studio JSON export whose labels are the
        served model's class names. Returns the log entry as :meth:`run` does."""
        return self._run(number, served, say, None, data=data)

    def _run(self, number, served, say, project, client=None, data: RoundData | None = None) -> dict:
        from ..model.checkpoint import check_header, read_checkpoint

        started = time.monotonic()
        round_dir = self.project_dir.round_dir(number)
        entry: dict = {"round": number, "project": project, "started": now(), "served": served.version}
        payload = read_checkpoint(served.checkpoint)
        class_map, model_config = check_header(payload, served.checkpoint)
        recipe = dict(payload.get("train_config") or {})
        del payload  # the weights: the training process reads them itself
        self.stage = "pulling"
        try:
            if data is None:
                data = self._prepare(number, client, project, class_map.names)
            else:  # the caller may have written the data into the round's folder
                round_dir.mkdir(parents=True, exist_ok=True)
            entry.update(train_images=data.train, val_images=data.val, project_title=data.project_title)
            say(f"round {number}: {data.train} train and {data.val} val images; training")
            candidate = self._train(round_dir, data, served, model_config, recipe)
            self.stage = "evaluating"
            metrics = self._evaluate(round_dir, data, candidate, served)
        except RoundFailed as e:
            entry.update(decision="failed", reason=str(e))
        else:
            decision, reason = decide(metrics, self.settings.margin)
            entry.update(decision=decision, reason=reason, **metrics)
            entry["checkpoint"] = str(candidate.relative_to(self.project_dir.root))
            # The candidate's pre-annotation threshold (fewest actions on the val images, app.effort): served
            # with it when promoted.
            chosen = metrics["candidate"].get("pre_annotation") or {}
            entry["pre_annotation_threshold"] = chosen.get("threshold")
            if decision == "promoted":
                mask_map = metrics["candidate"]["mask_map"]
                entry["model_version"] = model_version_name(data.project_title, number, mask_map)
        finally:
            self.stage = None
        entry.update(seconds=round(time.monotonic() - started, 1), finished=now())
        return entry

    def _prepare(self, number: int, client: LabelStudioClient, project: int, class_names) -> RoundData:
        """The round's folder and data; the folder is removed again when the round cannot start."""
        round_dir = self.project_dir.round_dir(number)
        round_dir.mkdir(parents=True, exist_ok=False)
        try:
            split = FixedSplit(self.project_dir.split_file, self.settings.val_fraction)
            return prepare_round_data(client, project, self.project_dir.root, round_dir, class_names, split)
        except Exception:
            _remove_tree(round_dir)
            raise

    def _train(
        self, round_dir: Path, data: RoundData, served: ServedModel, model_config, recipe: dict
    ) -> Path:
        """``instaseg train --weights <served>`` with the served model's architecture and recipe."""
        self.stage = "training"
        settings = self.settings
        command = [self.python, "-m", "instaseg", "train", str(data.export), "--images", str(data.images)]
        command += ["--format", "labelstudio-json", "--splits", str(data.splits)]
        command += ["--out", str(round_dir / "train"), "--weights", str(served.checkpoint)]
        command += ["--arch", model_config.arch]
        if getattr(model_config, "crop_size", None):  # trained on native-resolution crops: so is the round
            command += ["--crop", str(model_config.crop_size)]
        else:
            command += ["--image-size", str(model_config.image_size)]
        command += ["--resize", model_config.resize, "--score-threshold", str(model_config.score_threshold)]
        command += ["--nms-threshold", str(model_config.nms_threshold)]
        command += ["--detections-per-image", str(model_config.detections_per_image)]
        if model_config.trainable_backbone_layers is not None:
            command += ["--trainable-backbone-layers", str(model_config.trainable_backbone_layers)]
        for key in ("optimizer", "lr", "batch_size", "weight_decay", "augment"):
            if key in recipe:
                command += [f"--{key.replace('_', '-')}", str(recipe[key])]
        command += ["--warmup-steps", str(min(int(recipe.get("warmup_steps", 20)), 20))]
        # best.pt = the epoch with the best mask mAP on the fixed val images: the promotion's own measure.
        command += ["--select", "map"]
        command += ["--epochs", str(settings.epochs), "--minutes", str(settings.minutes)]
        command += ["--device", settings.device, "--seed", str(int(round_dir.name))]
        command += ["--track", "none", *settings.train_args]  # the loop logs the round as one MLflow run
        self._run_child(command, round_dir / "round.log", "training")
        best = round_dir / "train" / "best.pt"
        if not best.is_file():
            raise RoundFailed(f"training wrote no {best}; see {round_dir / 'round.log'}")
        candidate = round_dir / "model.pt"
        os.replace(best, candidate)
        (round_dir / "train" / "last.pt").unlink(missing_ok=True)  # optimizer state: large, not needed
        return candidate

    def _evaluate(self, round_dir: Path, data: RoundData, candidate: Path, served: ServedModel) -> dict:
        command = [self.python, "-m", "instaseg.app.round_evaluation", "--data", str(data.export)]
        command += ["--images", str(data.images), "--splits", str(data.splits)]
        command += ["--model", f"candidate={candidate}", "--model", f"current={served.checkpoint}"]
        command += ["--out", str(round_dir / "evaluation"), "--device", self.settings.device]
        self._run_child(command, round_dir / "round.log", "evaluation")
        return json.loads((round_dir / "evaluation" / "metrics.json").read_text())

    def _run_child(self, command: list[str], log_path: Path, what: str) -> None:
        """Run ``command`` in its own process group (niced), output appended to ``log_path``."""
        with open(log_path, "a") as log:
            log.write(f"\n$ {shlex.join(command)}\n")
            log.flush()
            with self._lock:
                if self._cancelled:
                    raise RoundFailed("cancelled: the backend is stopping")
                process = subprocess.Popen(
                    command,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
                self._process = process
        if self.settings.nice and hasattr(os, "setpriority"):
            try:
                os.setpriority(os.PRIO_PROCESS, process.pid, min(19, os.nice(0) + self.settings.nice))
            except OSError:
                pass
        code = process.wait()
        with self._lock:
            self._process = None
            cancelled = self._cancelled
        _kill_group(process)  # DataLoader workers left behind by a killed parent
        if cancelled:
            raise RoundFailed("cancelled: the backend is stopping")
        if code != 0:
            raise RoundFailed(
                f"the {what} process ended with {_exit_description(code)}{_last_words(log_path)}; "
                f"its output: {log_path}"
            )


def _last_words(log_path: Path) -> str:
    """The last line the child printed after its command line (its error message, usually), or ``""``."""
    lines = log_path.read_text(errors="replace").replace("\r", "\n").splitlines()
    after = lines[max(i for i, line in enumerate(lines) if line.startswith("$ ")) + 1 :]
    said = [line.strip() for line in after if line.strip()]
    return f": {said[-1][-300:]}" if said else ""


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, AttributeError):
        pass


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
