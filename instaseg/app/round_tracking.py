"""The labelling loop's rounds in MLflow: each finished round is one run, and each promoted model a new
version of one registered model named after the project, with the alias ``served`` on the version the
backend serves (so a team sees in MLflow which model Label Studio is given).

The MLflow calls themselves are in :mod:`instaseg.train.tracking`; this module only says what of a round
folder (:class:`~instaseg.app.rounds.ProjectDir` layout) goes where. Tracking follows the loop's ``track``
setting: ``auto`` tracks when ``MLFLOW_TRACKING_URI`` is set, ``mlflow`` always (else in a SQLite store
``DIR/mlflow.db`` of the project folder), ``none`` never.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Mapping
from pathlib import Path

import yaml

from ..train.tracking import SERVED_ALIAS, flatten_params, open_tracker

# What of a round's folder is logged as artifacts (those that exist), and under which artifact folder.
ROUND_ARTIFACTS = {
    None: ("decision.json", "splits.json", "round.log"),
    "train": ("train/metrics.csv", "train/config.yaml", "train/loss_curve.png"),
    "evaluation": ("evaluation/metrics.json",),
}
STATUS = {"promoted": "FINISHED", "kept": "FINISHED", "failed": "FAILED"}


def numbers(values: Mapping, prefix: str = "") -> dict[str, float]:
    """The numeric leaves of a nested dict, keys joined with dots (``{"candidate": {"mask_map": 0.4}}`` ->
    ``{"candidate.mask_map": 0.4}``); booleans and ``None`` are left out."""
    found: dict[str, float] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            found.update(numbers(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            found[f"{prefix}{key}"] = float(value)
    return found


def _epoch_rows(path: Path) -> list[dict]:
    rows = []
    if path.is_file():
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                rows.append({k: float(v) for k, v in row.items() if v not in ("", None)})
    return rows


def track_round(
    mode: str,
    project_root: Path,
    entry: dict,
    registered_model: str,
    say: Callable[[str], None] = print,
    environ: Mapping[str, str] | None = None,
) -> str | None:
    """Log the finished round ``entry`` (a ``rounds.jsonl`` line) as an MLflow run in the experiment
    ``<registered_model> labelling loop``; when it was promoted, register ``rounds/NNN/model.pt`` as a new
    version of ``registered_model`` and point the alias ``served`` at it. Returns that version (text), or
    ``None`` (not promoted, or tracking off).

    Raises:
        instaseg.train.tracking.TrackingError: MLflow is asked for and missing, or its server fails.
    """
    tracker = open_tracker(mode, project_root, f"{registered_model} labelling loop", say, environ)
    if not tracker.enabled:
        return None
    number = int(entry["round"])
    round_dir = Path(project_root) / "rounds" / f"{number:03d}"
    tags = {"instaseg.decision": entry.get("decision", ""), "instaseg.project_dir": str(project_root)}
    tags["instaseg.reason"] = str(entry.get("reason", ""))[:5000]
    tracker.start(f"round {number:03d}", tags)
    try:
        keys = ("round", "project", "project_title", "served", "train_images", "val_images", "decision")
        params = {key: entry[key] for key in keys if entry.get(key) is not None}
        config = round_dir / "train" / "config.yaml"
        if config.is_file():
            recipe = yaml.safe_load(config.read_text()) or {}
            params.update(flatten_params({k: v for k, v in recipe.items() if isinstance(v, dict)}))
        tracker.log_params(params)
        for row in _epoch_rows(round_dir / "train" / "metrics.csv"):  # the round's training, per epoch
            tracker.log_epoch(row)
        tracker.log_metrics(numbers({k: entry[k] for k in ("candidate", "current", "seconds") if k in entry}))
        for folder, names in ROUND_ARTIFACTS.items():
            tracker.log_artifacts([round_dir / name for name in names], folder)
        for model in ("candidate", "current"):
            evaluation = round_dir / "evaluation" / model
            files = sorted(evaluation.glob("*.md")) + sorted(evaluation.glob("*.png"))
            tracker.log_artifacts(files, f"evaluation/{model}")
        version = None
        if entry.get("decision") == "promoted":
            version = tracker.register_model(
                registered_model,
                round_dir / "model.pt",
                SERVED_ALIAS,
                description=f"{entry.get('model_version', '')}: {entry.get('reason', '')}",
                tags={
                    "instaseg.model_version": entry.get("model_version", ""),
                    "instaseg.round": str(number),
                },
            )
            say(f"round {number}: registered {registered_model!r} version {version} as @{SERVED_ALIAS}")
    except BaseException:
        tracker.end("FAILED")
        raise
    tracker.end(STATUS.get(entry.get("decision"), "FINISHED"))
    return version
