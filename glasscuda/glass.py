"""The glass dataset contract: class names and ids, image files, label lines, the decision rule.

Every reader and writer of glass data (the dataset loader, the synthetic
generator, ``evaluate``, ``predict`` and the training tasks) takes these
definitions from here, so that they cannot drift apart.

A dataset is laid out as ``ROOT/{train,test}/img/<stem>.<suffix>`` with an
optional ``ROOT/{train,test}/txt/<stem>.txt``; no label file means no defect.
Every non-blank line of a label file is one defect: an integer class id,
optionally followed by its location, either a YOLO box ``cx cy w h`` or a
polygon ``x1 y1 x2 y2 ...`` (at least 3 points), normalised to [0, 1].
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

DEFECT_CLASSES = ("chipped_edge", "scratch", "stain")
"""Defect classes in class-id order: ids 0, 1 and 2 of the label files."""

DEFAULT_CLASS_MAP = dict(enumerate(DEFECT_CLASSES))
"""``{class_id: name}`` of the label files."""

NO_DEFECT = "no_defect"
"""The multi-label output that stands for "no defect at all"."""

MULTILABEL_CLASSES = (NO_DEFECT, *DEFECT_CLASSES)
"""The multi-label outputs in order: no defect, then each defect class."""

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
"""Image files a dataset folder or a prediction input may hold (compared lower-cased)."""

IMAGE_PATTERNS = ", ".join(f"*{suffix}" for suffix in IMAGE_SUFFIXES)

COORD_TOLERANCE = 1e-6
"""Normalised coordinates may overshoot [0, 1] by this much (rounding in label tools)."""

LABEL_LINE = "CLASS_ID [cx cy w h | x1 y1 x2 y2 x3 y3 ...]"


class LabelError(ValueError):
    """A malformed label line; ``line`` is its 1-based number and ``reason`` what is wrong."""

    def __init__(self, line: int, reason: str):
        super().__init__(f"line {line}: {reason}")
        self.line, self.reason = line, reason


def list_images(folder: Path) -> tuple[list[Path], list[str]]:
    """Image files of ``folder`` (sorted by name) and the names of its other, ignored files.

    Hidden files and sub-folders are neither.
    """
    images, others = [], []
    for entry in os.scandir(folder):
        if entry.name.startswith(".") or not entry.is_file():
            continue
        (images if Path(entry.name).suffix.lower() in IMAGE_SUFFIXES else others).append(entry.name)
    return [Path(folder) / name for name in sorted(images)], sorted(others)


def location_box(values) -> tuple:
    """(cx, cy, w, h) of a label line's location: a YOLO box (4 values) or a polygon's bounding box.

    Values are normalised coordinates, clipped to [0, 1].
    """
    values = [min(max(float(value), 0.0), 1.0) for value in values]
    if len(values) == 4:
        return tuple(values)
    xs, ys = values[0::2], values[1::2]
    return ((min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2, max(xs) - min(xs), max(ys) - min(ys))


def _number(token: str, line_no: int) -> float:
    try:
        value = float(token)
    except ValueError:
        raise LabelError(line_no, f"coordinate {token!r} is not a number") from None
    if not math.isfinite(value):
        raise LabelError(line_no, f"coordinate {token!r} is not finite")
    return value


def parse_label_line(line: str, line_no: int, class_map: dict = DEFAULT_CLASS_MAP):
    """``(class_id, box or None)`` of one label line, or ``None`` for a blank line.

    Raises
    ------
    LabelError
        An id that is not an integer or not in ``class_map``, a coordinate that
        is not a finite number in [0, 1], or a count of coordinates that is
        neither a box nor a polygon of at least 3 points.
    """
    tokens = line.split()
    if not tokens:
        return None
    try:
        class_id = int(tokens[0])
    except ValueError:
        raise LabelError(line_no, f"class id {tokens[0]!r} is not an integer") from None
    if class_id not in class_map:
        known = ", ".join(f"{k} {v}" for k, v in sorted(class_map.items()))
        raise LabelError(line_no, f"unknown class id {class_id} (known: {known}); fix or remove the line")
    coordinates = tokens[1:]
    if not coordinates:
        return class_id, None
    if len(coordinates) % 2 == 1:
        raise LabelError(line_no, f"{len(coordinates)} values after the class id; expected a box (cx cy w h) "
                                  "or a polygon (an even number of coordinates, at least 3 points)")
    if len(coordinates) == 2:
        raise LabelError(line_no, "2 values after the class id; expected a box (cx cy w h) or a polygon "
                                  "of at least 3 points")
    values = [_number(token, line_no) for token in coordinates]
    for value in values:
        if not -COORD_TOLERANCE <= value <= 1.0 + COORD_TOLERANCE:
            raise LabelError(line_no, f"coordinate {value:g} is outside [0, 1]; locations must be normalised "
                                      "by the image size")
    return class_id, location_box(values)


def parse_label_text(text: str, class_map: dict = DEFAULT_CLASS_MAP) -> tuple[list[int], list[tuple]]:
    """Class ids (one per non-blank line) and ``(class_id, cx, cy, w, h)`` of each located line.

    Raises :class:`LabelError` at the first malformed line.
    """
    class_ids, boxes = [], []
    for line_no, line in enumerate(text.splitlines(), start=1):
        parsed = parse_label_line(line, line_no, class_map)
        if parsed is None:
            continue
        class_id, box = parsed
        class_ids.append(class_id)
        if box is not None:
            boxes.append((class_id, *box))
    return class_ids, boxes


def decide(probs: np.ndarray, thresholds) -> np.ndarray:
    """Predicted indicators [N, 1 + K] of multi-label probabilities [N, 1 + K] (no defect first).

    An image's defects are the defect classes whose probability reaches their
    threshold; when none does, the image is "no defect". A confident "no
    defect" never hides a possible defect, so the no-defect column's own
    threshold does not enter the rule.
    """
    thresholds = np.asarray(thresholds, dtype=np.float64)
    defects = probs[:, 1:] >= thresholds[1:]
    return np.concatenate([~defects.any(axis=1, keepdims=True), defects], axis=1).astype(np.int64)
