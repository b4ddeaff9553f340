"""Metrics of one positive class: precision, recall, F1, threshold search, PR curve, operating points."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, precision_recall_fscore_support

from .checks import (
    DEFAULT_THRESHOLD_GRID,
    NAN,
    NO_POSITIVES,
    _as_binary_vector,
    _as_score_vector,
    _quiet_undefined_metrics,
)


def _f1_from(precision: np.ndarray, recall: np.ndarray) -> np.ndarray:
    """Harmonic mean of precision and recall, ``0`` where both are ``0``."""
    total = precision + recall
    safe_total = np.where(total > 0, total, 1.0)
    return np.where(total > 0, 2.0 * precision * recall / safe_total, 0.0)


def precision_recall_f1(y_true: Any, y_pred: Any) -> dict:
    """Precision, recall and F1 of the positive class.

    Parameters
    ----------
    y_true : array-like of shape (N,)
        True labels, 0 or 1.
    y_pred : array-like of shape (N,)
        Predicted labels, 0 or 1.

    Returns
    -------
    dict
        ``precision``, ``recall``, ``f1`` (floats), ``support`` (number of
        true positives in the truth, i.e. positive examples), ``n`` (number of
        examples), and the confusion counts ``tp``, ``fp``, ``fn``, ``tn``.
        When ``y_true`` has no positive example, ``recall`` and ``f1`` are
        ``nan`` and the key ``undefined`` holds :data:`NO_POSITIVES`;
        ``precision`` is then ``0.0`` if anything was predicted positive (every
        such prediction is a false alarm) and ``nan`` otherwise.
    """
    truth = _as_binary_vector(y_true, "y_true")
    predicted = _as_binary_vector(y_pred, "y_pred")
    if truth.shape != predicted.shape:
        raise ValueError(f"y_true has {truth.size} labels but y_pred has {predicted.size}")
    tp = int(np.count_nonzero(truth & predicted))
    fp = int(np.count_nonzero(predicted)) - tp
    fn = int(np.count_nonzero(truth)) - tp
    tn = int(truth.size) - tp - fp - fn
    with _quiet_undefined_metrics():
        precision, recall, f1, _ = precision_recall_fscore_support(
            truth, predicted, average="binary", pos_label=1, zero_division=0.0
        )
    result = {
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "support": tp + fn,
        "n": int(truth.size),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
    }
    if tp + fn == 0:
        result["recall"] = NAN
        result["f1"] = NAN
        if tp + fp == 0:
            result["precision"] = NAN
        result["undefined"] = NO_POSITIVES
    return result


@dataclass
class ThresholdSearch:
    """Result of :func:`search_threshold`.

    Attributes
    ----------
    threshold : float
        Grid threshold with the highest F1.  Ties go to the **lowest** such
        threshold: among equally good thresholds, the one that misses the
        fewest defects.  ``nan`` when undefined.
    f1, precision, recall : float
        Metrics at ``threshold``.
    table : list of dict
        One row per grid threshold: ``threshold``, ``precision``, ``recall``,
        ``f1``, ``tp``, ``fp``, ``fn``, ``tn`` and ``fraction_above`` (the
        fraction of examples predicted positive).
    pr_optimum_threshold, pr_optimum_f1 : float
        The exact F1 optimum over every threshold of
        :func:`sklearn.metrics.precision_recall_curve` (every distinct score),
        ties again going to the lowest threshold.
    undefined : str or None
        Why the search has no answer (no positive example), else ``None``.
    """

    threshold: float
    f1: float
    precision: float
    recall: float
    table: list = field(default_factory=list)
    pr_optimum_threshold: float = NAN
    pr_optimum_f1: float = NAN
    undefined: str | None = None

    def to_dict(self) -> dict:
        """Return the result as a plain dict."""
        return dataclasses.asdict(self)


def _threshold_row(truth: np.ndarray, scores: np.ndarray, threshold: float) -> dict:
    """Metrics of the rule ``scores >= threshold`` as one table row."""
    predicted = (scores >= threshold).astype(np.int64)
    metrics = precision_recall_f1(truth, predicted)
    return {
        "threshold": float(threshold),
        "precision": metrics["precision"],
        "recall": metrics["recall"],
        "f1": metrics["f1"],
        "tp": metrics["tp"],
        "fp": metrics["fp"],
        "fn": metrics["fn"],
        "tn": metrics["tn"],
        "fraction_above": float(predicted.mean()),
    }


def auc_pr(y_true: Any, scores: Any) -> float:
    """The area under the precision-recall curve, as average precision (scikit-learn's step-wise sum).

    Independent of any threshold; NaN when ``y_true`` has no positive.
    """
    truth = _as_binary_vector(y_true, "y_true")
    values = _as_score_vector(scores, truth.size)
    if truth.sum() == 0:
        return float("nan")
    return float(average_precision_score(truth, values))


def pr_curve(y_true: Any, scores: Any) -> dict:
    """Precision-recall curve with the F1 of each point.

    A thin wrapper around :func:`sklearn.metrics.precision_recall_curve` that
    keeps only the points that have a threshold (scikit-learn appends a final
    ``precision = 1, recall = 0`` point without one).

    Parameters
    ----------
    y_true : array-like of shape (N,)
        True labels, 0 or 1; at least one must be 1.
    scores : array-like of shape (N,)
        Scores; higher means more likely positive.

    Returns
    -------
    dict
        ``thresholds`` (ascending distinct scores), ``precision``, ``recall``
        and ``f1`` arrays of the same length, for the rule
        ``scores >= threshold``.
    """
    truth = _as_binary_vector(y_true, "y_true")
    values = _as_score_vector(scores, truth.size)
    if truth.sum() == 0:
        raise ValueError(NO_POSITIVES.replace("F1 and recall are", "the precision-recall curve is"))
    precision, recall, thresholds = precision_recall_curve(truth, values)
    precision, recall = precision[: thresholds.size], recall[: thresholds.size]
    return {
        "thresholds": thresholds,
        "precision": precision,
        "recall": recall,
        "f1": _f1_from(precision, recall),
    }


def search_threshold(
    y_true: Any,
    scores: Any,
    thresholds: Sequence[float] | np.ndarray = DEFAULT_THRESHOLD_GRID,
) -> ThresholdSearch:
    """Find the decision threshold with the best F1.

    Parameters
    ----------
    y_true : array-like of shape (N,)
        True labels, 0 or 1.
    scores : array-like of shape (N,)
        Scores, usually probabilities of the positive class.
    thresholds : sequence of float
        Grid searched for ``threshold``; default 0.10, 0.15, ..., 0.95.

    Returns
    -------
    ThresholdSearch
        The best grid threshold (ties: the lowest), its metrics, the table of
        every grid threshold, and the exact optimum over all thresholds.  With
        no positive example the table still holds precision and
        ``fraction_above``, while ``threshold``, ``f1``, ``recall`` and the
        optimum are ``nan`` and ``undefined`` says why.
    """
    truth = _as_binary_vector(y_true, "y_true")
    values = _as_score_vector(scores, truth.size)
    grid = np.sort(np.asarray(thresholds, dtype=np.float64).reshape(-1))
    if grid.size == 0:
        raise ValueError("thresholds is empty")
    table = [_threshold_row(truth, values, t) for t in grid]

    if truth.sum() == 0:
        return ThresholdSearch(
            threshold=NAN, f1=NAN, precision=NAN, recall=NAN, table=table, undefined=NO_POSITIVES
        )

    grid_f1 = np.array([row["f1"] for row in table])
    best = table[int(np.argmax(grid_f1))]
    curve = pr_curve(truth, values)
    optimum = int(np.argmax(curve["f1"]))
    return ThresholdSearch(
        threshold=best["threshold"],
        f1=best["f1"],
        precision=best["precision"],
        recall=best["recall"],
        table=table,
        pr_optimum_threshold=float(curve["thresholds"][optimum]),
        pr_optimum_f1=float(curve["f1"][optimum]),
    )


@dataclass
class OperatingPoint:
    """Result of :func:`operating_point`.

    Attributes
    ----------
    requirement : {"recall", "precision"}
        Which metric had to reach ``target``.
    target : float
        The required value.
    reachable : bool
        Whether some threshold meets the requirement.
    threshold, precision, recall, f1 : float
        The chosen threshold and its metrics; ``nan`` when not reachable.
    reason : str or None
        Why the requirement cannot be met, else ``None``.
    """

    requirement: str
    target: float
    reachable: bool
    threshold: float = NAN
    precision: float = NAN
    recall: float = NAN
    f1: float = NAN
    reason: str | None = None

    def to_dict(self) -> dict:
        """Return the result as a plain dict."""
        return dataclasses.asdict(self)


def operating_point(
    y_true: Any,
    scores: Any,
    min_recall: float | None = None,
    min_precision: float | None = None,
) -> OperatingPoint:
    """Choose the threshold that meets a required recall or precision.

    Candidate thresholds are every distinct score (the thresholds of
    :func:`sklearn.metrics.precision_recall_curve`).

    * ``min_recall``: the **highest** threshold whose recall is at least
      ``min_recall`` — the fewest false alarms that still catch that share of
      the positives.
    * ``min_precision``: the **lowest** threshold whose precision is at least
      ``min_precision`` — the most positives caught at that precision.

    Parameters
    ----------
    y_true : array-like of shape (N,)
        True labels, 0 or 1.
    scores : array-like of shape (N,)
        Scores, usually probabilities.
    min_recall, min_precision : float, optional
        The requirement, in (0, 1].  Give exactly one.

    Returns
    -------
    OperatingPoint
        ``reachable`` is ``False`` with a ``reason`` when no threshold meets
        the requirement or there is no positive example.
    """
    if (min_recall is None) == (min_precision is None):
        raise ValueError("give exactly one of min_recall and min_precision")
    requirement = "recall" if min_recall is not None else "precision"
    target = float(min_recall if min_recall is not None else min_precision)
    if not 0.0 < target <= 1.0:
        raise ValueError(f"min_{requirement} must be in (0, 1], got {target}")

    truth = _as_binary_vector(y_true, "y_true")
    values = _as_score_vector(scores, truth.size)
    if truth.sum() == 0:
        return OperatingPoint(requirement, target, False, reason=NO_POSITIVES)

    curve = pr_curve(truth, values)
    achieved = curve[requirement]
    meets = np.flatnonzero(achieved >= target - 1e-12)
    if meets.size == 0:
        best = int(np.argmax(achieved))
        return OperatingPoint(
            requirement,
            target,
            False,
            reason=(
                f"not reachable: no threshold gives {requirement} >= {target:g}; "
                f"the highest is {achieved[best]:.4f} at threshold {curve['thresholds'][best]:.4f}"
            ),
        )
    # Thresholds ascend along the curve: the last index is the highest threshold.
    chosen = int(meets[-1] if requirement == "recall" else meets[0])
    threshold = float(curve["thresholds"][chosen])
    metrics = precision_recall_f1(truth, (values >= threshold).astype(np.int64))
    return OperatingPoint(
        requirement,
        target,
        True,
        threshold=threshold,
        precision=metrics["precision"],
        recall=metrics["recall"],
        f1=metrics["f1"],
    )
