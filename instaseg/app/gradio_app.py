"""The web demo's page: drop a photo, compare before/after, tune without re-running the model, download.

:func:`build_app` lays out a ``gr.Blocks`` (not launched) and wires it to :class:`~.demo_handlers.DemoHandlers`:

- the photo (drop, paste or webcam) shows at once, downscaled, in the before/after slider (``#compare``);
- **Segment** (``#submit``) runs the model once per photo at the checkpoint's score threshold, with tiles
  and flip TTA when chosen, under a progress bar; the prediction is kept in the session's ``gr.State``;
- threshold, classes, style and colours filter it and redraw the display copy (no model run);
- a table row (``#detections``) or a click on the picture (``#picker``) highlights one object;
- **Prepare downloads** writes the full-size outputs (``#downloads``);
- a model card (``#model-card``) says which model this is and how good it is.

APIs for ``gradio_client``::

    Client(url).predict(handle_file("photo.jpg"), 0.5, "overlay", [], api_name="/predict")
    # -> (picture path, detections {"headers", "data"}, [download paths], status markdown)
    Client(url).predict(api_name="/model_calls")  # -> {"model_calls": runs of the model since start}
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import gradio as gr

from . import demo_session as ds
from .demo_handlers import TILE_OFF, DemoHandlers
from .model_card import card_markdown, model_card
from .service import DEFAULT_MAX_PIXELS, ModelService

CSS = """
.legend .swatch {display: inline-block; width: 0.9em; height: 0.9em; border-radius: 2px;
  margin-right: 0.3em; vertical-align: middle;}
.legend .legend-item {margin-right: 1em; white-space: nowrap;}
"""


class PhotoInput(gr.Image):
    """``gr.Image`` whose event functions receive the raw upload (path and original name) undecoded, so the
    app's own reader checks size and format first and answers in words (Gradio's would open it with PIL)."""

    def get_block_name(self) -> str:
        return "image"

    def preprocess(self, payload):
        return payload


def build_app(
    service: ModelService,
    examples: list[str] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    output_dir: str | Path | None = None,
    tile: str | None = None,
) -> gr.Blocks:
    """The demo's ``gr.Blocks`` (not launched; launch it with ``css=CSS``).

    Args:
        service: the loaded model.
        examples: image paths offered as one-click inputs.
        max_pixels: uploads over this many pixels are refused with a message.
        output_dir: where downloads are written (default a new temporary folder).
        tile: the ``--tile`` text chosen at start (default ``auto``: tiles where ``predict --tile auto``
            would use them).
    """
    output_dir = Path(output_dir or tempfile.mkdtemp(prefix="instaseg-serve-"))
    output_dir.mkdir(parents=True, exist_ok=True)
    handlers = DemoHandlers(service, max_pixels, output_dir)
    names = list(service.class_map.names)
    tiles = list(dict.fromkeys([tile or "auto", "auto", TILE_OFF, "512", "1024"]))
    # Gradio's own copies of inputs and outputs are deleted after an hour, checked every 10 minutes.
    with gr.Blocks(title="instaseg", delete_cache=(600, 3600)) as app:
        session = gr.State(None)
        selected = gr.State(None)
        gr.Markdown(f"# instaseg\nInstance segmentation of `{service.path.name}`: {', '.join(names)}")
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=300):
                photo = PhotoInput(
                    label="Photo (drop, paste or webcam)",
                    sources=["upload", "clipboard", "webcam"],
                    type="filepath",
                    image_mode=None,
                    elem_id="input-image",
                )
                submit = gr.Button("Segment", variant="primary", elem_id="submit")
                score = gr.Slider(
                    0.0,
                    1.0,
                    value=max(0.5, service.min_score),
                    step=0.01,
                    label="Score threshold",
                    elem_id="score",
                )
                style = gr.Radio(list(ds.STYLES), value="overlay", label="Output style", elem_id="style")
                color_mode = gr.Radio(
                    list(ds.COLOR_MODES), value="class", label="Colours by", elem_id="colors"
                )
                classes = gr.CheckboxGroup(
                    names, value=[], label="Classes (none ticked = all)", elem_id="classes"
                )
                with gr.Row():
                    tile_choice = gr.Dropdown(tiles, value=tiles[0], label="Tiles", elem_id="tile")
                    tta = gr.Checkbox(False, label="Flip TTA (about 2x time)", elem_id="tta")
                with gr.Accordion("Model card", open=True):
                    gr.Markdown(card_markdown(model_card(service), max_pixels), elem_id="model-card")
            with gr.Column(scale=2, min_width=300):
                status = gr.Markdown(elem_id="status")
                with gr.Tabs():
                    with gr.Tab("Before / after"):
                        compare = gr.ImageSlider(
                            label="Photo | segmented",
                            type="numpy",
                            format="jpeg",
                            elem_id="compare",
                            interactive=False,
                        )
                    with gr.Tab("Pick objects", elem_id="picker-tab"):
                        picker = gr.Image(
                            label="Click an object",
                            type="numpy",
                            format="jpeg",
                            interactive=False,
                            elem_id="picker",
                        )
                legend = gr.HTML(elem_id="legend")
                table = gr.Dataframe(
                    headers=ds.TABLE_HEADERS,
                    label="Detections (select a row)",
                    interactive=False,
                    elem_id="detections",
                )
                prepare = gr.Button("Prepare downloads (full size)", elem_id="prepare")
                downloads = gr.File(
                    label="Downloads", file_count="multiple", interactive=False, elem_id="downloads"
                )
        if examples:
            gr.Examples(examples=[[e] for e in examples], inputs=[photo], label="Example photos")

        view = [compare, picker, table, legend, status]
        photo.change(
            handlers.load,
            inputs=[photo],
            outputs=[session, compare, picker, table, legend, status, selected],
            api_visibility="private",
            concurrency_id="light",
            concurrency_limit=4,
        )
        submit.click(
            handlers.segment,
            inputs=[session, score, style, classes, color_mode, tile_choice, tta],
            outputs=[session, *view, selected],
            api_visibility="private",
            concurrency_id="model",
        )
        for control in (score, style, classes, color_mode):
            control.change(
                handlers.redraw,
                inputs=[session, score, style, classes, color_mode, selected],
                outputs=view,
                api_visibility="private",
                trigger_mode="always_last",
                show_progress="hidden",
                concurrency_id="light",
                concurrency_limit=4,
            )
        for target, function in ((table, handlers.select_row), (picker, handlers.click_picture)):
            target.select(
                function,
                inputs=[session, score, style, classes, color_mode],
                outputs=[*view, selected],
                api_visibility="private",
                concurrency_id="light",
                concurrency_limit=4,
            )
        prepare.click(
            handlers.downloads,
            inputs=[session, score, classes],
            outputs=[downloads],
            api_visibility="private",
            concurrency_id="light",
            concurrency_limit=4,
        )
        _add_api(handlers, score, style, classes)
    return app


def _add_api(handlers: DemoHandlers, score, style, classes) -> None:
    """The stateless ``/predict`` (hidden components) and ``/model_calls`` endpoints."""
    with gr.Column(visible=False):
        api_file = gr.File(type="filepath", label="photo")
        api_picture = gr.Image(type="numpy", format="png", label="picture")
        api_table = gr.Dataframe(headers=ds.TABLE_HEADERS, label="detections")
        api_files = gr.File(file_count="multiple", label="downloads")
        api_status = gr.Markdown()
        api_button = gr.Button()
    api_button.click(
        handlers.api_predict,
        inputs=[api_file, score, style, classes],
        outputs=[api_picture, api_table, api_files, api_status],
        api_name="predict",
        concurrency_id="model",
    )

    def model_calls() -> dict:
        """Runs of the model since the server started."""
        return handlers.counts()

    gr.api(model_calls, api_name="model_calls", queue=False)
