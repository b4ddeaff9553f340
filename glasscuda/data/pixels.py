"""The numba kernels that draw a synthetic glass panel's pixels (see :mod:`glasscuda.data.rendering`).

They release the GIL, so threads can render several images at once.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

# Scratches are quadratic Bezier curves drawn as this many straight segments.
N_SCRATCH_SEGMENTS = 24


# --------------------------------------------------------------------------
# Pixel kernels (numba). Coordinates are in pixels; pixel (iy, ix) has its
# centre at (ix + 0.5, iy + 0.5).
# --------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _shape_radius(base, coeffs, theta):
    """Radius of an irregular round shape at angle ``theta``.

    ``coeffs`` holds (amplitude, phase) pairs of the harmonics 2, 3, ...
    """
    factor = 1.0
    for k in range(coeffs.shape[0] // 2):
        factor += coeffs[2 * k] * math.cos((k + 2) * theta + coeffs[2 * k + 1])
    return base * factor


@njit(cache=True, nogil=True)
def _lattice_weights(cells, size):
    """Per-pixel lower lattice index and smoothstep weight along one axis."""
    index = np.empty(size, np.int64)
    weight = np.empty(size)
    for i in range(size):
        f = (i + 0.5) / size * cells
        k = min(int(f), cells - 1)
        t = f - k
        index[i] = k
        weight[i] = t * t * (3.0 - 2.0 * t)
    return index, weight


@njit(cache=True, nogil=True)
def _add_value_noise(grid, out):
    """Add smoothly interpolated lattice noise (``grid`` spans the frame) to ``out``.

    Interpolates along x for every lattice row first, then along y, so each
    pixel costs one blend.
    """
    size = out.shape[0]
    cells = grid.shape[0] - 1
    index, weight = _lattice_weights(cells, size)
    rows = np.empty((cells + 1, size))
    for r in range(cells + 1):
        for ix in range(size):
            k = index[ix]
            rows[r, ix] = grid[r, k] * (1.0 - weight[ix]) + grid[r, k + 1] * weight[ix]
    for iy in range(size):
        k = index[iy]
        t = weight[iy]
        for ix in range(size):
            out[iy, ix] += rows[k, ix] * (1.0 - t) + rows[k + 1, ix] * t


@njit(cache=True, nogil=True)
def _smoothstep(edge0, edge1, x):
    t = min(max((x - edge0) / (edge1 - edge0), 0.0), 1.0)
    return t * t * (3.0 - 2.0 * t)


@njit(cache=True, nogil=True)
def _window(size, cx, cy, reach):
    """Clamped pixel index range [x0, x1) x [y0, y1) around a point."""
    x0 = max(int(math.floor(cx - reach)), 0)
    x1 = min(int(math.ceil(cx + reach)) + 1, size)
    y0 = max(int(math.floor(cy - reach)), 0)
    y1 = min(int(math.ceil(cy + reach)) + 1, size)
    return x0, x1, y0, y1


@njit(cache=True, nogil=True)
def _chip_edge_distance(chip, px, py, nearest):
    """Approximate signed distance from (px, py) to a chip's outline, positive outside it.

    The chip is an irregular round shape squashed across the panel edge (it is
    wider along the edge than it is deep). Returns ``nearest`` unchanged when
    the chip cannot be closer than that.
    Row layout: cx, cy, radius, reach, inward normal x, inward normal y, depth ratio, coeffs...
    """
    dx = px - chip[0]
    dy = py - chip[1]
    dist = math.sqrt(dx * dx + dy * dy)
    if dist - chip[3] >= nearest:
        return nearest
    nx = chip[4]
    ny = chip[5]
    along = -ny * dx + nx * dy
    across = (nx * dx + ny * dy) / chip[6]
    stretched = math.sqrt(along * along + across * across)
    if stretched == 0.0:
        return -chip[2] * chip[6]
    radius = _shape_radius(chip[2], chip[7:], math.atan2(across, along))
    return (stretched - radius) * (dist / stretched)


@njit(cache=True, nogil=True)
def _render_panel(size, panel, light, texture_coarse, texture_fine, glares, chips, out, coverage, illumination):
    """Background, panel (with any chips bitten out of it), texture, glare, rim.

    Writes the image into ``out``, the panel's coverage (1 on glass, 0 on
    background) into ``coverage`` and the illumination factor into
    ``illumination``; the defect and dust passes use both.
    """
    x0, y0, x1, y1, glass_level, background_level, rim_amp, rim_width = panel
    grad_x, grad_y, vignette, vignette_cx, vignette_cy = light
    texture = np.zeros((size, size))
    _add_value_noise(texture_coarse, texture)
    _add_value_noise(texture_fine, texture)
    for iy in range(size):
        py = iy + 0.5
        v = py / size
        for ix in range(size):
            px = ix + 0.5
            u = px / size
            # Signed distance to the panel outline, positive inside the glass.
            inside = min(px - x0, x1 - px, py - y0, y1 - py)
            for c in range(chips.shape[0]):
                edge = _chip_edge_distance(chips[c], px, py, inside)
                if edge < inside:
                    inside = edge
            cover = min(max(inside + 0.5, 0.0), 1.0)
            glass = glass_level + texture[iy, ix]
            for g in range(glares.shape[0]):
                offset = (glares[g, 0] * px + glares[g, 1] * py - glares[g, 2]) / glares[g, 3]
                glass += glares[g, 4] * math.exp(-offset * offset)
            value = background_level * (1.0 - cover) + glass * cover
            if abs(inside) < 4.0 * rim_width:
                value += rim_amp * math.exp(-(inside / rim_width) ** 2)
            radial = ((u - vignette_cx) ** 2 + (v - vignette_cy) ** 2) * 2.0
            light_factor = (1.0 + grad_x * (u - 0.5) + grad_y * (v - 0.5)) * (1.0 - vignette * radial)
            out[iy, ix] = value * light_factor
            coverage[iy, ix] = cover
            illumination[iy, ix] = light_factor


@njit(cache=True, nogil=True)
def _add_stains(size, stains, out, coverage, illumination):
    """Soft irregular blobs, optionally with a darker/brighter drying ring.

    Row layout: cx, cy, radius, reach, amplitude, softness, ring, coeffs...
    """
    for s in range(stains.shape[0]):
        cx, cy, radius, reach, amp, softness, ring = stains[s, :7]
        coeffs = stains[s, 7:]
        x0, x1, y0, y1 = _window(size, cx, cy, reach)
        for iy in range(y0, y1):
            dy = iy + 0.5 - cy
            for ix in range(x0, x1):
                dx = ix + 0.5 - cx
                dist = math.sqrt(dx * dx + dy * dy)
                rel = dist / _shape_radius(radius, coeffs, math.atan2(dy, dx))
                if rel >= 1.0:
                    continue
                body = 1.0 - _smoothstep(1.0 - softness, 1.0, rel)
                halo = ring * math.exp(-(((rel - 0.85) / 0.1) ** 2)) * (1.0 - _smoothstep(0.9, 1.0, rel))
                out[iy, ix] += amp * (body + halo) * coverage[iy, ix] * illumination[iy, ix]


@njit(cache=True, nogil=True)
def _add_scratches(size, scratches, out, coverage, illumination):
    """Thin anti-aliased curves that fade in and out at their ends.

    Row layout: x0, y0, control x, control y, x1, y1, width, amplitude.
    """
    n = N_SCRATCH_SEGMENTS
    xs = np.empty(n + 1)
    ys = np.empty(n + 1)
    for s in range(scratches.shape[0]):
        ax, ay, bx, by, cx, cy, width, amp = scratches[s]
        for k in range(n + 1):
            t = k / n
            xs[k] = (1 - t) * (1 - t) * ax + 2 * (1 - t) * t * bx + t * t * cx
            ys[k] = (1 - t) * (1 - t) * ay + 2 * (1 - t) * t * by + t * t * cy
        margin = 0.5 * width + 1.0
        x0 = max(int(math.floor(xs.min() - margin)), 0)
        x1 = min(int(math.ceil(xs.max() + margin)) + 1, size)
        y0 = max(int(math.floor(ys.min() - margin)), 0)
        y1 = min(int(math.ceil(ys.max() + margin)) + 1, size)
        for iy in range(y0, y1):
            py = iy + 0.5
            for ix in range(x0, x1):
                px = ix + 0.5
                best = 1e30
                best_t = 0.0
                for k in range(n):
                    sx = xs[k + 1] - xs[k]
                    sy = ys[k + 1] - ys[k]
                    length2 = sx * sx + sy * sy
                    along = ((px - xs[k]) * sx + (py - ys[k]) * sy) / length2 if length2 > 0 else 0.0
                    along = min(max(along, 0.0), 1.0)
                    qx = px - (xs[k] + along * sx)
                    qy = py - (ys[k] + along * sy)
                    d2 = qx * qx + qy * qy
                    if d2 < best:
                        best = d2
                        best_t = (k + along) / n
                profile = min(max(0.5 * width + 0.5 - math.sqrt(best), 0.0), 1.0)
                if profile <= 0.0:
                    continue
                taper = _smoothstep(0.0, 0.12, best_t) * _smoothstep(0.0, 0.12, 1.0 - best_t)
                out[iy, ix] += amp * profile * (0.35 + 0.65 * taper) * coverage[iy, ix] * illumination[iy, ix]


@njit(cache=True, nogil=True)
def _add_dust(size, dust, out, illumination):
    """Small dark or bright Gaussian specks. Row layout: cx, cy, radius, amplitude."""
    for s in range(dust.shape[0]):
        cx, cy, radius, amp = dust[s]
        x0, x1, y0, y1 = _window(size, cx, cy, 3.0 * radius + 1.0)
        for iy in range(y0, y1):
            dy = iy + 0.5 - cy
            for ix in range(x0, x1):
                dx = ix + 0.5 - cx
                out[iy, ix] += amp * math.exp(-(dx * dx + dy * dy) / (radius * radius)) * illumination[iy, ix]


@njit(cache=True, nogil=True)
def render_pixels(size, panel, light, texture_coarse, texture_fine, glares, dust, chips, scratches, stains):
    """Noise-free image of one scene, float32 in roughly [0, 1]."""
    out = np.empty((size, size), np.float32)
    coverage = np.empty((size, size), np.float32)
    illumination = np.empty((size, size), np.float32)
    _render_panel(size, panel, light, texture_coarse, texture_fine, glares, chips, out, coverage, illumination)
    _add_stains(size, stains, out, coverage, illumination)
    _add_scratches(size, scratches, out, coverage, illumination)
    _add_dust(size, dust, out, illumination)
    return out
