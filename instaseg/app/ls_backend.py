"""A Label Studio ML backend on FastAPI: pre-annotates tasks with instaseg's model.

Routes (Label Studio's ML backend protocol):

- ``GET /health`` -> ``{"status": "UP", "model_class": ..., "model_version": ...}``;
- ``POST /setup`` ``{project, schema, hostname, access_token, model_version}`` -> ``{"model_version"}``:
  remembers the project's server and token (used to fetch its task images);
- ``POST /predict`` ``{tasks, project, label_config}`` -> ``{"results": [{result, score, model_version}]}``,
  one prediction per task, regions as polygons in percent or brush RLE
  (:func:`instaseg.formats.labelstudio_export.instances_to_label_studio_regions`);
- ``POST /webhook`` ``{action, ...}`` -> ``{"status": "ok"}``: annotation events are counted (training
  from them is not implemented; retrain with ``instaseg pull-label-studio`` + ``instaseg train``).

Bad requests get a 4xx JSON ``{"error": message}``: 400 malformed JSON, 422 a request or label config
this backend cannot use, 424 a task image that cannot be fetched or decoded, 401 without the basic-auth
credentials when they are required. Unexpected failures give 500 with a one-line message, no traceback.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import threading
from collections import Counter
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from ..formats.labelstudio_export import instances_to_label_studio_regions, label_studio_prediction
from .ls_client import LabelStudioClient, LabelStudioError
from .ls_protocol import LabelConfigError, parse_label_config
from .service import InputError, ModelService, decode_upload

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
        body = json.loads(raw or b"null")
    except ValueError as e:
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


def create_backend(
    service: ModelService,
    label_studio_url: str | None = None,
    token: str | None = None,
    basic_auth: tuple[str, str] | None = None,
    max_pixels: int = 50_000_000,
    timeout: float = 30.0,
) -> FastAPI:
    """The FastAPI application of the backend.

    Args:
        service: the loaded model.
        label_studio_url, token: the server and API token used to fetch task images when ``/setup`` did
            not provide them (``hostname`` / ``access_token``).
        basic_auth: ``(user, password)`` required on every route, or ``None``.
        max_pixels: task images over this many pixels are refused (424).
        timeout: seconds per image download.
    """
    app = FastAPI(title="instaseg Label Studio ML backend", docs_url=None, redoc_url=None, openapi_url=None)
    projects: dict[str, dict] = {}  # "<id>.<timestamp>" -> {"hostname", "access_token"}
    events: Counter = Counter()
    lock = threading.Lock()

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

    def client_for(project: str | None) -> LabelStudioClient | None:
        known = projects.get(str(project), {}) if project is not None else {}
        url = known.get("hostname") or label_studio_url
        return LabelStudioClient(url, known.get("access_token") or token, timeout=timeout) if url else None

    def predict_task(task: dict, target, client: LabelStudioClient | None) -> dict:
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            raise RequestProblem(422, "each task must be an object with a 'data' object")
        location = task["data"].get(target.data_key)
        where = f"task {task.get('id', '?')}"
        if not isinstance(location, str) or not location:
            raise RequestProblem(
                422, f"{where}: data has no {target.data_key!r} image URL (keys: {list(task['data'])})"
            )
        if client is None and not urlsplit(location).scheme:
            raise RequestProblem(
                422,
                f"{where}: no Label Studio URL to fetch {location!r} from: /setup sent no hostname; "
                "start the backend with --label-studio-url",
            )
        try:
            if client is None:
                client = LabelStudioClient(location, None, timeout=timeout)  # a public http(s) image
            data = client.download(location)
        except LabelStudioError as e:
            raise RequestProblem(424, f"{where}: cannot fetch the image: {e}") from None
        try:
            image = decode_upload(data, f"{where} image {location}", max_pixels)
        except InputError as e:
            raise RequestProblem(424, str(e)) from None
        instances = service.predict(image)
        names = target.label_for(service.class_map)
        regions = instances_to_label_studio_regions(
            instances, names, target.kind, target.from_name, target.to_name
        )
        return label_studio_prediction(regions, service.version)

    @app.get("/health")
    @app.get("/")
    def health() -> dict:
        return {
            "status": "UP",
            "model_class": "instaseg",
            "model_version": service.version,
            "classes": list(service.class_map.names),
        }

    @app.post("/setup")
    async def setup(request: Request) -> dict:
        body = await _json_body(request)
        schema = body.get("schema")
        if schema is not None:
            try:
                parse_label_config(schema).label_for(service.class_map)
            except LabelConfigError as e:
                raise RequestProblem(422, str(e)) from None
        project = str(body.get("project", ""))
        with lock:
            if project not in projects and len(projects) >= MAX_KNOWN_PROJECTS:
                projects.pop(next(iter(projects)))
            projects[project] = {
                "hostname": body.get("hostname") or None,
                "access_token": body.get("access_token") or None,
            }
        return {"model_version": service.version}

    @app.post("/predict")
    async def predict(request: Request) -> dict:
        body = await _json_body(request)
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
        client = client_for(body.get("project"))
        # The model runs in a worker thread so that /health keeps answering during a long prediction.
        from starlette.concurrency import run_in_threadpool

        results = [await run_in_threadpool(predict_task, task, target, client) for task in tasks]
        return {"results": results, "model_version": service.version}

    @app.post("/webhook")
    async def webhook(request: Request) -> dict:
        body = await _json_body(request)
        action = body.get("action")
        if not isinstance(action, str):
            raise RequestProblem(422, "a webhook event needs an 'action' string (ANNOTATION_CREATED, ...)")
        with lock:
            events[action] += 1
        return {
            "status": "ok",
            "action": action,
            "received": events[action],
            "training": "not run by this backend: use instaseg pull-label-studio and instaseg train",
        }

    return app
