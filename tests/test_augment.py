"""glasscuda.data.augment.Augment against a float64 oracle that makes the same draws image by image."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import rel_err
from glasscuda import reference as ref
from glasscuda.data.augment import Augment


def blur3(img):
    padded = np.pad(img, ((0, 0), (1, 1), (1, 1)), mode="edge")
    H, W = img.shape[1:]
    return sum(padded[:, i:i + H, j:j + W] for i in range(3) for j in range(3)) / 9


def oracle(aug: Augment, x, rng):
    """The recipe written per image with branches, in float64; the draws in Augment's order."""
    N, _, H, W = x.shape
    flip, codes = rng.random(N) < aug.p_flip, rng.integers(1, 4, size=N)
    rotate, angles = rng.random(N) < aug.p_rotate, rng.uniform(-1, 1, N) * np.radians(aug.max_angle)
    jitter = rng.random(N) < aug.p_jitter
    gain, shift = rng.uniform(-aug.contrast, aug.contrast, N), rng.uniform(-aug.brightness, aug.brightness, N)
    sharpen = rng.random(N) < aug.p_sharpness
    noisy, noise = rng.random(N) < aug.p_noise, rng.standard_normal(x.shape, dtype=x.dtype)
    erase = rng.random(N) < aug.p_erase
    area = rng.uniform(0.02, 1.0, N) * aug.erase_fraction * H * W
    aspect = np.exp(rng.uniform(np.log(0.5), np.log(2.0), N))
    top_u, left_u = rng.random(N), rng.random(N)
    out = []
    for n in range(N):
        img = x[n].astype(np.float64)
        if flip[n]:
            img = ref.flip_rotate90(img[None], codes[n:n + 1])[0]
        if rotate[n]:
            img = ref.rotate_bilinear(img[None], angles[n:n + 1])[0]
        if jitter[n]:
            img = (img - img.mean()) * (1 + gain[n]) + img.mean() + shift[n]
        if sharpen[n]:
            img = img + aug.sharpness * (img - blur3(img))
        if noisy[n]:
            img = img + noise[n] * aug.noise_std
        if erase[n]:
            h = int(min(H, max(1, round(np.sqrt(area[n] * aspect[n])))))
            w = int(min(W, max(1, round(np.sqrt(area[n] / aspect[n])))))
            top, left = int(top_u[n] * (H - h + 1)), int(left_u[n] * (W - w + 1))
            img[:, top:top + h, left:left + w] = 0
        out.append(img)
    return np.stack(out)


PROBABILITIES = {
    "default": {},
    "all on": dict(p_flip=1, p_rotate=1, p_jitter=1, p_sharpness=1, p_noise=1, p_erase=1),
    "erase only": dict(p_flip=0, p_rotate=0, p_jitter=0, p_sharpness=0, p_noise=0, p_erase=1),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(PROBABILITIES))
def test_augment_matches_the_per_image_oracle(cpu, dtype, name):
    aug = Augment(**PROBABILITIES[name])
    x = np.random.default_rng(1).standard_normal((9, 2, 24, 24)).astype(dtype)
    got = aug(cpu, x.copy(), np.random.default_rng(7))
    want = oracle(aug, x, np.random.default_rng(7))
    assert got.dtype == dtype and got.shape == x.shape
    assert rel_err(got, want) <= (1e-5 if dtype == np.float32 else 1e-12)
    if name == "erase only":
        assert (got == 0).any() and np.array_equal(got[got != 0], x[got != 0])


def test_with_every_probability_zero_the_batch_is_unchanged_to_the_bit(cpu):
    aug = Augment(p_flip=0, p_rotate=0, p_jitter=0, p_sharpness=0, p_noise=0, p_erase=0)
    x = np.random.default_rng(2).standard_normal((6, 1, 16, 16)).astype(np.float32)
    assert np.array_equal(aug(cpu, x.copy(), np.random.default_rng(3)), x)


def test_the_emulated_device_gives_the_cpu_result(cpu, emulated):
    x = np.random.default_rng(4).standard_normal((5, 1, 20, 20)).astype(np.float32)
    aug = Augment(p_flip=0.7, p_rotate=0.7, p_erase=0.7)
    np.testing.assert_array_equal(aug(emulated, x.copy(), np.random.default_rng(9)),
                                  aug(cpu, x.copy(), np.random.default_rng(9)))
