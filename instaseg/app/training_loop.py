"""The labelling loop inside the Label Studio backend: annotation events -> a round -> a better served model.

:class:`TrainingLoop` counts Label Studio's annotation events (``ANNOTATION_CREATED``/``UPDATED``/``DELETED``)
and the *Start training* button (``START_TRAINING``), and starts a round (:class:`~instaseg.app.rounds.RoundRunner`)
in its own thread once ``train_after`` new annotation events have arrived, or ``quiet_minutes`` after the last
one, or at once on ``START_TRAINING``. One round runs at a time; events during a round make exactly one
follow-up round (they are counted, and the rule above is applied again when the round ends).

When a round promotes its candidate, ``promote(checkpoint, model_version, pre_annotation_threshold)`` (the
backend's hot swap; the threshold the round chose, or ``None``) is called; if the new model cannot be
loaded the round is logged as failed and the served model stays. With
``predict_after_promotion`` the new model then pre-annotates the project's unlabelled tasks
(``instaseg label-studio-predict --only-unlabeled``) in a child process.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .loop_data import RoundNotReady
from .ls_client import LabelStudioClient, LabelStudioError
from .rounds import ProjectDir, RoundRunner, RoundSettings, ServedModel

logger = logging.getLogger("instaseg.training_loop")
ANNOTATION_EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATION_DELETED", "ANNOTATIONS_DELETED")
START_EVENT = "START_TRAINING"


@dataclass(frozen=True)
class LoopSettings:
    """When rounds start, and for which project.

    Attributes:
        project_dir: the folder of the rounds (:class:`~instaseg.app.rounds.ProjectDir`).
        project: the Label Studio project id to train for; ``None``: the first project an event names.
        train_after: start a round after this many new annotation events...
        quiet_minutes: ...or this long after the last one (whichever comes first).
        rounds: how a round trains and decides.
        predict_after_promotion: pre-annotate the unlabelled tasks after each promotion.
        track: each round as an MLflow run, each promoted model as a registered model version
            (:mod:`.round_tracking`): ``auto`` (when ``MLFLOW_TRACKING_URI`` is set), ``mlflow`` or ``none``.
    """

    project_dir: Path
    project: int | None = None
    train_after: int = 10
    quiet_minutes: float = 5.0
    rounds: RoundSettings = field(default_factory=RoundSettings)
    predict_after_promotion: bool = False
    track: str = "auto"


def project_id(value) -> int | None:
    """The project id of a webhook's ``project`` (an object with ``id``, a number, or ``"<id>.<time>"``)."""
    if isinstance(value, dict):
        value = value.get("id")
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.split(".")[0].isdigit():
        return int(value.split(".")[0])
    return None


class TrainingLoop:
    """Debounces events and runs rounds in a background thread (see the module docstring).

    Args:
        settings: the loop's settings.
        served: the model served now.
        client_for: project id -> a client of its Label Studio server (``None`` when none is known).
        promote: called with ``(checkpoint, model_version, pre_annotation_threshold)`` to serve a promoted
            model (the threshold chosen by its round, or ``None``); raises on failure.
    """

    def __init__(
        self,
        settings: LoopSettings,
        served: ServedModel,
        client_for: Callable[[int], LabelStudioClient | None],
        promote: Callable[[Path, str, float | None], None],
    ):
        self.settings, self.served = settings, served
        self.client_for, self.promote = client_for, promote
        self.project_dir = ProjectDir(settings.project_dir)
        self.runner = RoundRunner(self.project_dir, settings.rounds)
        self.project = settings.project or self.project_dir.bound_project()
        if self.project is not None:
            self.project_dir.bind_project(self.project)
        self.project_dir.close_interrupted()
        self._condition = threading.Condition()
        self._pending = 0
        self._last_event = 0.0
        self._start_asked = False
        self._running: int | None = None
        self._stopping = False
        self._note = "waiting for annotations"
        self._predictor: subprocess.Popen | None = None
        self._thread = threading.Thread(target=self._loop, name="instaseg-training-loop", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop the loop and kill a running round (it is logged as failed: cancelled)."""
        with self._condition:
            self._stopping = True
            self._condition.notify_all()
        self.runner.cancel()
        if self._predictor is not None and self._predictor.poll() is None:
            self._predictor.terminate()
        self._thread.join(timeout=30)

    def on_event(self, action: str, project) -> str:
        """Take a webhook event; returns what the loop does with it (for the webhook's answer)."""
        if action not in ANNOTATION_EVENTS and action != START_EVENT:
            return "ignored: not an annotation event"
        number = project_id(project)
        with self._condition:
            if self.project is None and number is not None:
                self.project = self.project_dir.bind_project(number)
            if number is not None and number != self.project:
                return f"ignored: this backend trains on project {self.project}"
            if action == START_EVENT:
                self._start_asked = True
            else:
                self._pending += 1
                self._last_event = time.monotonic()
            self._condition.notify_all()
            if self._running is not None:
                return f"queued: round {self._running} is running; one more round follows it"
            if self._start_asked or self._pending >= self.settings.train_after:
                return "a round starts"
            return f"{self._pending} of {self.settings.train_after} annotation events before the next round"

    def status(self) -> dict:
        """What ``/health`` shows: the state, the running round and its process, the last logged round."""
        entries = self.project_dir.entries()
        with self._condition:
            return {
                "enabled": True,
                "project": self.project,
                "state": self.runner.stage or ("training" if self._running else "idle"),
                "round": self._running,
                "pid": self.runner.pid,
                "pending_events": self._pending,
                "note": self._note,
                "rounds": len(entries),
                "last_round": entries[-1] if entries else None,
            }

    def _due(self) -> bool:
        if self._start_asked or self._pending >= self.settings.train_after:
            return True
        quiet = time.monotonic() - self._last_event >= 60 * self.settings.quiet_minutes
        return self._pending > 0 and quiet

    def _loop(self) -> None:
        while True:
            with self._condition:
                while not self._stopping and not (self.project is not None and self._due()):
                    self._condition.wait(timeout=1.0)
                if self._stopping:
                    return
                self._start_asked, self._pending = False, 0
                self._running = self.project_dir.next_number()
            try:
                self._round(self._running)
            except Exception as e:  # a bug must not end the loop: the backend keeps serving
                logger.exception("round %s", self._running)
                self._note = f"round {self._running} crashed: {type(e).__name__}: {e}"
            finally:
                with self._condition:
                    self._running = None

    def _round(self, number: int) -> None:
        client = self.client_for(self.project)
        if client is None:
            self._note = "no Label Studio URL known: start with --label-studio-url or connect the backend"
            return
        try:
            entry = self.runner.run(number, client, self.project, self.served, say=logger.info)
        except RoundNotReady as e:
            self._note = f"not enough annotations yet: {e}"
            return
        except LabelStudioError as e:
            self._note = f"cannot read the project from Label Studio: {e}"
            return
        if entry["decision"] == "promoted":
            entry = self._promote(entry)
        self.project_dir.finish(entry)
        self._track(entry)
        self._note = f"round {number}: {entry['decision']} ({entry.get('reason', '')})"
        logger.info(self._note)
        if entry["decision"] == "promoted" and self.settings.predict_after_promotion:
            self._predict_project(client)

    def _track(self, entry: dict) -> None:
        """The round in MLflow, the promoted model registered; a tracking failure is logged, never fatal."""
        from ..train.tracking import TrackingError
        from .round_tracking import track_round
        from .rounds import project_slug

        name = project_slug(entry.get("project_title") or f"project {self.project}")
        try:
            track_round(self.settings.track, self.project_dir.root, entry, name, say=logger.info)
        except TrackingError as e:
            logger.warning("round %s is not in MLflow: %s", entry["round"], e)

    def _promote(self, entry: dict) -> dict:
        checkpoint = self.project_dir.root / entry["checkpoint"]
        version = entry["model_version"]
        try:
            self.promote(checkpoint, version, entry.get("pre_annotation_threshold"))
        except Exception as e:
            return {**entry, "decision": "failed", "reason": f"the promoted model could not be loaded: {e}"}
        self.served = ServedModel(checkpoint, version)
        self.project_dir.set_promoted(
            {
                "checkpoint": entry["checkpoint"],
                "model_version": version,
                "round": entry["round"],
                "mask_map": entry["candidate"]["mask_map"],
                "pre_annotation_threshold": entry.get("pre_annotation_threshold"),
            }
        )
        return entry

    def _predict_project(self, client: LabelStudioClient) -> None:
        """Start ``instaseg label-studio-predict`` with the promoted model (a running one is replaced)."""
        if self._predictor is not None and self._predictor.poll() is None:
            self._predictor.terminate()
            self._predictor.wait()
        root = self.project_dir.root
        command = [sys.executable, "-m", "instaseg", "label-studio-predict", client.url]
        command += ["--project", str(self.project), "--project-dir", str(root), "--only-unlabeled"]
        command += ["--device", self.settings.rounds.device]
        env = {**os.environ, "LABEL_STUDIO_API_KEY": client.token or ""}  # not on the command line
        with open(root / "predict.log", "a") as log:
            log.write(f"\n$ {shlex.join(command)}\n")
            log.flush()
            self._predictor = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
            )
