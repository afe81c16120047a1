"""Label Studio's side of the ML backend protocol, without any web framework: label configs and regions.

- :func:`parse_label_config`: a project's XML label config -> :class:`LabelTarget` (the ``PolygonLabels``
  or ``BrushLabels`` tag to fill: its ``from_name``, the ``Image`` tag it points at, the data key holding
  the image URL, and its label values).

The regions themselves are written by :func:`instaseg.formats.labelstudio_export.instances_to_label_studio_regions`
(the converter ``instaseg predict --save label-studio`` uses too) with the target found here.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from ..core import ClassMap

# Control tag name -> the result ``type`` Label Studio expects for it.
SUPPORTED_CONTROLS = {"PolygonLabels": "polygonlabels", "BrushLabels": "brushlabels"}


class LabelConfigError(ValueError):
    """A label config this backend cannot fill (no PolygonLabels/BrushLabels on an Image, bad XML...)."""


@dataclass(frozen=True)
class LabelTarget:
    """Where predictions go in a Label Studio project.

    Attributes:
        kind: ``"polygonlabels"`` or ``"brushlabels"`` (the result ``type``).
        from_name: the control tag's ``name``.
        to_name: the ``Image`` tag's ``name`` (the control's ``toName``).
        data_key: the task ``data`` key with the image URL (``value="$image"`` -> ``"image"``).
        labels: the control's ``Label`` values, in config order.
    """

    kind: str
    from_name: str
    to_name: str
    data_key: str
    labels: tuple[str, ...]

    def label_for(self, class_map: ClassMap) -> dict[int, str]:
        """Model label 1..K -> Label Studio label value, for the classes the config has.

        Names match case-insensitively; a one-class model on a one-label config maps regardless of the
        name (a "nucleus" model pre-annotating a "Nucleus" project).

        Raises:
            LabelConfigError: no model class matches any label, listing both sets of names.
        """
        by_lower = {value.lower(): value for value in self.labels}
        mapping = {
            i + 1: by_lower[name.lower()]
            for i, name in enumerate(class_map.names)
            if name.lower() in by_lower
        }
        if not mapping and len(self.labels) == 1 and class_map.num_classes == 1:
            mapping = {1: self.labels[0]}
        if not mapping:
            raise LabelConfigError(
                f"none of the model's classes {list(class_map.names)} is a label of {self.from_name!r} "
                f"({list(self.labels)}); add a <Label value=...> with a model class name to the config"
            )
        return mapping


def parse_label_config(config: str) -> LabelTarget:
    """The first ``PolygonLabels`` or ``BrushLabels`` tag of a label config that points at an ``Image``.

    Raises:
        LabelConfigError: the XML is malformed, or has no supported control tag on an ``Image`` with a
            ``$variable`` value; the message lists what was found.
    """
    if not isinstance(config, str) or not config.strip():
        raise LabelConfigError(
            "the label config is empty; expected Label Studio XML such as <View>...</View>"
        )
    try:
        root = ET.fromstring(config)
    except ET.ParseError as e:
        raise LabelConfigError(f"the label config is not valid XML ({e})") from None
    images = {el.get("name"): el.get("value", "") for el in root.iter("Image") if el.get("name")}
    found = []
    for element in root.iter():
        if element.tag not in SUPPORTED_CONTROLS:
            if element.tag.endswith("Labels") or element.tag in ("Polygon", "Brush"):
                found.append(element.tag)
            continue
        name, to_name = element.get("name"), element.get("toName")
        value = images.get(to_name, "")
        labels = tuple(label.get("value") for label in element.iter("Label") if label.get("value"))
        if not name or not value.startswith("$") or not labels:
            found.append(f"{element.tag} name={name!r} toName={to_name!r}")
            continue
        return LabelTarget(SUPPORTED_CONTROLS[element.tag], name, to_name, value[1:], labels)
    raise LabelConfigError(
        "the label config has no <PolygonLabels> or <BrushLabels> with <Label> values pointing (toName) at an "
        f'<Image value="$...">; found: {found or "no labels tags"}'
    )


# Smart (interactive) control tag name -> the context item ``type`` Label Studio sends for it.
PROMPT_CONTROLS = {"RectangleLabels": "rectanglelabels", "KeyPointLabels": "keypointlabels"}


def config_label_values(config: str) -> set[str]:
    """Every ``<Label value=...>`` of a label config (the names a prompt's label may carry); empty for XML
    that does not parse (:func:`parse_label_config` reports that)."""
    try:
        root = ET.fromstring(config)
    except (ET.ParseError, TypeError):
        return set()
    return {label.get("value") for label in root.iter("Label") if label.get("value")}


def label_config_xml(classes: list[str], control: str = "brush", image_key: str = "image") -> str:
    """A labeling config for ``classes``: the ``BrushLabels`` (``control="brush"``) or ``PolygonLabels``
    (``"polygon"``) control the backend fills, beside ``smart="true"`` ``RectangleLabels`` and
    ``KeyPointLabels`` with the same labels (the interactive prompts), all on ``<Image value="$image">``.

    Raises:
        ValueError: no classes, a repeated or empty name, or an unknown ``control``.
    """
    from xml.sax.saxutils import quoteattr

    tags = {"brush": "BrushLabels", "polygon": "PolygonLabels"}
    if control not in tags:
        raise ValueError(f"unknown control {control!r}; valid: {', '.join(tags)}")
    names = [c.strip() for c in classes]
    if not names or any(not n for n in names) or len(set(names)) != len(names):
        raise ValueError(f"classes must be distinct non-empty names, got {classes!r}")
    palette = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45"]

    def labels(indent: str) -> str:
        return "\n".join(
            f"{indent}<Label value={quoteattr(n)} background={quoteattr(palette[i % len(palette)])}/>"
            for i, n in enumerate(names)
        )

    main = tags[control]
    extra = ' strokeWidth="3" pointSize="small"' if control == "polygon" else ""
    return (
        "<View>\n"
        f'  <Image name="image" value="${image_key}" zoom="true"/>\n'
        f'  <{main} name="label" toName="image"{extra}>\n{labels("    ")}\n  </{main}>\n'
        '  <RectangleLabels name="box_prompt" toName="image" smart="true" showInline="true">\n'
        f"{labels('    ')}\n  </RectangleLabels>\n"
        '  <KeyPointLabels name="click_prompt" toName="image" smart="true" showInline="true">\n'
        f"{labels('    ')}\n  </KeyPointLabels>\n"
        "</View>\n"
    )
