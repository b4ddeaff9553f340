"""Pixels of one synthetic glass panel: the scene, its defects, and the boxes around them.

A panel fills most of the frame in front of a darker or brighter background,
lit unevenly (a linear illumination gradient and vignetting), with
low-frequency texture, sensor noise, and distractors that are not defects:
dust specks and soft reflection bands. Defects are chipped edges (0),
scratches (1) and stains (2), alone or several together. The pixels are
drawn by the numba kernels of :mod:`glasscuda.data.pixels`.
:mod:`glasscuda.data.synthetic` writes whole datasets of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .pixels import render_pixels

CHIPPED_EDGE, SCRATCH, STAIN = 0, 1, 2

# A defect's box covers the pixels whose noise-free value it changes by at
# least this fraction of its largest change.
BOX_THRESHOLD = 0.2
# Faintest scratch contrast, in units of the image's noise sigma.
MIN_SCRATCH_CONTRAST_SIGMAS = 2.0
# Share of scratches drawn faint: contrast between 2 and 4 noise sigmas.
FAINT_SCRATCH_FRACTION = 0.2

# Image side the detectors are trained at; scratch widths are set for it.
TRAINING_SIZE = 128

# Shape harmonics k = 2 .. 1 + N_HARMONICS perturb the radius of chips and stains.
N_HARMONICS = 6


# --------------------------------------------------------------------------
# Scene and defect sampling (one Generator per image).
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Scene:
    """Everything about one panel except its defects."""

    size: int
    panel: np.ndarray
    light: np.ndarray
    texture_coarse: np.ndarray
    texture_fine: np.ndarray
    glares: np.ndarray
    dust: np.ndarray
    noise_sigma: float

    @property
    def bounds(self):
        x0, y0, x1, y1 = self.panel[:4]
        return float(x0), float(y0), float(x1), float(y1)


def _sample_scene(rng: np.random.Generator, size: int) -> _Scene:
    """Draw panel geometry, lighting, texture and distractors."""
    margins = rng.uniform(0.04, 0.10, size=4) * size
    glass_level = rng.uniform(0.45, 0.70)
    if rng.random() < 0.75:
        background_level = rng.uniform(0.05, 0.22)
    else:
        background_level = rng.uniform(0.84, 0.95)
    panel = np.array(
        [
            margins[0],
            margins[1],
            size - margins[2],
            size - margins[3],
            glass_level,
            background_level,
            rng.uniform(0.04, 0.16),  # bright rim along the panel's outline
            rng.uniform(0.6, 1.3) * max(size / 256.0, 0.5),
        ]
    )
    angle = rng.uniform(0.0, 2.0 * math.pi)
    strength = rng.uniform(0.0, 0.25)
    light = np.array(
        [
            strength * math.cos(angle),
            strength * math.sin(angle),
            rng.uniform(0.0, 0.2),  # vignetting strength
            rng.uniform(0.35, 0.65),
            rng.uniform(0.35, 0.65),
        ]
    )
    texture_amp = rng.uniform(0.004, 0.016)
    cells = int(rng.integers(3, 7))
    texture_coarse = rng.uniform(-1.0, 1.0, size=(cells + 1, cells + 1)) * texture_amp
    texture_fine = rng.uniform(-1.0, 1.0, size=(3 * cells + 1, 3 * cells + 1)) * texture_amp * 0.3
    return _Scene(
        size=size,
        panel=panel,
        light=light,
        texture_coarse=texture_coarse,
        texture_fine=texture_fine,
        glares=_sample_glares(rng, size),
        dust=_sample_dust(rng, size),
        noise_sigma=float(rng.uniform(0.005, 0.022)),
    )


def _sample_glares(rng: np.random.Generator, size: int) -> np.ndarray:
    """Soft straight reflection bands (mostly bright, sometimes a shadow)."""
    count = int(rng.choice(3, p=(0.45, 0.4, 0.15)))
    rows = []
    for _ in range(count):
        angle = rng.uniform(0.0, math.pi)
        nx, ny = math.cos(angle), math.sin(angle)
        through = rng.uniform(0.2, 0.8, size=2) * size
        amp = rng.uniform(0.02, 0.10) * (1.0 if rng.random() < 0.8 else -0.6)
        rows.append([nx, ny, nx * through[0] + ny * through[1], rng.uniform(0.04, 0.2) * size, amp])
    return np.array(rows, dtype=np.float64).reshape(-1, 5)


def _sample_dust(rng: np.random.Generator, size: int) -> np.ndarray:
    """Small specks anywhere in the frame: the classic false alarm."""
    count = min(int(rng.poisson(3.0)), 10)
    scale = max(size / 256.0, 0.5)
    rows = np.empty((count, 4))
    rows[:, :2] = rng.uniform(0.0, size, size=(count, 2))
    rows[:, 2] = rng.uniform(0.5, 1.8, size=count) * scale
    rows[:, 3] = rng.uniform(0.06, 0.3, size=count) * np.where(rng.random(count) < 0.6, -1.0, 1.0)
    return rows


def _shape_coeffs(rng: np.random.Generator, roughness: float) -> np.ndarray:
    """Harmonic amplitudes/phases that make a circle irregular."""
    coeffs = np.empty(2 * N_HARMONICS)
    for k in range(N_HARMONICS):
        coeffs[2 * k] = rng.uniform(0.0, roughness) / (k + 1)
        coeffs[2 * k + 1] = rng.uniform(0.0, 2.0 * math.pi)
    return coeffs


def _sample_chip(rng: np.random.Generator, scene: _Scene) -> np.ndarray:
    """A shallow irregular bite out of one panel edge, centred on (or just off) the edge line.

    Row layout: see ``_chip_edge_distance``.
    """
    size = scene.size
    x0, y0, x1, y1 = scene.bounds
    radius = rng.uniform(0.035, 0.075) * size
    depth_ratio = rng.uniform(0.6, 1.0)
    coeffs = _shape_coeffs(rng, 0.3)
    outward = rng.uniform(-0.25, 0.15) * radius * depth_ratio
    edge = int(rng.integers(4))
    if edge in (0, 1):  # left or right edge: the chip sits somewhere along y
        along = rng.uniform(y0 + 2 * radius, y1 - 2 * radius)
        normal = (1.0, 0.0) if edge == 0 else (-1.0, 0.0)
        centre = (x0 - outward, along) if edge == 0 else (x1 + outward, along)
    else:  # top or bottom edge: the chip sits somewhere along x
        along = rng.uniform(x0 + 2 * radius, x1 - 2 * radius)
        normal = (0.0, 1.0) if edge == 2 else (0.0, -1.0)
        centre = (along, y0 - outward) if edge == 2 else (along, y1 + outward)
    reach = radius * (1.0 + coeffs[0::2].sum())
    return np.concatenate([[centre[0], centre[1], radius, reach, normal[0], normal[1], depth_ratio], coeffs])


def _inner_region(scene: _Scene, inset: float):
    x0, y0, x1, y1 = scene.bounds
    return x0 + inset, y0 + inset, x1 - inset, y1 - inset


def _sample_scratch(rng: np.random.Generator, scene: _Scene) -> np.ndarray:
    """A thin straight or gently curved line somewhere on the glass."""
    size = scene.size
    left, top, right, bottom = _inner_region(scene, 0.04 * size)
    length = rng.uniform(0.15, 0.6) * size
    angle = rng.uniform(0.0, 2.0 * math.pi)
    dx, dy = length * math.cos(angle), length * math.sin(angle)
    # Keep the chord inside the region; shorten it when the region is too small.
    scale = min(1.0, 0.95 * (right - left) / max(abs(dx), 1e-9), 0.95 * (bottom - top) / max(abs(dy), 1e-9))
    dx, dy = dx * scale, dy * scale
    start_x = rng.uniform(left - min(dx, 0.0), right - max(dx, 0.0))
    start_y = rng.uniform(top - min(dy, 0.0), bottom - max(dy, 0.0))
    end_x, end_y = start_x + dx, start_y + dy
    bend = rng.uniform(-0.25, 0.25) if rng.random() < 0.6 else 0.0
    mid_x = 0.5 * (start_x + end_x) - bend * dy
    mid_y = 0.5 * (start_y + end_y) + bend * dx
    mid_x = min(max(mid_x, left), right)
    mid_y = min(max(mid_y, top), bottom)
    # 1-2 px wide at the 128-pixel size the detectors train on, so downscaling keeps the line.
    width = rng.uniform(1.0, 2.0) * max(size / TRAINING_SIZE, 1.0)
    if rng.random() < FAINT_SCRATCH_FRACTION:
        contrast = rng.uniform(MIN_SCRATCH_CONTRAST_SIGMAS, 2 * MIN_SCRATCH_CONTRAST_SIGMAS) * scene.noise_sigma
    else:
        contrast = max(math.exp(rng.uniform(math.log(0.08), math.log(0.3))), MIN_SCRATCH_CONTRAST_SIGMAS * scene.noise_sigma)
    sign = 1.0 if rng.random() < 0.75 else -1.0
    return np.array([start_x, start_y, mid_x, mid_y, end_x, end_y, width, sign * contrast])


def _sample_stain(rng: np.random.Generator, scene: _Scene) -> np.ndarray:
    """A low-contrast soft blob inside the panel."""
    size = scene.size
    radius = rng.uniform(0.04, 0.12) * size
    coeffs = _shape_coeffs(rng, 0.25)
    reach = radius * (1.0 + coeffs[0::2].sum())
    left, top, right, bottom = _inner_region(scene, reach + 0.01 * size)
    cx = rng.uniform(left, max(right, left))
    cy = rng.uniform(top, max(bottom, top))
    amp = rng.uniform(0.08, 0.2) * (1.0 if rng.random() < 0.4 else -1.0)
    softness = rng.uniform(0.25, 0.8)
    ring = rng.uniform(0.2, 0.6) if rng.random() < 0.3 else 0.0
    return np.concatenate([[cx, cy, radius, reach, amp, softness, ring], coeffs])


_SAMPLERS = {CHIPPED_EDGE: _sample_chip, SCRATCH: _sample_scratch, STAIN: _sample_stain}
_ROW_WIDTHS = {CHIPPED_EDGE: 7 + 2 * N_HARMONICS, SCRATCH: 8, STAIN: 7 + 2 * N_HARMONICS}


def _defect_rows(defects, class_id):
    rows = [row for cls, row in defects if cls == class_id]
    return np.array(rows, dtype=np.float64).reshape(-1, _ROW_WIDTHS[class_id])


def _render_scene(scene: _Scene, defects) -> np.ndarray:
    """Noise-free float32 render of ``scene`` with the given (class_id, row) defects."""
    return render_pixels(
        scene.size,
        scene.panel,
        scene.light,
        scene.texture_coarse,
        scene.texture_fine,
        scene.glares,
        scene.dust,
        _defect_rows(defects, CHIPPED_EDGE),
        _defect_rows(defects, SCRATCH),
        _defect_rows(defects, STAIN),
    )


def _changed_box(reference: np.ndarray, changed: np.ndarray):
    """Normalised YOLO box (cx, cy, w, h) of the pixels that changed noticeably, or None."""
    delta = np.abs(changed - reference)
    peak = float(delta.max())
    if peak <= 1e-6:
        return None
    rows = np.flatnonzero((delta >= BOX_THRESHOLD * peak).any(axis=1))
    cols = np.flatnonzero((delta >= BOX_THRESHOLD * peak).any(axis=0))
    size = reference.shape[0]
    left, right = cols[0], cols[-1] + 1
    top, bottom = rows[0], rows[-1] + 1
    return ((left + right) / (2 * size), (top + bottom) / (2 * size), (right - left) / size, (bottom - top) / size)


@dataclass(frozen=True)
class RenderedGlass:
    """One rendered panel.

    Attributes
    ----------
    image : np.ndarray
        uint8 [H, W], what is written to disk (noise and quantisation included).
    noise_free : np.ndarray
        float32 [H, W], the same scene with its defects, before noise.
    clean : np.ndarray
        float32 [H, W], the same scene without any defect, before noise.
    defects : list of (int, tuple)
        ``(class_id, (cx, cy, w, h))`` per defect, boxes normalised to [0, 1].
    """

    image: np.ndarray
    noise_free: np.ndarray
    clean: np.ndarray
    defects: list


def render_glass(rng: np.random.Generator, image_size: int, defect_classes=()) -> RenderedGlass:
    """Render one panel carrying the given defects.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of all randomness for this image. The scene and the sensor
        noise are drawn before the defects, so two calls with equally seeded
        generators share panel and noise whatever ``defect_classes`` is.
    image_size : int
        Side of the square image in pixels.
    defect_classes : sequence of int
        Class id of each defect to draw (0 chipped edge, 1 scratch, 2 stain).

    Returns
    -------
    RenderedGlass
        The image and, per defect, its class id and tight normalised box:
        the bounding box of the pixels the defect alone changes by at least
        ``BOX_THRESHOLD`` of its largest change.
    """
    scene = _sample_scene(rng, image_size)
    noise = rng.standard_normal((image_size, image_size), dtype=np.float32)
    noise *= np.float32(scene.noise_sigma)
    defects = [(int(cls), _SAMPLERS[int(cls)](rng, scene)) for cls in defect_classes]
    clean = _render_scene(scene, [])
    noise_free = _render_scene(scene, defects) if defects else clean
    labelled = []
    for defect in defects:
        alone = noise_free if len(defects) == 1 else _render_scene(scene, [defect])
        box = _changed_box(clean, alone)
        if box is not None:
            labelled.append((defect[0], box))
    image = np.clip(np.rint((noise_free + noise) * 255.0), 0, 255).astype(np.uint8)
    return RenderedGlass(image=image, noise_free=noise_free, clean=clean, defects=labelled)
