"""Evaluate a prediction file against annotations that were made apart from it.

``python -m glasscuda.evaluate --predictions preds.csv --annotations ROOT``

The two inputs are joined on the image id, then the command reports what the
scores are worth: metrics at a threshold, a threshold sweep per class with
the F1-optimal threshold, operating points for a required recall or
precision, and, on request, temperature scaling with calibration figures
before and after.  A Markdown report goes to standard output; ``--out DIR``
adds ``report.json``, ``threshold_table.csv`` and PNG plots.

The pipeline is split into small steps so that other modes can reuse them:
:func:`build_parser` → :func:`load_predictions` / :func:`load_annotations` →
:func:`join` → :func:`evaluate` (a JSON-ready dict) → :func:`render_markdown`
and :func:`write_outputs`.
"""

from __future__ import annotations

import argparse
import csv
import math
import re
import sys
import textwrap
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from sklearn.exceptions import UndefinedMetricWarning

from glasscuda import calibration, metrics
from glasscuda.glass import location_box
from glasscuda.heatmaps import inside_box
from glasscuda.reports import (
    format_value,
    markdown_table,
    write_csv_atomic,
    write_json_atomic,
)

DEFECT_CLASSES = ("chipped_edge", "scratch", "stain")
"""Defect classes in class-id order: id 0, 1, 2 of the annotation files."""

NO_DEFECT = "no_defect"
BINARY_CLASS = "defective"
MULTILABEL_CLASSES = (NO_DEFECT,) + DEFECT_CLASSES
MULTILABEL_SCORE_COLUMNS = tuple(f"p_{name}" for name in MULTILABEL_CLASSES)
BINARY_SCORE_COLUMN = "probability"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
SCORE_COLUMN_PREFIXES = ("probability_", "prob_", "score_", "p_")
SAMPLE_SIZE = 5
ID_NORMALISATION = (
    "ids are compared after normalisation: surrounding spaces trimmed, any "
    "directory part dropped ('/' or '\\'), one trailing file extension removed "
    "(a dot and 1-5 letters or digits, at least one a letter: .png, .PNG, .txt), "
    "and letters lower-cased; 'data/test/img/Glass_000123.PNG' and "
    "'glass_000123' are the same id"
)

_EXTENSION = re.compile(r"(?=[0-9]*[A-Za-z])[A-Za-z0-9]{1,5}")


class EvaluationError(Exception):
    """A problem with the inputs, reported to the user without a traceback."""


def normalise_id(raw: str) -> str:
    """Normalise an image id so that ids from different tools compare equal.

    Parameters
    ----------
    raw : str
        An id, file name or path.

    Returns
    -------
    str
        The id with surrounding spaces trimmed, any directory part dropped,
        one trailing extension (a dot followed by 1-5 letters or digits, at
        least one a letter) removed, and lower-cased.
    """
    name = raw.strip().replace("\\", "/").rsplit("/", 1)[-1]
    stem, dot, extension = name.rpartition(".")
    if dot and stem and _EXTENSION.fullmatch(extension):
        name = stem
    return name.lower()


# --------------------------------------------------------------------------
# Reading inputs
# --------------------------------------------------------------------------


@dataclass
class Predictions:
    """Scores read from a prediction CSV.

    Attributes
    ----------
    path : str
        The file.
    task : {"binary", "multilabel"}
        Binary: one score, the probability that an image has any defect.
        Multilabel: one score per class of ``classes``.
    classes : list of str
        The truth column each score column predicts.
    score_columns : list of str
        Score column names as written in the file.
    id_column : str
        Name of the id column.
    ids : list of str
        Normalised ids, one per row.
    raw_ids : list of str
        Ids as written in the file.
    scores : numpy.ndarray of shape (N, K)
    stored_labels : numpy.ndarray or None
        The binary file's ``label`` column, when present and 0/1.
    """

    path: str
    task: str
    classes: list
    score_columns: list
    id_column: str
    ids: list
    raw_ids: list
    scores: np.ndarray
    stored_labels: np.ndarray | None = None


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
    """

    path: str
    description: str
    ids: list
    raw_ids: list
    defects: list
    boxes: list = field(default_factory=list)


def _read_csv(path: str | Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Read a CSV file into its header and ``(line number, cells)`` rows.

    Blank rows are skipped; a row with the wrong number of cells is an error.
    """
    path = Path(path)
    if not path.exists():
        raise EvaluationError(f"{path}: file not found")
    if path.is_dir():
        raise EvaluationError(f"{path}: is a directory, expected a CSV file")
    try:
        with open(path, newline="", encoding="utf-8-sig") as stream:
            reader = csv.reader(stream)
            header = next(reader, None)
            if header is None:
                raise EvaluationError(f"{path}: empty file, expected a header row")
            header = [cell.strip() for cell in header]
            rows = []
            for cells in reader:
                if not any(cell.strip() for cell in cells):
                    continue
                if len(cells) != len(header):
                    raise EvaluationError(
                        f"{path}: line {reader.line_num} has {len(cells)} fields, "
                        f"the header has {len(header)}"
                    )
                rows.append((reader.line_num, cells))
    except UnicodeDecodeError as error:
        raise EvaluationError(f"{path}: not a UTF-8 text file ({error.reason})") from None
    except csv.Error as error:
        raise EvaluationError(f"{path}: not a readable CSV file ({error})") from None
    return header, rows


def _column_index(path: str | Path, header: list[str], name: str, hint: str) -> int:
    """Index of column ``name`` in ``header``, or an error listing the columns."""
    if name not in header:
        raise EvaluationError(
            f"{path}: no column {name!r} (columns: {', '.join(header) or 'none'}); {hint}"
        )
    return header.index(name)


def _check_unique(path: str | Path, ids: list[str], raw_ids: list[str], where: list[str]) -> None:
    """Raise an error naming every id that occurs more than once."""
    seen: dict[str, list[int]] = {}
    for position, key in enumerate(ids):
        seen.setdefault(key, []).append(position)
    repeated = {key: places for key, places in seen.items() if len(places) > 1}
    if not repeated:
        return
    shown = []
    for key, places in list(repeated.items())[:10]:
        spelled = sorted({raw_ids[p] for p in places})
        spelling = "" if spelled == [key] else f" (as {', '.join(spelled)})"
        shown.append(f"{key}{spelling} at {', '.join(where[p] for p in places)}")
    more = f"; and {len(repeated) - 10} more" if len(repeated) > 10 else ""
    raise EvaluationError(
        f"{path}: {len(repeated)} duplicate id(s) after normalisation: "
        + "; ".join(shown)
        + more
    )


def _read_ids(path: str | Path, rows: list[tuple[int, list[str]]], id_index: int) -> tuple[list[str], list[str]]:
    """(normalised ids, ids as written) of a CSV's rows; empty or duplicate ids are errors."""
    raw_ids = []
    for line, cells in rows:
        raw = cells[id_index].strip()
        if not raw:
            raise EvaluationError(f"{path}: line {line}: empty id")
        raw_ids.append(raw)
    ids = [normalise_id(raw) for raw in raw_ids]
    _check_unique(path, ids, raw_ids, [f"line {line}" for line, _ in rows])
    return ids, raw_ids


def _class_named_by(column: str) -> str | None:
    """The truth class a score column is named after (``p_scratch`` → ``scratch``)."""
    name = column.strip().lower()
    for prefix in ("",) + SCORE_COLUMN_PREFIXES:
        if name.startswith(prefix) and name[len(prefix):] in MULTILABEL_CLASSES:
            return name[len(prefix):]
    return None


def _class_for_score_column(path: str | Path, column: str) -> str:
    """Truth class of one of several score columns, or an error."""
    found = _class_named_by(column)
    if found is None:
        raise EvaluationError(
            f"{path}: cannot tell which class score column {column!r} predicts; "
            f"name the columns after the classes ({', '.join(MULTILABEL_CLASSES)}), "
            "optionally with a 'p_' prefix, or give a single score column for "
            "'any defect'"
        )
    return found


def _single_score_class(column: str) -> str:
    """Truth class of a lone score column: a named class, else "any defect"."""
    return _class_named_by(column) or BINARY_CLASS


def _detect_score_columns(path: str | Path, header: list[str]) -> list[str]:
    """Score columns of the two formats ``predict`` writes."""
    if BINARY_SCORE_COLUMN in header:
        return [BINARY_SCORE_COLUMN]
    if all(column in header for column in MULTILABEL_SCORE_COLUMNS):
        return list(MULTILABEL_SCORE_COLUMNS)
    raise EvaluationError(
        f"{path}: cannot tell the prediction format (columns: {', '.join(header)}); "
        f"expected '{BINARY_SCORE_COLUMN}' (binary) or "
        f"{', '.join(MULTILABEL_SCORE_COLUMNS)} (multilabel); "
        "name the score columns with --score-columns"
    )


def _parse_score(path: str | Path, line: int, column: str, text: str) -> float:
    """Parse one probability cell, or raise an error naming its place."""
    try:
        value = float(text)
    except ValueError:
        raise EvaluationError(
            f"{path}: line {line}, column {column!r}: {text!r} is not a number"
        ) from None
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise EvaluationError(
            f"{path}: line {line}, column {column!r}: {text!r} is not a probability in [0, 1]"
        )
    return value


def _parse_stored_labels(rows: list[tuple[int, list[str]]], index: int) -> np.ndarray | None:
    """The binary ``label`` column as 0/1, or ``None`` if it is not that."""
    values = [cells[index].strip() for _, cells in rows]
    if all(value in ("0", "1") for value in values):
        return np.array([int(value) for value in values], dtype=np.int64)
    return None


def load_predictions(
    path: str | Path,
    id_column: str | None = None,
    score_columns: Sequence[str] | None = None,
) -> Predictions:
    """Read a prediction CSV.

    Parameters
    ----------
    path : str or path-like
        The CSV: ``id,probability,label`` (binary) or
        ``id,p_no_defect,p_chipped_edge,p_scratch,p_stain,labels``
        (multilabel) as ``predict`` writes them, or any CSV with an id column
        and probability columns.
    id_column : str, optional
        Name of the id column (default ``id``).
    score_columns : sequence of str, optional
        Probability columns.  Several must be named after the classes
        (``p_scratch`` or ``scratch``); a single one predicts the class it is
        named after, or else "any defect".  By default the two formats above
        are recognised.

    Returns
    -------
    Predictions

    Raises
    ------
    EvaluationError
        Missing file, missing column, unparseable score, duplicate ids, or no
        rows.
    """
    header, rows = _read_csv(path)
    id_name = id_column or "id"
    id_index = _column_index(path, header, id_name, "name the id column with --id-column")
    if score_columns:
        columns = [column.strip() for column in score_columns]
        for column in columns:
            _column_index(path, header, column, "check --score-columns")
    else:
        columns = _detect_score_columns(path, header)
    if len(columns) == 1:
        task, classes = "binary", [_single_score_class(columns[0])]
    else:
        task = "multilabel"
        classes = [_class_for_score_column(path, column) for column in columns]
        if len(set(classes)) != len(classes):
            raise EvaluationError(f"{path}: two score columns predict the same class: {columns}")
    if not rows:
        raise EvaluationError(f"{path}: no prediction rows after the header")

    indices = [header.index(column) for column in columns]
    ids, raw_ids = _read_ids(path, rows, id_index)
    scores = [[_parse_score(path, line, c, cells[i]) for c, i in zip(columns, indices)] for line, cells in rows]

    stored = None
    if task == "binary" and "label" in header:
        stored = _parse_stored_labels(rows, header.index("label"))
    return Predictions(
        path=str(path),
        task=task,
        classes=classes,
        score_columns=columns,
        id_column=id_name,
        ids=ids,
        raw_ids=raw_ids,
        scores=np.asarray(scores, dtype=np.float64).reshape(len(rows), len(columns)),
        stored_labels=stored,
    )


def parse_defect_file(path: str | Path) -> frozenset:
    """Defect classes listed in one annotation txt file (see :func:`read_defect_file`)."""
    return read_defect_file(path)[0]


def read_defect_file(path: str | Path) -> tuple[frozenset, list]:
    """Defect classes and located boxes listed in one annotation txt file.

    Each non-blank line is one defect: a class id (0 chipped_edge, 1 scratch,
    2 stain) optionally followed by numbers (a YOLO box ``cx cy w h`` or a
    polygon), which are checked to be numbers and otherwise ignored.

    Parameters
    ----------
    path : str or path-like

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
        A line whose first token is not a known class id or whose other
        tokens are not numbers, named by file and line.
    """
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise EvaluationError(f"{path}: not a UTF-8 text file ({error.reason})") from None
    found, boxes = set(), []
    for number, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        try:
            class_id = int(tokens[0])
        except ValueError:
            raise EvaluationError(
                f"{path}:{number}: first token {tokens[0]!r} is not a class id "
                "(expected 'CLASS_ID [cx cy w h]')"
            ) from None
        if not 0 <= class_id < len(DEFECT_CLASSES):
            known = ", ".join(f"{i} {name}" for i, name in enumerate(DEFECT_CLASSES))
            raise EvaluationError(f"{path}:{number}: unknown class id {class_id} (known: {known})")
        for token in tokens[1:]:
            try:
                float(token)
            except ValueError:
                raise EvaluationError(
                    f"{path}:{number}: {token!r} is not a number "
                    "(expected 'CLASS_ID [cx cy w h]')"
                ) from None
        found.add(DEFECT_CLASSES[class_id])
        if len(tokens) == 5 or (len(tokens) >= 7 and len(tokens) % 2 == 1):
            boxes.append((DEFECT_CLASSES[class_id], location_box(tokens[1:])))
    return frozenset(found), boxes


def _load_annotation_folder(root: Path, split: str) -> Annotations:
    """Truth from a dataset folder ``ROOT/SPLIT/img`` + ``ROOT/SPLIT/txt``."""
    image_dir = root / split / "img"
    label_dir = root / split / "txt"
    if not image_dir.is_dir():
        raise EvaluationError(
            f"{root}: no folder {split}/img (expected ROOT/{split}/img/*.png and "
            f"ROOT/{split}/txt/<stem>.txt; choose the split with --split)"
        )
    images = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise EvaluationError(f"{image_dir}: no images ({', '.join(IMAGE_SUFFIXES)})")
    raw_ids = [image.name for image in images]
    ids = [normalise_id(name) for name in raw_ids]
    _check_unique(image_dir, ids, raw_ids, [image.name for image in images])
    defects, boxes = [], []
    for image in images:
        label_file = label_dir / f"{image.stem}.txt"
        present, located = read_defect_file(label_file) if label_file.is_file() else (frozenset(), [])
        defects.append(present)
        boxes.append(located)
    return Annotations(
        path=str(root),
        description=f"dataset folder {root}, split {split!r} ({len(images)} images)",
        ids=ids,
        raw_ids=raw_ids,
        defects=defects,
        boxes=boxes,
    )


def _parse_label_cell(path: str | Path, line: int, text: str) -> frozenset:
    """Parse a ``;``-joined list of class names or ids (empty: no defect)."""
    found = set()
    for token in (t.strip().lower() for t in text.split(";")):
        if not token or token == NO_DEFECT:
            continue
        if token.isdigit() and int(token) < len(DEFECT_CLASSES):
            found.add(DEFECT_CLASSES[int(token)])
        elif token in DEFECT_CLASSES:
            found.add(token)
        else:
            known = ", ".join(f"{i} {name}" for i, name in enumerate(DEFECT_CLASSES))
            raise EvaluationError(
                f"{path}: line {line}: unknown label {token!r} "
                f"(known: {known}; {NO_DEFECT} or empty for none)"
            )
    return frozenset(found)


def _load_annotation_csv(path: Path, id_column: str) -> Annotations:
    """Truth from a CSV ``id,labels``."""
    header, rows = _read_csv(path)
    name = id_column if id_column in header else "id"
    id_index = _column_index(path, header, name, "an annotation CSV needs columns id,labels")
    label_index = _column_index(path, header, "labels", "an annotation CSV needs columns id,labels")
    if not rows:
        raise EvaluationError(f"{path}: no annotation rows after the header")
    ids, raw_ids = _read_ids(path, rows, id_index)
    defects = [_parse_label_cell(path, line, cells[label_index]) for line, cells in rows]
    return Annotations(
        path=str(path),
        description=f"annotation CSV {path} ({len(rows)} rows)",
        ids=ids,
        raw_ids=raw_ids,
        defects=defects,
    )


def load_annotations(source: str | Path, split: str = "test", id_column: str = "id") -> Annotations:
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

    Returns
    -------
    Annotations
    """
    path = Path(source)
    if not path.exists():
        raise EvaluationError(f"{path}: not found (expected a dataset folder or an annotation CSV)")
    if path.is_dir():
        return _load_annotation_folder(path, split)
    return _load_annotation_csv(path, id_column)


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


# --------------------------------------------------------------------------
# Joining
# --------------------------------------------------------------------------


@dataclass
class Join:
    """Predictions and truth lined up on their normalised ids.

    Attributes
    ----------
    ids : list of str
        Matched ids, in prediction-file order.
    scores, truth : numpy.ndarray of shape (M, K)
    only_in_predictions, only_in_annotations : list of str
        Ids (as written) found on one side only, sorted.
    """

    ids: list
    scores: np.ndarray
    truth: np.ndarray
    only_in_predictions: list = field(default_factory=list)
    only_in_annotations: list = field(default_factory=list)

    def summary(self, sample_size: int = SAMPLE_SIZE) -> dict:
        """Counts and samples of the join, for the report."""
        return {
            "matched": len(self.ids),
            "only_in_predictions": len(self.only_in_predictions),
            "only_in_annotations": len(self.only_in_annotations),
            "sample_only_in_predictions": self.only_in_predictions[:sample_size],
            "sample_only_in_annotations": self.only_in_annotations[:sample_size],
        }


def join(predictions: Predictions, annotations: Annotations) -> Join:
    """Line predictions up with the truth on their normalised ids.

    Raises
    ------
    EvaluationError
        When no id is common to both sides.
    """
    truth_by_id = dict(zip(annotations.ids, annotations.defects))
    predicted_ids = set(predictions.ids)
    rows = [i for i, key in enumerate(predictions.ids) if key in truth_by_id]
    only_predicted = sorted(raw for raw, key in zip(predictions.raw_ids, predictions.ids) if key not in truth_by_id)
    only_annotated = sorted(raw for raw, key in zip(annotations.raw_ids, annotations.ids) if key not in predicted_ids)
    if not rows:
        raise EvaluationError(
            f"{predictions.path}: no id in common with {annotations.path} "
            f"({len(predictions.ids)} prediction ids, e.g. {', '.join(predictions.raw_ids[:3])}; "
            f"{len(annotations.ids)} annotated ids, e.g. {', '.join(annotations.raw_ids[:3])}); "
            + ID_NORMALISATION
        )
    ids = [predictions.ids[i] for i in rows]
    return Join(
        ids=ids,
        scores=predictions.scores[rows],
        truth=truth_matrix([truth_by_id[key] for key in ids], predictions.classes),
        only_in_predictions=only_predicted,
        only_in_annotations=only_annotated,
    )


# --------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------


def single_class_explanation(name: str, positives: int) -> str:
    """Plain-language account of a class whose truth holds one value only."""
    if positives == 0:
        return (
            f"No matched image is positive for '{name}'. Recall and F1 are undefined "
            "(there is no positive to find) and precision only counts false alarms. "
            "What still means something: the score distribution, and the fraction "
            "of images at or above each threshold, which here is the false-alarm rate."
        )
    return (
        f"Every matched image is positive for '{name}'. Precision is perfect by "
        "construction, so F1 would only restate recall and says nothing about false "
        "alarms. What still means something: the score distribution, and the fraction "
        "of images at or above each threshold, which here is the detection rate (recall)."
    )


def _parse_thresholds(text: str | None, count: int) -> np.ndarray:
    """``--threshold``: one value for every class, or one per class."""
    if text is None:
        return np.full(count, 0.5)
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise EvaluationError(f"--threshold: {text!r} is not a number or a comma-separated list") from None
    if len(values) == 1:
        values = values * count
    if len(values) != count:
        raise EvaluationError(f"--threshold: {len(values)} values for {count} score columns")
    if not all(0.0 <= v <= 1.0 for v in values):
        raise EvaluationError(f"--threshold: values must lie in [0, 1], got {text!r}")
    return np.asarray(values)


def _stored_threshold_range(predictions: Predictions) -> dict | None:
    """Thresholds ``t`` for which ``label == (probability >= t)`` on every row.

    Returns ``None`` without a 0/1 ``label`` column, else ``greater_than``
    (the highest probability labelled 0), ``at_most`` (the lowest labelled 1)
    and whether any threshold fits at all.
    """
    labels = predictions.stored_labels
    if labels is None:
        return None
    scores = predictions.scores[:, 0]
    highest_negative = float(scores[labels == 0].max()) if np.any(labels == 0) else None
    lowest_positive = float(scores[labels == 1].min()) if np.any(labels == 1) else None
    consistent = highest_negative is None or lowest_positive is None or highest_negative < lowest_positive
    return {"greater_than": highest_negative, "at_most": lowest_positive, "consistent": bool(consistent)}


def _class_summary(truth: np.ndarray, classes: Sequence[str]) -> dict:
    """Positives and negatives per class."""
    return {
        name: {"positives": int(truth[:, k].sum()), "negatives": int((1 - truth[:, k]).sum())}
        for k, name in enumerate(classes)
    }


def _single_class_block(name: str, scores: np.ndarray, positives: int, thresholds: np.ndarray) -> dict:
    """What the report says about a class with one truth value only."""
    return {
        "explanation": single_class_explanation(name, positives),
        "positives": positives,
        "n": int(scores.size),
        "score_distribution": metrics.score_distribution(scores),
        "fraction_above": metrics.fraction_above(scores, thresholds),
    }


def _metrics_at_threshold(task, truth, scores, classes, cuts, single) -> dict:
    """Metrics at the chosen threshold(s), leaving out single-class classes' F1."""
    if task == "binary":
        if classes[0] in single:
            return {
                "threshold": float(cuts[0]),
                "single_class": single[classes[0]]["explanation"],
                "fraction_above": float(np.mean(scores[:, 0] >= cuts[0])),
            }
        result = metrics.precision_recall_f1(truth[:, 0], scores[:, 0] >= cuts[0])
        result["threshold"] = float(cuts[0])
        return result
    report = metrics.multilabel_report(truth, scores, cuts, classes)
    for name in single:
        report["per_class"][name]["single_class"] = single[name]["explanation"]
    if len(single) == len(classes):
        report["single_class"] = (
            "Every class holds a single truth value in the matched set; "
            "pooled and per-class F1 would be meaningless."
        )
    return report


def _sweep(truth, scores, classes, grid, single) -> dict:
    """Threshold search per class (only for classes with both truth values)."""
    return {
        name: metrics.search_threshold(truth[:, k], scores[:, k], grid).to_dict()
        for k, name in enumerate(classes)
        if name not in single
    }


def _operating_points(truth, scores, classes, single, min_recall, min_precision) -> dict:
    """Operating points per class for the requested recall and precision."""
    points = {}
    for k, name in enumerate(classes):
        if name in single:
            continue
        found = []
        if min_recall is not None:
            found.append(metrics.operating_point(truth[:, k], scores[:, k], min_recall=min_recall).to_dict())
        if min_precision is not None:
            found.append(
                metrics.operating_point(truth[:, k], scores[:, k], min_precision=min_precision).to_dict()
            )
        points[name] = found
    return points


def _parse_calibration_source(text: str) -> float | Path:
    """``--calibrate-on``: a fraction in (0, 1) or a path to a prediction CSV."""
    try:
        fraction = float(text)
    except ValueError:
        return Path(text)
    if not 0.0 < fraction < 1.0:
        raise EvaluationError(f"--calibrate-on: fraction {text!r} must lie strictly between 0 and 1")
    return fraction


def _stratified_split(truth: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split rows into a calibration part (``fraction``) and the rest.

    Rows are ordered by their truth pattern, randomly within a pattern, and
    every ``1 / fraction``-th row is taken, so each pattern is represented in
    proportion.
    """
    rng = np.random.default_rng(seed)
    pattern = truth @ (1 << np.arange(truth.shape[1]))
    order = np.lexsort((rng.random(truth.shape[0]), pattern))
    position = np.arange(truth.shape[0])
    taken = np.floor((position + 1) * fraction) > np.floor(position * fraction)
    return np.sort(order[taken]), np.sort(order[~taken])


def _calibration_fit_set(args, predictions, annotations, joined) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
    """Fit and evaluation sets for temperature scaling, with a description."""
    source = _parse_calibration_source(args.calibrate_on)
    if isinstance(source, float):
        fit_rows, eval_rows = _stratified_split(joined.truth, source, args.seed)
        if fit_rows.size < 2 or eval_rows.size < 1:
            raise EvaluationError(
                f"--calibrate-on {source:g}: {joined.truth.shape[0]} matched images leave "
                f"{fit_rows.size} for fitting and {eval_rows.size} for evaluation; need at "
                "least 2 and 1"
            )
        info = {
            "source": "split",
            "fraction": source,
            "seed": args.seed,
            "fit_n": int(fit_rows.size),
            "eval_n": int(eval_rows.size),
            "eval_set": "the matched images not used for fitting",
        }
        return (
            joined.scores[fit_rows],
            joined.truth[fit_rows],
            joined.scores[eval_rows],
            joined.truth[eval_rows],
            info,
        )

    fit_predictions = load_predictions(source, args.id_column, _split_columns(args.score_columns))
    if fit_predictions.classes != predictions.classes:
        raise EvaluationError(
            f"{source}: predicts {', '.join(fit_predictions.classes)} but "
            f"{predictions.path} predicts {', '.join(predictions.classes)}"
        )
    fit_annotations = annotations
    if Path(args.annotations).is_dir():
        fit_annotations = load_annotations(args.annotations, args.calibration_split, args.id_column)
    fit_join = join(fit_predictions, fit_annotations)
    overlap = sorted(set(fit_join.ids) & set(joined.ids))
    info = {
        "source": str(source),
        "annotations": fit_annotations.description,
        "fit_n": len(fit_join.ids),
        "eval_n": len(joined.ids),
        "eval_set": "all matched images of the evaluated predictions",
        "overlap_with_evaluated": len(overlap),
    }
    if overlap:
        info["overlap_note"] = (
            f"{len(overlap)} id(s) are in both the calibration file and the evaluated "
            f"predictions (e.g. {', '.join(overlap[:SAMPLE_SIZE])}); the figures after "
            "scaling are optimistic for them"
        )
    return fit_join.scores, fit_join.truth, joined.scores, joined.truth, info


def _calibrate(args, predictions, annotations, joined, classes) -> dict:
    """Fit one temperature per output and measure ECE and NLL before and after."""
    fit_scores, fit_truth, eval_scores, eval_truth, info = _calibration_fit_set(
        args, predictions, annotations, joined
    )
    fit_logits = calibration.probabilities_to_logits(fit_scores)
    eval_logits = calibration.probabilities_to_logits(eval_scores)
    temperatures = np.ones(len(classes))
    notes = []
    for k, name in enumerate(classes):
        positives = int(fit_truth[:, k].sum())
        if positives in (0, fit_truth.shape[0]):
            notes.append(
                f"'{name}': the calibration set holds a single truth value, so no "
                "temperature can be fitted; it is left at 1"
            )
            continue
        temperatures[k] = calibration.fit_temperature(fit_logits[:, k], fit_truth[:, k], kind="binary")
    calibrated = calibration.sigmoid(calibration.apply_temperature(eval_logits, temperatures))
    bins = args.ece_bins
    per_class = {}
    for k, name in enumerate(classes):
        per_class[name] = {
            "temperature": float(temperatures[k]),
            "ece_before": calibration.expected_calibration_error(eval_scores[:, k], eval_truth[:, k], bins),
            "ece_after": calibration.expected_calibration_error(calibrated[:, k], eval_truth[:, k], bins),
            "nll_before": calibration.negative_log_likelihood(eval_scores[:, k], eval_truth[:, k]),
            "nll_after": calibration.negative_log_likelihood(calibrated[:, k], eval_truth[:, k]),
        }
    kind = "binary" if len(classes) == 1 else "multilabel"
    result = dict(info)
    result.update(
        {
            "n_bins": bins,
            "ece_definition": (
                "sum over equal-width probability bins of (bin count / total) * "
                "|observed frequency - mean predicted probability|; every output of "
                "every image is one binary forecast, pooled"
            ),
            "temperatures": {name: float(t) for name, t in zip(classes, temperatures)},
            "ece_before": calibration.expected_calibration_error(eval_scores, eval_truth, bins, kind),
            "ece_after": calibration.expected_calibration_error(calibrated, eval_truth, bins, kind),
            "nll_before": calibration.negative_log_likelihood(eval_scores, eval_truth, kind),
            "nll_after": calibration.negative_log_likelihood(calibrated, eval_truth, kind),
            "per_class": per_class,
            "notes": notes,
        }
    )
    result["_eval_probs"] = (eval_scores, calibrated, eval_truth)
    return result


def evaluate(args: argparse.Namespace) -> dict:
    """Run the evaluation described by parsed command-line arguments.

    Parameters
    ----------
    args : argparse.Namespace
        As produced by :func:`build_parser`.

    Returns
    -------
    dict
        The report.  Keys starting with ``_`` hold arrays for plotting and are
        not written to JSON.
    """
    predictions = load_predictions(args.predictions, args.id_column, _split_columns(args.score_columns))
    annotations = load_annotations(args.annotations, args.split, args.id_column)
    joined = join(predictions, annotations)
    classes = predictions.classes
    cuts = _parse_thresholds(args.threshold, len(classes))
    grid = metrics.DEFAULT_THRESHOLD_GRID
    shown_thresholds = np.unique(np.concatenate([grid, cuts]))

    counts = _class_summary(joined.truth, classes)
    single = {
        name: _single_class_block(name, joined.scores[:, k], counts[name]["positives"], shown_thresholds)
        for k, name in enumerate(classes)
        if counts[name]["positives"] in (0, len(joined.ids))
    }
    report = {
        "inputs": {
            "predictions": predictions.path,
            "annotations": annotations.description,
            "task": predictions.task,
            "id_column": predictions.id_column,
            "score_columns": predictions.score_columns,
            "classes": classes,
            "stored_label_thresholds": _stored_threshold_range(predictions),
        },
        "join": joined.summary(),
        "truth": counts,
        "single_class_overall": len(single) == len(classes),
        "single_class": single,
        "thresholds": {name: float(t) for name, t in zip(classes, cuts)},
        "metrics": _metrics_at_threshold(predictions.task, joined.truth, joined.scores, classes, cuts, single),
        "sweep": _sweep(joined.truth, joined.scores, classes, grid, single),
        "operating_points": _operating_points(
            joined.truth, joined.scores, classes, single, args.min_recall, args.min_precision
        ),
        "calibration": None,
        "_arrays": (joined.truth, joined.scores),
    }
    if args.calibrate_on is not None:
        report["calibration"] = _calibrate(args, predictions, annotations, joined, classes)
    report["heatmaps"] = (heatmap_localisation(args.heatmap_peaks, annotations)
                          if args.heatmap_peaks is not None else None)
    return report


def heatmap_localisation(path: str | Path, annotations: Annotations) -> dict:
    """How often a heatmap's peak falls inside a true box of its class.

    Reads the ``peaks.csv`` that ``predict --heatmaps`` writes (one row per
    image and predicted defect: id, class, peak_x, peak_y in normalised image
    coordinates). A peak counts when its image truly has that class and that
    class has at least one located box there; it is a hit when it lies inside
    one of them.
    """
    if not annotations.boxes:
        raise EvaluationError(f"--heatmap-peaks needs the defects' boxes: give a dataset root as "
                              f"--annotations ({annotations.path} carries labels only)")
    header, rows = _read_csv(path)
    hint = "expected the peaks.csv written by python -m glasscuda.predict --heatmaps"
    index = {name: _column_index(path, header, name, hint) for name in ("id", "class", "peak_x", "peak_y")}
    truth = dict(zip(annotations.ids, zip(annotations.defects, annotations.boxes)))
    per_class = {name: {"scored": 0, "inside": 0} for name in DEFECT_CLASSES}
    unmatched = wrong_class = unlocated = 0
    for line, cells in rows:
        name = cells[index["class"]].strip()
        if name not in per_class:
            raise EvaluationError(f"{path}: line {line}: unknown class {name!r} "
                                  f"(known: {', '.join(DEFECT_CLASSES)})")
        x, y = (_parse_score(path, line, column, cells[index[column]]) for column in ("peak_x", "peak_y"))
        key = normalise_id(cells[index["id"]])
        if key not in truth:
            unmatched += 1
            continue
        present, located = truth[key]
        boxes = [box for box_class, box in located if box_class == name]
        if name not in present:
            wrong_class += 1
        elif not boxes:
            unlocated += 1
        else:
            per_class[name]["scored"] += 1
            per_class[name]["inside"] += any(inside_box(x, y, box) for box in boxes)
    for counts in per_class.values():
        counts["rate"] = counts["inside"] / counts["scored"] if counts["scored"] else None
    scored = sum(c["scored"] for c in per_class.values())
    inside = sum(c["inside"] for c in per_class.values())
    return {
        "peaks": str(path),
        "rows": len(rows),
        "scored": scored,
        "inside": inside,
        "rate": inside / scored if scored else None,
        "per_class": per_class,
        "not_in_annotations": unmatched,
        "class_not_present": wrong_class,
        "no_box_for_class": unlocated,
    }


# --------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------


def _render_inputs(report: dict) -> list[str]:
    inputs = report["inputs"]
    lines = [
        "## Inputs",
        "",
        f"- predictions: {inputs['predictions']} ({inputs['task']}; id column "
        f"'{inputs['id_column']}', scores {', '.join(inputs['score_columns'])})",
        f"- annotations: {inputs['annotations']}",
    ]
    stored = inputs["stored_label_thresholds"]
    if stored is not None:
        if not stored["consistent"]:
            lines.append("- the file's label column does not follow any single threshold on its probabilities")
        else:
            low = "0" if stored["greater_than"] is None else format_value(stored["greater_than"])
            high = "1" if stored["at_most"] is None else format_value(stored["at_most"])
            lines.append(f"- the file's label column matches a stored threshold in ({low}, {high}]")
    return lines + [""]


def _render_join(report: dict) -> list[str]:
    summary = report["join"]
    lines = [
        "## Join",
        "",
        markdown_table(
            [
                ("matched", summary["matched"]),
                ("only in predictions", summary["only_in_predictions"]),
                ("only in annotations", summary["only_in_annotations"]),
            ],
            headers=["ids", "count"],
        ),
        "",
    ]
    for key, label in (
        ("sample_only_in_predictions", "only in predictions"),
        ("sample_only_in_annotations", "only in annotations"),
    ):
        if summary[key]:
            lines.append(f"- e.g. {label}: {', '.join(summary[key])}")
    lines.append(f"- {ID_NORMALISATION}")
    return lines + [""]


def _render_truth(report: dict) -> list[str]:
    rows = [(name, c["positives"], c["negatives"]) for name, c in report["truth"].items()]
    return ["## Truth in the matched set", "", markdown_table(rows, headers=["class", "positives", "negatives"]), ""]


def _render_single_class(report: dict) -> list[str]:
    if not report["single_class"]:
        return []
    if report["single_class_overall"]:
        lines = [
            "## The matched set holds a single class",
            "",
            "Precision, recall and F1 are undefined or meaningless here, so none is "
            "reported, and there is no threshold sweep or operating point.",
            "",
        ]
    else:
        lines = [
            "## Classes with a single truth value",
            "",
            "These classes are left out of the metrics table, the threshold sweep and "
            "the operating points.",
            "",
        ]
    for name, block in report["single_class"].items():
        distribution = block["score_distribution"]
        keys = ["mean", "std", "min", "p05", "p25", "median", "p75", "p95", "max"]
        lines += [
            f"### {name}",
            "",
            block["explanation"],
            "",
            "Score distribution:",
            "",
            markdown_table([[distribution[k] for k in keys]], headers=keys, align=["right"] * len(keys)),
            "",
            "Fraction of images at or above each threshold:",
            "",
            markdown_table(
                [(row["threshold"], row["count"], row["fraction_above"]) for row in block["fraction_above"]],
                headers=["threshold", "images", "fraction"],
                float_format=".4g",
                align=["right"] * 3,
            ),
            "",
        ]
    return lines


def _render_metrics(report: dict) -> list[str]:
    if report["single_class_overall"]:
        return []
    result = report["metrics"]
    single = report["single_class"]
    if report["inputs"]["task"] == "binary":
        name = report["inputs"]["classes"][0]
        per_class = {name: result}
    else:
        per_class = result["per_class"]
    rows = [
        (name, m["threshold"], m["precision"], m["recall"], m["f1"], m["support"], m["n"])
        for name, m in per_class.items()
        if name not in single
    ]
    lines = [
        "## Metrics at the chosen threshold",
        "",
        markdown_table(rows, headers=["class", "threshold", "precision", "recall", "F1", "positives", "images"]),
        "",
    ]
    if report["inputs"]["task"] == "multilabel":
        lines += [
            f"- micro-F1 (pooled over all classes): {format_value(result['micro_f1'])}",
            f"- macro-F1 (mean over {', '.join(result['macro_f1_classes'])}): "
            f"{format_value(result['macro_f1'])}",
            "",
            "Confusion matrices:",
            "",
            markdown_table(
                [
                    (name, m[0][0], m[0][1], m[1][0], m[1][1])
                    for name, m in result["confusion_matrices"].items()
                ],
                headers=["class", "TN", "FP", "FN", "TP"],
            ),
            "",
        ]
    return lines


def _render_sweep(report: dict) -> list[str]:
    if not report["sweep"]:
        return []
    summary = [
        (
            name,
            s["threshold"],
            s["precision"],
            s["recall"],
            s["f1"],
            s["pr_optimum_threshold"],
            s["pr_optimum_f1"],
        )
        for name, s in report["sweep"].items()
    ]
    lines = [
        "## Threshold sweep",
        "",
        "Best threshold on the grid 0.10…0.95 (ties go to the lower threshold) and "
        "the exact F1 optimum over every distinct score:",
        "",
        markdown_table(
            summary,
            headers=["class", "best threshold", "precision", "recall", "F1", "F1-optimal threshold", "optimal F1"],
        ),
        "",
    ]
    for name, s in report["sweep"].items():
        lines += [
            f"### {name}: threshold table",
            "",
            markdown_table(
                [(r["threshold"], r["precision"], r["recall"], r["f1"], r["fraction_above"]) for r in s["table"]],
                headers=["threshold", "precision", "recall", "F1", "fraction above"],
                align=["right"] * 5,
            ),
            "",
        ]
    return lines


def _render_operating_points(report: dict) -> list[str]:
    rows = []
    for name, points in report["operating_points"].items():
        for p in points:
            requirement = f"{p['requirement']} >= {p['target']:g}"
            if p["reachable"]:
                rows.append((name, requirement, p["threshold"], p["precision"], p["recall"], p["f1"]))
            else:
                rows.append((name, requirement, p["reason"], None, None, None))
    if not rows:
        return []
    return [
        "## Operating points",
        "",
        markdown_table(rows, headers=["class", "requirement", "threshold", "precision", "recall", "F1"]),
        "",
    ]


def _render_calibration(report: dict) -> list[str]:
    result = report["calibration"]
    if result is None:
        return []
    lines = [
        "## Calibration (temperature scaling)",
        "",
        f"- fitted on {result['fit_n']} images ({result['source']}"
        + (f", fraction {result['fraction']:g}, seed {result['seed']}" if result["source"] == "split" else "")
        + f"); measured on {result['eval_n']} images: {result['eval_set']}",
        f"- ECE: {result['n_bins']} equal-width bins, {result['ece_definition']}",
        "",
        markdown_table(
            [
                (name, c["temperature"], c["ece_before"], c["ece_after"], c["nll_before"], c["nll_after"])
                for name, c in result["per_class"].items()
            ]
            + [("all outputs", None, result["ece_before"], result["ece_after"], result["nll_before"], result["nll_after"])],
            headers=["class", "temperature", "ECE before", "ECE after", "NLL before", "NLL after"],
        ),
        "",
    ]
    for note in result["notes"] + ([result["overlap_note"]] if "overlap_note" in result else []):
        lines.append(f"- {note}")
    return lines + ([""] if result["notes"] or "overlap_note" in result else [])


def _render_heatmaps(report: dict) -> list[str]:
    result = report.get("heatmaps")
    if not result:
        return []
    lines = ["## Heatmap localisation", "",
             f"Peaks from {result['peaks']}: a peak is scored when its image truly has that defect "
             "and a box for it; it counts when it lies inside one of those boxes.", ""]
    rows = [{"class": name, "scored": c["scored"], "inside a box": c["inside"], "rate": c["rate"]}
            for name, c in result["per_class"].items()]
    rows.append({"class": "all", "scored": result["scored"], "inside a box": result["inside"],
                 "rate": result["rate"]})
    lines += [markdown_table(rows, float_format=".3f"), ""]
    lines.append(f"Not scored: {result['class_not_present']} peak(s) of a class the image does not have, "
                 f"{result['no_box_for_class']} without a box of their class, "
                 f"{result['not_in_annotations']} of images not in the annotations.")
    return lines + [""]


def render_markdown(report: dict) -> str:
    """Render a report from :func:`evaluate` as Markdown for people."""
    lines = ["# glasscuda evaluation", ""]
    for section in (
        _render_inputs,
        _render_join,
        _render_truth,
        _render_single_class,
        _render_metrics,
        _render_sweep,
        _render_operating_points,
        _render_calibration,
        _render_heatmaps,
    ):
        lines += section(report)
    if report.get("files"):
        lines += ["## Files written", ""] + [f"- {path}" for path in report["files"]] + [""]
    return "\n".join(lines).rstrip() + "\n"


# --------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------

THRESHOLD_TABLE_COLUMNS = ["class", "threshold", "precision", "recall", "f1", "tp", "fp", "fn", "tn", "fraction_above"]


def _threshold_table_rows(report: dict) -> list[dict]:
    """Rows of ``threshold_table.csv``: the sweep of every class.

    A class with a single truth value has only ``fraction_above``; its
    precision, recall and F1 cells are empty.
    """
    truth, scores = report["_arrays"]
    rows = []
    for k, name in enumerate(report["inputs"]["classes"]):
        if name in report["sweep"]:
            rows += [dict(row, **{"class": name}) for row in report["sweep"][name]["table"]]
        else:
            for row in metrics.fraction_above(scores[:, k], metrics.DEFAULT_THRESHOLD_GRID):
                rows.append({"class": name, "threshold": row["threshold"], "fraction_above": row["fraction_above"]})
    return rows


def write_outputs(report: dict, out_dir: str | Path) -> list[str]:
    """Write ``report.json``, ``threshold_table.csv`` and the plots.

    Every file is written atomically.  ``pr_curve.png`` needs at least one
    class with both truth values; ``confusion_matrices.png`` is written for
    multilabel predictions; ``reliability.png`` when calibrating.

    Returns
    -------
    list of str
        The paths written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    truth, scores = report["_arrays"]
    classes = report["inputs"]["classes"]
    cuts = [report["thresholds"][name] for name in classes]
    written = []

    written.append(write_csv_atomic(out / "threshold_table.csv", _threshold_table_rows(report), THRESHOLD_TABLE_COLUMNS))
    if report["sweep"]:
        written.append(metrics.plot_pr_curves(truth, scores, classes, out / "pr_curve.png", marked_thresholds=cuts))
    written.append(
        metrics.plot_score_histograms(truth, scores, classes, out / "score_histogram.png", thresholds=cuts)
    )
    if report["inputs"]["task"] == "multilabel":
        written.append(metrics.plot_confusion_matrices(report["metrics"], out / "confusion_matrices.png"))
    if report["calibration"] is not None:
        before, after, labels = report["calibration"]["_eval_probs"]
        kind = "binary" if len(classes) == 1 else "multilabel"
        written.append(
            calibration.reliability_diagram(
                before[:, 0] if kind == "binary" else before,
                labels[:, 0] if kind == "binary" else labels,
                out / "reliability.png",
                title="Reliability before and after temperature scaling",
                n_bins=report["calibration"]["n_bins"],
                kind=kind,
                calibrated_probs=after[:, 0] if kind == "binary" else after,
                class_names=classes if kind == "multilabel" else None,
            )
        )
    json_path = out / "report.json"
    report["files"] = [str(path) for path in written] + [str(json_path)]
    write_json_atomic(json_path, _public(report))
    return report["files"]


def _public(value: Any) -> Any:
    """The report without its private ``_`` keys (arrays kept for plotting)."""
    if isinstance(value, dict):
        return {k: _public(v) for k, v in value.items() if not str(k).startswith("_")}
    if isinstance(value, list):
        return [_public(v) for v in value]
    return value


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def _split_columns(text: str | None) -> list[str] | None:
    """``--score-columns a,b,c`` as a list."""
    if not text:
        return None
    return [part.strip() for part in text.split(",") if part.strip()]


def _probability(text: str) -> float:
    """argparse type: a number in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} must lie in (0, 1]")
    return value


DESCRIPTION = f"""\
Evaluate a prediction file against annotations that were made apart from it:
join them on the image id, report metrics at a threshold, sweep thresholds per
class, find operating points, and optionally fit temperature scaling.

Inputs
  --predictions: the CSV written by `python -m glasscuda.predict`
    (binary: id,probability,label; multilabel:
    id,p_no_defect,p_chipped_edge,p_scratch,p_stain,labels), or any CSV with an
    id column (--id-column) and probability columns (--score-columns).
  --annotations: a dataset root (ROOT/SPLIT/img/*.png, ROOT/SPLIT/txt/<stem>.txt,
    one defect per txt line, first token the class id: 0 chipped_edge,
    1 scratch, 2 stain; no txt file means no defect), or a CSV id,labels with
    labels ';'-joined class names or ids (empty means no defect).
  Binary scores are compared with "any defect"; multilabel scores with
  no_defect and each defect class.

Id matching
{textwrap.fill(ID_NORMALISATION[0].upper() + ID_NORMALISATION[1:] + ".", 78, initial_indent="  ", subsequent_indent="  ")}
  Ids found on one side only are counted and sampled in the report; duplicate
  ids (after normalisation) are an error that names them.

A single class
  When the matched images hold one truth value only (say, no defect at all),
  precision, recall and F1 are undefined or meaningless. The report says so,
  prints no F1, and shows what still means something: the score distribution
  and the fraction of images at or above each threshold (the false-alarm rate,
  or the detection rate).

Output
  A Markdown report on standard output. With --out DIR: report.json,
  threshold_table.csv, pr_curve.png, score_histogram.png,
  confusion_matrices.png (multilabel) and reliability.png (with
  --calibrate-on), each written atomically.
  Exit status 0 on success, 2 on an input error (message on standard error).
"""


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of ``python -m glasscuda.evaluate``."""
    parser = argparse.ArgumentParser(
        prog="python -m glasscuda.evaluate",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    inputs = parser.add_argument_group("inputs")
    inputs.add_argument("--predictions", required=True, metavar="CSV", help="prediction CSV")
    inputs.add_argument(
        "--annotations", required=True, metavar="ROOT_OR_CSV", help="dataset root folder or annotation CSV (id,labels)"
    )
    inputs.add_argument("--split", default="test", help="split folder under a dataset root (default: test)")
    inputs.add_argument("--id-column", default=None, metavar="NAME", help="id column of the CSVs (default: id)")
    inputs.add_argument(
        "--score-columns",
        default=None,
        metavar="A,B,C",
        help="probability columns (default: detect the formats predict writes); several must be "
        "named after the classes, e.g. p_scratch or scratch; a single column predicts the class it "
        "is named after, or else 'any defect'",
    )
    decisions = parser.add_argument_group("decisions")
    decisions.add_argument(
        "--threshold",
        default=None,
        metavar="T[,T...]",
        help="decision threshold for the metrics table, one for all classes or one per score column "
        "(default: 0.5; the threshold behind a file's label column is not known)",
    )
    decisions.add_argument("--min-recall", type=_probability, default=None, metavar="R", help="report the highest threshold with recall >= R")
    decisions.add_argument(
        "--min-precision", type=_probability, default=None, metavar="P", help="report the lowest threshold with precision >= P"
    )
    calibrating = parser.add_argument_group("calibration")
    calibrating.add_argument(
        "--calibrate-on",
        default=None,
        metavar="FRACTION_OR_CSV",
        help="fit temperature scaling on this fraction of the matched images (stratified, the rest "
        "measures it) or on a separate prediction CSV, measured on all matched images",
    )
    calibrating.add_argument(
        "--calibration-split",
        default="train",
        metavar="SPLIT",
        help="split of a dataset root holding the truth for a --calibrate-on CSV (default: train)",
    )
    calibrating.add_argument("--ece-bins", type=int, default=15, metavar="N", help="equal-width bins for ECE (default: 15)")
    calibrating.add_argument("--seed", type=int, default=0, help="seed of the calibration split (default: 0)")
    parser.add_argument(
        "--heatmap-peaks",
        default=None,
        metavar="CSV",
        help="the peaks.csv of predict --heatmaps: report how often each heatmap's peak falls inside "
        "a true box of its class (needs a dataset root as --annotations)",
    )
    parser.add_argument("--out", default=None, metavar="DIR", help="also write report.json, threshold_table.csv and PNG plots here")
    return parser


def _error(message: str) -> int:
    """Print an input error for the user and return the exit status 2."""
    print(f"glasscuda.evaluate: error: {message}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        0 on success, 2 on a usage or input error.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_request:
        return int(exit_request.code or 0)
    if args.ece_bins < 1:
        return _error("--ece-bins must be at least 1")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=UndefinedMetricWarning)
            report = evaluate(args)
            if args.out is not None:
                write_outputs(report, args.out)
    except EvaluationError as error:
        return _error(str(error))
    except OSError as error:
        name = error.filename or ""
        return _error(f"{name}: {error.strerror or error}" if name else str(error))
    sys.stdout.write(render_markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
