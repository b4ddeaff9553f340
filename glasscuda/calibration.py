"""Probability calibration: temperature scaling, ECE, NLL, reliability bins.

Temperature scaling (Guo et al., "On Calibration of Modern Neural Networks",
2017) divides a network's logits by a positive temperature ``T`` fitted on
held-out data by minimising the negative log-likelihood.  ``T > 1`` softens
over-confident probabilities, ``T < 1`` sharpens timid ones; the ranking of
scores, hence every precision-recall curve, is unchanged.

Three kinds of output are handled:

``"binary"``
    One sigmoid output, logits of shape ``(N,)`` (or ``(N, 1)``), labels 0/1.
``"multilabel"``
    ``K`` independent sigmoid outputs, logits ``(N, K)``, labels 0/1 of the
    same shape.  Each output gets its own temperature.
``"multiclass"``
    One softmax over ``C`` classes, logits ``(N, C)``, labels the class index
    ``(N,)`` (a one-hot ``(N, C)`` matrix is accepted too).  One temperature.

When only probabilities are available, use :func:`probabilities_to_logits`
(``logit(clip(p, 1e-7, 1 - 1e-7))``) first.

The temperature is found by :func:`scipy.optimize.minimize_scalar` (bounded
Brent) on ``log T`` within ``bounds``.  The NLL is a convex function of
``1 / T`` (a logistic or softmax loss that is linear in ``1 / T``), so it is
unimodal in ``log T`` and the search finds the global minimum inside the
bounds.  Reliability diagrams are drawn by :mod:`glasscuda.plots`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar

from .numerics import logit, sigmoid, softmax

__all__ = [
    "PROBABILITY_EPSILON",
    "KINDS",
    "probabilities_to_logits",
    "sigmoid",
    "softmax",
    "apply_temperature",
    "fit_temperature",
    "negative_log_likelihood",
    "expected_calibration_error",
    "reliability_bins",
]

PROBABILITY_EPSILON = 1e-7
"""Probabilities are clipped to ``[eps, 1 - eps]`` before a logarithm."""

KINDS = ("binary", "multilabel", "multiclass")


def check_kind(kind: str) -> None:
    """Raise ``ValueError`` for an unknown output kind."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def probabilities_to_logits(probs: Any, eps: float = PROBABILITY_EPSILON) -> np.ndarray:
    """Logits of probabilities, ``log(p / (1 - p))`` after clipping to ``[eps, 1 - eps]``.

    Parameters
    ----------
    probs : array-like
        Probabilities.
    eps : float
        Clipping margin, so that 0 and 1 give finite logits.

    Returns
    -------
    numpy.ndarray of float64, same shape as ``probs``
    """
    p = np.clip(np.asarray(probs, dtype=np.float64), eps, 1.0 - eps)
    return logit(p)


def apply_temperature(logits: Any, temperature: Any) -> np.ndarray:
    """Scale logits by a temperature: ``logits / T``.

    Parameters
    ----------
    logits : array-like of shape (N,) or (N, K)
        Logits.
    temperature : float or array-like of shape (K,)
        Positive temperature, one scalar or one per output (last axis).

    Returns
    -------
    numpy.ndarray
        The scaled logits (apply :func:`sigmoid` or :func:`softmax` to get
        probabilities).
    """
    t = np.asarray(temperature, dtype=np.float64)
    if not np.all(np.isfinite(t)) or np.any(t <= 0):
        raise ValueError(f"temperature must be positive and finite, got {t.tolist()}")
    z = np.asarray(logits, dtype=np.float64)
    if t.ndim > 0 and t.size > 1 and (z.ndim == 0 or z.shape[-1] != t.size):
        raise ValueError(f"{t.size} temperatures for logits of shape {z.shape}")
    return z / t


def _binary_labels(labels: Any, shape: tuple[int, ...]) -> np.ndarray:
    """Validate 0/1 labels of the given shape and return them as float64."""
    y = np.asarray(labels)
    if y.shape != shape:
        if y.size == int(np.prod(shape)):
            y = y.reshape(shape)
        else:
            raise ValueError(f"labels must have shape {shape}, got {y.shape}")
    y = y.astype(np.float64)
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("labels must hold only 0 and 1")
    return y


def _class_indices(labels: Any, count: int, classes: int) -> np.ndarray:
    """Validate multiclass labels (indices or one-hot) and return indices."""
    y = np.asarray(labels)
    if y.ndim == 2 and y.shape == (count, classes):
        y = y.argmax(axis=1)
    if y.shape != (count,):
        raise ValueError(f"labels must have shape ({count},) or ({count}, {classes}), got {y.shape}")
    if not np.all((y >= 0) & (y < classes) & (y == np.round(y))):
        raise ValueError(f"labels must be class indices in [0, {classes})")
    return y.astype(np.int64)


def _sigmoid_nll_per_column(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Mean binary cross-entropy of logits ``z`` [N, K] against ``y``, per column."""
    loss = np.maximum(z, 0.0) - z * y + np.log1p(np.exp(-np.abs(z)))
    return loss.mean(axis=0)


def _softmax_nll(z: np.ndarray, y: np.ndarray) -> float:
    """Mean softmax cross-entropy of logits ``z`` [N, C] against indices ``y``."""
    peak = z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z - peak).sum(axis=1)) + peak[:, 0]
    return float(np.mean(log_norm - z[np.arange(z.shape[0]), y]))


def _minimise_log_temperature(nll, low: float, high: float, tolerance: float) -> float:
    """``log T`` within ``[log low, log high]`` that minimises ``nll(log T)``."""
    result = minimize_scalar(nll, bounds=(math.log(low), math.log(high)), method="bounded",
                             options={"xatol": tolerance})
    return float(result.x)


def fit_temperature(
    logits: Any,
    labels: Any,
    kind: str = "binary",
    bounds: tuple[float, float] = (0.01, 100.0),
    tolerance: float = 1e-7,
):
    """Fit the temperature that minimises the negative log-likelihood.

    Parameters
    ----------
    logits : array-like
        ``(N,)`` or ``(N, 1)`` for ``"binary"``, ``(N, K)`` for
        ``"multilabel"``, ``(N, C)`` for ``"multiclass"``.
    labels : array-like
        0/1 labels of the logits' shape for the sigmoid kinds; class indices
        ``(N,)`` or one-hot ``(N, C)`` for ``"multiclass"``.
    kind : {"binary", "multilabel", "multiclass"}
        Output kind (see the module documentation).
    bounds : (float, float)
        Smallest and largest temperature searched.  If the data push the
        optimum beyond them (for instance labels of a single class, where the
        likelihood keeps improving as ``T`` goes to 0), the bound is returned
        (within ``tolerance`` on ``log T``).
    tolerance : float
        Width of the final search interval on ``log T``.

    Returns
    -------
    float or numpy.ndarray
        One float for ``"binary"`` and ``"multiclass"``; an array of ``K``
        temperatures, one per output, for ``"multilabel"``.
    """
    check_kind(kind)
    low, high = bounds
    if not 0.0 < low < high or not math.isfinite(high):
        raise ValueError(f"bounds must satisfy 0 < low < high < inf, got {bounds}")
    z = np.asarray(logits, dtype=np.float64)
    if not np.all(np.isfinite(z)):
        raise ValueError("logits must be finite")

    if kind == "multiclass":
        if z.ndim != 2 or z.shape[1] < 2:
            raise ValueError(f"multiclass logits must have shape (N, C>=2), got {z.shape}")
        y = _class_indices(labels, z.shape[0], z.shape[1])
        return math.exp(_minimise_log_temperature(lambda u: _softmax_nll(z / math.exp(u), y), low, high, tolerance))

    if kind == "binary":
        if z.ndim == 2 and z.shape[1] == 1:
            z = z[:, 0]
        if z.ndim != 1:
            raise ValueError(f"binary logits must have shape (N,) or (N, 1), got {z.shape}")
        z = z[:, None]
    elif z.ndim != 2:
        raise ValueError(f"multilabel logits must have shape (N, K), got {z.shape}")
    if z.shape[0] == 0:
        raise ValueError("logits are empty")
    y = _binary_labels(labels, z.shape)
    temperatures = np.exp([
        _minimise_log_temperature(lambda u, k=k: _sigmoid_nll_per_column(z[:, k:k + 1] / math.exp(u), y[:, k:k + 1])[0],
                                  low, high, tolerance)
        for k in range(z.shape[1])
    ])
    return float(temperatures[0]) if kind == "binary" else temperatures


def negative_log_likelihood(probs: Any, labels: Any, kind: str = "binary") -> float:
    """Mean negative log-likelihood of labels under predicted probabilities.

    Probabilities are clipped to ``[1e-7, 1 - 1e-7]`` first.

    Parameters
    ----------
    probs : array-like
        Sigmoid kinds: probability of label 1, any shape.  ``"multiclass"``:
        ``(N, C)`` class probabilities.
    labels : array-like
        Sigmoid kinds: 0/1 of the same shape.  ``"multiclass"``: indices
        ``(N,)`` or one-hot ``(N, C)``.
    kind : {"binary", "multilabel", "multiclass"}

    Returns
    -------
    float
        For the sigmoid kinds, the binary cross-entropy averaged over every
        element (every example and output); for ``"multiclass"``,
        ``-mean(log p[label])``.
    """
    check_kind(kind)
    p = np.clip(np.asarray(probs, dtype=np.float64), PROBABILITY_EPSILON, 1.0 - PROBABILITY_EPSILON)
    if kind == "multiclass":
        y = _class_indices(labels, p.shape[0], p.shape[1])
        return float(-np.mean(np.log(p[np.arange(p.shape[0]), y])))
    y = _binary_labels(labels, p.shape)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))


def _forecasts(probs: Any, labels: Any, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Flatten outputs into (forecast probability, outcome) pairs for binning.

    Sigmoid kinds: every element is a forecast of "label is 1".  Multiclass:
    the top-label confidence and whether the top label is right.
    """
    check_kind(kind)
    p = np.asarray(probs, dtype=np.float64)
    if kind == "multiclass":
        y = _class_indices(labels, p.shape[0], p.shape[1])
        return p.max(axis=1), (p.argmax(axis=1) == y).astype(np.float64)
    y = _binary_labels(labels, p.shape)
    return p.reshape(-1), y.reshape(-1)


def reliability_bins(probs: Any, labels: Any, n_bins: int = 15, kind: str = "binary") -> dict:
    """Per-bin counts, mean forecast and observed frequency.

    Bins are ``n_bins`` equal-width intervals of ``[0, 1]``:
    ``[0, 1/M), [1/M, 2/M), ..., [(M-1)/M, 1]`` (the last one closed).

    Parameters
    ----------
    probs, labels : array-like
        As for :func:`expected_calibration_error`.
    n_bins : int
        Number of bins ``M``.
    kind : {"binary", "multilabel", "multiclass"}

    Returns
    -------
    dict
        ``edges`` (M + 1), and per bin ``count``, ``mean_predicted`` and
        ``observed_frequency`` (``nan`` for an empty bin), as lists.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    forecast, outcome = _forecasts(probs, labels, kind)
    if forecast.size == 0:
        raise ValueError("no probabilities to bin")
    if np.any((forecast < 0) | (forecast > 1)) or not np.all(np.isfinite(forecast)):
        raise ValueError("probabilities must lie in [0, 1]")
    index = np.minimum((forecast * n_bins).astype(np.int64), n_bins - 1)
    count = np.bincount(index, minlength=n_bins)
    forecast_sum = np.bincount(index, weights=forecast, minlength=n_bins)
    outcome_sum = np.bincount(index, weights=outcome, minlength=n_bins)
    occupied = count > 0
    safe = np.where(occupied, count, 1)
    return {
        "edges": np.linspace(0.0, 1.0, n_bins + 1).tolist(),
        "count": count.tolist(),
        "mean_predicted": np.where(occupied, forecast_sum / safe, np.nan).tolist(),
        "observed_frequency": np.where(occupied, outcome_sum / safe, np.nan).tolist(),
    }


def expected_calibration_error(probs: Any, labels: Any, n_bins: int = 15, kind: str = "binary") -> float:
    """Expected calibration error with equal-width bins.

    ``ECE = sum_b (n_b / n) * |observed_b - predicted_b|`` over the bins of
    :func:`reliability_bins`, where ``predicted_b`` is the mean forecast in
    bin ``b`` and ``observed_b`` the frequency of the forecast event there.

    * ``"binary"`` and ``"multilabel"``: the forecast is the probability of
      label 1 and the event is "label is 1".  For multilabel, every output of
      every example is one binary forecast, all pooled (compute per column for
      a per-class figure).
    * ``"multiclass"``: the forecast is the top-label confidence ``max_c p_c``
      and the event is "the top label is right" (Guo et al., 2017).

    Parameters
    ----------
    probs : array-like
        Probabilities (see :func:`negative_log_likelihood` for shapes).
    labels : array-like
        Labels (ditto).
    n_bins : int
        Number of equal-width bins on ``[0, 1]``.
    kind : {"binary", "multilabel", "multiclass"}

    Returns
    -------
    float
        In ``[0, 1]``; 0 is perfect calibration at this binning.
    """
    bins = reliability_bins(probs, labels, n_bins, kind)
    count = np.asarray(bins["count"], dtype=np.float64)
    occupied = count > 0
    gap = np.abs(
        np.asarray(bins["observed_frequency"])[occupied] - np.asarray(bins["mean_predicted"])[occupied]
    )
    return float(np.sum(count[occupied] / count.sum() * gap))
