"""The result of importing a dataset: records, class map and what was found wrong."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from .core import ClassMap, Record
from .problems import Problem


@dataclass
class Dataset:
    """An imported dataset.

    Attributes:
        format: the format it was read as (e.g. ``"coco"``, ``"labelstudio-json"``).
        source: the file or folder (path or URL) it was read from.
        class_map: names of labels 1..K.
        records: one per listed image, in source order; ``record.image is None`` for images listed by
            the annotations whose file is missing.
        problems: warnings (safe repairs, skipped items) and errors found while importing.
    """

    format: str
    source: str
    class_map: ClassMap
    records: list[Record]
    problems: list[Problem] = field(default_factory=list)

    @property
    def present(self) -> list[Record]:
        """Records whose image file exists."""
        return [r for r in self.records if r.image is not None]

    @property
    def missing(self) -> list[Record]:
        return [r for r in self.records if r.image is None]

    def category_counts(self) -> dict[str, int]:
        """Class name -> number of instances on present images (crowd regions included), every class listed."""
        counts = Counter(a.label for r in self.present for a in r.annotations)
        return {name: counts.get(i + 1, 0) for i, name in enumerate(self.class_map.names)}

    def num_instances(self) -> int:
        return sum(len(r.annotations) for r in self.present)
