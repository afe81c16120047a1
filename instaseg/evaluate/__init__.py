"""Evaluation: COCO box and mask metrics (faster-coco-eval), plain-language matching, plots and reports.

Ground truth is the canonical COCO of the records in memory
(:func:`instaseg.formats.coco_export.records_to_coco`); predictions are one
:class:`~instaseg.core.Instances` per record (:func:`evaluate_instances`, :func:`mask_map`; made by
:func:`predict_records` with a :class:`~instaseg.model.predictor.Predictor`) or COCO results
(:func:`check_predictions` then :func:`evaluate_results`).
"""

from .cocoeval import CocoMetrics, coco_evaluate
from .evaluator import (
    NA,
    Evaluation,
    EvaluationConfig,
    evaluate_instances,
    evaluate_results,
    mask_map,
    predict_records,
)
from .matching import MatchResult, match_predictions
from .predictions import check_predictions, read_predictions
from .report import write_report

__all__ = [
    "NA",
    "CocoMetrics",
    "Evaluation",
    "EvaluationConfig",
    "MatchResult",
    "check_predictions",
    "coco_evaluate",
    "evaluate_instances",
    "evaluate_results",
    "mask_map",
    "match_predictions",
    "predict_records",
    "read_predictions",
    "write_report",
]
