"""Synthetic glass panels with labelled defects, in the course dataset's layout.

The generator writes ``ROOT/{train,test}/img/<stem>.png`` (8-bit grayscale) and,
for every defective image, ``ROOT/{train,test}/txt/<stem>.txt`` with one line
``class_id cx cy w h`` per defect: a YOLO box, normalised to [0, 1], tight
around the pixels the defect changes.

Each image is a glass panel rendered by :mod:`glasscuda.data.rendering`:
uneven light, texture, sensor noise, dust and reflections as distractors, and
chipped edges (0), scratches (1) and stains (2), alone or several together.

Everything is seeded: each image draws from its own ``numpy.random.Generator``
built from ``SeedSequence(seed, spawn_key=(split, index))``, so an image does
not depend on the order in which images are rendered, and the same parameters
give byte-identical files. The renderer releases the GIL, so a thread pool
renders and encodes images in parallel.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import shutil
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ..glass import DEFECT_CLASSES as CLASS_NAMES
from .rendering import CHIPPED_EDGE, SCRATCH, STAIN, RenderedGlass, render_glass

__all__ = [
    "CLASS_NAMES",
    "GENERATOR_VERSION",
    "RenderedGlass",
    "default_cache_dir",
    "generate_synthetic",
    "render_glass",
    "synthetic_dataset",
]

GENERATOR_VERSION = 3

SPLITS = ("train", "test")
MANIFEST_NAME = "manifest.json"

# Share of defective images that carry two or more defects.
MULTI_DEFECT_FRACTION = 0.2

_DEFAULT_PARAMS = {
    "n_train": 2000,
    "n_test": 1000,
    "image_size": 256,
    "defect_rate": 0.1,
    "seed": 0,
}


# --------------------------------------------------------------------------
# Dataset planning and writing.
# --------------------------------------------------------------------------


def _validated_params(**params) -> dict:
    """Fill defaults, check types and ranges, and return a canonical dict."""
    unknown = set(params) - set(_DEFAULT_PARAMS)
    if unknown:
        raise TypeError(f"unknown synthetic dataset parameter(s): {', '.join(sorted(unknown))}")
    merged = {**_DEFAULT_PARAMS, **params}
    for name in ("n_train", "n_test", "image_size", "seed"):
        value = merged[name]
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name} must be an integer, got {value!r}")
        merged[name] = int(value)
    if merged["n_train"] < 0 or merged["n_test"] < 0:
        raise ValueError("n_train and n_test must be >= 0")
    if merged["image_size"] < 32:
        raise ValueError(f"image_size must be at least 32 pixels, got {merged['image_size']}")
    if merged["seed"] < 0:
        raise ValueError(f"seed must be >= 0, got {merged['seed']}")
    rate = float(merged["defect_rate"])
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"defect_rate must lie in [0, 1], got {rate}")
    merged["defect_rate"] = rate
    return merged


def _split_plan(seed: int, split_index: int, n_images: int, defect_rate: float):
    """Defect classes of every image in a split (an empty tuple for good glass).

    Exactly ``round(n_images * defect_rate)`` images are defective; their first
    defects cycle through the classes so classes stay balanced, and about
    ``MULTI_DEFECT_FRACTION`` of them get one or two extra defects of any class.
    """
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(split_index,)))
    n_defective = int(math.floor(n_images * defect_rate + 0.5))
    defective = rng.permutation(n_images)[:n_defective]
    first = rng.permutation(np.arange(n_defective) % len(CLASS_NAMES))
    n_multi = int(math.floor(n_defective * MULTI_DEFECT_FRACTION + 0.5))
    multi = set(rng.permutation(n_defective)[:n_multi].tolist())
    plan = [()] * n_images
    for slot, image_index in enumerate(defective.tolist()):
        classes = [int(first[slot])]
        if slot in multi:
            extra = 1 + int(rng.random() < 0.3)
            classes += rng.integers(0, len(CLASS_NAMES), size=extra).tolist()
        plan[image_index] = tuple(classes)
    return plan


def _image_rng(seed: int, split_index: int, image_index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(split_index, image_index)))


def _label_text(defects) -> str:
    return "".join(f"{cls} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n" for cls, (cx, cy, w, h) in defects)


def _write_image(split_dir: Path, stem: str, rendered: RenderedGlass) -> None:
    Image.fromarray(rendered.image).save(split_dir / "img" / f"{stem}.png", format="PNG")
    if rendered.defects:
        (split_dir / "txt" / f"{stem}.txt").write_text(_label_text(rendered.defects))


def _warm_up_kernels() -> None:
    """Compile (or load from numba's cache) the kernels before threads use them."""
    render_glass(np.random.default_rng(0), 32, (CHIPPED_EDGE, SCRATCH, STAIN))


def _render_split(out_dir: Path, params: dict, split_index: int, first_stem: int, n_images: int, pool, bar):
    """Render and write one split; return the defect classes of each written image."""
    split_dir = out_dir / SPLITS[split_index]
    (split_dir / "img").mkdir(parents=True)
    (split_dir / "txt").mkdir()
    plan = _split_plan(params["seed"], split_index, n_images, params["defect_rate"])

    def make(index: int):
        rng = _image_rng(params["seed"], split_index, index)
        rendered = render_glass(rng, params["image_size"], plan[index])
        _write_image(split_dir, f"glass_{first_stem + index:06d}", rendered)
        return [cls for cls, _ in rendered.defects]

    written = []
    for classes in pool.map(make, range(n_images)):
        written.append(classes)
        bar.update(1)
    return written


def _split_counts(written) -> dict:
    defects = [0] * len(CLASS_NAMES)
    images = [0] * len(CLASS_NAMES)
    for classes in written:
        for cls in classes:
            defects[cls] += 1
        for cls in set(classes):
            images[cls] += 1
    return {
        "images": len(written),
        "defective_images": sum(1 for classes in written if classes),
        "multi_defect_images": sum(1 for classes in written if len(classes) > 1),
        "defects_per_class": dict(zip(CLASS_NAMES, defects)),
        "images_per_class": dict(zip(CLASS_NAMES, images)),
    }


def _render_into_temp(root: Path, params: dict, progress: bool) -> Path:
    """Write the whole dataset into a fresh sibling of ``root`` and return it."""
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        _warm_up_kernels()
        counts = {}
        total = params["n_train"] + params["n_test"]
        sizes = (params["n_train"], params["n_test"])
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool, tqdm(
            total=total, desc="synthetic glass", unit="img", disable=not progress
        ) as bar:
            for split_index, split in enumerate(SPLITS):
                written = _render_split(tmp, params, split_index, sum(sizes[:split_index]), sizes[split_index], pool, bar)
                counts[split] = _split_counts(written)
        manifest = {
            "generator": "glasscuda.data.synthetic",
            "generator_version": GENERATOR_VERSION,
            "params": params,
            "class_names": list(CLASS_NAMES),
            "splits": counts,
        }
        (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp


def _publish(tmp: Path, root: Path) -> bool:
    """Atomically rename ``tmp`` to ``root``; False (and ``tmp`` removed) if ``root`` is taken."""
    try:
        os.rename(tmp, root)
        return True
    except OSError as error:
        shutil.rmtree(tmp, ignore_errors=True)
        if error.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR):
            return False
        raise


def _is_occupied(path: Path) -> bool:
    if not path.exists():
        return False
    return not path.is_dir() or any(path.iterdir())


def generate_synthetic(
    root,
    *,
    n_train: int = 2000,
    n_test: int = 1000,
    image_size: int = 256,
    defect_rate: float = 0.1,
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """Write a synthetic glass dataset in the course layout.

    The set is rendered into a temporary sibling folder, ``manifest.json`` is
    written last, and the folder is then renamed to ``root`` in one step, so
    ``root`` either does not exist or is complete.

    Parameters
    ----------
    root : str or os.PathLike
        Destination folder. It must not exist yet (or be empty).
    n_train, n_test : int
        Number of images in ``train`` and ``test``.
    image_size : int
        Side of the square images in pixels (at least 32).
    defect_rate : float
        Fraction of defective images in each split.
    seed : int
        Seed; the same parameters always give byte-identical files.
    progress : bool
        Show a progress bar.

    Returns
    -------
    pathlib.Path
        ``root``.

    Raises
    ------
    FileExistsError
        If ``root`` already holds something.
    """
    params = _validated_params(
        n_train=n_train, n_test=n_test, image_size=image_size, defect_rate=defect_rate, seed=seed
    )
    root = Path(root).expanduser()
    if _is_occupied(root):
        raise FileExistsError(f"{root} already exists and is not empty; remove it or choose another folder")
    tmp = _render_into_temp(root, params, progress)
    if not _publish(tmp, root):
        raise FileExistsError(f"{root} was created by someone else while the dataset was being generated")
    return root


def default_cache_dir() -> Path:
    """``$GLASSCUDA_CACHE`` if set, else ``~/.cache/glasscuda``."""
    return Path(os.environ.get("GLASSCUDA_CACHE") or "~/.cache/glasscuda").expanduser()


def _params_key(params: dict) -> str:
    canonical = json.dumps({"generator_version": GENERATOR_VERSION, **params}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def _manifest_matches(root: Path, params: dict) -> bool:
    try:
        manifest = json.loads((root / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return False
    return manifest.get("generator_version") == GENERATOR_VERSION and manifest.get("params") == params


def _discard_stale(root: Path, params: dict) -> None:
    """Move an unusable ``root`` aside and delete it (unless it became valid meanwhile)."""
    if _manifest_matches(root, params):
        return
    trash = root.parent / f".{root.name}.stale-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        os.rename(root, trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def synthetic_dataset(cache_dir=None, *, progress: bool = True, **params) -> Path:
    """Root of a cached synthetic dataset, generated on first use.

    Parameters
    ----------
    cache_dir : str or os.PathLike, optional
        Where cached sets live; defaults to :func:`default_cache_dir`.
    progress : bool
        Show a progress bar while generating.
    **params
        Any of ``n_train``, ``n_test``, ``image_size``, ``defect_rate``,
        ``seed`` (defaults as in :func:`generate_synthetic`).

    Returns
    -------
    pathlib.Path
        ``cache_dir/synthetic-v<version>-<hash of params>``. An existing folder
        is reused only when its manifest matches these parameters and this
        generator version. When several processes ask at once, each renders
        privately and the first rename wins; the others use the winner's.
    """
    params = _validated_params(**params)
    base = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    root = base / f"synthetic-v{GENERATOR_VERSION}-{_params_key(params)}"
    if _manifest_matches(root, params):
        return root
    base.mkdir(parents=True, exist_ok=True)
    if root.exists():
        _discard_stale(root, params)
    tmp = _render_into_temp(root, params, progress)
    if _publish(tmp, root) or _manifest_matches(root, params):
        return root
    raise RuntimeError(f"{root} exists but does not hold the requested synthetic dataset; remove it and retry")
