"""Batches for training: balanced sampling, normalisation, and augmentation on the device."""
from __future__ import annotations

import math

import numpy as np

from .. import ops


class BalancedBatchSampler:
    """Index batches with half defective images, the positives oversampled.

    An epoch has ``ceil(n / batch_size)`` batches. Each batch takes
    ``batch_size // 2`` positives and the rest negatives, each class drawn
    without replacement from its own shuffled order and reshuffled when used
    up, so every positive is seen about equally often. When one class is
    absent the batch is filled from the other.

    All randomness comes from the ``rng`` passed to :meth:`epoch`, so a
    resumed run that restores the generator's state sees the same batches.
    """

    def __init__(self, is_positive, batch_size: int):
        is_positive = np.asarray(is_positive, dtype=bool)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if len(is_positive) == 0:
            raise ValueError("cannot sample batches from an empty training set")
        self.positives = np.flatnonzero(is_positive)
        self.negatives = np.flatnonzero(~is_positive)
        self.batch_size = int(batch_size)
        self.n_batches = math.ceil(len(is_positive) / self.batch_size)

    def __len__(self) -> int:
        return self.n_batches

    @staticmethod
    def _stream(pool, count, rng):
        """``count`` draws from ``pool``: whole shuffled passes, then part of one more."""
        passes = [rng.permutation(pool) for _ in range(math.ceil(count / len(pool)))]
        return np.concatenate(passes)[:count]

    def epoch(self, rng: np.random.Generator) -> list[np.ndarray]:
        n_pos = self.batch_size // 2 if len(self.positives) and len(self.negatives) else (
            self.batch_size if len(self.positives) else 0)
        n_neg = self.batch_size - n_pos
        pos = self._stream(self.positives, n_pos * self.n_batches, rng) if n_pos else np.empty(0, int)
        neg = self._stream(self.negatives, n_neg * self.n_batches, rng) if n_neg else np.empty(0, int)
        return [rng.permutation(np.concatenate([pos[b * n_pos:(b + 1) * n_pos],
                                                neg[b * n_neg:(b + 1) * n_neg]]))
                for b in range(self.n_batches)]


class ShuffledBatchSampler:
    """Plain shuffled batches covering every example once per epoch."""

    def __init__(self, n: int, batch_size: int):
        if n == 0:
            raise ValueError("cannot sample batches from an empty training set")
        self.n, self.batch_size = int(n), int(batch_size)
        self.n_batches = math.ceil(self.n / self.batch_size)

    def __len__(self) -> int:
        return self.n_batches

    def epoch(self, rng: np.random.Generator) -> list[np.ndarray]:
        order = rng.permutation(self.n)
        return [order[b * self.batch_size:(b + 1) * self.batch_size] for b in range(self.n_batches)]


class Normalizer:
    """Standardise pixels with the training set's per-channel mean and std (stored in checkpoints)."""

    def __init__(self, mean, std):
        self.mean = np.asarray(mean, dtype=np.float64).reshape(-1)
        self.std = np.asarray(std, dtype=np.float64).reshape(-1)
        if (self.std <= 0).any():
            raise ValueError(f"normalisation std must be positive, got {self.std}")

    @classmethod
    def fit(cls, images: np.ndarray) -> "Normalizer":
        """Per-channel mean and std over [N, C, H, W] images (std of a flat image is taken as 1)."""
        mean = images.mean(axis=(0, 2, 3), dtype=np.float64)
        std = images.std(axis=(0, 2, 3), dtype=np.float64)
        return cls(mean, np.where(std > 1e-8, std, 1.0))

    def __call__(self, images: np.ndarray, dtype=np.float32) -> np.ndarray:
        shape = (1, -1, 1, 1)
        return ((images - self.mean.reshape(shape)) / self.std.reshape(shape)).astype(dtype, copy=False)

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "Normalizer":
        return cls(d["mean"], d["std"])


def random_flips_and_quarter_turns(be, x, rng: np.random.Generator):
    """Each image flipped left-right / up-down and turned by k·90°, at random, on the device."""
    codes = rng.integers(0, 16, size=x.shape[0])
    return ops.flip_rotate90(be, x, codes)
