"""Augmentation of a batch on its device, one random draw per image.

The multi-label job's recipe: flips, a rotation within ±max_angle (bilinear,
kernels/augment.cu), brightness/contrast jitter, sharpening, Gaussian noise and
random erasing, each applied to an image with its own probability. All
randomness is drawn on the batch's device from the generator passed in, so a
step never waits on the host, and a seeded run is reproducible on its device.
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

    def __call__(self, be, x, rng):
        """Augment the batch ``x`` [N, C, H, W] on its device.

        ``rng`` draws on that device (a NumPy Generator on the CPU, a CuPy one
        on the GPU; see ``Backend.random_generator``). Every step runs on the
        whole batch, images not chosen for it left as they are, so nothing is
        read back to the host.
        """
        xp, N = be.xp, x.shape[0]
        H, W = x.shape[2:]

        def chosen(p):
            return rng.random(N) < p

        def per_image(values):
            return values.astype(x.dtype).reshape(N, 1, 1, 1)

        codes = xp.where(chosen(self.p_flip), rng.integers(1, 4, size=N), 0)
        x = ops.flip_rotate90(be, x, codes)
        angles = xp.where(chosen(self.p_rotate), rng.uniform(-1, 1, N) * np.radians(self.max_angle), 0.0)
        x = ops.rotate_bilinear(be, x, angles)
        jitter = chosen(self.p_jitter)
        gain = xp.where(jitter, 1 + rng.uniform(-self.contrast, self.contrast, N), 1.0)
        shift = xp.where(jitter, rng.uniform(-self.brightness, self.brightness, N), 0.0)
        mean = x.mean(axis=(1, 2, 3), keepdims=True)
        x = xp.where(jitter.reshape(N, 1, 1, 1), (x - mean) * per_image(gain) + mean + per_image(shift), x)
        sharpen = chosen(self.p_sharpness)
        x = x + per_image(sharpen * self.sharpness) * (x - box_blur3(xp, x))
        noisy = chosen(self.p_noise)
        x = x + per_image(noisy) * (rng.standard_normal(x.shape, dtype=x.dtype) * x.dtype.type(self.noise_std))
        # Random erasing: one rectangle of random area and aspect per chosen image.
        erase = chosen(self.p_erase)
        area = rng.uniform(0.02, 1.0, N) * self.erase_fraction * H * W
        aspect = xp.exp(rng.uniform(np.log(0.5), np.log(2.0), N))
        h = xp.clip(xp.rint(xp.sqrt(area * aspect)), 1, H).astype(np.int64)
        w = xp.clip(xp.rint(xp.sqrt(area / aspect)), 1, W).astype(np.int64)
        top = xp.floor(rng.random(N) * (H - h + 1)).astype(np.int64)
        left = xp.floor(rng.random(N) * (W - w + 1)).astype(np.int64)
        rows, cols = xp.arange(H).reshape(1, H, 1), xp.arange(W).reshape(1, 1, W)
        box = (erase.reshape(N, 1, 1)
               & (rows >= top.reshape(N, 1, 1)) & (rows < (top + h).reshape(N, 1, 1))
               & (cols >= left.reshape(N, 1, 1)) & (cols < (left + w).reshape(N, 1, 1)))
        x = xp.where(box[:, None, :, :], x.dtype.type(0), x)
        return xp.ascontiguousarray(x, dtype=x.dtype)


def box_blur3(xp, x):
    """3×3 mean filter with edge replication, on any array module."""
    padded = xp.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
    H, W = x.shape[2:]
    total = sum(padded[:, :, i:i + H, j:j + W] for i in range(3) for j in range(3))
    return total / 9
