"""Importers and exporters of annotated datasets.

Each importer is a function ``load(source, images, log, allow_outside_paths=False) -> (ClassMap,
list[Record])`` that reads one format as real tools write it, maps categories once to labels 1..K, and
reports problems to ``log`` instead of raising, except for input that is unusable as a whole
(``DatasetError``). Every importer applies the same limits (:mod:`instaseg.formats.limits`: pixels per
image, objects per image, outline length, JSON and zip sizes) and reads images only inside the dataset
folder or ``images`` unless ``allow_outside_paths`` (:mod:`instaseg.formats.image_files`).
:func:`load_dataset` picks the importer (auto-detected, or by name) and returns a :class:`Dataset`.
"""
