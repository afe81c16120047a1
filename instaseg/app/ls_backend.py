"""A Label Studio ML backend on FastAPI: pre-annotates tasks with instaseg's model.

Routes (Label Studio's ML backend protocol):

- ``GET /health`` -> ``{"status": "UP", "model_class": ..., "model_version": ..., "classes": [...]}``, with
  ``"training"`` (the loop's state, running round and its process id, last round) when training;
- ``POST /setup`` ``{project, schema, hostname, access_token, model_version}`` -> ``{"model_version"}``:
  remembers the project's server and token (used to fetch its task images);
- ``POST /predict`` ``{tasks, project, label_config}`` -> ``{"results": [{result, score, model_version}]}``,
  one prediction per task, regions as polygons in percent or brush RLE
  (:func:`instaseg.formats.labelstudio_export.instances_to_label_studio_regions`) of the detections scoring
  at least the served model's pre-annotation threshold (:meth:`ModelService.pre_annotations
  <instaseg.app.service.ModelService.pre_annotations>`: chosen by the round that made it); ``score`` is
  ``1 - uncertainty`` (:mod:`instaseg.app.uncertainty`), so sorting Label Studio's *Prediction score*
  ascending shows the images the model is least sure about first (once a model version is selected for
  prelabeling: the column is empty while the backend itself is);
  with ``params.context`` (a person's smart box / click, Label Studio's interactive pre-annotations) the
  one task gets one region per prompt instead (:mod:`instaseg.app.ls_interactive`);
- ``POST /webhook`` ``{action, project, ...}`` -> ``{"status": "ok", "training": what happens}``: with a
  training loop (:mod:`instaseg.app.training_loop`, ``--train-on-annotations``), annotation events and
  ``START_TRAINING`` lead to training rounds in the background; without one they are only counted.
  ``POST /train`` (Label Studio's older *Start training* call) is taken as ``START_TRAINING``.

The served model is swapped atomically after a promotion: each request reads the model once when it
starts and finishes on it, so requests in flight end on the old model and the next ones use the new one.

Bad requests get a 4xx JSON ``{"error": message}``: 400 malformed JSON, 422 a request or label config
this backend cannot use, 424 a task image that cannot be fetched or decoded, 401 without the basic-auth
credentials when they are required. In a batch, a task whose image cannot be fetched, decoded or found
gets ``{"error": message}`` in its place of ``results`` and the other tasks their predictions; only when
every task fails does the whole request fail (:func:`batch_answer`). Unexpected failures give 500 with a
one-line message, no traceback.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import threading
from collections import Counter
from collections.abc import Callable
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ..formats.labelstudio_export import instances_to_label_studio_regions, label_studio_prediction
from ..storage import parse_json
from .ls_auth import token_kind
from .ls_client import BUCKET_SCHEMES, LabelStudioClient, LabelStudioError
from .ls_interactive import PromptCache, PromptError, has_context, interactive_prediction
from .ls_protocol import LabelConfigError, LabelTarget, config_label_values, parse_label_config
from .service import InputError, ModelService, decode_upload
from .uncertainty import predict_with_uncertainty, prediction_score

logger = logging.getLogger("instaseg.ls_backend")
MAX_TASKS_PER_REQUEST = 100
MAX_KNOWN_PROJECTS = 1000


class RequestProblem(Exception):
    """A request the backend refuses: sent back as ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


async def _json_body(request: Request) -> dict:
    raw = await request.body()
    try:
        body = parse_json(raw or b"null", "the request body")
    except ValueError as e:  # malformed, not UTF-8, nested too deeply, a number of thousands of digits
        raise RequestProblem(400, f"the request body is not valid JSON ({e})") from None
    if not isinstance(body, dict):
        raise RequestProblem(422, f"the request body must be a JSON object, got {type(body).__name__}")
    return body


def _check_basic_auth(request: Request, credentials: tuple[str, str] | None) -> None:
    if credentials is None:
        return
    header = request.headers.get("authorization", "")
    scheme, _, encoded = header.partition(" ")
    try:
        user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        user = password = ""
    ok = scheme.lower() == "basic" and hmac.compare_digest(user, credentials[0])
    if not (ok and hmac.compare_digest(password, credentials[1])):
        raise RequestProblem(401, "basic authentication required: configure the ML backend's user/password")


class Backend:
    """The state behind the routes: the served model (swapped atomically), the projects' servers, the
    webhook counts and the training loop.

    Args:
        service: the loaded model.
        label_studio_url, token: the server used when ``/setup`` sent no ``hostname``, and the API token
            (a Personal Access Token or a legacy token) used in preference to ``/setup``'s
            ``access_token`` (Label Studio 1.23 sends the legacy token, refused when legacy tokens are off).
        max_pixels: task images over this many pixels are refused (424).
        timeout: seconds per image download.
        flip: measure the uncertainty with the mirror image too (twice the prediction time).
    """

    def __init__(
        self,
        service: ModelService,
        label_studio_url: str | None = None,
        token: str | None = None,
        max_pixels: int = 50_000_000,
        timeout: float = 30.0,
        flip: bool = True,
    ):
        self._service = service
        self.label_studio_url, self.token = label_studio_url, token
        self.max_pixels, self.timeout, self.flip = max_pixels, timeout, flip
        self.projects: dict[str, dict] = {}  # "<id>.<timestamp>" -> {"hostname", "access_token"}
        self._clients: dict[tuple, LabelStudioClient] = {}  # (url, token) -> client
        self.events: Counter = Counter()
        self.loop = None  # a TrainingLoop when training on annotations
        self.prompt_cache = PromptCache()  # image features for interactive prompts (ls_interactive)
        self._lock = threading.Lock()

    @property
    def service(self) -> ModelService:
        """The model served now; read it once per request and use that one throughout."""
        return self._service

    def swap(self, service: ModelService) -> None:
        """Serve ``service`` from the next request on (requests in flight finish on the old one)."""
        with self._lock:
            self._service = service
        self.prompt_cache.clear()  # the old model's features answer no further prompt

    def client_for(self, project) -> LabelStudioClient | None:
        """A client of the server of ``project`` (``"<id>.<timestamp>"``, an id, or ``None``)."""
        known = {}
        if project is not None:
            with self._lock:
                known = self.projects.get(str(project)) or next(
                    (v for k, v in self.projects.items() if k.split(".")[0] == str(project)), {}
                )
        url = known.get("hostname") or self.label_studio_url
        # The token the backend was started with first: Label Studio 1.23's /setup sends the project
        # creator's legacy token, refused where legacy tokens are off (its default).
        token = self.token or known.get("access_token")
        if not url:
            return None
        with self._lock:  # one client per server and token: a PAT's access token is reused until it expires
            client = self._clients.get((url, token))
            if client is None:
                if len(self._clients) >= MAX_KNOWN_PROJECTS:
                    self._clients.pop(next(iter(self._clients)))
                client = self._clients[url, token] = LabelStudioClient(url, token, timeout=self.timeout)
            return client

    def health(self) -> dict:
        service = self.service
        answer = {
            "status": "UP",
            "model_class": "instaseg",
            "model_version": service.version,
            "classes": list(service.class_map.names),
        }
        if self.loop is not None:
            answer["training"] = self.loop.status()
        return answer

    def setup(self, body: dict) -> dict:
        service = self.service
        schema = body.get("schema")
        if schema is not None:
            try:
                parse_label_config(schema).label_for(service.class_map)
            except LabelConfigError as e:
                raise RequestProblem(422, str(e)) from None
        project = str(body.get("project", ""))
        offered = body.get("access_token") or None
        if self.token and offered and offered != self.token:
            logger.info(
                "project %s: /setup sent a token (%s) other than --label-studio-token (%s); "
                "using --label-studio-token",
                project,
                token_kind(offered),
                token_kind(self.token),
            )
        with self._lock:
            if project not in self.projects and len(self.projects) >= MAX_KNOWN_PROJECTS:
                self.projects.pop(next(iter(self.projects)))
            self.projects[project] = {
                "hostname": body.get("hostname") or None,
                "access_token": body.get("access_token") or None,
            }
        return {"model_version": service.version}

    def check_predict_request(self, body: dict, service: ModelService) -> LabelTarget:
        tasks = body.get("tasks")
        if not isinstance(tasks, list):
            raise RequestProblem(422, "'tasks' must be a list of Label Studio tasks")
        if len(tasks) > MAX_TASKS_PER_REQUEST:
            raise RequestProblem(422, f"{len(tasks)} tasks in one request; at most {MAX_TASKS_PER_REQUEST}")
        try:
            target = parse_label_config(body.get("label_config", ""))
            target.label_for(service.class_map)
        except LabelConfigError as e:
            raise RequestProblem(422, str(e)) from None
        return target

    def task_image(self, task: dict, target: LabelTarget, client: LabelStudioClient | None):
        """The RGB image of a task, fetched from its server; ``RequestProblem`` 422/424 when it cannot be."""
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            raise RequestProblem(422, "each task must be an object with a 'data' object")
        location = task["data"].get(target.data_key)
        where = f"task {task.get('id', '?')}"
        if not isinstance(location, str) or not location:
            raise RequestProblem(
                422, f"{where}: data has no {target.data_key!r} image URL (keys: {list(task['data'])})"
            )
        scheme = urlsplit(location).scheme
        if client is None and (not scheme or scheme in BUCKET_SCHEMES):
            raise RequestProblem(
                422,
                f"{where}: no Label Studio URL to fetch {location!r} from: /setup sent no hostname; "
                "start the backend with --label-studio-url",
            )
        try:
            if client is None:
                client = LabelStudioClient(location, None, timeout=self.timeout)  # a public http(s) image
            # s3:// (a project's Source Cloud Storage) comes through the task's presign route.
            data = client.download(location, task=task.get("id"))
        except LabelStudioError as e:
            raise RequestProblem(424, f"{where}: cannot fetch the image: {e}") from None
        try:
            return decode_upload(data, f"{where} image {location}", self.max_pixels)
        except InputError as e:
            raise RequestProblem(424, str(e)) from None

    def predict_task(self, service: ModelService, task: dict, target: LabelTarget, client) -> dict:
        """One task's prediction by ``service``: regions, ``score`` = 1 - uncertainty, model_version."""
        image = self.task_image(task, target, client)
        instances, uncertainty = predict_with_uncertainty(service.predict, image, flip=self.flip)
        names = target.label_for(service.class_map)
        regions = instances_to_label_studio_regions(  # the uncertainty counts every detection, the regions
            service.pre_annotations(instances), names, target.kind, target.from_name, target.to_name
        )  # only those at the served model's pre-annotation threshold
        return label_studio_prediction(regions, service.version, prediction_score(uncertainty))

    def predict_or_report(self, service: ModelService, task, target: LabelTarget, client) -> dict:
        """:meth:`predict_task`, or ``{"error", "status"}`` when this task's image cannot be used: one bad
        task does not fail the others of its batch."""
        try:
            return self.predict_task(service, task, target, client)
        except RequestProblem as e:
            logger.warning("%s", e)
            return {"error": str(e), "status": e.status}

    def predict_interactive(self, service: ModelService, body: dict, target: LabelTarget, client) -> dict:
        """The answer to a person's prompts (``params.context``) on the one task of ``body``
        (:mod:`instaseg.app.ls_interactive`); ``RequestProblem`` 422 for a bad context, 424 for its image."""
        tasks = body["tasks"]
        if len(tasks) != 1:
            raise RequestProblem(
                422, f"interactive prompts (params.context) need exactly one task, got {len(tasks)}"
            )
        known = config_label_values(body.get("label_config", ""))
        try:
            return interactive_prediction(
                service,
                tasks[0],
                body["params"]["context"],
                target,
                known,
                self.prompt_cache,
                lambda task: self.task_image(task, target, client),
            )
        except PromptError as e:
            raise RequestProblem(422, str(e)) from None

    def webhook(self, body: dict) -> dict:
        action = body.get("action")
        if not isinstance(action, str):
            raise RequestProblem(422, "a webhook event needs an 'action' string (ANNOTATION_CREATED, ...)")
        with self._lock:
            self.events[action] += 1
            received = self.events[action]
        if self.loop is None:
            training = "not run: start the backend with --train-on-annotations --project-dir DIR"
        else:
            training = self.loop.on_event(action, body.get("project"))
        return {"status": "ok", "action": action, "received": received, "training": training}


def batch_answer(results: list[dict], model_version: str) -> dict:
    """The ``/predict`` answer for one result per task (in the tasks' order).

    A task that failed keeps its place as ``{"error": message}`` with no ``result``: Label Studio skips such
    an entry (and logs it) and saves the other tasks' predictions. When every task failed (a batch of one
    included), the request fails with the first task's status and all messages.
    """
    failed = [r for r in results if "error" in r]
    if results and len(failed) == len(results):
        messages = "; ".join(r["error"] for r in failed[:5])
        more = f" (and {len(failed) - 5} more)" if len(failed) > 5 else ""
        prefix = f"all {len(failed)} tasks failed: " if len(failed) > 1 else ""
        raise RequestProblem(failed[0]["status"], prefix + messages + more)
    answers = [{"error": r["error"]} if "error" in r else r for r in results]
    return {"results": answers, "model_version": model_version}


def create_backend(
    service: ModelService,
    label_studio_url: str | None = None,
    token: str | None = None,
    basic_auth: tuple[str, str] | None = None,
    max_pixels: int = 50_000_000,
    timeout: float = 30.0,
    flip: bool = True,
    training=None,
    load_model: Callable[[Path], ModelService] | None = None,
) -> FastAPI:
    """The FastAPI application of the backend.

    Args:
        service: the loaded model.
        label_studio_url, token: the server and API token used when ``/setup`` did not provide them.
        basic_auth: ``(user, password)`` required on every route, or ``None``.
        max_pixels: task images over this many pixels are refused (424).
        timeout: seconds per image download.
        flip: uncertainty from the image and its mirror (else from the scores alone).
        training: :class:`~instaseg.app.training_loop.LoopSettings` to train on annotations, or ``None``.
        load_model: checkpoint path -> a loaded :class:`ModelService` (needed with ``training``).
    """
    backend = Backend(service, label_studio_url, token, max_pixels, timeout, flip)
    if training is not None:
        backend.loop = _training_loop(backend, training, load_model)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if backend.loop is not None:
            backend.loop.start()
        yield
        if backend.loop is not None:
            await run_in_threadpool(backend.loop.stop)

    app = FastAPI(
        title="instaseg Label Studio ML backend",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )
    app.state.backend = backend
    _add_error_handling(app, basic_auth)
    _add_routes(app, backend)
    return app


def _training_loop(backend: Backend, settings, load_model):
    from .rounds import ServedModel
    from .training_loop import TrainingLoop

    if load_model is None:
        raise ValueError("training on annotations needs load_model (checkpoint -> ModelService)")

    def promote(checkpoint: Path, version: str, pre_annotation_threshold: float | None = None) -> None:
        service = load_model(checkpoint)  # loaded before the swap: requests never wait for it
        service.version = version
        if pre_annotation_threshold is not None:  # the one the round chose on its validation images
            service.pre_annotation_threshold = pre_annotation_threshold
        backend.swap(service)

    served = ServedModel(backend.service.path, backend.service.version)
    return TrainingLoop(settings, served, backend.client_for, promote)


def _add_error_handling(app: FastAPI, basic_auth: tuple[str, str] | None) -> None:
    @app.exception_handler(RequestProblem)
    async def _problem(request: Request, exc: RequestProblem) -> JSONResponse:
        headers = {"WWW-Authenticate": 'Basic realm="instaseg"'} if exc.status == 401 else None
        return JSONResponse({"error": str(exc)}, status_code=exc.status, headers=headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error on %s", request.url.path)
        return JSONResponse(
            {"error": f"internal error: {type(exc).__name__}: {str(exc)[:300]}"}, status_code=500
        )

    @app.middleware("http")
    async def _auth(request: Request, call_next):
        try:
            _check_basic_auth(request, basic_auth)
        except RequestProblem as e:
            return await _problem(request, e)
        return await call_next(request)


def _add_routes(app: FastAPI, backend: Backend) -> None:
    @app.get("/health")
    @app.get("/")
    def health() -> dict:
        return backend.health()

    @app.post("/setup")
    async def setup(request: Request) -> dict:
        return backend.setup(await _json_body(request))

    @app.post("/predict")
    async def predict(request: Request) -> dict:
        body = await _json_body(request)
        service = backend.service  # one model for the whole request, even if a promotion swaps it
        target = backend.check_predict_request(body, service)
        client = backend.client_for(body.get("project"))
        if has_context(body):  # a person's smart box or click: one answer for the one task
            answer = await run_in_threadpool(backend.predict_interactive, service, body, target, client)
            return batch_answer([answer], service.version)
        # The model runs in a worker thread so that /health keeps answering during a long prediction.
        results = [
            await run_in_threadpool(backend.predict_or_report, service, task, target, client)
            for task in body["tasks"]
        ]
        return batch_answer(results, service.version)

    @app.post("/webhook")
    async def webhook(request: Request) -> dict:
        return backend.webhook(await _json_body(request))

    @app.post("/train")
    async def train(request: Request) -> dict:
        body = await _json_body(request)
        return backend.webhook({"action": "START_TRAINING", "project": body.get("project")})
