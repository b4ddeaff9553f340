"""Augmentation of a batch on its device, one random draw per image.

The multi-label job's recipe: flips, a rotation within ±max_angle (bilinear,
kernels/augment.cu), brightness/contrast jitter, sharpening, Gaussian noise and
random erasing, each applied to an image with its own probability. All
randomness comes from the NumPy generator passed in, so a seeded run is
reproducible on either device.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import ops


@dataclass
class Augment:
    """Per-image random augmentation; each ``p_*`` is the probability of that step."""

    p_flip: float = 0.5
    p_rotate: float = 0.5
    max_angle: float = 15.0          # degrees
    p_jitter: float = 0.5
    brightness: float = 0.2          # added, in units of the normalised pixel scale
    contrast: float = 0.2            # relative
    p_sharpness: float = 0.2
    sharpness: float = 0.5
    p_noise: float = 0.3
    noise_std: float = 0.1
    p_erase: float = 0.2
    erase_fraction: float = 0.05     # of the image area, at most

    def __post_init__(self):
        for name in ("p_flip", "p_rotate", "p_jitter", "p_sharpness", "p_noise", "p_erase"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {value}")

    def __call__(self, be, x, rng: np.random.Generator):
        xp, N = be.xp, x.shape[0]

        def chosen(p):
            return rng.random(N) < p

        def per_image(values):
            return xp.asarray(np.asarray(values, dtype=x.dtype).reshape(N, 1, 1, 1))

        codes = np.where(chosen(self.p_flip), rng.integers(1, 4, size=N), 0)
        if codes.any():
            x = ops.flip_rotate90(be, x, codes)
        angles = np.where(chosen(self.p_rotate), rng.uniform(-1, 1, N) * np.radians(self.max_angle), 0.0)
        if angles.any():
            x = ops.rotate_bilinear(be, x, angles)
        jitter = chosen(self.p_jitter)
        if jitter.any():
            gain = np.where(jitter, 1 + rng.uniform(-self.contrast, self.contrast, N), 1.0)
            shift = np.where(jitter, rng.uniform(-self.brightness, self.brightness, N), 0.0)
            mean = x.mean(axis=(1, 2, 3), keepdims=True)
            x = (x - mean) * per_image(gain) + mean + per_image(shift)
        sharpen = chosen(self.p_sharpness)
        if sharpen.any():
            blurred = box_blur3(xp, x)
            x = x + per_image(sharpen * self.sharpness) * (x - blurred)
        noisy = chosen(self.p_noise)
        if noisy.any():
            noise = rng.standard_normal(x.shape).astype(x.dtype) * self.noise_std
            x = x + per_image(noisy) * xp.asarray(noise)
        erase = chosen(self.p_erase)
        if erase.any():
            x = xp.array(x, copy=True)
            H, W = x.shape[2:]
            for n in np.flatnonzero(erase):
                area = rng.uniform(0.02, 1.0) * self.erase_fraction * H * W
                aspect = np.exp(rng.uniform(np.log(0.5), np.log(2.0)))
                h = int(min(H, max(1, round(np.sqrt(area * aspect)))))
                w = int(min(W, max(1, round(np.sqrt(area / aspect)))))
                top, left = rng.integers(0, H - h + 1), rng.integers(0, W - w + 1)
                x[n, :, top:top + h, left:left + w] = 0
        return xp.ascontiguousarray(x, dtype=x.dtype)


def box_blur3(xp, x):
    """3×3 mean filter with edge replication, on any array module."""
    padded = xp.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
    H, W = x.shape[2:]
    total = sum(padded[:, :, i:i + H, j:j + W] for i in range(3) for j in range(3))
    return total / 9
