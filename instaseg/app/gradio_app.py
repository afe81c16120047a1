"""The Gradio demo: an image in, the masked image, a table of detections and downloads out.

:func:`build_app` returns a ``gr.Blocks`` whose one event, ``api_name="predict"``, is also the API that
``gradio_client`` calls::

    Client(url).predict(handle_file("photo.jpg"), 0.5, "overlay", [], api_name="/predict")
    # -> (masked image path, detections table {"headers", "data"}, [masks PNG path, predictions JSON path],
    #     status markdown)

Inputs that cannot be used (not an image, corrupt, over the pixel limit) raise ``gr.Error``: the browser
shows the message and the server keeps serving.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import gradio as gr
import numpy as np

from .. import render
from ..core import ClassMap, Instances
from ..formats.coco_export import instances_to_coco_results
from .service import DEFAULT_MAX_PIXELS, InputError, ModelService, decode_upload

STYLES = ("overlay", "binary", "rgb")
TABLE_HEADERS = ["id", "class", "score", "area", "x_min", "y_min", "x_max", "y_max"]
KEPT_DOWNLOADS = 64  # request folders kept on disk; Gradio serves its own copies of the files


def render_style(image: np.ndarray, instances: Instances, style: str, class_map: ClassMap) -> np.ndarray:
    """The output picture of one style: RGB uint8 ``(H, W, 3)`` at the image's size."""
    if style == "overlay":
        return render.draw_overlay(image, instances, class_map)
    if style == "binary":
        return np.repeat(render.binary_mask(instances)[:, :, None], 3, axis=2)
    if style == "rgb":
        return render.rgb_masked_image(instances)
    raise ValueError(f"unknown output style {style!r}; valid: {', '.join(STYLES)}")


def detections_table(instances: Instances, class_map: ClassMap) -> list[list]:
    """Rows ``[id, class, score, area px, x_min, y_min, x_max, y_max]`` (box xyxy pixels), by score."""
    areas = instances.areas()
    return [
        [
            i + 1,
            class_map.name(int(instances.labels[i])),
            round(float(instances.scores[i]), 4),
            int(areas[i]),
            *(round(float(v), 1) for v in instances.boxes[i]),
        ]
        for i in range(len(instances))
    ]


def predictions_json(instances: Instances, class_map: ClassMap, file_name: str) -> dict:
    """One image's predictions as COCO results (:func:`~instaseg.formats.coco_export.instances_to_coco_results`,
    the converter of ``instaseg predict --save json``) with the image's name, size and the categories."""
    height, width = instances.image_size
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(class_map.names)]
    results = instances_to_coco_results(instances)
    return {
        "image": file_name,
        "width": width,
        "height": height,
        "categories": categories,
        "results": results,
    }


class DemoHandler:
    """The app's prediction function, with the model, limits and a folder for the downloads.

    Args:
        service: the loaded model.
        max_pixels: uploads over this many pixels are refused with a message.
        output_dir: where the per-request downloads are written (Gradio serves them from there).
    """

    def __init__(self, service: ModelService, max_pixels: int, output_dir: Path):
        self.service = service
        self.max_pixels = max_pixels
        self.output_dir = output_dir

    def __call__(self, file_path: str | None, score_threshold: float, style: str, classes: list[str] | None):
        if not file_path:
            raise gr.Error("Upload an image first.")
        name = Path(file_path).name
        data = Path(file_path).read_bytes()
        try:
            image = decode_upload(data, name, self.max_pixels)
        except InputError as e:
            raise gr.Error(str(e)) from None
        if style not in STYLES:
            raise gr.Error(f"unknown output style {style!r}; choose one of {', '.join(STYLES)}")
        instances = self.service.predict(image)
        keep = instances.scores >= float(score_threshold)
        if classes:
            known = set(self.service.class_map.names)
            unknown = sorted(set(classes) - known)
            if unknown:
                raise gr.Error(f"unknown classes {unknown}; this model knows {sorted(known)}")
            wanted = [self.service.class_map.label(c) for c in classes]
            keep &= np.isin(instances.labels, wanted)
        instances = instances[keep]
        picture = render_style(image, instances, style, self.service.class_map)
        folder = self._new_folder()
        stem = Path(name).stem
        masks_path = folder / f"{stem}_masks.png"
        ids = render.instance_id_image(instances)
        masks_path.write_bytes(render.encode_png(ids))
        json_path = folder / f"{stem}_predictions.json"
        json_path.write_text(json.dumps(predictions_json(instances, self.service.class_map, name)))
        table = detections_table(instances, self.service.class_map)
        status = f"{len(instances)} objects on {name} ({image.shape[1]}x{image.shape[0]} pixels)"
        return picture, table, [str(masks_path), str(json_path)], status

    def _new_folder(self) -> Path:
        """A fresh folder for one request's downloads; the oldest beyond :data:`KEPT_DOWNLOADS` are removed."""
        folders = sorted(self.output_dir.iterdir(), key=lambda p: p.stat().st_mtime)
        for old in folders[: max(0, len(folders) - KEPT_DOWNLOADS + 1)]:
            shutil.rmtree(old, ignore_errors=True)
        return Path(tempfile.mkdtemp(dir=self.output_dir))


def build_app(
    service: ModelService,
    examples: list[str] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    output_dir: str | Path | None = None,
) -> gr.Blocks:
    """The demo's ``gr.Blocks`` (not launched). ``examples``: image paths offered as one-click inputs."""
    output_dir = Path(output_dir or tempfile.mkdtemp(prefix="instaseg-serve-"))
    output_dir.mkdir(parents=True, exist_ok=True)
    handler = DemoHandler(service, max_pixels, output_dir)
    names = list(service.class_map.names)
    # Gradio's own copies of inputs and outputs are deleted after an hour, checked every 10 minutes.
    with gr.Blocks(title="instaseg", delete_cache=(600, 3600)) as app:
        gr.Markdown(
            f"# instaseg\nInstance segmentation with `{service.path.name}` "
            f"(classes: {', '.join(names)}). Images up to {max_pixels / 1e6:g} megapixels."
        )
        with gr.Row():
            with gr.Column():
                upload = gr.File(label="Image", file_types=["image"], type="filepath", elem_id="input-image")
                score = gr.Slider(
                    0.0,
                    1.0,
                    value=max(0.5, service.min_score),
                    step=0.01,
                    label="Score threshold",
                    elem_id="score",
                )
                style = gr.Radio(list(STYLES), value="overlay", label="Output style", elem_id="style")
                classes = gr.CheckboxGroup(
                    names, value=[], label="Classes (none ticked = all)", elem_id="classes"
                )
                submit = gr.Button("Segment", variant="primary", elem_id="submit")
            with gr.Column():
                output = gr.Image(
                    label="Masked image",
                    type="numpy",
                    format="png",
                    elem_id="output-image",
                    interactive=False,
                )
                status = gr.Markdown(elem_id="status")
                table = gr.Dataframe(
                    headers=TABLE_HEADERS, label="Detections", interactive=False, elem_id="detections"
                )
                downloads = gr.File(
                    label="Downloads (instance-id masks PNG, predictions JSON)",
                    file_count="multiple",
                    interactive=False,
                    elem_id="downloads",
                )
        if examples:
            gr.Examples(examples=[[e] for e in examples], inputs=[upload], label="Example images")
        submit.click(
            handler,
            inputs=[upload, score, style, classes],
            outputs=[output, table, downloads, status],
            api_name="predict",
        )
    return app
