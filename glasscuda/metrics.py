"""Classification metrics and decision-threshold search.

Conventions used throughout this module:

* Labels are 0/1 (booleans are accepted); scores are real numbers, usually
  probabilities of the positive class.
* An example is predicted positive when its score is **greater than or equal
  to** the threshold, the rule of :func:`sklearn.metrics.precision_recall_curve`.
* When there is no positive example, recall and F1 have nothing to count.
  They are then ``nan`` and the result carries an ``undefined`` reason, so that
  nobody reads a ``0.0`` as a measurement.  When there are positives but
  nothing is predicted positive, precision is ``0.0`` (the model found none of
  them), and so are recall and F1.
* Scikit-learn's ``UndefinedMetricWarning`` is never shown: the situations it
  warns about are explained in the returned values instead.

Their plots are drawn by :mod:`glasscuda.plots`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    f1_score,
    multilabel_confusion_matrix,
    precision_recall_curve,
    precision_recall_fscore_support,
)

__all__ = [
    "DEFAULT_THRESHOLD_GRID",
    "NO_POSITIVES",
    "ThresholdSearch",
    "OperatingPoint",
    "precision_recall_f1",
    "search_threshold",
    "pr_curve",
    "operating_point",
    "multilabel_report",
    "search_thresholds_per_class",
    "score_distribution",
    "fraction_above",
]

DEFAULT_THRESHOLD_GRID = np.round(np.arange(0.10, 0.951, 0.05), 2)
"""Decision thresholds searched by default: 0.10, 0.15, ..., 0.95."""

NO_POSITIVES = "no positive examples: F1 and recall are undefined"
"""The ``undefined`` reason given when the truth holds no positive example."""

NAN = float("nan")


@contextlib.contextmanager
def _quiet_undefined_metrics():
    """Silence scikit-learn's ``UndefinedMetricWarning`` inside the block."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        yield


def _as_binary_vector(values: Any, name: str) -> np.ndarray:
    """Return ``values`` as a 1-D int array of 0/1, or raise ``ValueError``."""
    array = np.asarray(values)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} is empty")
    if array.dtype == bool:
        return array.astype(np.int64)
    if not np.all((array == 0) | (array == 1)):
        bad = np.unique(array[(array != 0) & (array != 1)])[:5]
        raise ValueError(f"{name} must hold only 0 and 1, found {bad.tolist()}")
    return array.astype(np.int64)


def _as_binary_matrix(values: Any, name: str) -> np.ndarray:
    """Return ``values`` as a 2-D int array of 0/1, or raise ``ValueError``."""
    array = np.asarray(values)
    if array.ndim != 2:
        raise ValueError(f"{name} must be two-dimensional [N, K], got shape {array.shape}")
    flat = _as_binary_vector(array.reshape(-1), name)
    return flat.reshape(array.shape)


def _as_score_vector(scores: Any, length: int, name: str = "scores") -> np.ndarray:
    """Return ``scores`` as a finite 1-D float64 array of the given length."""
    array = np.asarray(scores, dtype=np.float64)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.shape != (length,):
        raise ValueError(f"{name} must have shape ({length},), got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite")
    return array


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


def _as_score_matrix(scores: Any, shape: tuple[int, int]) -> np.ndarray:
    """Return ``scores`` as a finite float64 matrix of the given shape."""
    array = np.asarray(scores, dtype=np.float64)
    if array.shape != shape:
        raise ValueError(f"y_score must have shape {shape}, got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError("y_score must be finite")
    return array


def _class_thresholds(thresholds: Any, count: int) -> np.ndarray:
    """Broadcast a scalar or per-class sequence of thresholds to ``[count]``."""
    array = np.asarray(thresholds, dtype=np.float64)
    if array.ndim == 0:
        return np.full(count, float(array))
    array = array.reshape(-1)
    if array.size != count:
        raise ValueError(f"expected {count} thresholds, got {array.size}")
    return array


def multilabel_report(
    y_true: Any,
    y_score: Any,
    thresholds: Any,
    class_names: Sequence[str],
) -> dict:
    """Per-class and pooled metrics of a multi-label classifier.

    Parameters
    ----------
    y_true : array-like of shape (N, K)
        True label indicators, 0 or 1.
    y_score : array-like of shape (N, K)
        Scores per class.
    thresholds : float or array-like of shape (K,)
        Decision threshold per class (a scalar applies to all).
    class_names : sequence of str
        ``K`` class names.

    Returns
    -------
    dict
        ``class_names``; ``thresholds``; ``n`` (examples);
        ``micro_precision``, ``micro_recall``, ``micro_f1`` (pooled over every
        class and example; ``nan`` if no label is positive anywhere);
        ``macro_f1`` (mean F1 over the classes that have at least one positive
        example, listed in ``macro_f1_classes``; ``nan`` if none has);
        ``per_class`` (class name → :func:`precision_recall_f1` dict plus its
        ``threshold``); ``confusion_matrices`` (class name → ``[[tn, fp],
        [fn, tp]]`` from :func:`sklearn.metrics.multilabel_confusion_matrix`).
    """
    truth = _as_binary_matrix(y_true, "y_true")
    count = truth.shape[1]
    names = [str(name) for name in class_names]
    if len(names) != count:
        raise ValueError(f"{len(names)} class names for {count} columns")
    scores = _as_score_matrix(y_score, truth.shape)
    cuts = _class_thresholds(thresholds, count)
    predicted = (scores >= cuts).astype(np.int64)

    per_class = {}
    for k, name in enumerate(names):
        metrics = precision_recall_f1(truth[:, k], predicted[:, k])
        metrics["threshold"] = float(cuts[k])
        per_class[name] = metrics

    defined = [k for k in range(count) if truth[:, k].any()]
    with _quiet_undefined_metrics():
        micro_p, micro_r, micro_f1, _ = precision_recall_fscore_support(
            truth, predicted, average="micro", zero_division=0.0
        )
        macro_f1 = (
            f1_score(truth, predicted, average="macro", labels=defined, zero_division=0.0)
            if defined
            else NAN
        )
    if not defined:
        micro_r, micro_f1 = NAN, NAN
        if not predicted.any():
            micro_p = NAN
    matrices = multilabel_confusion_matrix(truth, predicted)
    return {
        "class_names": names,
        "thresholds": cuts.tolist(),
        "n": int(truth.shape[0]),
        "micro_precision": float(micro_p),
        "micro_recall": float(micro_r),
        "micro_f1": float(micro_f1),
        "macro_f1": float(macro_f1),
        "macro_f1_classes": [names[k] for k in defined],
        "per_class": per_class,
        "confusion_matrices": {name: matrices[k].tolist() for k, name in enumerate(names)},
    }


def search_thresholds_per_class(
    y_true: Any,
    y_score: Any,
    grid: Sequence[float] | np.ndarray = DEFAULT_THRESHOLD_GRID,
    fallback: float = 0.5,
) -> np.ndarray:
    """Best-F1 grid threshold for each class of a multi-label classifier.

    Parameters
    ----------
    y_true : array-like of shape (N, K)
        True label indicators, 0 or 1.
    y_score : array-like of shape (N, K)
        Scores per class.
    grid : sequence of float
        Thresholds searched (see :func:`search_threshold`; ties go to the
        lowest threshold).
    fallback : float
        Threshold used for a class with no positive example, where F1 is
        undefined.

    Returns
    -------
    numpy.ndarray of shape (K,)
    """
    truth = _as_binary_matrix(y_true, "y_true")
    scores = _as_score_matrix(y_score, truth.shape)
    chosen = np.empty(truth.shape[1], dtype=np.float64)
    for k in range(truth.shape[1]):
        result = search_threshold(truth[:, k], scores[:, k], grid)
        chosen[k] = fallback if result.undefined else result.threshold
    return chosen


def score_distribution(scores: Any) -> dict:
    """Summary statistics of a set of scores.

    Parameters
    ----------
    scores : array-like of shape (N,)

    Returns
    -------
    dict
        ``n``, ``mean``, ``std``, ``min``, ``p05``, ``p25``, ``median``,
        ``p75``, ``p95``, ``max``.
    """
    values = np.asarray(scores, dtype=np.float64).reshape(-1)
    if values.size == 0:
        raise ValueError("scores is empty")
    p05, p25, median, p75, p95 = np.percentile(values, [5, 25, 50, 75, 95])
    return {
        "n": int(values.size),
        "mean": float(values.mean()),
        "std": float(values.std()),
        "min": float(values.min()),
        "p05": float(p05),
        "p25": float(p25),
        "median": float(median),
        "p75": float(p75),
        "p95": float(p95),
        "max": float(values.max()),
    }


def fraction_above(scores: Any, thresholds: Sequence[float] | np.ndarray) -> list[dict]:
    """Fraction of scores at or above each threshold.

    Parameters
    ----------
    scores : array-like of shape (N,)
    thresholds : sequence of float

    Returns
    -------
    list of dict
        ``{"threshold": t, "count": c, "fraction_above": c / N}`` per threshold,
        counting ``scores >= t``.
    """
    values = np.asarray(scores, dtype=np.float64).reshape(-1)
    if values.size == 0:
        raise ValueError("scores is empty")
    rows = []
    for threshold in np.asarray(thresholds, dtype=np.float64).reshape(-1):
        count = int(np.count_nonzero(values >= threshold))
        rows.append(
            {"threshold": float(threshold), "count": count, "fraction_above": count / values.size}
        )
    return rows
