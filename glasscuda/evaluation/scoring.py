"""The figures of an evaluation: metrics at a threshold, threshold sweeps, operating points.

A class whose matched truth holds one value only (no positive, or no
negative) gets no F1, sweep or operating point; its block explains why and
gives what still means something.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .. import metrics
from .inputs import EvaluationError, Predictions


def single_class_explanation(name: str, positives: int) -> str:
    """Plain-language account of a class whose truth holds one value only."""
    if positives == 0:
        return (
            f"No matched image is positive for '{name}'. Recall and F1 are undefined "
            "(there is no positive to find) and precision only counts false alarms. "
            "What still means something: the score distribution, and the fraction "
            "of images at or above each threshold, which here is the false-alarm rate."
        )
    return (
        f"Every matched image is positive for '{name}'. Precision is perfect by "
        "construction, so F1 would only restate recall and says nothing about false "
        "alarms. What still means something: the score distribution, and the fraction "
        "of images at or above each threshold, which here is the detection rate (recall)."
    )


def check_thresholds(values: Sequence[float] | None, count: int) -> np.ndarray:
    """The decision thresholds: 0.5 for every class by default, one value for all, or one per class."""
    if values is None:
        return np.full(count, 0.5)
    values = [float(v) for v in values]
    if len(values) == 1:
        values = values * count
    if len(values) != count:
        raise EvaluationError(f"--threshold: {len(values)} values for {count} score columns")
    if not all(0.0 <= v <= 1.0 for v in values):
        raise EvaluationError(f"--threshold: values must lie in [0, 1], got {','.join(f'{v:g}' for v in values)}")
    return np.asarray(values)


def stored_threshold_range(predictions: Predictions) -> dict | None:
    """Thresholds ``t`` for which ``label == (probability >= t)`` on every row.

    Returns ``None`` without a 0/1 ``label`` column, else ``greater_than``
    (the highest probability labelled 0), ``at_most`` (the lowest labelled 1)
    and whether any threshold fits at all.
    """
    labels = predictions.stored_labels
    if labels is None:
        return None
    scores = predictions.scores[:, 0]
    highest_negative = float(scores[labels == 0].max()) if np.any(labels == 0) else None
    lowest_positive = float(scores[labels == 1].min()) if np.any(labels == 1) else None
    consistent = highest_negative is None or lowest_positive is None or highest_negative < lowest_positive
    return {"greater_than": highest_negative, "at_most": lowest_positive, "consistent": bool(consistent)}


def class_summary(truth: np.ndarray, classes: Sequence[str]) -> dict:
    """Positives and negatives per class."""
    return {
        name: {"positives": int(truth[:, k].sum()), "negatives": int((1 - truth[:, k]).sum())}
        for k, name in enumerate(classes)
    }


def single_class_block(name: str, scores: np.ndarray, positives: int, thresholds: np.ndarray) -> dict:
    """What the report says about a class with one truth value only."""
    return {
        "explanation": single_class_explanation(name, positives),
        "positives": positives,
        "n": int(scores.size),
        "score_distribution": metrics.score_distribution(scores),
        "fraction_above": metrics.fraction_above(scores, thresholds),
    }


def metrics_at_threshold(task, truth, scores, classes, cuts, single) -> dict:
    """Metrics at the chosen threshold(s), leaving out single-class classes' F1."""
    if task == "binary":
        if classes[0] in single:
            return {
                "threshold": float(cuts[0]),
                "single_class": single[classes[0]]["explanation"],
                "fraction_above": float(np.mean(scores[:, 0] >= cuts[0])),
            }
        result = metrics.precision_recall_f1(truth[:, 0], scores[:, 0] >= cuts[0])
        result["threshold"] = float(cuts[0])
        return result
    report = metrics.multilabel_report(truth, scores, cuts, classes)
    for name in single:
        report["per_class"][name]["single_class"] = single[name]["explanation"]
    if len(single) == len(classes):
        report["single_class"] = (
            "Every class holds a single truth value in the matched set; "
            "pooled and per-class F1 would be meaningless."
        )
    return report


def sweep(truth, scores, classes, grid, single) -> dict:
    """Threshold search per class (only for classes with both truth values)."""
    return {
        name: metrics.search_threshold(truth[:, k], scores[:, k], grid).to_dict()
        for k, name in enumerate(classes)
        if name not in single
    }


def operating_points(truth, scores, classes, single, min_recall, min_precision) -> dict:
    """Operating points per class for the requested recall and precision."""
    points = {}
    for k, name in enumerate(classes):
        if name in single:
            continue
        found = []
        if min_recall is not None:
            found.append(metrics.operating_point(truth[:, k], scores[:, k], min_recall=min_recall).to_dict())
        if min_precision is not None:
            found.append(
                metrics.operating_point(truth[:, k], scores[:, k], min_precision=min_precision).to_dict()
            )
        points[name] = found
    return points
