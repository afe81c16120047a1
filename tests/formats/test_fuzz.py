"""Property-based fuzzing of the importers, the predictions reader and the brush RLE decoder, on a small fixed budget (derandomized:
the same examples on every run). ``bench/fuzz.py`` runs many more. Any exception other than the
``DatasetError`` of a refused file (a ``ValueError`` for a brush RLE) fails the test with the example."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from .fuzz_targets import (
    TEMPLATES,
    brush_cases,
    check_predictions_document,
    decode_brush,
    fixed_budget,
    import_document,
    make_folder,
    mutated,
    predictions_document,
)

BUDGET = fixed_budget(200)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("fuzz"))


@pytest.mark.parametrize("format", list(TEMPLATES))
def test_mutated_documents_import_or_are_refused(folder, format):
    outcomes = []

    @BUDGET
    @given(mutated(TEMPLATES[format][0]))
    def run(document):
        outcomes.append(import_document(format, document, folder))

    run()
    # The budget reaches both outcomes: the mutations are neither all harmless nor all fatal.
    assert {"imported", "refused"} <= set(outcomes)


def test_mutated_predictions_files_are_checked_or_refused(folder):
    outcomes = []

    @BUDGET
    @given(mutated(predictions_document))
    def run(document):
        outcomes.append(check_predictions_document(document, folder))

    run()
    assert {"imported", "refused"} <= set(outcomes)


@BUDGET
@given(st.data())
def test_mutated_brush_rles_decode_or_are_refused(data):
    assert decode_brush(*data.draw(brush_cases())) in ("imported", "refused")


def test_the_unmutated_documents_import_cleanly(folder):
    from instaseg.formats.load import load_dataset

    objects = {"coco": 3, "labelstudio-json": 3, "labelme": 2, "via": 3}  # labelme: 2 shapes are 1 group
    assert check_predictions_document(predictions_document(), folder) == "imported"
    for format, (template, name) in TEMPLATES.items():
        assert import_document(format, template(), folder) == "imported"
        dataset = load_dataset(str(folder if format in ("labelme", "via") else folder / name), format=format)
        assert [p for p in dataset.problems if p.level == "error"] == [], format
        assert dataset.num_instances() == objects[format], format
