"""What the web demo's events do, as methods of :class:`DemoHandlers` (the page is :mod:`.gradio_app`).

The model runs only in :meth:`DemoHandlers.segment` (a new photo, or new tiling/TTA settings) and in the
stateless API :meth:`DemoHandlers.api_predict`; every other event filters the kept prediction and redraws
(:mod:`.demo_session`). :attr:`DemoHandlers.model_calls` counts the model's runs since the server started
(the page's ``/model_calls`` API returns it). Unusable inputs raise ``gr.Error`` with a message for the
person; the server keeps serving.
"""

from __future__ import annotations

import base64
import threading
from pathlib import Path

import gradio as gr
import numpy as np

from ..images import read_header
from ..model.tiling import parse_tile, resolve_tile
from . import demo_session as ds
from .demo_downloads import write_downloads
from .service import InputError, ModelService, decode_upload

TILE_OFF = "off"


def upload_bytes(payload) -> tuple[bytes, str]:
    """``(bytes, name)`` of an upload: a file path, a Gradio file payload, or a ``data:`` URL (webcam)."""
    if payload is None:
        raise gr.Error("Drop, paste or take a photo first.")
    if isinstance(payload, str | Path):
        return Path(payload).read_bytes(), Path(payload).name
    path, url = getattr(payload, "path", None), getattr(payload, "url", None) or ""
    name = getattr(payload, "orig_name", None) or (Path(path).name if path else "photo.png")
    if path:
        return Path(path).read_bytes(), name
    if url.startswith("data:") and "," in url:
        return base64.b64decode(url.split(",", 1)[1]), name
    raise gr.Error("The upload arrived without its file; try again.")


def conversion_note(data: bytes, name: str) -> str:
    """What reading changes for this file's mode (16-bit scaled, CMYK, palette or alpha converted)."""
    mode = read_header(data, name).mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        return f"{mode} (16/32-bit) photo scaled to 8 bits for the model"
    if mode in ("CMYK", "P", "PA", "RGBA", "LA", "L", "1", "YCbCr", "LAB"):
        return f"{mode} photo converted to RGB"
    return ""


class DemoHandlers:
    """The demo's event functions around one loaded model.

    Args:
        service: the loaded model.
        max_pixels: uploads over this many pixels are refused with a message.
        output_dir: where the downloads are written.
    """

    def __init__(self, service: ModelService, max_pixels: int, output_dir: Path):
        self.service = service
        self.max_pixels = max_pixels
        self.output_dir = output_dir
        self.class_map = service.class_map
        self.model_calls = 0
        self._count_lock = threading.Lock()

    # -- helpers --------------------------------------------------------------------------------------
    def read_photo(self, payload) -> ds.PhotoSession:
        data, name = upload_bytes(payload)
        try:
            photo = decode_upload(data, name, self.max_pixels)
            note = conversion_note(data, name)
        except InputError as e:
            raise gr.Error(str(e)) from None
        display, scale = ds.display_copy(photo)
        return ds.PhotoSession(name, photo, display, scale, note=note)

    def tile_config(self, tile: str):
        if not tile or tile == TILE_OFF:
            return None
        try:
            return parse_tile(tile)
        except ValueError as e:
            raise gr.Error(f"tiles: {e}") from None

    def run_model(self, session: ds.PhotoSession, tile: str, tta: bool, progress=None) -> None:
        config = self.tile_config(tile)
        height, width = session.photo.shape[:2]
        resolved = resolve_tile(config, self.service.predictor.model_config, height, width)
        how = f"{resolved.size}-px tiles" if resolved is not None else "whole photo"
        if progress is not None:
            progress(0.1, desc=f"predicting ({how}{', flip TTA' if tta else ''})")
        instances = self.service.predict(session.photo, tile=config, tta="flip" if tta else None)
        with self._count_lock:
            self.model_calls += 1
        order = np.argsort(-instances.scores, kind="stable")  # scores decreasing: the table's order
        if progress is not None:
            progress(0.8, desc="drawing")
        ds.attach_prediction(session, instances[order], (tile, bool(tta)))
        session.extra["how"] = how + (", flip TTA" if tta else "")

    def rows(self, session: ds.PhotoSession, score: float, classes: list[str] | None) -> np.ndarray:
        try:
            return ds.visible_rows(session.instances, score, classes, self.class_map)
        except KeyError as e:
            raise gr.Error(str(e).strip("'\"")) from None

    def status(self, session: ds.PhotoSession, rows: np.ndarray | None = None) -> str:
        height, width = session.photo.shape[:2]
        text = f"**{session.name}** {width}x{height} pixels"
        if session.note:
            text += f" ({session.note})"
        if session.instances is None:
            return text + ". Press **Segment**."
        return (
            f"{len(rows)} of {len(session.instances)} objects shown on {text} · "
            f"model ran {session.model_runs}x for this photo ({session.extra.get('how', '')})"
        )

    def table(self, session: ds.PhotoSession, rows: np.ndarray, selected_row: int | None):
        import pandas as pd

        frame = pd.DataFrame(
            ds.detections_table(session.instances[rows], self.class_map), columns=ds.TABLE_HEADERS
        )
        if selected_row is None or not 0 <= selected_row < len(frame):
            return frame
        marks = ["background-color: #ffd54f; font-weight: bold"] * len(frame.columns)
        return frame.style.apply(
            lambda row: marks if row.name == selected_row else [""] * len(row), axis=1
        ).format(precision=4)

    def view(self, session, score, style, classes, color_mode, selected):
        """Slider pair, clickable picture, table, legend, status and the selected table row."""
        rows = self.rows(session, score, classes)
        selected_row = None
        if selected is not None:
            hits = np.flatnonzero(rows == selected)
            selected_row = int(hits[0]) if len(hits) else None
        if style not in ds.STYLES:
            raise gr.Error(f"unknown output style {style!r}; choose one of {', '.join(ds.STYLES)}")
        picture = ds.draw_view(session, rows, style, self.class_map, color_mode, selected_row)
        legend = ds.legend_html(session.instances[rows], self.class_map, color_mode)
        return (
            (session.display, picture),
            picture,
            self.table(session, rows, selected_row),
            legend,
            self.status(session, rows),
        )

    # -- events ---------------------------------------------------------------------------------------
    def load(self, payload):
        """A new photo: shown (downscaled) before predicting; the old prediction is dropped."""
        if payload is None:
            return None, None, None, None, "", "", None
        session = self.read_photo(payload)
        return (
            session,
            (session.display, session.display),
            session.display,
            None,
            "",
            self.status(session),
            None,
        )

    def segment(self, session, score, style, classes, color_mode, tile, tta, progress=gr.Progress()):  # noqa: B008 - Gradio reads it here
        """Run the model (only when the photo or tiling/TTA changed) and draw."""
        if session is None:
            raise gr.Error("Drop, paste or take a photo first.")
        if session.instances is None or session.settings != (tile, bool(tta)):
            self.run_model(session, tile, tta, progress)
        return session, *self.view(session, score, style, classes, color_mode, None), None

    def redraw(self, session, score, style, classes, color_mode, selected):
        """Threshold, classes, style or colours changed: filter and redraw, without the model."""
        if session is None or session.instances is None:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        return self.view(session, score, style, classes, color_mode, selected)

    def select_row(self, session, score, style, classes, color_mode, evt: gr.SelectData):
        """A table row was selected: highlight its instance."""
        if session is None or session.instances is None:
            return (gr.skip(),) * 6
        rows = self.rows(session, score, classes)
        index = evt.index[0] if isinstance(evt.index, list | tuple) else evt.index
        selected = int(rows[int(index)]) if 0 <= int(index) < len(rows) else None
        return (*self.view(session, score, style, classes, color_mode, selected), selected)

    def click_picture(self, session, score, style, classes, color_mode, evt: gr.SelectData):
        """A click on the picture (display pixels ``evt.index = [x, y]``): highlight the object there."""
        if session is None or session.instances is None:
            return (gr.skip(),) * 6
        rows = self.rows(session, score, classes)
        row = ds.instance_at(session, rows, evt.index[0], evt.index[1])
        selected = None if row is None else int(rows[row])
        return (*self.view(session, score, style, classes, color_mode, selected), selected)

    def downloads(self, session, score, classes, progress=gr.Progress()):  # noqa: B008 - Gradio reads it here
        """The full-size downloads of the objects shown."""
        if session is None or session.instances is None:
            raise gr.Error("Segment a photo first.")
        progress(0.2, desc="writing full-size outputs")
        instances = session.instances[self.rows(session, score, classes)]
        return write_downloads(
            self.output_dir, session.name, session.photo, instances, self.class_map, self.service.version
        )

    def api_predict(self, payload, score, style, classes, tile=None, tta=False):
        """Stateless API: photo -> (picture path, table, download paths, status); the page's logic."""
        session = self.read_photo(payload)
        self.run_model(session, tile or TILE_OFF, bool(tta))
        rows = self.rows(session, score, classes)
        if style not in ds.STYLES:
            raise gr.Error(f"unknown output style {style!r}; choose one of {', '.join(ds.STYLES)}")
        shown = session.instances[rows]
        colors = ds.instance_colors_for(shown, "class", self.class_map)
        picture = ds.draw_style(session.photo, shown, style, self.class_map, colors)
        files = write_downloads(
            self.output_dir, session.name, session.photo, shown, self.class_map, self.service.version
        )
        table = ds.detections_table(shown, self.class_map)
        return picture, table, files, self.status(session, rows)

    def counts(self) -> dict:
        """``{"model_calls": runs of the model since the server started}``."""
        return {"model_calls": self.model_calls}
