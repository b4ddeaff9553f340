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


def oracle(aug: Augment, x, rng, on_host):
    """The recipe written per image with branches, in float64, making Augment's draws in its order:
    on the host a step's draws are skipped when no image was chosen for it, and random erasing
    draws for the erased images only, one after another; on a device everything is drawn for all."""
    N, _, H, W = x.shape

    def drawn(mask, draw):
        return draw() if (mask.any() or not on_host) else None

    flip, codes = rng.random(N) < aug.p_flip, rng.integers(1, 4, size=N)
    rotate, angles = rng.random(N) < aug.p_rotate, rng.uniform(-1, 1, N) * np.radians(aug.max_angle)
    jitter = rng.random(N) < aug.p_jitter
    gain, shift = drawn(jitter, lambda: (rng.uniform(-aug.contrast, aug.contrast, N),
                                         rng.uniform(-aug.brightness, aug.brightness, N))) or (None, None)
    sharpen = rng.random(N) < aug.p_sharpness
    noisy = rng.random(N) < aug.p_noise
    noise = drawn(noisy, lambda: rng.standard_normal(x.shape).astype(x.dtype))
    erase = rng.random(N) < aug.p_erase
    rectangles = {}
    if on_host:
        for n in np.flatnonzero(erase):
            area = rng.uniform(0.02, 1.0) * aug.erase_fraction * H * W
            aspect = np.exp(rng.uniform(np.log(0.5), np.log(2.0)))
            h, w = int(min(H, max(1, round(np.sqrt(area * aspect))))), int(min(W, max(1, round(np.sqrt(area / aspect)))))
            rectangles[n] = (rng.integers(0, H - h + 1), rng.integers(0, W - w + 1), h, w)
    else:
        area = rng.uniform(0.02, 1.0, N) * aug.erase_fraction * H * W
        aspect = np.exp(rng.uniform(np.log(0.5), np.log(2.0), N))
        top_u, left_u = rng.random(N), rng.random(N)
        for n in np.flatnonzero(erase):
            h = int(min(H, max(1, round(np.sqrt(area[n] * aspect[n])))))
            w = int(min(W, max(1, round(np.sqrt(area[n] / aspect[n])))))
            rectangles[n] = (int(top_u[n] * (H - h + 1)), int(left_u[n] * (W - w + 1)), h, w)
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
        if n in rectangles:
            top, left, h, w = rectangles[n]
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
@pytest.mark.parametrize("where", ["host", "device"])
def test_augment_matches_the_per_image_oracle(cpu, emulated, dtype, name, where):
    """On the host (the CPU backend) and on a device (the counting backend: the device code on the
    emulated grid, arrays that refuse host values, draws from a device-side generator)."""
    from counting_backend import CountingBackend, CountingGenerator
    aug = Augment(**PROBABILITIES[name])
    x = np.random.default_rng(1).standard_normal((9, 2, 24, 24)).astype(dtype)
    if where == "host":
        got = aug(cpu, x.copy(), np.random.default_rng(7))
    else:
        be = CountingBackend(emulated)
        got = np.asarray(aug(be, be.asarray(x), CountingGenerator(np.random.default_rng(7))))
    want = oracle(aug, x, np.random.default_rng(7), on_host=where == "host")
    assert got.dtype == dtype and got.shape == x.shape
    assert rel_err(got, want) <= (1e-5 if dtype == np.float32 else 1e-12)
    if name == "erase only":
        assert (got == 0).any()
        if where == "host":   # the skipped steps leave the rest untouched, to the bit
            assert np.array_equal(got[got != 0], x[got != 0])


def test_the_host_draws_are_those_of_the_original_recipe(cpu):
    """Seeded CPU runs keep their results: the draws on the host are the per-image recipe's."""
    aug = Augment()
    x = np.random.default_rng(3).standard_normal((32, 1, 16, 16)).astype(np.float32)
    rng = np.random.default_rng(11)
    aug(cpu, x.copy(), rng)
    replay = np.random.default_rng(11)
    oracle(aug, x, replay, on_host=True)
    assert rng.bit_generator.state == replay.bit_generator.state


def test_with_every_probability_zero_the_batch_is_unchanged_to_the_bit(cpu):
    aug = Augment(p_flip=0, p_rotate=0, p_jitter=0, p_sharpness=0, p_noise=0, p_erase=0)
    x = np.random.default_rng(2).standard_normal((6, 1, 16, 16)).astype(np.float32)
    assert np.array_equal(aug(cpu, x.copy(), np.random.default_rng(3)), x)


def test_the_emulated_grid_gives_the_cpu_result(cpu, emulated):
    x = np.random.default_rng(4).standard_normal((5, 1, 20, 20)).astype(np.float32)
    aug = Augment(p_flip=0.7, p_rotate=0.7, p_erase=0.7)
    np.testing.assert_array_equal(aug(emulated, x.copy(), np.random.default_rng(9)),
                                  aug(cpu, x.copy(), np.random.default_rng(9)))
