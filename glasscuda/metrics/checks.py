"""Checks and conversions of the metrics' inputs: 0/1 labels, finite scores, thresholds."""
from __future__ import annotations

import contextlib
import warnings
from typing import Any

import numpy as np
from sklearn.exceptions import UndefinedMetricWarning

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
