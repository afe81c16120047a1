"""Runs tracked in MLflow: :func:`open_tracker` gives a :class:`MlflowTracker` or the do-nothing
:class:`NoTracker`, with the same methods (``start``, ``log_params``, ``log_epoch``, ``log_metrics``,
``log_artifacts``, ``register_model``, ``end``).

``instaseg train --track`` and the labelling loop use it. Where the runs go: ``MLFLOW_TRACKING_URI`` when it
is set (a team's server, e.g. ``http://mlflow.example:5000``), else a SQLite store inside the run folder
(``sqlite:///RUN_DIR/mlflow.db``, artifacts in ``RUN_DIR/mlartifacts``; MLflow's plain file store is
deprecated). MLflow is an optional extra (``pip install 'instaseg[mlflow]'``) and is imported only when a run
is tracked. The tracker holds its own ``MlflowClient``: nothing here touches MLflow's global active run.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

TRACK_MODES = ("auto", "mlflow", "none")
INSTALL = "pip install 'instaseg[mlflow]'"
SERVED_ALIAS = "served"
RUN_FILE = "mlflow_run.json"  # in the run folder: which MLflow run a --resume continues
_BATCH = 100  # MLflow accepts at most 100 params (1000 metrics) per log_batch call


class TrackingError(Exception):
    """Tracking was asked for and cannot work (mlflow missing, server unreachable); the message says why."""


class NoTracker:
    """Tracking off: every method does nothing."""

    enabled = False
    where = "not tracked"

    def start(
        self, name: str, tags: Mapping[str, str] | None = None, resume_from: Path | None = None
    ) -> None:
        pass

    def log_params(self, params: Mapping[str, object]) -> None:
        pass

    def log_epoch(self, row: Mapping[str, object]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, object], step: int = 0) -> None:
        pass

    def log_artifacts(self, paths: Iterable[Path], folder: str | None = None) -> None:
        pass

    def register_model(
        self, name: str, path: Path, alias: str = SERVED_ALIAS, description: str = "", tags=None
    ) -> None:
        return None

    def end(self, status: str = "FINISHED") -> None:
        pass


class MlflowTracker:
    """One MLflow run at a time, through an explicit ``MlflowClient``.

    Args:
        uri: the tracking URI (``http(s)://...``, ``sqlite:///...``); also the model registry's.
        experiment: the experiment the runs go in (created when missing).
        artifact_location: where a new experiment keeps artifacts (a local store's own folder), or ``None``
            for the server's default.
    """

    enabled = True

    def __init__(self, uri: str, experiment: str, artifact_location: str | None = None):
        from mlflow import MlflowClient

        self.uri, self.experiment = uri, experiment
        self.client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        self.artifact_location = artifact_location
        self.run_id: str | None = None
        self._logged_params: dict[str, str] = {}
        self.last_epoch_row: dict = {}  # the row log_epoch logged last

    @property
    def where(self) -> str:
        """A line that says where the run is and how to look at it."""
        run = f"MLflow run {self.run_id}" if self.run_id else "MLflow"
        if self.uri.startswith("sqlite:"):
            return f"{run} in {self.uri}; to look at it: mlflow ui --backend-store-uri {self.uri}"
        return f"{run} at {self.uri} (experiment {self.experiment!r})"

    def _experiment_id(self) -> str:
        found = self.client.get_experiment_by_name(self.experiment)
        if found is not None:
            return found.experiment_id
        return self.client.create_experiment(self.experiment, artifact_location=self.artifact_location)

    def start(
        self, name: str, tags: Mapping[str, str] | None = None, resume_from: Path | None = None
    ) -> None:
        """Open a new run named ``name``, or, when ``resume_from/mlflow_run.json`` names a run of this same
        store, continue that one (a resumed ``instaseg train``); a run folder given in ``resume_from``
        records the run it holds."""
        self._check_reachable()
        try:
            if self._continue(resume_from):
                return
            run = self.client.create_run(self._experiment_id(), tags=dict(tags or {}), run_name=name)
        except Exception as e:  # MLflow raises many kinds (connection, HTTP, SQL): one line for a person
            raise TrackingError(f"cannot start an MLflow run at {self.uri}: {_first_line(e)}") from e
        self.run_id, self._logged_params = run.info.run_id, {}
        if resume_from is not None:
            record = {"tracking_uri": self.uri, "run_id": self.run_id}
            (Path(resume_from) / RUN_FILE).write_text(json.dumps(record) + "\n")

    def _check_reachable(self, timeout: float = 10.0) -> None:
        """A server that does not answer fails at once: MLflow's own client retries for minutes."""
        if not self.uri.startswith(("http://", "https://")):
            return
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(f"{self.uri.rstrip('/')}/health", timeout=timeout):
                pass
        except urllib.error.HTTPError:
            pass  # it answers (a proxy's 401/404): the client's own calls will say more
        except (OSError, ValueError) as e:
            reason = getattr(e, "reason", e)
            raise TrackingError(
                f"cannot reach the MLflow server at {self.uri} ({reason}); start it, correct "
                "MLFLOW_TRACKING_URI, or leave tracking off (--track none)"
            ) from None

    def _continue(self, run_dir: Path | None) -> bool:
        path = Path(run_dir) / RUN_FILE if run_dir is not None else None
        if path is None or not path.is_file():
            return False
        record = json.loads(path.read_text())
        if record.get("tracking_uri") != self.uri:
            return False
        run = self.client.get_run(record["run_id"])
        self.client.update_run(run.info.run_id, status="RUNNING")
        self.run_id, self._logged_params = run.info.run_id, dict(run.data.params)
        return True

    def log_params(self, params: Mapping[str, object]) -> None:
        """Parameters (values as text). MLflow keeps the first value of a key: on a resumed run a changed
        value (e.g. more ``--epochs``) is logged as the tag ``resumed.<key>`` instead."""
        from mlflow.entities import Param, RunTag

        new, changed = [], []
        for key, value in params.items():
            text = _param_text(value)
            known = self._logged_params.get(key)
            if known is None:
                new.append(Param(key, text))
                self._logged_params[key] = text
            elif known != text:
                changed.append(RunTag(f"resumed.{key}", text))
        for start in range(0, max(len(new), len(changed)), _BATCH):
            self._call(
                self.client.log_batch,
                self.run_id,
                params=new[start : start + _BATCH],
                tags=changed[start : start + _BATCH],
            )

    def log_metrics(self, metrics: Mapping[str, object], step: int = 0) -> None:
        """The numeric entries of ``metrics`` at ``step`` (others, and ``None``, are left out)."""
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        rows = [
            Metric(key, float(value), stamp, int(step))
            for key, value in metrics.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)
        ]
        if rows:
            self._call(self.client.log_batch, self.run_id, metrics=rows)

    def log_epoch(self, row: Mapping[str, object]) -> None:
        """One row of ``metrics.csv`` (losses, ``val_map``, ``lr``, seconds...) with the epoch as the step."""
        self.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=int(row["epoch"]))
        self.last_epoch_row = dict(row)

    def log_artifacts(self, paths: Iterable[Path], folder: str | None = None) -> None:
        """The files of ``paths`` that exist, under ``folder`` of the run's artifacts."""
        for path in paths:
            if Path(path).is_file():
                self._call(self.client.log_artifact, self.run_id, str(path), folder)

    def register_model(
        self,
        name: str,
        path: Path,
        alias: str = SERVED_ALIAS,
        description: str = "",
        tags: Mapping[str, str] | None = None,
    ) -> str:
        """Log the checkpoint ``path`` under the run's ``model/`` artifacts, register it as a new version
        of the registered model ``name`` (created when missing; ``tags`` on the version), and point
        ``alias`` at that version (moved from the version it named before). Returns the version (text)."""
        from mlflow.exceptions import MlflowException

        self.log_artifacts([Path(path)], "model")
        source = f"{self.client.get_run(self.run_id).info.artifact_uri}/model"
        try:
            self.client.get_registered_model(name)
        except MlflowException:
            self._call(self.client.create_registered_model, name)
        version = self._call(
            self.client.create_model_version,
            name,
            source,
            run_id=self.run_id,
            description=description,
            tags=dict(tags or {}),
        )
        self._call(self.client.set_registered_model_alias, name, alias, version.version)
        return version.version

    def end(self, status: str = "FINISHED") -> None:
        """Close the run (``FINISHED``, ``FAILED`` or ``KILLED``)."""
        if self.run_id is not None:
            self._call(self.client.set_terminated, self.run_id, status)

    def _call(self, method: Callable, *args, **kwargs):
        try:
            return method(*args, **kwargs)
        except Exception as e:
            raise TrackingError(f"MLflow at {self.uri}: {_first_line(e)}") from e


def _param_text(value: object) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:300]


def flatten_params(groups: Mapping[str, Mapping[str, object]]) -> dict[str, object]:
    """``{"train": {"lr": 0.01}, "model": {...}}`` -> ``{"train.lr": 0.01, "model....": ...}``."""
    return {f"{group}.{key}": value for group, values in groups.items() for key, value in values.items()}


def open_tracker(
    mode: str,
    store_dir: Path,
    experiment: str,
    say: Callable[[str], None] = print,
    environ: Mapping[str, str] | None = None,
):
    """The tracker ``mode`` asks for.

    Args:
        mode: ``"mlflow"`` (track; :class:`TrackingError` when MLflow is missing), ``"none"``, or ``"auto"``
            (track when ``MLFLOW_TRACKING_URI`` is set; without mlflow installed say so and go on untracked).
        store_dir: where the SQLite store goes when no ``MLFLOW_TRACKING_URI`` is set.
        experiment: the experiment name; ``MLFLOW_EXPERIMENT_NAME`` overrides it.
        environ: the environment to read (default ``os.environ``).
    """
    environ = os.environ if environ is None else environ
    if mode not in TRACK_MODES:
        raise TrackingError(f"unknown tracking mode {mode!r}; valid: {', '.join(TRACK_MODES)}")
    uri = environ.get("MLFLOW_TRACKING_URI", "").strip()
    if mode == "none" or (mode == "auto" and not uri):
        return NoTracker()
    try:
        import mlflow  # noqa: F401
    except ImportError:
        if mode == "mlflow":
            raise TrackingError(f"--track mlflow needs MLflow, which is not installed: {INSTALL}") from None
        say(f"MLFLOW_TRACKING_URI is set but MLflow is not installed: this run is not tracked ({INSTALL})")
        return NoTracker()
    artifact_location = None
    if not uri:
        store_dir = Path(store_dir).resolve()
        store_dir.mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{store_dir / 'mlflow.db'}"
        artifact_location = (store_dir / "mlartifacts").as_uri()
    return MlflowTracker(uri, environ.get("MLFLOW_EXPERIMENT_NAME") or experiment, artifact_location)


# The files of a run folder logged as artifacts at its end (those that exist): the checkpoint, the report
# and plots of an evaluation, the metrics and the configuration.
RUN_ARTIFACTS = ("best.pt", "report.md", "metrics.csv", "config.yaml", "splits.json")


def start_training_run(
    mode: str,
    run_dir: Path,
    params: Mapping[str, object],
    say: Callable[[str], None] = print,
    environ: Mapping[str, str] | None = None,
):
    """The tracker of ``instaseg train`` (experiment ``instaseg`` unless ``MLFLOW_EXPERIMENT_NAME``), its
    run started (or continued, for a resumed ``run_dir``) with ``params``; says where the run is."""
    tracker = open_tracker(mode, run_dir, "instaseg", say, environ)
    if tracker.enabled:
        tags = {"instaseg.run_dir": str(Path(run_dir).resolve()), "mlflow.source.name": "instaseg train"}
        tracker.start(Path(run_dir).name, tags, resume_from=Path(run_dir))
        tracker.log_params(params)
        say(f"tracking: {tracker.where}")
    return tracker


def finish_training_run(tracker, run_dir: Path, history: list[dict], status: str = "FINISHED") -> None:
    """Log what the end of a run added to its last row (test losses measured once at the end), the run
    folder's :data:`RUN_ARTIFACTS` and plots, and close the run with ``status``."""
    if not tracker.enabled:
        return
    if history:
        last, logged = history[-1], tracker.last_epoch_row
        if logged.get("epoch") == last["epoch"]:
            added = {k: v for k, v in last.items() if k not in logged or logged[k] != v}
            tracker.log_metrics(added, step=int(last["epoch"]))
    run_dir = Path(run_dir)
    tracker.log_artifacts([run_dir / name for name in RUN_ARTIFACTS])
    tracker.log_artifacts(sorted(run_dir.glob("*.png")), "plots")
    tracker.end(status)
