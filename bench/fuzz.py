"""Fuzz the importers (COCO, Label Studio JSON, labelme, VIA), the predictions reader (COCO results, read,
checked and evaluated), the brush RLE decoder and the Label Studio backend's ``/predict`` body (in-process,
a light model with random weights, real images over loopback HTTP) with many more examples than the test
suite, and print the outcome counts.

Each example is a valid document of the format mutated at random places with hostile values (see
``tests/formats/fuzz_targets.py``); it must import or be refused with a ``DatasetError`` (brush:
a ``ValueError``; backend: a 200 with one entry per task, or a 4xx with a one-line error, counted as
imported and refused). Any other exception, or another answer, is counted under its type and the first example of each is printed.
Runs are reproducible: the same ``--seed`` and ``--examples`` give the same documents.

    .venv/bin/python bench/fuzz.py                      # 5,000 examples per target, seed 0
    .venv/bin/python bench/fuzz.py --examples 20000 --targets coco via --seed 3
    .venv/bin/python bench/fuzz.py --examples 2000 --targets backend

Exit status 1 when any example raised an unexpected exception.
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
import traceback
from contextlib import ExitStack
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hypothesis import HealthCheck, given, seed, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tests.formats.fuzz_targets import (  # noqa: E402
    TEMPLATES,
    brush_cases,
    check_predictions_document,
    decode_brush,
    import_document,
    make_folder,
    mutated,
    predictions_document,
)

TARGETS = (*TEMPLATES, "predictions", "brush", "backend")
SAMPLE_IMAGES = REPO / "instaseg" / "sample_data" / "nuclei" / "images"


def start_backend(stack: ExitStack, tmp: Path):
    """``(test client of the backend, URL of a real image)``: a light checkpoint with random weights, the
    sample images over loopback HTTP; closed with ``stack``."""
    import logging

    from tests.app.backend_fuzz import backend_client, serve_images
    from tests.checkpoints import save_light_checkpoint

    logging.getLogger("instaseg.ls_backend").setLevel(logging.ERROR)  # not a line per refused task

    checkpoint = save_light_checkpoint(
        tmp / "light.pt", ["nucleus"], 256, score_threshold=0.05, detections_per_image=20
    )
    base = stack.enter_context(serve_images(SAMPLE_IMAGES))
    client = stack.enter_context(backend_client(checkpoint))
    return client, f"{base}/{sorted(SAMPLE_IMAGES.glob('*.png'))[0].name}"


def check_backend(backend, body) -> str:
    from tests.app.backend_fuzz import backend_predict_answer

    return "refused" if backend_predict_answer(backend[0], body) == "refused" else "imported"


def fuzz(
    target: str, examples: int, random_seed: int, folder: Path, backend=None
) -> tuple[collections.Counter, dict]:
    """``(outcome counts, first failing example and traceback per exception type)`` of one target
    (``backend``: :func:`start_backend`'s pair, for the backend target)."""
    counts: collections.Counter = collections.Counter()
    failures: dict[str, tuple[str, str]] = {}
    templates = {
        **{name: template for name, (template, _) in TEMPLATES.items()},
        "predictions": predictions_document,
    }
    if target == "backend":
        from tests.app.backend_fuzz import backend_predict_body

        templates["backend"] = lambda: backend_predict_body(backend[1])
    strategy = brush_cases() if target == "brush" else mutated(templates[target])

    @seed(random_seed)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=["generate"],  # count every generated example; no shrinking of failures
        suppress_health_check=list(HealthCheck),
    )
    @given(st.just(target), strategy)
    def run(name, case):
        try:
            if name == "brush":
                outcome = decode_brush(*case)
            elif name == "backend":
                outcome = check_backend(backend, case)
            elif name == "predictions":
                outcome = check_predictions_document(case, folder)
            else:
                outcome = import_document(name, case, folder)
        except Exception as e:  # counted, not raised: the run goes on
            outcome = f"UNEXPECTED {type(e).__name__}"
            failures.setdefault(outcome, (repr(case)[:1000], traceback.format_exc()[-3000:]))
        counts[outcome] += 1

    run()
    return counts, failures


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--examples", type=int, default=5000, help="examples per target")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--targets", nargs="+", choices=TARGETS, default=list(TARGETS))
    args = parser.parse_args()
    bad = 0
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        folder = make_folder(Path(tmp) / "data")
        backend = start_backend(stack, Path(tmp)) if "backend" in args.targets else None
        print(
            f"{'target':<18} {'examples':>8} {'imported':>9} {'refused':>8} {'unexpected':>10} {'seconds':>8}"
        )
        for target in args.targets:
            start = time.perf_counter()
            counts, failures = fuzz(target, args.examples, args.seed, folder, backend)
            unexpected = sum(n for k, n in counts.items() if k.startswith("UNEXPECTED"))
            bad += unexpected
            print(
                f"{target:<18} {sum(counts.values()):>8} {counts['imported']:>9} {counts['refused']:>8} "
                f"{unexpected:>10} {time.perf_counter() - start:>8.1f}",
                flush=True,
            )
            for kind, (case, trace) in failures.items():
                print(f"--- {target}: {kind} (first example)\n{case}\n{trace}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
