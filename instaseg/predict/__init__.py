"""``instaseg predict``'s inputs and outputs. The prediction itself is :class:`instaseg.model.predictor.Predictor`.

- :mod:`.inputs`: INPUT arguments (files, folders, globs, bucket URLs) -> image locations and output names;
- :mod:`.outputs`: overlay/binary/rgb/ids PNGs, COCO results and Label Studio pre-annotations.

Importing this package loads nothing heavy (the CLI reads :data:`SAVE_KINDS` from it for ``--help``).
"""

# --save names, in the order --help lists them. "json" and "label-studio" are assembled for the whole run.
SAVE_KINDS = ("overlay", "binary", "instance-masks", "rgb", "ids", "json", "label-studio")


def check_save_kinds(kinds: list[str]) -> list[str]:
    """``kinds`` without repeats; ``ValueError`` listing the valid names for an unknown one or none at all."""
    unknown = [k for k in kinds if k not in SAVE_KINDS]
    if unknown or not kinds:
        raise ValueError(
            f"unknown output(s) {', '.join(unknown) or '(none)'}; valid: {', '.join(SAVE_KINDS)}"
        )
    return list(dict.fromkeys(kinds))
