"""Pre-annotate a whole Label Studio project from outside Label Studio: :func:`predict_project`.

The tasks are read page by page (``/api/tasks``), each image is predicted here, and each prediction is
stored with one short ``POST /api/predictions``: no Label Studio request waits for the model, so none can
time out, however large the project. A task that already has a prediction of this ``model_version`` is
skipped, so an interrupted run continues where it stopped when started again. Each prediction's ``score``
is ``1 - uncertainty`` (:mod:`instaseg.app.uncertainty`); to sort the Data Manager by it, select the
version for prelabeling (:meth:`~instaseg.app.ls_client.LabelStudioClient.select_model_version`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..formats.labelstudio_export import instances_to_label_studio_regions, label_studio_prediction
from .ls_client import LabelStudioClient, LabelStudioError
from .ls_protocol import parse_label_config
from .service import DEFAULT_MAX_PIXELS, InputError, ModelService, decode_upload
from .uncertainty import predict_with_uncertainty, prediction_score

# predictions_model_versions is cut at this many characters by Label Studio: longer lists are re-read.
VERSIONS_CHARACTER_LIMIT = 500


@dataclass
class PredictSummary:
    """What :func:`predict_project` did: tasks seen, predictions posted, tasks skipped (already predicted by
    this model version / labelled with ``only_unlabeled``), and the tasks that failed with why."""

    tasks: int = 0
    posted: int = 0
    already_predicted: int = 0
    labelled: int = 0
    failed: list[str] = field(default_factory=list)


def has_version(client: LabelStudioClient, task: dict, model_version: str) -> bool:
    """Whether the task already holds a prediction of ``model_version``."""
    listed = str(task.get("predictions_model_versions") or "")
    if model_version in {v.strip() for v in listed.split(",")}:
        return True
    if len(listed) < VERSIONS_CHARACTER_LIMIT - len(model_version):
        return False
    return model_version in client.prediction_versions(task["id"])


def is_labelled(task: dict) -> bool:
    """A person annotated the task, or skipped it."""
    return bool(task.get("total_annotations")) or bool(task.get("cancelled_annotations"))


def predict_project(
    client: LabelStudioClient,
    project: int,
    service: ModelService,
    model_version: str | None = None,
    only_unlabeled: bool = False,
    batch_size: int = 50,
    flip: bool = True,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: Callable[[PredictSummary, int], None] | None = None,
) -> PredictSummary:
    """Post a prediction of ``service`` on every task of ``project`` that lacks one of this version.

    Args:
        model_version: the version written on the predictions (default ``service.version``); use the
            backend's so that Label Studio counts them as the connected model's.
        only_unlabeled: leave out the tasks a person annotated or skipped.
        batch_size: tasks read per page.
        flip: uncertainty from the image and its mirror (twice the prediction time).
        progress: called after each task with the summary so far and the project's task count.

    Raises:
        LabelStudioError: the project, its tasks or the predictions API cannot be read or written.
        LabelConfigError: the project's label config has nothing this model can fill.
    """
    version = model_version or service.version
    details = client.project(project)
    target = parse_label_config(details.get("label_config", ""))
    names = target.label_for(service.class_map)
    total = int(details.get("task_number") or 0)
    summary = PredictSummary()
    page = 1
    while tasks := client.tasks_page(project, page, batch_size):
        for task in tasks:
            summary.tasks += 1
            if has_version(client, task, version):
                summary.already_predicted += 1
            elif only_unlabeled and is_labelled(task):
                summary.labelled += 1
            else:
                _predict_task(client, task, target, names, service, version, flip, max_pixels, summary)
            if progress is not None:
                progress(summary, max(total, summary.tasks))
        if len(tasks) < batch_size:
            break
        page += 1
    return summary


def _predict_task(client, task, target, names, service, version, flip, max_pixels, summary) -> None:
    where = f"task {task.get('id')}"
    location = (task.get("data") or {}).get(target.data_key)
    if not isinstance(location, str) or not location:
        summary.failed.append(f"{where}: no {target.data_key!r} image URL in its data")
        return
    try:
        data = client.download(location, task=task.get("id"))  # s3:// through the presign route
        image = decode_upload(data, f"{where} image {location}", max_pixels)
    except (LabelStudioError, InputError) as e:
        summary.failed.append(f"{where}: {e}")
        return
    instances, uncertainty = predict_with_uncertainty(service.predict, image, flip=flip)
    regions = instances_to_label_studio_regions(
        service.pre_annotations(instances), names, target.kind, target.from_name, target.to_name
    )
    client.create_prediction(
        task["id"], label_studio_prediction(regions, version, prediction_score(uncertainty))
    )
    summary.posted += 1
