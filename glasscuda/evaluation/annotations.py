"""Reading the ground truth: a dataset folder (label files) or an annotation CSV.

The defect classes are the annotations': a dataset folder's classes.txt
(the course's three without one), or for an annotation CSV the names given
(``--classes``; the course's three by default). Prediction columns are
matched to these names.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..glass import (DEFECT_CLASSES, IMAGE_PATTERNS, NO_DEFECT, ClassNamesError, LabelError, check_class_names,
                     list_images, parse_label_text, read_class_names)
from .inputs import BINARY_CLASS, EvaluationError, check_unique, column_index, normalise_id, read_csv, read_ids


@dataclass
class Annotations:
    """Ground truth: the set of defect classes present in each image.

    Attributes
    ----------
    path : str
        Dataset root or CSV file.
    description : str
        Where the truth came from, for the report.
    ids, raw_ids : list of str
        Normalised and original ids.
    defects : list of frozenset of str
        Defect class names present in each image (empty: no defect).
    boxes : list of list of (str, (cx, cy, w, h))
        Located defects of each image (empty for an annotation CSV).
    classes : tuple of str
        The defect classes, in class-id order.
    """

    path: str
    description: str
    ids: list
    raw_ids: list
    defects: list
    boxes: list = field(default_factory=list)
    classes: tuple = DEFECT_CLASSES


def annotation_classes(source: str | Path, classes: Sequence[str] | None = None) -> tuple[str, ...]:
    """The defect classes of ``source``: ``classes`` when given, a dataset folder's classes.txt, else the course's."""
    try:
        if classes is not None:
            return check_class_names(classes, "--classes")
        return read_class_names(source) if Path(source).is_dir() else DEFECT_CLASSES
    except ClassNamesError as error:
        raise EvaluationError(str(error)) from None


def read_defect_file(path: str | Path, classes: Sequence[str] = DEFECT_CLASSES) -> tuple[frozenset, list]:
    """Defect classes and located boxes listed in one label file (the format of :mod:`glasscuda.glass`).

    Class id *i* is ``classes[i]``.

    Returns
    -------
    classes : frozenset of str
        Class names present (empty when the file has no defect line).
    boxes : list of (str, (cx, cy, w, h))
        The class and normalised box of each line that carries a location
        (a polygon gives its bounding box).

    Raises
    ------
    EvaluationError
        A malformed line or a class id ``classes`` does not name, named by file and line.
    """
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise EvaluationError(f"{path}: not a UTF-8 text file ({error.reason})") from None
    try:
        class_ids, boxes = parse_label_text(text, dict(enumerate(classes)))
    except LabelError as error:
        raise EvaluationError(f"{path}:{error.line}: {error.reason}") from None
    located = [(classes[class_id], tuple(box)) for class_id, *box in boxes]
    return frozenset(classes[class_id] for class_id in class_ids), located


def _load_annotation_folder(root: Path, split: str, classes: tuple) -> Annotations:
    """Truth from a dataset folder ``ROOT/SPLIT/img`` + ``ROOT/SPLIT/txt``."""
    image_dir = root / split / "img"
    label_dir = root / split / "txt"
    if not image_dir.is_dir():
        raise EvaluationError(
            f"{root}: no folder {split}/img (expected ROOT/{split}/img/*.png and "
            f"ROOT/{split}/txt/<stem>.txt; choose the split with --split)"
        )
    images = list_images(image_dir)[0]
    if not images:
        raise EvaluationError(f"{image_dir}: no images ({IMAGE_PATTERNS})")
    raw_ids = [image.name for image in images]
    ids = [normalise_id(name) for name in raw_ids]
    check_unique(image_dir, ids, raw_ids, [image.name for image in images])
    defects, boxes = [], []
    for image in images:
        label_file = label_dir / f"{image.stem}.txt"
        present, located = read_defect_file(label_file, classes) if label_file.is_file() else (frozenset(), [])
        defects.append(present)
        boxes.append(located)
    description = f"dataset folder {root}, split {split!r} ({len(images)} images)"
    return Annotations(str(root), description, ids, raw_ids, defects, boxes, classes)


def _parse_label_cell(path: str | Path, line: int, text: str, classes: tuple) -> frozenset:
    """Parse a ``;``-joined list of class names (compared ignoring case) or ids (empty: no defect)."""
    by_name = {name.lower(): name for name in classes}
    found = set()
    for token in (t.strip().lower() for t in text.split(";")):
        if not token or token == NO_DEFECT:
            continue
        if token.isdigit() and int(token) < len(classes):
            found.add(classes[int(token)])
        elif token in by_name:
            found.add(by_name[token])
        else:
            known = ", ".join(f"{i} {name}" for i, name in enumerate(classes))
            raise EvaluationError(
                f"{path}: line {line}: unknown label {token!r} "
                f"(known: {known}; {NO_DEFECT} or empty for none)"
            )
    return frozenset(found)


def _load_annotation_csv(path: Path, id_column: str, classes: tuple) -> Annotations:
    """Truth from a CSV ``id,labels``."""
    header, rows = read_csv(path)
    name = id_column if id_column in header else "id"
    id_index = column_index(path, header, name, "an annotation CSV needs columns id,labels")
    label_index = column_index(path, header, "labels", "an annotation CSV needs columns id,labels")
    if not rows:
        raise EvaluationError(f"{path}: no annotation rows after the header")
    ids, raw_ids = read_ids(path, rows, id_index)
    defects = [_parse_label_cell(path, line, cells[label_index], classes) for line, cells in rows]
    return Annotations(str(path), f"annotation CSV {path} ({len(rows)} rows)", ids, raw_ids, defects,
                       classes=classes)


def load_annotations(source: str | Path, split: str = "test", id_column: str = "id",
                     classes: Sequence[str] | None = None) -> Annotations:
    """Read ground truth from a dataset folder or an annotation CSV.

    Parameters
    ----------
    source : str or path-like
        A dataset root laid out as ``ROOT/SPLIT/img/*.png`` with
        ``ROOT/SPLIT/txt/<stem>.txt`` (a missing txt means no defect), or a
        CSV with columns ``id,labels`` (labels ``;``-joined class names or
        ids; empty means no defect).
    split : str
        Split folder to read from a dataset root.
    id_column : str
        Id column of an annotation CSV, when it is not ``id``.
    classes : sequence of str, optional
        The defect classes in class-id order; default a dataset root's
        classes.txt, else the course's three.

    Returns
    -------
    Annotations
    """
    path = Path(source)
    if not path.exists():
        raise EvaluationError(f"{path}: not found (expected a dataset folder or an annotation CSV)")
    names = annotation_classes(path, classes)
    if path.is_dir():
        return _load_annotation_folder(path, split, names)
    return _load_annotation_csv(path, id_column, names)


def truth_matrix(defects: Sequence[frozenset], classes: Sequence[str]) -> np.ndarray:
    """0/1 truth per image and class.

    ``defective`` is "any defect", ``no_defect`` is "no defect", a defect
    class name is "that defect is present".
    """
    columns = []
    for name in classes:
        if name == BINARY_CLASS:
            columns.append([bool(d) for d in defects])
        elif name == NO_DEFECT:
            columns.append([not d for d in defects])
        else:
            columns.append([name in d for d in defects])
    return np.asarray(columns, dtype=np.int64).T.reshape(len(defects), len(classes))
