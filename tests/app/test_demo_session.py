"""The web demo's session logic without a browser: display scaling, filtering, picking, legend, highlight,
the model card, and the full-size downloads read back. Real DSB nuclei images and masks."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from instaseg.app import demo_session as ds
from instaseg.app.demo_downloads import write_downloads
from instaseg.app.model_card import card_markdown, model_card
from instaseg.core import ClassMap, Instances
from instaseg.formats.load import load_dataset
from instaseg.images import load_image
from instaseg.masks import Masks, rle_to_mask

CLASSES = ClassMap(("nucleus",))


@pytest.fixture(scope="module")
def nuclei(datasets):
    """(photo 4x upscaled to ~1024 px, Instances with box-local masks and scores decreasing) of a DSB image."""
    dataset = load_dataset(str(datasets / "dsb2018_nuclei_sample"))
    record = next(r for r in dataset.records if len(r.annotations) >= 10)
    image = load_image(record.image)
    truth = record.instances()
    big = cv2.resize(image, None, fx=4, fy=4, interpolation=cv2.INTER_NEAREST)
    pieces = []
    for i in range(len(truth)):
        y0, x0, crop = truth.mask_crop(i)
        pieces.append((4 * y0, 4 * x0, np.kron(crop, np.ones((4, 4), bool))))
    height, width = big.shape[:2]
    masks = Masks.from_crops([c for _, _, c in pieces], [(y, x) for y, x, _ in pieces], height, width)
    scores = np.linspace(0.95, 0.3, len(truth)).astype(np.float32)
    return big, Instances(truth.boxes * 4, truth.labels, masks, scores)


@pytest.fixture()
def session(nuclei):
    photo, instances = nuclei
    display, scale = ds.display_copy(photo, side=512)
    session = ds.PhotoSession("nuclei.png", photo, display, scale)
    ds.attach_prediction(session, instances, ("auto", False))
    return session


def test_display_copy_and_scaled_instances_match_the_full_size(session, nuclei):
    photo, instances = nuclei
    assert max(session.display.shape[:2]) == 512 and session.scale == pytest.approx(
        512 / max(photo.shape[:2])
    )
    small = session.display_instances
    assert len(small) == len(instances) and small.image_size == session.display.shape[:2]
    np.testing.assert_allclose(small.boxes, instances.boxes * session.scale, rtol=1e-5)
    ratio = small.areas() / (instances.areas() * session.scale**2)
    assert np.all((ratio > 0.7) & (ratio < 1.4)), ratio
    assert session.model_runs == 1


def test_threshold_and_classes_choose_rows(session):
    everything = ds.visible_rows(session.instances, 0.0, [], CLASSES)
    strict = ds.visible_rows(session.instances, 0.6, ["nucleus"], CLASSES)
    assert len(everything) == len(session.instances)
    assert 0 < len(strict) < len(everything) and (session.instances.scores[strict] >= 0.6).all()
    with pytest.raises(KeyError, match="known classes: nucleus"):
        ds.visible_rows(session.instances, 0.0, ["cat"], CLASSES)


def test_click_finds_the_object_under_the_pointer(session):
    rows = ds.visible_rows(session.instances, 0.0, [], CLASSES)
    y0, x0, crop = session.display_instances.mask_crop(3)
    ys, xs = np.nonzero(crop)
    hit = ds.instance_at(session, rows, x0 + xs[len(xs) // 2], y0 + ys[len(ys) // 2])
    assert hit == 3  # ground-truth nuclei do not overlap: the object under the pointer is that one
    union = ds.draw_style(session.display, session.display_instances, "binary", CLASSES)[:, :, 0]
    background = np.argwhere(union == 0)[0]
    assert ds.instance_at(session, rows, background[1], background[0]) is None


def test_legend_counts_and_highlight_only_near_the_selected_object(session):
    rows = ds.visible_rows(session.instances, 0.6, [], CLASSES)
    legend = ds.legend_html(session.instances[rows], CLASSES, "class")
    assert f'data-count="{len(rows)}"' in legend and "nucleus" in legend
    plain = ds.draw_view(session, rows, "overlay", CLASSES)
    marked = ds.draw_view(session, rows, "overlay", CLASSES, selected=2)
    changed = (plain != marked).any(axis=2)
    y0, x0, crop = session.display_instances[rows].mask_crop(2)
    near = np.zeros(changed.shape, bool)
    near[max(0, y0 - 8) : y0 + crop.shape[0] + 8, max(0, x0 - 8) : x0 + crop.shape[1] + 8] = True
    assert changed.any() and not changed[~near].any()


def test_model_card_reads_the_run_beside_the_checkpoint(tmp_path):
    class Service:
        path = tmp_path / "run" / "best.pt"
        class_map = CLASSES
        version = "instaseg-best-123"

    (tmp_path / "run" / "eval-test").mkdir(parents=True)
    card = model_card(Service())
    assert card.train_images is None and card.test_mask_map is None
    (tmp_path / "run" / "splits.json").write_text(
        json.dumps({"train": ["a", "b", "c"], "val": [], "test": []})
    )
    report = {"images": 7, "segm": {"AP": 0.412}}
    (tmp_path / "run" / "eval-test" / "report.json").write_text(json.dumps(report))
    card = model_card(Service())
    assert (card.train_images, card.test_mask_map, card.test_images) == (3, 0.412, 7)
    text = card_markdown(card, 50_000_000)
    assert "41.2" in text and "instaseg-best-123" in text and "nucleus" in text


def test_downloads_are_full_size_and_read_back(session, tmp_path):
    rows = ds.visible_rows(session.instances, 0.6, [], CLASSES)
    shown = session.instances[rows]
    files = write_downloads(tmp_path, "nuclei.png", session.photo, shown, CLASSES, "v1")
    by_suffix = {Path(f).name.split("nuclei", 1)[1]: f for f in files}
    height, width = session.photo.shape[:2]
    for key in ("_overlay.jpg", "_binary.png", "_rgb.png", "_ids.png"):
        assert Image.open(by_suffix[key]).size == (width, height)
    ids = np.asarray(Image.open(by_suffix["_ids.png"]))
    assert set(np.unique(ids)) - {0} == set(range(1, len(shown) + 1))
    with zipfile.ZipFile(by_suffix["_instances.zip"]) as zipped:
        assert len(zipped.namelist()) == len(shown)
    results = json.loads(Path(by_suffix["_coco.json"]).read_text())
    assert len(results) == len(shown)
    np.testing.assert_array_equal(rle_to_mask(results[0]["segmentation"]), shown.mask(0))
    tasks = json.loads(Path(by_suffix["_label_studio.json"]).read_text())
    prediction = tasks[0]["predictions"][0]
    assert prediction["model_version"] == "v1" and len(prediction["result"]) >= len(shown)
