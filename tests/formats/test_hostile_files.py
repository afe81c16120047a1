"""Hostile files around the annotations: JSON nested thousands deep, zip bombs, FIFOs and devices, paths
that lead outside the dataset, URLs that hang or fail, names in another Unicode form. Each ends in a
``DatasetError`` or a problem that names the file and what to do, never a traceback, a hang or a read
outside the dataset."""

from __future__ import annotations

import functools
import http.server
import io
import json
import os
import socket
import threading
import time
import unicodedata
import zipfile

import pytest

from instaseg import storage
from instaseg.formats.detect import detect_format
from instaseg.formats.limits import MAX_ZIP_RATIO
from instaseg.formats.load import load_dataset
from instaseg.problems import DatasetError

from .hostile import FORMATS, has, problems_of, write_dataset, write_image

DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize("format", list(FORMATS))
def test_json_nested_thousands_deep_is_refused_by_every_importer(tmp_path, format):
    _, name, by_folder = FORMATS[format]
    (tmp_path / name).write_text(DEEP)
    with pytest.raises(DatasetError, match="nested too deeply"):
        load_dataset(str(tmp_path if by_folder else tmp_path / name), format=format)
    with pytest.raises(DatasetError, match="nested too deeply"):  # detection parses small files whole
        detect_format(str(tmp_path / name))


# Where a deep value goes: a field that error messages quote (ids), or an image reference.
DEEP_FIELDS = {
    "coco": lambda d: d["images"][0].update(id="__deep__"),
    "labelstudio-json": lambda d: d[0].update(id="__deep__"),
    "labelme": lambda d: d.update(imagePath="__deep__"),
    "via": lambda d: next(iter(d.values())).update(filename="__deep__"),
}


@pytest.mark.parametrize("format", list(FORMATS))
def test_values_nested_around_the_parser_limit(tmp_path, format):
    """Parsed or not, a value nested ~1,000 deep gives a DatasetError or problems, never a RecursionError."""
    factory, name, by_folder = FORMATS[format]
    document = factory()
    DEEP_FIELDS[format](document)
    outcomes = set()
    for depth in range(960, 1000, 2):
        (tmp_path / name).write_text(json.dumps(document).replace('"__deep__"', "[" * depth + "]" * depth))
        try:
            dataset = load_dataset(str(tmp_path if by_folder else tmp_path / name), format=format)
            outcomes.add("problems" if dataset.problems else "clean")
        except DatasetError as e:
            outcomes.add("nested too deeply" if "nested too deeply" in str(e) else "refused")
    assert "nested too deeply" in outcomes and "clean" not in outcomes, outcomes


def _bomb_zip(path, member: str = "result.json", size: int = 50 << 20) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(member, b"[" + b" " * size + b"]")


def test_a_zip_bomb_as_the_export_is_refused(tmp_path):
    export = tmp_path / "export.zip"
    _bomb_zip(export)
    assert export.stat().st_size < (50 << 20) / 500
    with pytest.raises(DatasetError, match=rf"expands \d+ times \(over {MAX_ZIP_RATIO}x: a zip bomb\?\)"):
        load_dataset(str(export))  # detection reads 1 MiB of it; the importer none
    with pytest.raises(DatasetError, match="zip bomb"):
        load_dataset(str(export), format="coco")


def test_a_zip_whose_members_declare_more_than_the_limit_is_refused(tmp_path):
    export = tmp_path / "export.zip"
    with zipfile.ZipFile(export, "w") as archive:
        for i in range(5):
            archive.writestr(f"images/{i}.png", b"x")
    data = bytearray(export.read_bytes())
    # Central directory entries: signature PK\1\2, uncompressed size at offset 24 (4 bytes).
    start = 0
    while (start := data.find(b"PK\x01\x02", start)) != -1:
        data[start + 24 : start + 28] = (0xFFFFFFF0).to_bytes(4, "little")
        start += 4
    export.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=r"the zip expands to 20\.0 GiB, over the limit of 16 GiB"):
        load_dataset(str(export), format="coco")


def test_a_zip_image_member_that_is_a_bomb_is_not_read(tmp_path):
    document = FORMATS["coco"][0]("a.png")
    buffer = io.BytesIO()
    write_image(tmp_path / "real.png")
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("result.json", json.dumps(document))
        archive.writestr("images/a.png", b"\0" * (20 << 20))
    (tmp_path / "export.zip").write_bytes(buffer.getvalue())
    records, problems = problems_of(tmp_path / "export.zip", "coco")
    assert has(problems, "error", "zip member images/a.png expands", "zip bomb", "treated as missing"), (
        problems
    )
    assert records[0].image is None


@pytest.fixture()
def fifo(tmp_path):
    path = tmp_path / "pipe"
    os.mkfifo(path)  # opening it for reading would block until a writer comes: forever
    return path


@pytest.mark.timeout(60)
def test_fifo_and_device_as_data_are_refused_before_opening(fifo):
    for source in (fifo, "/dev/zero"):
        with pytest.raises(DatasetError, match="not a regular file"):
            detect_format(str(source))
        for format in FORMATS:
            with pytest.raises(DatasetError, match="not a regular file"):
                load_dataset(str(source), format=format)


@pytest.mark.timeout(60)
def test_fifos_inside_a_dataset_are_reported_per_file(tmp_path):
    folder = tmp_path / "labelme"
    write_dataset(folder, "labelme", FORMATS["labelme"][0]())
    os.mkfifo(folder / "b.json")  # an annotation file that is a FIFO
    os.mkfifo(folder / "c.png")
    (folder / "c.json").write_text(json.dumps(FORMATS["labelme"][0]("c.png")))  # an image that is a FIFO
    records, problems = problems_of(folder, "labelme")
    assert has(problems, "error", "not a regular file", "file skipped")
    assert has(problems, "error", "image file unusable: ", "not a regular file")
    assert [r.file_name for r in records if r.image is not None] == ["a.png"]


@pytest.fixture()
def outside(tmp_path):
    """A real image outside the dataset folder ``tmp_path/data``."""
    return write_image(tmp_path / "elsewhere" / "secret.png")


def _reference(format: str, path: str):
    factory = FORMATS[format][0]
    return factory(path)


@pytest.mark.parametrize("format", list(FORMATS))
@pytest.mark.parametrize("how", ["absolute", "relative"])
def test_paths_leading_outside_the_dataset_are_refused(tmp_path, outside, format, how):
    folder = tmp_path / "data"
    path = str(outside) if how == "absolute" else "../elsewhere/secret.png"
    source = write_dataset(folder, format, _reference(format, path), image=False)
    records, problems = problems_of(source, format)
    assert has(problems, "error", "leads outside the dataset", "--allow-outside-paths"), problems
    assert all(r.image is None for r in records)
    # With the option the same file is read.
    records, problems = problems_of(source, format, allow_outside_paths=True)
    assert [r.image for r in records] == [str(outside)], problems


def test_urls_that_read_this_machine_are_outside_paths(tmp_path, outside):
    archive = tmp_path / "elsewhere" / "photos.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(outside, "secret.png")
    document = FORMATS["coco"][0](f"local://{outside}")
    document["images"].append(
        {"id": 2, "file_name": f"zip://secret.png::{archive}", "width": 40, "height": 30}
    )
    document["images"].append({"id": 3, "file_name": f"memory://{outside}", "width": 40, "height": 30})
    records, problems = problems_of(write_dataset(tmp_path / "data", "coco", document, image=False), "coco")
    assert sum("leads outside the dataset" in p for p in problems) == 3, problems
    assert all(r.image is None for r in records)


def test_a_name_matching_a_file_inside_is_not_an_outside_read(tmp_path):
    """Label Studio exports write absolute server paths: matched by name inside the dataset, not refused."""
    folder = tmp_path / "data"
    source = write_dataset(folder, "coco", FORMATS["coco"][0]("/label-studio/media/upload/3/a.png"))
    records, problems = problems_of(source, "coco")
    assert records[0].image == str(folder / "a.png") and problems == []


@pytest.mark.parametrize(
    "on_disk, written",
    [("NFC", "NFD"), ("NFD", "NFC")],
)
@pytest.mark.parametrize("format", list(FORMATS))
def test_names_match_in_another_unicode_form(tmp_path, format, on_disk, written):
    name = "caf\u00e9 \u00e5.png"
    folder = tmp_path / "data"
    write_image(folder / unicodedata.normalize(on_disk, name))
    source = write_dataset(
        folder, format, _reference(format, unicodedata.normalize(written, name)), image=False
    )
    records, problems = problems_of(source, format)
    assert len(records) == 1 and records[0].image is not None, problems
    assert unicodedata.normalize("NFC", os.path.basename(records[0].image)) == name


@pytest.fixture()
def image_server(tmp_path):
    """An http server on 127.0.0.1 serving ``tmp_path/served`` (holding a.png)."""
    served = tmp_path / "served"
    write_image(served / "a.png")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture()
def silent_server():
    """A port that accepts connections and never answers (a network that hangs)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    listener.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_remote_images_are_fetched(tmp_path, image_server):
    source = write_dataset(
        tmp_path / "data", "coco", FORMATS["coco"][0](f"{image_server}/a.png"), image=False
    )
    records, problems = problems_of(source, "coco")
    assert records[0].image == f"{image_server}/a.png" and len(records[0].annotations) == 1, problems


def test_a_remote_image_that_cannot_be_fetched_is_reported(tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}/a.png"
    source = write_dataset(tmp_path / "data", "coco", FORMATS["coco"][0](url), image=False)
    records, problems = problems_of(source, "coco")
    assert has(problems, "error", f"image URL {url} cannot be fetched", "--images DIR"), problems
    assert records[0].image is None


@pytest.mark.timeout(60)
def test_a_host_that_never_answers_is_waited_on_once(tmp_path, silent_server, monkeypatch):
    monkeypatch.setattr(storage, "HTTP_TIMEOUT", 1.0)
    document = FORMATS["coco"][0](f"{silent_server}/a.png")
    document["images"] += [
        {"id": i, "file_name": f"{silent_server}/{i}.png", "width": 40, "height": 30} for i in range(2, 6)
    ]
    source = write_dataset(tmp_path / "data", "coco", document, image=False)
    start = time.monotonic()
    records, problems = problems_of(source, "coco")
    assert time.monotonic() - start < 10  # one timeout, not five
    assert has(problems, "error", "cannot be fetched (no answer within 1 s)")
    assert sum("did not answer before" in p for p in problems) == 4
    assert all(r.image is None for r in records)


def test_label_studio_urls_are_fetched_when_not_local(tmp_path, image_server):
    tasks = FORMATS["labelstudio-json"][0](f"{image_server}/a.png?sig=1")
    tasks += FORMATS["labelstudio-json"][0](
        "http://localhost:1/data/upload/1/2f4821cd-b.png"
    )  # Label Studio's own
    tasks[1]["id"] = 2
    source = write_dataset(tmp_path / "data", "labelstudio-json", tasks, image=False)
    records, problems = problems_of(source, "labelstudio-json")
    assert records[0].image == f"{image_server}/a.png?sig=1" and len(records[0].annotations) == 1
    assert records[1].image is None and not any("cannot be fetched" in p for p in problems), problems
