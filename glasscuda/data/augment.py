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
        on the GPU; see ``Backend.random_generator``). On a GPU every step runs
        on the whole batch, images not chosen for it left as they are, so
        nothing is read back to the host. On the host, where reading the draws
        costs nothing, a step no image was chosen for is skipped (with its
        draws), and random erasing draws for the erased images only: the same
        random stream as ever, so seeded CPU runs keep their results.
        """
        xp, N = be.xp, x.shape[0]
        H, W = x.shape[2:]
        on_host = xp is np

        def chosen(p):
            return rng.random(N) < p

        def any_of(mask):
            return bool(mask.any()) if on_host else True

        def per_image(values):
            return values.astype(x.dtype).reshape(N, 1, 1, 1)

        codes = xp.where(chosen(self.p_flip), rng.integers(1, 4, size=N), 0)
        if any_of(codes):
            x = ops.flip_rotate90(be, x, codes)
        angles = xp.where(chosen(self.p_rotate), rng.uniform(-1, 1, N) * np.radians(self.max_angle), 0.0)
        if any_of(angles):
            x = ops.rotate_bilinear(be, x, angles)
        jitter = chosen(self.p_jitter)
        if any_of(jitter):
            gain = xp.where(jitter, 1 + rng.uniform(-self.contrast, self.contrast, N), 1.0)
            shift = xp.where(jitter, rng.uniform(-self.brightness, self.brightness, N), 0.0)
            mean = x.mean(axis=(1, 2, 3), keepdims=True)
            x = (x - mean) * per_image(gain) + mean + per_image(shift)
        sharpen = chosen(self.p_sharpness)
        if any_of(sharpen):
            x = x + per_image(sharpen * self.sharpness) * (x - box_blur3(xp, x))
        noisy = chosen(self.p_noise)
        if any_of(noisy):
            noise = rng.standard_normal(x.shape).astype(x.dtype) * self.noise_std
            x = x + per_image(noisy) * noise
        erase = chosen(self.p_erase)
        if on_host:
            x = self._erase_each(x, erase, rng) if erase.any() else x
        else:
            x = self._erase_all(xp, x, erase, rng)
        return xp.ascontiguousarray(x, dtype=x.dtype)

    def _rectangle_side(self, area, aspect, H, W, xp=np):
        h = xp.clip(xp.rint(xp.sqrt(area * aspect)), 1, H)
        w = xp.clip(xp.rint(xp.sqrt(area / aspect)), 1, W)
        return h, w

    def _erase_each(self, x, erase, rng):
        """Random erasing on the host: for each chosen image, its rectangle's draws one after another."""
        x = np.array(x, copy=True)
        H, W = x.shape[2:]
        for n in np.flatnonzero(erase):
            area = rng.uniform(0.02, 1.0) * self.erase_fraction * H * W
            aspect = np.exp(rng.uniform(np.log(0.5), np.log(2.0)))
            h, w = (int(v) for v in self._rectangle_side(area, aspect, H, W))
            top, left = rng.integers(0, H - h + 1), rng.integers(0, W - w + 1)
            x[n, :, top:top + h, left:left + w] = 0
        return x

    def _erase_all(self, xp, x, erase, rng):
        """Random erasing on a device: every image's rectangle drawn at once, applied as one mask."""
        N, _, H, W = x.shape
        area = rng.uniform(0.02, 1.0, N) * self.erase_fraction * H * W
        aspect = xp.exp(rng.uniform(np.log(0.5), np.log(2.0), N))
        h, w = (v.astype(np.int64) for v in self._rectangle_side(area, aspect, H, W, xp))
        top = xp.floor(rng.random(N) * (H - h + 1)).astype(np.int64)
        left = xp.floor(rng.random(N) * (W - w + 1)).astype(np.int64)
        rows, cols = xp.arange(H).reshape(1, H, 1), xp.arange(W).reshape(1, 1, W)
        box = (erase.reshape(N, 1, 1)
               & (rows >= top.reshape(N, 1, 1)) & (rows < (top + h).reshape(N, 1, 1))
               & (cols >= left.reshape(N, 1, 1)) & (cols < (left + w).reshape(N, 1, 1)))
        return xp.where(box[:, None, :, :], x.dtype.type(0), x)


def box_blur3(xp, x):
    """3×3 mean filter with edge replication, on any array module."""
    padded = xp.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
    H, W = x.shape[2:]
    total = sum(padded[:, :, i:i + H, j:j + W] for i in range(3) for j in range(3))
    return total / 9
