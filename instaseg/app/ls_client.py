"""A small Label Studio REST client (standard library only): JSON calls, exports and task images.

Authentication is Label Studio's ``Authorization: Token <token>`` header (a legacy API token, or the
access token Label Studio hands an ML backend). Every call has a timeout and every download a size cap,
so that a slow or hostile server cannot hang or exhaust the caller.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request

DEFAULT_TIMEOUT = 60.0
MAX_DOWNLOAD_BYTES = 512 * 1024 * 1024


class LabelStudioError(Exception):
    """A Label Studio request that failed: unreachable server, HTTP error, non-JSON answer, oversized file.

    Attributes:
        status: the HTTP status when the server answered, else ``None``.
    """

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class LabelStudioClient:
    """Calls to one Label Studio server.

    Args:
        url: the server's base URL, e.g. ``http://127.0.0.1:8080``.
        token: API token sent as ``Authorization: Token <token>``; ``None`` for public URLs only.
        timeout: seconds per request.
    """

    def __init__(self, url: str, token: str | None = None, timeout: float = DEFAULT_TIMEOUT):
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise LabelStudioError(f"Label Studio URL must start with http:// or https://, got {url!r}")
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

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
        """The raw body of ``method path``; JSON ``body`` or raw ``data``. ``LabelStudioError`` on failure."""
        url = self.absolute(path)
        headers = {"Accept": "application/json"}
        if self.token and self._same_server(url):
            headers["Authorization"] = f"Token {self.token}"
        if body is not None:
            data, content_type = json.dumps(body).encode(), "application/json"
        if content_type:
            headers["Content-Type"] = content_type
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as response:
                payload = response.read(max_bytes + 1)
        except urllib.error.HTTPError as e:
            detail = e.read(2000).decode("utf-8", "replace").strip()
            raise LabelStudioError(
                f"{method} {url}: HTTP {e.code} {e.reason}: {detail[:500]}", e.code
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

    def download(self, location: str, max_bytes: int = MAX_DOWNLOAD_BYTES) -> bytes:
        """The bytes of a task file (``/data/upload/...``, ``/data/local-files/?d=...`` or an http(s) URL)."""
        scheme = urllib.parse.urlsplit(location).scheme
        if scheme not in ("", "http", "https"):
            raise LabelStudioError(
                f"cannot download {location!r}: only http(s) URLs and server paths are supported"
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
