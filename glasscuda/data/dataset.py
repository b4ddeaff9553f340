"""Load a glass dataset laid out as ``ROOT/{train,test}/{img,txt}``.

Each image ``ROOT/<split>/img/<stem>.<ext>`` may have a label file
``ROOT/<split>/txt/<stem>.txt``; no label file means no defect. Every
non-blank line of a label file is one defect: an integer class id, optionally
followed by its location, either a YOLO box ``cx cy w h`` or a polygon
``x1 y1 x2 y2 ...`` (stored as its bounding box), all normalised to [0, 1].
The class ids are those ``ROOT/classes.txt`` names (the course's three
without it); an id it does not name is a bad label line.

Problems are never dropped silently. A corrupt image or a bad label line
either skips that image with a warning naming the file, the line and the
problem (and a closing summary of how many were skipped), or, with
``strict=True``, raises :class:`DatasetError` at the first one.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ..glass import (DEFAULT_CLASS_MAP, IMAGE_PATTERNS, IMAGE_SUFFIXES, ClassNamesError, LabelError, list_images,
                     parse_label_text, read_class_names)

__all__ = [
    "DEFAULT_CLASS_MAP",
    "IMAGE_SUFFIXES",
    "DatasetError",
    "DatasetWarning",
    "GlassDataset",
    "load_images",
    "load_split",
    "stratified_split",
]

LAYOUT_HINT = "point --data at a folder laid out as ROOT/{train,test}/{img,txt}"
# Orphan label files named in one warning before the rest are only counted.
MAX_NAMES_LISTED = 10


class DatasetError(ValueError):
    """The data cannot be used as given; the message says which file, what is wrong and what to do."""


class DatasetWarning(UserWarning):
    """A file was skipped or ignored while loading a dataset."""


@dataclass
class GlassDataset:
    """Images and multi-label defect annotations of one split.

    Attributes
    ----------
    images : np.ndarray
        float32 [N, C, H, W] in [0, 1].
    labels : np.ndarray
        float32 [N, K] multi-hot over ``class_names``; an all-zero row means no defect.
    boxes : list of list of tuple
        Per image, ``(class_id, cx, cy, w, h)`` for every label line that carries a
        location (normalised); empty when the image has no located defect.
    ids : list of str
        File stems.
    paths : list of str
        Image paths.
    skipped : list of (str, str)
        ``(path, reason)`` for each image left out while loading.
    class_names : tuple of str
        Name of each label column.
    """

    images: np.ndarray
    labels: np.ndarray
    boxes: list
    ids: list
    paths: list
    skipped: list = field(default_factory=list)
    class_names: tuple = tuple(DEFAULT_CLASS_MAP.values())

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def is_defective(self) -> np.ndarray:
        """Bool [N]: True where the image carries at least one defect."""
        return self.labels.any(axis=1)

    def subset(self, indices) -> "GlassDataset":
        """A new dataset holding the images at ``indices`` (in that order)."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        return GlassDataset(
            images=self.images[indices],
            labels=self.labels[indices],
            boxes=[self.boxes[i] for i in indices],
            ids=[self.ids[i] for i in indices],
            paths=[self.paths[i] for i in indices],
            skipped=list(self.skipped),
            class_names=self.class_names,
        )


class _ProblemError(Exception):
    """One unusable file (internal; surfaces as a warning or a DatasetError)."""


# --------------------------------------------------------------------------
# Label files.
# --------------------------------------------------------------------------


def _read_labels(txt_path: Path | None, class_map: dict):
    if txt_path is None:
        return [], []
    try:
        # utf-8-sig, as evaluate reads: a byte-order mark (some Windows editors write one) is not part of the class id.
        text = txt_path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise _ProblemError(f"cannot read label file: {error}") from None
    try:
        return parse_label_text(text, class_map)
    except LabelError as error:
        raise _ProblemError(str(error)) from None


# --------------------------------------------------------------------------
# Images.
# --------------------------------------------------------------------------


def _to_8bit(img: Image.Image) -> Image.Image:
    """16-bit and 32-bit integer grayscale scaled down to 8 bits (Pillow would clip)."""
    if img.mode.startswith("I;16") or img.mode == "I":
        pixels = np.clip(np.asarray(img, dtype=np.int64), 0, 65535)
        return Image.fromarray((pixels >> 8).astype(np.uint8))
    return img


def _read_pixels(path: Path, image_size: int, channels: int) -> np.ndarray:
    """uint8 [H, W, C] of the image, converted and resized."""
    try:
        with Image.open(path) as img:
            img.load()
            img = _to_8bit(img).convert("L" if channels == 1 else "RGB")
    except Exception as error:  # Pillow raises many types for corrupt files
        raise _ProblemError(f"cannot decode image ({type(error).__name__}: {error}); replace or remove the file") from None
    if img.size != (image_size, image_size):
        img = img.resize((image_size, image_size), Image.BILINEAR)
    return np.asarray(img, dtype=np.uint8).reshape(image_size, image_size, channels)


@dataclass
class _Loaded:
    pixels: np.ndarray | None = None
    class_ids: list = field(default_factory=list)
    boxes: list = field(default_factory=list)
    problem: str | None = None
    empty_label_file: bool = False


def _load_one(img_path: Path, txt_path: Path | None, image_size: int, channels: int, class_map: dict) -> _Loaded:
    try:
        class_ids, boxes = _read_labels(txt_path, class_map)
    except _ProblemError as error:
        return _Loaded(problem=f"{txt_path}: {error}")
    try:
        pixels = _read_pixels(img_path, image_size, channels)
    except _ProblemError as error:
        return _Loaded(problem=f"{img_path}: {error}")
    return _Loaded(pixels=pixels, class_ids=class_ids, boxes=boxes,
                   empty_label_file=txt_path is not None and not class_ids)


# --------------------------------------------------------------------------
# Folder scanning.
# --------------------------------------------------------------------------


def _split_folders(root, split: str):
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist; {LAYOUT_HINT}")
    img_dir = root / split / "img"
    if not img_dir.is_dir():
        raise DatasetError(f"no image folder {img_dir}; {LAYOUT_HINT}")
    return img_dir, root / split / "txt"


def _list_labels(txt_dir: Path) -> dict:
    """``{stem: path}`` of the .txt files in ``txt_dir`` (empty if it does not exist)."""
    if not txt_dir.is_dir():
        return {}
    return {
        Path(entry.name).stem: Path(entry.path)
        for entry in os.scandir(txt_dir)
        if entry.is_file() and Path(entry.name).suffix.lower() == ".txt"
    }


def _name_some(names) -> str:
    shown = ", ".join(names[:MAX_NAMES_LISTED])
    return shown + (f", ... ({len(names) - MAX_NAMES_LISTED} more)" if len(names) > MAX_NAMES_LISTED else "")


def _warn(message: str) -> None:
    warnings.warn(message, DatasetWarning, stacklevel=3)


def _warn_about_extras(img_dir: Path, txt_dir: Path, others, orphans, has_labels: bool) -> None:
    if others:
        _warn(f"ignored {len(others)} file(s) in {img_dir} that are not {'/'.join(IMAGE_SUFFIXES)} images: {_name_some(others)}")
    if orphans:
        _warn(f"{len(orphans)} label file(s) in {txt_dir} have no matching image and were ignored (orphan labels): {_name_some(orphans)}")
    if not has_labels:
        _warn(f"no label folder {txt_dir}: every image in {img_dir} is treated as defect-free")


# --------------------------------------------------------------------------
# Public loader.
# --------------------------------------------------------------------------


def _check_options(image_size, channels, class_map):
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 1:
        raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")
    class_map = dict(DEFAULT_CLASS_MAP if class_map is None else class_map)
    if not class_map:
        raise ValueError("class_map must name at least one class")
    return int(image_size), {int(k): str(v) for k, v in class_map.items()}


def load_split(
    root,
    split: str = "train",
    *,
    image_size: int = 128,
    channels: int = 1,
    class_map: dict | None = None,
    strict: bool = False,
    progress: bool = False,
) -> GlassDataset:
    """Load one split of a dataset laid out as ``ROOT/{train,test}/{img,txt}``.

    Parameters
    ----------
    root : str or os.PathLike
        Dataset root.
    split : str
        Sub-folder to read, usually ``"train"`` or ``"test"``.
    image_size : int
        Images are resized (bilinear) to ``image_size`` x ``image_size``.
    channels : int
        1 for grayscale, 3 for RGB.
    class_map : dict, optional
        ``{class_id: name}``; defaults to the names of ``ROOT/classes.txt``
        (line *i* names class id *i*), else ``DEFAULT_CLASS_MAP``. Label
        columns follow the ids in increasing order.
    strict : bool
        Raise :class:`DatasetError` at the first unusable file instead of
        skipping it with a warning.
    progress : bool
        Show a progress bar.

    Returns
    -------
    GlassDataset
        Images sorted by file name.

    Raises
    ------
    DatasetError
        Missing folders, no images, every image unusable, (strict) any
        unusable file, or an unusable classes.txt.
    """
    if class_map is None:
        try:
            class_map = dict(enumerate(read_class_names(Path(root).expanduser())))
        except ClassNamesError as error:
            raise DatasetError(str(error)) from None
    image_size, class_map = _check_options(image_size, channels, class_map)
    img_dir, txt_dir = _split_folders(root, split)
    image_paths, others = list_images(img_dir)
    if not image_paths:
        raise DatasetError(f"no images found in {img_dir} (expected {IMAGE_PATTERNS}); {LAYOUT_HINT}")
    label_paths = _list_labels(txt_dir)
    image_stems = {path.stem for path in image_paths}
    orphans = sorted(label_paths[stem].name for stem in label_paths if stem not in image_stems)
    _warn_about_extras(img_dir, txt_dir, others, orphans, txt_dir.is_dir())

    column = {class_id: j for j, class_id in enumerate(sorted(class_map))}
    pixels = np.empty((len(image_paths), image_size, image_size, channels), np.uint8)
    kept, boxes, skipped, empty = [], [], [], []
    labels = np.zeros((len(image_paths), len(column)), np.float32)

    def load(index: int) -> _Loaded:
        path = image_paths[index]
        return _load_one(path, label_paths.get(path.stem), image_size, channels, class_map)

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        results = pool.map(load, range(len(image_paths)))
        for index, result in enumerate(tqdm(results, total=len(image_paths), desc=f"loading {split}", disable=not progress)):
            if result.problem is not None:
                if strict:
                    pool.shutdown(wait=False, cancel_futures=True)
                    raise DatasetError(f"{result.problem} (strict mode: stopping at the first problem)")
                _warn(f"skipping {result.problem}")
                skipped.append((str(image_paths[index]), result.problem))
                continue
            pixels[index] = result.pixels
            for class_id in result.class_ids:
                labels[index, column[class_id]] = 1.0
            kept.append(index)
            boxes.append(result.boxes)
            if result.empty_label_file:
                empty.append(label_paths[image_paths[index].stem].name)

    if empty:
        _warn(f"{len(empty)} label file(s) in {txt_dir} are empty, so their images count as defect-free "
              f"(likely a labelling mistake; delete the file if the glass is good): {_name_some(empty)}")
    if skipped:
        _warn(
            f"skipped {len(skipped)} of {len(image_paths)} images in {img_dir.parent}; "
            "see the warnings above, or rerun with --strict to stop at the first"
        )
    if not kept:
        raise DatasetError(f"none of the {len(image_paths)} images in {img_dir} could be used; first problem: {skipped[0][1]}")

    images = np.empty((len(kept), channels, image_size, image_size), np.float32)
    np.multiply(pixels[kept].transpose(0, 3, 1, 2), np.float32(1.0 / 255.0), out=images)
    return GlassDataset(
        images=images,
        labels=labels[kept],
        boxes=boxes,
        ids=[image_paths[i].stem for i in kept],
        paths=[str(image_paths[i]) for i in kept],
        skipped=skipped,
        class_names=tuple(class_map[class_id] for class_id in sorted(class_map)),
    )


# --------------------------------------------------------------------------
# Train/validation split.
# --------------------------------------------------------------------------


def _stratum_keys(labels: np.ndarray) -> np.ndarray:
    """Label combination per row, with combinations seen fewer than twice folded into defective/good."""
    combined = np.array(["".join("1" if v else "0" for v in row) for row in labels])
    binary = np.where(labels.any(axis=1), "defective", "good")
    values, counts = np.unique(combined, return_counts=True)
    rare = set(values[counts < 2].tolist())
    return np.array([b if c in rare else c for c, b in zip(combined, binary)])


def stratified_split(labels, val_fraction: float = 0.2, seed: int = 0):
    """Seeded train/validation split that keeps the defect ratio in both parts.

    Parameters
    ----------
    labels : array-like
        [N, K] multi-hot labels (or [N] binary labels).
    val_fraction : float
        Share of the rows that go to validation, in (0, 1).
    seed : int
        Seed for the shuffle.

    Returns
    -------
    train_idx, val_idx : np.ndarray
        Sorted int64 row indices.

    Notes
    -----
    Stratifies on the full label combination when every combination has at
    least two members (rarer combinations are folded into "defective"), else
    on defective-or-not, and splits without stratification when even that is
    impossible (for example a single class present); callers then report that
    F1 is undefined.
    """
    from sklearn.model_selection import train_test_split

    labels = np.asarray(labels)
    if labels.ndim == 1:
        labels = labels.reshape(-1, 1)
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}")
    if len(labels) < 2:
        raise DatasetError(f"cannot split {len(labels)} image(s) into training and validation: "
                           "at least 2 are needed (more, for a validation split with both classes)")
    indices = np.arange(len(labels))
    binary = labels.any(axis=1)
    for key in (_stratum_keys(labels), binary, None):
        if key is not None and len(np.unique(key)) < 2:
            continue
        try:
            train_idx, val_idx = train_test_split(indices, test_size=val_fraction, random_state=seed, stratify=key)
        except ValueError:
            continue
        return np.sort(train_idx).astype(np.int64), np.sort(val_idx).astype(np.int64)
    raise ValueError(f"cannot split {len(labels)} rows with val_fraction={val_fraction}")


def load_images(paths, *, image_size: int = 128, channels: int = 1, strict: bool = False):
    """Read image files for prediction, resized and scaled like :func:`load_split`.

    Returns
    -------
    images : float32 [N, C, H, W] in [0, 1], for the readable files
    kept : list of Path, the files read, in order
    skipped : list of (path, reason), each also reported as a warning

    Raises
    ------
    DatasetError
        With ``strict``, at the first unreadable file; or when no file is readable.
    """
    image_size, _ = _check_options(image_size, channels, None)
    paths = [Path(p) for p in paths]
    if not paths:
        raise DatasetError("no images given")
    kept, pixels, skipped = [], [], []
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        def read(path):
            try:
                return _read_pixels(path, image_size, channels), None
            except _ProblemError as error:
                return None, f"{path}: {error}"

        for path, (array, problem) in zip(paths, pool.map(read, paths)):
            if problem is not None:
                if strict:
                    raise DatasetError(f"{problem} (strict mode: stopping at the first problem)")
                _warn(f"skipping {problem}")
                skipped.append((str(path), problem))
                continue
            kept.append(path)
            pixels.append(array)
    if skipped:
        _warn(f"skipped {len(skipped)} of {len(paths)} images; see the warnings above, or rerun with --strict "
              "to stop at the first")
    if not kept:
        raise DatasetError(f"none of the {len(paths)} images could be read; first problem: {skipped[0][1]}")
    images = np.stack(pixels).transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255.0)
    return np.ascontiguousarray(images), kept, skipped
