"""The glass dataset contract: class names and ids, image files, label lines, the decision rule.

Every reader and writer of glass data (the dataset loader, the synthetic
generator, ``evaluate``, ``predict`` and the training tasks) takes these
definitions from here, so that they cannot drift apart.

A dataset is laid out as ``ROOT/{train,test}/img/<stem>.<suffix>`` with an
optional ``ROOT/{train,test}/txt/<stem>.txt``; no label file means no defect.
Every non-blank line of a label file is one defect: an integer class id,
optionally followed by its location, either a YOLO box ``cx cy w h`` or a
polygon ``x1 y1 x2 y2 ...`` (at least 3 points), normalised to [0, 1].

The defect classes are named by ``ROOT/classes.txt`` (the YOLO/labelImg
convention: line *i* names class id *i*); a dataset without one has the
course's three, :data:`DEFECT_CLASSES`.
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
"""The multi-label outputs of the course's classes: no defect, then each defect class."""

ANY_DEFECT = "defective"
"""What a single score that is not named after a class predicts: any defect at all."""

CLASSES_FILE = "classes.txt"
"""``ROOT/classes.txt``: line *i* names class id *i* of the dataset's label files."""

# Characters a class name cannot hold: ',' separates --classes, ';' joins a prediction's labels,
# and a path separator would escape the folder of heatmap files named <id>_<class>.png.
FORBIDDEN_IN_NAMES = ",;/\\"

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


class ClassNamesError(ValueError):
    """Class names that cannot be used; the message names where they came from (file and line, or flag)."""


def class_name_problem(name: str, seen) -> str | None:
    """Why ``name`` cannot name a defect class beside the (lower-cased) names ``seen``; None when it can."""
    if not name:
        return "empty class name"
    if any(char in name for char in FORBIDDEN_IN_NAMES):
        return f"class name {name!r} holds one of {' '.join(FORBIDDEN_IN_NAMES)}, which cannot appear in a name"
    if name.lower() in (NO_DEFECT, ANY_DEFECT):
        return f"class name {name!r} is reserved ({NO_DEFECT} is the multi-label output for no defect, " \
               f"{ANY_DEFECT} the binary one for any defect)"
    if name.lower() in seen:
        return f"class name {name!r} is given twice (names are compared ignoring case)"
    return None


def check_class_names(names, where: str) -> tuple[str, ...]:
    """``names`` (spaces around each trimmed) as a tuple, or a :class:`ClassNamesError` naming ``where``."""
    names = tuple(str(name).strip() for name in names)
    if not names:
        raise ClassNamesError(f"{where}: no class names given; name at least one defect class")
    seen = set()
    for name in names:
        problem = class_name_problem(name, seen)
        if problem:
            raise ClassNamesError(f"{where}: {problem}")
        seen.add(name.lower())
    return names


def parse_class_names(text: str, source) -> tuple[str, ...]:
    """The class names of a classes.txt's ``text``: line *i* names class id *i*.

    Spaces around a name are trimmed and blank lines at the end ignored; a
    blank line before the last name would leave its class id unnamed, so it
    is an error, as are duplicate and reserved names. Errors are
    :class:`ClassNamesError` naming ``source`` and the line.
    """
    lines = [line.strip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise ClassNamesError(f"{source}: no class names; write one name per line (line 1 names class id 0) "
                              "or delete the file to use the default classes")
    seen = set()
    for line_no, name in enumerate(lines, start=1):
        problem = class_name_problem(name, seen)
        if problem == "empty class name":
            problem = f"blank line, so class id {line_no - 1} has no name"
        if problem:
            raise ClassNamesError(f"{source}:{line_no}: {problem} (one name per line: line 1 names class id 0, "
                                  "line 2 class id 1, ...)")
        seen.add(name.lower())
    return tuple(lines)


def read_class_names(root) -> tuple[str, ...]:
    """The defect classes of the dataset at ``root``: its classes.txt, else :data:`DEFECT_CLASSES`."""
    path = Path(root) / CLASSES_FILE
    if not path.is_file():
        return DEFECT_CLASSES
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise ClassNamesError(f"{path}: cannot read the class names ({error})") from None
    return parse_class_names(text, path)


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
