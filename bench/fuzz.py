"""Fuzz the importers (COCO, Label Studio JSON, labelme, VIA), the predictions reader (COCO results, read,
checked and evaluated) and the brush RLE decoder with many more examples than the test suite, and print the
outcome counts.

Each example is a valid document of the format mutated at random places with hostile values (see
``tests/formats/fuzz_targets.py``); it must import or be refused with a ``DatasetError`` (brush:
a ``ValueError``). Any other exception is counted under its type and the first example of each is printed.
Runs are reproducible: the same ``--seed`` and ``--examples`` give the same documents.

    .venv/bin/python bench/fuzz.py                      # 5,000 examples per target, seed 0
    .venv/bin/python bench/fuzz.py --examples 20000 --targets coco via --seed 3

Exit status 1 when any example raised an unexpected exception.
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
import traceback
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

TARGETS = (*TEMPLATES, "predictions", "brush")


def fuzz(target: str, examples: int, random_seed: int, folder: Path) -> tuple[collections.Counter, dict]:
    """``(outcome counts, first failing example and traceback per exception type)`` of one target."""
    counts: collections.Counter = collections.Counter()
    failures: dict[str, tuple[str, str]] = {}
    templates = {
        **{name: template for name, (template, _) in TEMPLATES.items()},
        "predictions": predictions_document,
    }
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
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_folder(Path(tmp) / "data")
        print(
            f"{'target':<18} {'examples':>8} {'imported':>9} {'refused':>8} {'unexpected':>10} {'seconds':>8}"
        )
        for target in args.targets:
            start = time.perf_counter()
            counts, failures = fuzz(target, args.examples, args.seed, folder)
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
