"""``instaseg label-config``: the printed XML is what the backend reads back, for classes or a checkpoint."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from instaseg.app.ls_protocol import config_label_values, parse_label_config
from instaseg.cli import main

from ..checkpoints import save_light_checkpoint


@pytest.mark.parametrize(("control", "kind"), [("brush", "brushlabels"), ("polygon", "polygonlabels")])
def test_classes_give_a_config_with_smart_tools(capsys, control, kind):
    assert main(["label-config", "--classes", "cat, dog & co", "--control", control]) == 0
    xml = capsys.readouterr().out
    target = parse_label_config(xml)
    assert (target.kind, target.labels, target.data_key) == (kind, ("cat", "dog & co"), "image")
    root = ET.fromstring(xml)
    for tag in ("RectangleLabels", "KeyPointLabels"):
        (smart,) = root.iter(tag)
        assert smart.get("smart") == "true" and smart.get("toName") == target.to_name
        assert [label.get("value") for label in smart.iter("Label")] == ["cat", "dog & co"]
    assert config_label_values(xml) == {"cat", "dog & co"}


def test_checkpoint_classes(capsys, tmp_path):
    path = save_light_checkpoint(tmp_path / "m.pt", ["nucleus", "debris"], 64)
    assert main(["label-config", "--checkpoint", str(path), "--image-key", "photo"]) == 0
    target = parse_label_config(capsys.readouterr().out)
    assert target.labels == ("nucleus", "debris") and target.data_key == "photo"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--classes", "a,a"], "distinct"),
        (["--classes", "a,,b"], "distinct"),
        (["--checkpoint", "/nonexistent/m.pt"], "not found"),
        (["--classes", "a", "--image-key", "x y"], "--image-key"),
    ],
)
def test_bad_arguments_are_one_line_errors(capsys, argv, message):
    assert main(["label-config", *argv]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and "\n" not in error
