"""The logistic function, its inverse and softmax, on any array module (NumPy or CuPy).

Training, prediction and the kernels' float64 oracles use these, so that a
probability is computed the same way everywhere it is reported.
"""
from __future__ import annotations

import numpy as np


def sigmoid(z, xp=np):
    """``1 / (1 + exp(-z))`` as ``(1 + tanh(z / 2)) / 2``: no overflow for any ``z``."""
    return 0.5 * (1.0 + xp.tanh(0.5 * z))


def logit(p, xp=np):
    """``log(p / (1 - p))``, the inverse of :func:`sigmoid` (``p`` strictly inside (0, 1))."""
    return xp.log(p) - xp.log1p(-p)


def softmax(z, axis: int = -1, xp=np):
    """Softmax along ``axis``, shifted by the maximum so that no exponential overflows."""
    e = xp.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)
