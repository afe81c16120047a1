"""Damaged checkpoints: every field of the header is checked before a model is built, and each kind of
damage gives one clear line from the CLI (exit 2), never a traceback or torch's weights_only advice."""

from __future__ import annotations

import collections

import pytest
import torch

from instaseg.cli import main
from instaseg.model.checkpoint import CheckpointError, load_checkpoint

from ..checkpoints import save_light_checkpoint


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "good.pt"
    save_light_checkpoint(path, ["cell", "debris"], 64)
    return torch.load(path, weights_only=True)


def damaged(good: dict, change) -> dict:
    payload = {**good, "model_config": dict(good["model_config"])}
    change(payload)
    return payload


CASES = [
    ("empty class names", lambda p: p.update(class_names=[]), "class_names the list is empty"),
    ("class names not a list", lambda p: p.update(class_names="cell"), "class_names must be a list"),
    ("repeated class name", lambda p: p.update(class_names=["a", "a"]), "class names must be unique"),
    (
        "config not a dict",
        lambda p: p.update(model_config=[1, 2]),
        "model_config: ModelConfig must be a mapping",
    ),
    ("image size as a string", lambda p: p["model_config"].update(image_size="512"), "image_size"),
    (
        "huge image size",
        lambda p: p["model_config"].update(image_size=10**7),
        "image_size (pixels) must be in",
    ),
    ("threshold as a string", lambda p: p["model_config"].update(score_threshold="0.5"), "score_threshold"),
    ("NaN threshold", lambda p: p["model_config"].update(mask_threshold=float("nan")), "mask_threshold"),
    ("unknown architecture", lambda p: p["model_config"].update(arch="yolo"), "unknown architecture 'yolo'"),
    (
        "classes disagree",
        lambda p: p["model_config"].update(num_classes=5),
        "5 classes but class_names lists 2",
    ),
    ("weights not tensors", lambda p: p.update(model={"a": 1}), "not a dict of named tensors"),
]


@pytest.mark.parametrize("name, change, message", CASES, ids=[c[0] for c in CASES])
def test_damaged_header_is_named(good, tmp_path, capsys, name, change, message):
    path = tmp_path / "damaged.pt"
    torch.save(damaged(good, change), path)
    with pytest.raises(CheckpointError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_checkpoint(path)
    code = main(["predict", str(path), str(tmp_path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


class Gadget:  # any class: a checkpoint holding one would run code if unpickled without weights_only
    pass


def test_code_objects_are_refused_without_advising_weights_only_false(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"format": "instaseg-checkpoint", "model": collections.OrderedDict(), "x": Gadget()}, path)
    code = main(["predict", str(path), str(tmp_path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "holds Python objects other than tensors" in err
    assert "weights_only set to False" not in err and "will likely succeed" not in err


@pytest.mark.parametrize("content", [b"", b"not a checkpoint", b"PK\x03\x04" + b"\x00" * 50])
def test_garbage_is_not_a_checkpoint(tmp_path, capsys, content):
    path = tmp_path / "junk.pt"
    path.write_bytes(content)
    code = main(["predict", str(path), str(tmp_path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "is not a readable checkpoint" in err and "weights_only" not in err
