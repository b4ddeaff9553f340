"""Metrics of several classes at once, and summaries of a set of scores."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from sklearn.metrics import f1_score, multilabel_confusion_matrix, precision_recall_fscore_support

from .binary import precision_recall_f1, search_threshold
from .checks import (
    DEFAULT_THRESHOLD_GRID,
    NAN,
    _as_binary_matrix,
    _as_score_matrix,
    _class_thresholds,
    _quiet_undefined_metrics,
)


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
    y_true, y_score : array-like of shape (N, K)
        As for :func:`multilabel_report`.
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
