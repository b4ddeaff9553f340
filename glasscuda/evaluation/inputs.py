"""Reading the evaluated inputs: prediction CSVs and their ids.

An id from any tool is compared after :func:`normalise_id`; every problem is
an :class:`EvaluationError` naming the file, the line and what to do.
"""
from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..glass import ANY_DEFECT, DEFECT_CLASSES, NO_DEFECT

BINARY_CLASS = ANY_DEFECT
"""The truth a lone score column predicts when it is not named after a class: any defect."""
BINARY_SCORE_COLUMN = "probability"
SCORE_COLUMN_PREFIXES = ("probability_", "prob_", "score_", "p_")
SAMPLE_SIZE = 5
"""Ids shown as examples of a list in messages and in the report."""
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


def read_csv(path: str | Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
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


def column_index(path: str | Path, header: list[str], name: str, hint: str) -> int:
    """Index of column ``name`` in ``header``, or an error listing the columns."""
    if name not in header:
        raise EvaluationError(
            f"{path}: no column {name!r} (columns: {', '.join(header) or 'none'}); {hint}"
        )
    return header.index(name)


def check_unique(path: str | Path, ids: list[str], raw_ids: list[str], where: list[str]) -> None:
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


def read_ids(path: str | Path, rows: list[tuple[int, list[str]]], id_index: int) -> tuple[list[str], list[str]]:
    """(normalised ids, ids as written) of a CSV's rows; empty or duplicate ids are errors."""
    raw_ids = []
    for line, cells in rows:
        raw = cells[id_index].strip()
        if not raw:
            raise EvaluationError(f"{path}: line {line}: empty id")
        raw_ids.append(raw)
    ids = [normalise_id(raw) for raw in raw_ids]
    check_unique(path, ids, raw_ids, [f"line {line}" for line, _ in rows])
    return ids, raw_ids


def _class_named_by(column: str, classes: Sequence[str]) -> str | None:
    """The truth class a score column is named after (``p_scratch`` → ``scratch``), compared ignoring case."""
    known = {name.lower(): name for name in (NO_DEFECT, *classes)}
    name = column.strip().lower()
    for prefix in ("",) + SCORE_COLUMN_PREFIXES:
        if name.startswith(prefix) and name[len(prefix):] in known:
            return known[name[len(prefix):]]
    return None


def _class_for_score_column(path: str | Path, column: str, classes: Sequence[str]) -> str:
    """Truth class of one of several score columns, or an error."""
    found = _class_named_by(column, classes)
    if found is None:
        raise EvaluationError(
            f"{path}: cannot tell which class score column {column!r} predicts; "
            f"name the columns after the classes ({', '.join((NO_DEFECT, *classes))}), "
            "optionally with a 'p_' prefix, or give a single score column for "
            "'any defect'; the classes are the annotations' (a dataset's classes.txt, or --classes)"
        )
    return found


def _single_score_class(column: str, classes: Sequence[str]) -> str:
    """Truth class of a lone score column: a named class, else "any defect"."""
    return _class_named_by(column, classes) or BINARY_CLASS


def _detect_score_columns(path: str | Path, header: list[str], classes: Sequence[str]) -> list[str]:
    """Score columns of the two formats ``predict`` writes."""
    if BINARY_SCORE_COLUMN in header:
        return [BINARY_SCORE_COLUMN]
    expected = [f"p_{name}" for name in (NO_DEFECT, *classes)]
    if all(column in header for column in expected):
        return expected
    written = [column for column in header if column.startswith("p_")]
    hint = (f"it predicts {', '.join(column[2:] for column in written)}, so it was made for other classes "
            "than the annotations' (a dataset's classes.txt, or --classes); evaluate it against its own "
            "dataset, or name the score columns with --score-columns"
            if f"p_{NO_DEFECT}" in written else "name the score columns with --score-columns")
    raise EvaluationError(
        f"{path}: cannot tell the prediction format (columns: {', '.join(header)}); "
        f"expected '{BINARY_SCORE_COLUMN}' (binary) or "
        f"{', '.join(expected)} (multilabel); {hint}"
    )


def parse_score(path: str | Path, line: int, column: str, text: str) -> float:
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
    classes: Sequence[str] = DEFECT_CLASSES,
) -> Predictions:
    """Read a prediction CSV.

    Parameters
    ----------
    path : str or path-like
        The CSV: ``id,probability,label`` (binary) or
        ``id,p_no_defect,p_<class>...,labels`` (multilabel, one column per
        class of ``classes``) as ``predict`` writes them, or any CSV with an
        id column and probability columns.
    id_column : str, optional
        Name of the id column (default ``id``).
    score_columns : sequence of str, optional
        Probability columns.  Several must be named after the classes
        (``p_scratch`` or ``scratch``); a single one predicts the class it is
        named after, or else "any defect".  By default the two formats above
        are recognised.
    classes : sequence of str
        The defect classes the score columns may be named after (the
        annotations'); default the course's three.

    Returns
    -------
    Predictions

    Raises
    ------
    EvaluationError
        Missing file, missing column, unparseable score, duplicate ids, or no
        rows.
    """
    header, rows = read_csv(path)
    id_name = id_column or "id"
    id_index = column_index(path, header, id_name, "name the id column with --id-column")
    if score_columns:
        columns = [column.strip() for column in score_columns]
        for column in columns:
            column_index(path, header, column, "check --score-columns")
    else:
        columns = _detect_score_columns(path, header, classes)
    if len(columns) == 1:
        task, predicted = "binary", [_single_score_class(columns[0], classes)]
    else:
        task = "multilabel"
        predicted = [_class_for_score_column(path, column, classes) for column in columns]
        if len(set(predicted)) != len(predicted):
            raise EvaluationError(f"{path}: two score columns predict the same class: {columns}")
    if not rows:
        raise EvaluationError(f"{path}: no prediction rows after the header")

    indices = [header.index(column) for column in columns]
    ids, raw_ids = read_ids(path, rows, id_index)
    scores = [[parse_score(path, line, c, cells[i]) for c, i in zip(columns, indices)] for line, cells in rows]

    stored = None
    if task == "binary" and "label" in header:
        stored = _parse_stored_labels(rows, header.index("label"))
    return Predictions(
        path=str(path),
        task=task,
        classes=predicted,
        score_columns=columns,
        id_column=id_name,
        ids=ids,
        raw_ids=raw_ids,
        scores=np.asarray(scores, dtype=np.float64).reshape(len(rows), len(columns)),
        stored_labels=stored,
    )
