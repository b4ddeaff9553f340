"""Loss functions on logits: ``forward`` returns the mean loss, ``backward`` its gradient.

The mean loss is a 0-d array on the logits' device (``float(loss)`` reads it);
a training step never has to wait for it on the host.

Each loss is one fused kernel pass that writes the per-element loss and the
gradient together (kernels/loss.cu); ``backward`` returns the gradient kept
from the last ``forward``.
"""
from __future__ import annotations

import numpy as np

from . import ops
from .backend import get_backend


class _Loss:
    def __init__(self, device="cpu"):
        self.backend = get_backend(device)
        self._grad = None

    def to(self, device):
        self.backend = get_backend(device)
        return self

    def __call__(self, logits, targets):
        return self.forward(logits, targets)

    def backward(self):
        """d(mean loss)/d(logits) from the last forward."""
        if self._grad is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        grad, self._grad = self._grad, None
        return grad


class BCEWithLogitsLoss(_Loss):
    """Binary cross-entropy of sigmoid(logits), the probability clamped to [eps, 1 - eps]."""

    def __init__(self, eps: float = 1e-7, device="cpu"):
        super().__init__(device)
        self.eps = float(eps)

    def forward(self, logits, targets):
        loss, self._grad = ops.bce_with_logits(self.backend, logits, targets, self.eps)
        return loss


class FocalLoss(_Loss):
    """Weighted multi-label focal loss; ``weights[k]`` scales the positive term of class k."""

    def __init__(self, weights, gamma: float = 2.0, device="cpu"):
        super().__init__(device)
        self.weights = np.asarray(weights, dtype=np.float64)
        if self.weights.ndim != 1 or (self.weights < 0).any():
            raise ValueError(f"focal loss weights must be a 1-D array of non-negative numbers, got {weights}")
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        self.gamma = float(gamma)
        self._device_weights = None  # (backend, dtype) and the weights there, copied once

    def forward(self, logits, targets):
        key = (self.backend.name, np.dtype(logits.dtype))
        if self._device_weights is None or self._device_weights[0] != key:
            self._device_weights = (key, self.backend.asarray(self.weights, dtype=logits.dtype))
        weights = self._device_weights[1]
        loss, self._grad = ops.focal_with_logits(self.backend, logits, targets, weights, self.gamma)
        return loss


class CrossEntropyLoss(_Loss):
    """Softmax cross-entropy of [N, K] logits against integer class labels [N]."""

    def forward(self, logits, targets):
        loss, self._grad = ops.softmax_cross_entropy(self.backend, logits, targets)
        return loss


def inverse_frequency_weights(labels: np.ndarray, max_weight: float = 50.0) -> np.ndarray:
    """Positive-class weights ``(N - n_k) / n_k`` (negatives per positive), clipped to [1, max_weight].

    This is the usual ``pos_weight`` of weighted BCE: a class seen once in
    twenty images counts its positives nineteen times. Classes with no positive
    get ``max_weight``.
    """
    labels = np.asarray(labels, dtype=np.float64)
    positives = labels.sum(axis=0)
    ratio = np.where(positives > 0, (len(labels) - positives) / np.maximum(positives, 1), max_weight)
    return np.clip(ratio, 1.0, max_weight)
