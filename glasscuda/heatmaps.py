"""Where is the defect: class activation maps as overlays and peak locations.

:meth:`glasscuda.models.MultiLabelNet.dense_class_activation_maps` gives one
map per class on a grid 4 pixels apart (the pooled head alone gives one cell
per 16 pixels). The peak is the centre of the map's hottest cell; for the
overlay PNG the map is upsampled bilinearly to the image (PyTorch's
``align_corners=False`` convention) and drawn on the glass. ``peaks.csv``
lists each peak in the same normalised coordinates as the YOLO boxes of the
label files, so ``python -m glasscuda.evaluate --heatmap-peaks`` can score it
against them.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from .reports import write_bytes_atomic, write_csv_atomic

PEAK_COLUMNS = ("id", "class", "probability", "peak_x", "peak_y")
OVERLAY_ALPHA = 0.45
# Pixels between neighbouring cells of the maps (a divisor of the backbone's 16).
MAP_STEP = 4


def _source_coordinates(n_out: int, n_in: int):
    """Lower neighbour and weight of each output pixel's source position (align_corners=False)."""
    src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    src = np.clip(src, 0.0, n_in - 1)
    lo = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, src - lo


def upsample_bilinear(maps: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of [..., h, w] maps to [..., height, width]."""
    maps = np.asarray(maps, dtype=np.float64)
    y0, y1, wy = _source_coordinates(height, maps.shape[-2])
    x0, x1, wx = _source_coordinates(width, maps.shape[-1])
    rows = maps[..., y0, :] * (1 - wy)[:, None] + maps[..., y1, :] * wy[:, None]
    return rows[..., x0] * (1 - wx) + rows[..., x1] * wx


def peak_location(heat: np.ndarray) -> tuple[float, float]:
    """Normalised (x, y) of the centre of the hottest cell of a [H, W] map."""
    row, col = np.unravel_index(int(np.argmax(heat)), heat.shape)
    return (col + 0.5) / heat.shape[1], (row + 0.5) / heat.shape[0]


def overlay(image: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """RGB uint8 [H, W, 3]: the image in gray with the map, scaled to its own range, in colour on top."""
    from matplotlib import colormaps

    gray = np.clip(np.asarray(image, dtype=np.float64), 0.0, 1.0)
    span = float(heat.max() - heat.min())
    scaled = (heat - heat.min()) / span if span > 0 else np.zeros_like(heat)
    colour = colormaps["jet"](scaled)[..., :3]
    blended = (1 - OVERLAY_ALPHA) * gray[..., None] + OVERLAY_ALPHA * colour
    return np.round(blended * 255).astype(np.uint8)


def _png_bytes(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass
class Peak:
    id: str
    class_name: str
    probability: float
    x: float
    y: float


def write_heatmaps(model, images, ids, class_names, probabilities, predicted, normalizer, out_dir,
                   *, batch_size: int = 64, progress: bool = False) -> list[Peak]:
    """One overlay PNG per image and predicted defect class, plus ``peaks.csv``.

    Parameters
    ----------
    model : MultiLabelNet
    images : np.ndarray
        Host images [N, C, S, S] in [0, 1] (as loaded; overlays use channel mean).
    ids : list of str
        File stems; overlays are named ``<id>_<class>.png``.
    class_names : list of str
        One per logit.
    probabilities, predicted : np.ndarray
        [N, K] probabilities, and 0/1 marks of the classes to map (the
        predicted defects; leave "no defect" unmarked).
    normalizer : Normalizer
        The checkpoint's input normalisation.
    out_dir : path-like
        Created if missing.

    Returns
    -------
    list of Peak
        Also written to ``out_dir/peaks.csv``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    be = model.backend
    peaks = []
    bar = tqdm(total=len(images), desc="heatmaps", unit="image", leave=False, disable=not progress)
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size]
        wanted = predicted[start:start + batch_size]
        if not wanted.any():
            bar.update(len(batch))
            continue
        mapped = np.flatnonzero(wanted.any(axis=1))      # the maps cost 16 passes: only where needed
        cams = be.to_numpy(model.dense_class_activation_maps(
            be.asarray(normalizer(batch[mapped], model.dtype)), step=MAP_STEP))
        for n, k in zip(*np.nonzero(wanted)):
            cam = cams[np.searchsorted(mapped, n), k]
            x, y = peak_location(cam)
            heat = upsample_bilinear(cam, *batch.shape[2:])
            index = start + n
            write_bytes_atomic(out_dir / f"{ids[index]}_{class_names[k]}.png",
                               _png_bytes(overlay(batch[n].mean(axis=0), heat)))
            peaks.append(Peak(ids[index], class_names[k], float(probabilities[index, k]), x, y))
        bar.update(len(batch))
    bar.close()
    write_csv_atomic(out_dir / "peaks.csv",
                     [{"id": p.id, "class": p.class_name, "probability": p.probability,
                       "peak_x": p.x, "peak_y": p.y} for p in peaks], list(PEAK_COLUMNS))
    return peaks


def inside_box(x: float, y: float, box) -> bool:
    """Whether normalised (x, y) lies in a YOLO box (cx, cy, w, h), edges included."""
    cx, cy, w, h = box
    return abs(x - cx) <= w / 2 and abs(y - cy) <= h / 2
