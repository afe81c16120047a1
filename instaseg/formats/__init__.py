"""Importers and exporters of annotated datasets.

Each importer is a function ``load(source, images, log) -> (ClassMap, list[Record])`` that reads one
format as real tools write it, maps categories once to labels 1..K, and reports problems to ``log``
instead of raising, except for input that is unusable as a whole (``DatasetError``).
:func:`load_dataset` picks the importer (auto-detected, or by name) and returns a :class:`Dataset`.
"""
