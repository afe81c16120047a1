"""A small Label Studio REST client (standard library only): JSON calls, exports and task images.

Either kind of token works (:mod:`instaseg.app.ls_auth` tells them apart): a Personal Access Token is
exchanged at ``/api/token/refresh/`` for an access token sent as ``Bearer`` and renewed on expiry or a 401;
a legacy token is sent as ``Token``. A refused token gives one line naming its kind and where to make a new
one. Every call has a timeout and every download a size cap, so that a slow or hostile server cannot hang or
exhaust the caller. The token is only sent to the Label Studio server itself, also across redirects: the
presign route answers 303 to a presigned bucket URL, which must get no ``Authorization`` header.

Why not label-studio-sdk's client (``label_studio_sdk.LabelStudio``, read in 2.1.2): its token handling is
the same idea (``tokens/client_ext.py``), but it renews only when its own clock says the access token expired,
not on a 401; its refresh raises on a non-JSON answer; it has no call for task files (``/data/upload``,
``/data/local-files``, the presign route of ``s3://`` tasks) with a size cap, which is most of what instaseg
fetches; and it imports httpx, pydantic and its generated models (hundreds of modules) in the backend and
every CLI call. The few JSON routes instaseg uses are simpler here.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request

from .ls_auth import LEGACY, PAT, TokenAuth, refused_message

DEFAULT_TIMEOUT = 60.0
MAX_DOWNLOAD_BYTES = 512 * 1024 * 1024


class LabelStudioError(Exception):
    """A Label Studio request that failed: unreachable server, HTTP error, non-JSON answer, oversized file.

    Attributes:
        status: the HTTP status when the server answered, else ``None``.
        detail: Label Studio's ``detail`` (or the start of its answer) when it answered an error.
    """

    def __init__(self, message: str, status: int | None = None, detail: str = ""):
        super().__init__(message)
        self.status, self.detail = status, detail


# Task images in a Label Studio cloud storage (S3, GCS, Azure); fetched through the task's presign route.
BUCKET_SCHEMES = ("s3", "gs", "gcs", "azure-blob", "azure-spi")


class _SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects, dropping ``Authorization`` when one leaves the server (presigned bucket URLs)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None:
            a, b = urllib.parse.urlsplit(req.full_url), urllib.parse.urlsplit(newurl)
            if (a.scheme, a.netloc) != (b.scheme, b.netloc):
                new.remove_header("Authorization")
        return new


_OPENER = urllib.request.build_opener(_SameOriginRedirects)


def error_detail(body: bytes) -> str:
    """Label Studio's ``{"detail": ...}`` of an error answer, else its first 500 characters."""
    text = body.decode("utf-8", "replace").strip()
    try:
        answer = json.loads(text)
    except ValueError:
        return text[:500]
    detail = answer.get("detail") if isinstance(answer, dict) else None
    return str(detail)[:500] if detail else text[:500]


def presign_path(task: int, uri: str) -> str:
    """The route through which Label Studio serves a task's bucket file ``uri`` (``s3://bucket/key``): a 303
    to a presigned URL, or the bytes themselves when the storage does not presign."""
    encoded = base64.urlsafe_b64encode(uri.encode()).decode()
    return f"/tasks/{int(task)}/presign/?fileuri={urllib.parse.quote(encoded)}"


class LabelStudioClient:
    """Calls to one Label Studio server.

    Args:
        url: the server's base URL, e.g. ``http://127.0.0.1:8080``.
        token: a Personal Access Token or a legacy token (told apart by their form); ``None`` for public
            URLs only.
        timeout: seconds per request.
    """

    def __init__(self, url: str, token: str | None = None, timeout: float = DEFAULT_TIMEOUT):
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise LabelStudioError(f"Label Studio URL must start with http:// or https://, got {url!r}")
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.auth = TokenAuth(token, self._exchange) if token else None

    @property
    def token_kind(self) -> str | None:
        """:data:`~instaseg.app.ls_auth.PAT`, ``LEGACY`` or ``ACCESS``; ``None`` without a token."""
        return self.auth.kind if self.auth else None

    def _exchange(self, refresh: str) -> str:
        """A Personal Access Token's new access token from ``/api/token/refresh/``."""
        if self.auth is not None and self.auth.expired_locally():
            raise LabelStudioError(refused_message(PAT, "its expiry date has passed"), 401)
        try:
            payload = self._send("POST", self.url + "/api/token/refresh/", {"refresh": refresh}, None)
        except LabelStudioError as e:
            if e.status in (400, 401):
                raise LabelStudioError(refused_message(PAT, e.detail), e.status) from None
            raise
        try:
            access = json.loads(payload).get("access")
        except (ValueError, AttributeError):
            access = None
        if not isinstance(access, str) or not access:
            raise LabelStudioError(f"POST {self.url}/api/token/refresh/: no access token in the answer")
        return access

    def absolute(self, location: str) -> str:
        """``location`` as an absolute URL: paths such as ``/data/upload/1/x.png`` are joined to the server."""
        if urllib.parse.urlsplit(location).scheme:
            return location
        return self.url + "/" + location.lstrip("/")

    def request(
        self,
        method: str,
        path: str,
        body: dict | list | None = None,
        data: bytes | None = None,
        content_type: str | None = None,
        max_bytes: int = MAX_DOWNLOAD_BYTES,
    ) -> bytes:
        """The raw body of ``method path``; JSON ``body`` or raw ``data``. ``LabelStudioError`` on failure.

        With a Personal Access Token a 401 renews the access token and tries once more; a token refused
        again is a one-line error naming its kind and where to make a new one."""
        url = self.absolute(path)
        if self.auth is None or not self._same_server(url):
            return self._send(method, url, body, None, data, content_type, max_bytes)
        authorization = self.auth.header()  # a refused Personal Access Token raises here, in one line
        try:
            return self._send(method, url, body, authorization, data, content_type, max_bytes)
        except LabelStudioError as e:
            if e.status != 401:
                raise
            if self.auth.kind == LEGACY:
                raise LabelStudioError(refused_message(LEGACY, e.detail), 401) from None
        authorization = self.auth.header(renew=True)  # the access token expired early or was revoked
        try:
            return self._send(method, url, body, authorization, data, content_type, max_bytes)
        except LabelStudioError as e:
            if e.status == 401:
                raise LabelStudioError(refused_message(self.auth.kind, e.detail), 401) from None
            raise

    def _send(
        self,
        method: str,
        url: str,
        body,
        authorization: str | None,
        data: bytes | None = None,
        content_type: str | None = None,
        max_bytes: int = MAX_DOWNLOAD_BYTES,
    ) -> bytes:
        headers = {"Accept": "application/json"}
        if authorization:
            headers["Authorization"] = authorization
        if body is not None:
            data, content_type = json.dumps(body).encode(), "application/json"
        if content_type:
            headers["Content-Type"] = content_type
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with _OPENER.open(req, timeout=self.timeout) as response:
                payload = response.read(max_bytes + 1)
        except urllib.error.HTTPError as e:
            detail = error_detail(e.read(2000))
            raise LabelStudioError(
                f"{method} {url}: HTTP {e.code} {e.reason}: {detail}", e.code, detail
            ) from None
        except (urllib.error.URLError, TimeoutError, OSError, ValueError) as e:
            reason = getattr(e, "reason", e)
            raise LabelStudioError(f"{method} {url}: cannot reach the server ({reason})") from None
        if len(payload) > max_bytes:
            raise LabelStudioError(f"{method} {url}: answer larger than {max_bytes} bytes; refused")
        return payload

    def _same_server(self, url: str) -> bool:
        # The token is only sent to the Label Studio server itself, never to third-party image hosts.
        a, b = urllib.parse.urlsplit(url), urllib.parse.urlsplit(self.url)
        return (a.scheme, a.netloc) == (b.scheme, b.netloc)

    def json(self, method: str, path: str, body: dict | list | None = None):
        """The decoded JSON answer of ``method path``."""
        payload = self.request(method, path, body)
        if not payload:
            return None
        try:
            return json.loads(payload)
        except ValueError:
            raise LabelStudioError(f"{method} {self.absolute(path)}: the answer is not JSON") from None

    def download(self, location: str, task: int | None = None, max_bytes: int = MAX_DOWNLOAD_BYTES) -> bytes:
        """The bytes of a task file: ``/data/upload/...``, ``/data/local-files/?d=...``, an http(s) URL, or a
        cloud storage URI (``s3://bucket/key``...) of task ``task``, through Label Studio's presign route
        (:func:`presign_path`), so with the Label Studio token and no bucket credentials."""
        scheme = urllib.parse.urlsplit(location).scheme
        if scheme in BUCKET_SCHEMES:
            if not isinstance(task, int) or isinstance(task, bool):
                raise LabelStudioError(f"cannot download {location!r}: a bucket URL needs its task's id")
            location = presign_path(task, location)
        elif scheme not in ("", "http", "https"):
            raise LabelStudioError(
                f"cannot download {location!r}: only http(s) URLs, server paths and Label Studio cloud "
                f"storage URIs ({', '.join(s + '://' for s in BUCKET_SCHEMES)}) are supported"
            )
        return self.request("GET", location, max_bytes=max_bytes)

    def export_tasks(self, project: int) -> list[dict]:
        """All tasks of a project in Label Studio's JSON export format (annotations and predictions)."""
        tasks = self.json(
            "GET", f"/api/projects/{int(project)}/export?exportType=JSON&download_all_tasks=true"
        )
        if not isinstance(tasks, list):
            raise LabelStudioError(f"project {project}: the export is not a list of tasks")
        return tasks

    def project(self, project: int) -> dict:
        """The project's settings (``title``, ``label_config``...)."""
        return self.json("GET", f"/api/projects/{int(project)}")

    def tasks_page(self, project: int, page: int, page_size: int = 50) -> list[dict]:
        """One page of a project's tasks (1-based; ``[]`` past the last page), ordered by id, each with
        ``id``, ``data``, ``total_annotations``, ``cancelled_annotations`` and ``predictions_model_versions``
        (Label Studio's comma-separated list of the task's prediction versions, cut at 500 characters)."""
        fields = "id,data,total_annotations,cancelled_annotations,predictions_model_versions"
        path = f"/api/tasks?project={int(project)}&page={int(page)}&page_size={int(page_size)}"
        try:
            answer = self.json("GET", f"{path}&fields=all&include={fields}")
        except LabelStudioError as e:
            if e.status == 404:  # Label Studio's answer to a page past the end
                return []
            raise
        tasks = answer.get("tasks") if isinstance(answer, dict) else None
        if not isinstance(tasks, list):
            raise LabelStudioError(f"project {project}: the task list is not a list of tasks")
        return tasks

    def prediction_versions(self, task: int) -> set[str]:
        """The ``model_version`` of every prediction of one task."""
        predictions = self.json("GET", f"/api/predictions?task={int(task)}")
        return {p.get("model_version") for p in predictions or [] if isinstance(p, dict)}

    def create_prediction(self, task: int, prediction: dict) -> dict:
        """Store a prediction (``{"result", "score", "model_version"}``) on a task; returns Label Studio's."""
        return self.json("POST", "/api/predictions", {"task": int(task), **prediction})

    def select_model_version(self, project: int, model_version: str) -> None:
        """Make ``model_version`` the project's prelabeling choice (*Settings → Annotation → Prelabeling*):
        the Data Manager's *Prediction score* column, and the order by it, then use the predictions of this
        version, and opened tasks show them. Label Studio refuses a version no prediction has."""
        self.json("PATCH", f"/api/projects/{int(project)}", {"model_version": model_version})
