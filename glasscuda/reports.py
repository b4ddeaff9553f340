"""Small helpers for writing reports: Markdown tables, JSON, CSV and figures.

Every file is written atomically: the content goes to a temporary file in the
destination's own directory, which then replaces the destination with
:func:`os.replace`.  A reader never sees a half-written report, and an
interrupted write leaves the previous file in place.

JSON written here is strict (RFC 8259): ``nan`` and infinities, which have no
JSON spelling, are written as ``null``.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

__all__ = [
    "format_value",
    "markdown_table",
    "to_jsonable",
    "atomic_write",
    "write_bytes_atomic",
    "write_text_atomic",
    "write_json_atomic",
    "write_csv_atomic",
    "save_figure_atomic",
]


def format_value(value: Any, float_format: str = ".4f", missing: str = "—") -> str:
    """Render one value for a human-readable table.

    Parameters
    ----------
    value : Any
        The value. ``None`` and ``nan`` render as ``missing``; floats use
        ``float_format``; booleans render as ``yes``/``no``; everything else
        uses ``str``.
    float_format : str
        Format specification applied to real numbers.
    missing : str
        Text shown for an absent or undefined value.

    Returns
    -------
    str
    """
    if value is None:
        return missing
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return missing
        return format(float(value), float_format)
    return str(value)


def _escape_cell(text: str) -> str:
    """Make ``text`` safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(
    rows: Iterable[Mapping[str, Any]] | Iterable[Sequence[Any]],
    columns: Sequence[str] | None = None,
    headers: Sequence[str] | None = None,
    float_format: str = ".4f",
    align: Sequence[str] | None = None,
) -> str:
    """Render rows as a GitHub-flavoured Markdown table.

    Parameters
    ----------
    rows : iterable of mappings or of sequences
        One entry per table row.  Mappings are read by ``columns``; sequences
        are taken in order.
    columns : sequence of str, optional
        Keys to read from mapping rows.  Defaults to the keys of the first row.
        Required when the rows are sequences and ``headers`` is not given.
    headers : sequence of str, optional
        Column titles; defaults to ``columns``.
    float_format : str
        Format specification for real numbers (see :func:`format_value`).
    align : sequence of {"left", "right", "center"}, optional
        Alignment per column; numbers read best right-aligned, which is the
        default for every column but the first.

    Returns
    -------
    str
        The table, one line per row, ending without a newline.
    """
    rows = list(rows)
    if columns is None and rows and isinstance(rows[0], Mapping):
        columns = list(rows[0].keys())
    if headers is None:
        headers = columns
    if headers is None:
        raise ValueError("markdown_table needs columns or headers for sequence rows")
    width = len(headers)
    if align is None:
        align = ["left"] + ["right"] * (width - 1)
    if len(align) != width:
        raise ValueError(f"align has {len(align)} entries for {width} columns")
    rule = {"left": ":---", "right": "---:", "center": ":---:"}

    lines = [
        "| " + " | ".join(_escape_cell(str(h)) for h in headers) + " |",
        "| " + " | ".join(rule[a] for a in align) + " |",
    ]
    for row in rows:
        if isinstance(row, Mapping):
            cells = [row.get(c) for c in columns]
        else:
            cells = list(row)
        if len(cells) != width:
            raise ValueError(f"row has {len(cells)} cells for {width} columns: {cells!r}")
        lines.append(
            "| " + " | ".join(_escape_cell(format_value(c, float_format)) for c in cells) + " |"
        )
    return "\n".join(lines)


def to_jsonable(value: Any) -> Any:
    """Convert ``value`` into plain JSON-compatible Python objects.

    NumPy scalars and arrays become Python numbers and lists, dataclasses
    become dicts, paths become strings, tuples and sets become lists, and
    non-finite floats become ``None``.

    Parameters
    ----------
    value : Any

    Returns
    -------
    Any
        An object that :func:`json.dumps` accepts with ``allow_nan=False``.
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value) if isinstance(value, (set, frozenset)) else value
        return [to_jsonable(v) for v in items]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"cannot write {type(value).__name__} as JSON: {value!r}")


def current_umask() -> int:
    """The process's file-creation mask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write) -> Path:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it to ``path``.

    The file is flushed to disk before the rename, so a reader sees the old
    file or the whole new one, never a part; a failure leaves no temporary
    file behind.  Missing parent folders are created.

    Returns
    -------
    pathlib.Path
        The destination path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        # mkstemp creates the file 0600; the result gets the mode any new file of the user would.
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda f: f.write(data))


def write_text_atomic(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`write_bytes_atomic`)."""
    return write_bytes_atomic(path, text.encode(encoding))


def write_json_atomic(path: str | os.PathLike, obj: Any, indent: int = 2) -> Path:
    """Write ``obj`` as strict JSON to ``path`` atomically.

    Parameters
    ----------
    path : str or path-like
        Destination.
    obj : Any
        Anything :func:`to_jsonable` converts; ``nan`` is written as ``null``.
    indent : int
        Indentation of the output.

    Returns
    -------
    pathlib.Path
    """
    text = json.dumps(to_jsonable(obj), indent=indent, allow_nan=False) + "\n"
    return write_text_atomic(path, text)


def write_csv_atomic(
    path: str | os.PathLike,
    rows: Iterable[Mapping[str, Any]],
    columns: Sequence[str],
) -> Path:
    """Write dict rows as CSV to ``path`` atomically.

    Missing values and ``nan`` are written as empty cells; floats use
    ``repr``-exact formatting so nothing is lost.

    Parameters
    ----------
    path : str or path-like
        Destination.
    rows : iterable of mappings
        One mapping per row, read by ``columns``.
    columns : sequence of str
        Header and column order.

    Returns
    -------
    pathlib.Path
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        cells = []
        for column in columns:
            value = to_jsonable(row.get(column))
            cells.append("" if value is None else value)
        writer.writerow(cells)
    return write_text_atomic(path, buffer.getvalue())


def save_figure_atomic(figure: Any, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Save a Matplotlib figure as PNG to ``path`` atomically.

    Parameters
    ----------
    figure : matplotlib.figure.Figure
        The figure.  It is rendered with the Agg renderer, whatever the
        interactive backend is.  A figure without a layout engine is cropped
        to its content (``bbox_inches="tight"``); one with a layout engine is
        saved as that engine arranged it.
    path : str or path-like
        Destination.
    dpi : int
        Resolution.

    Returns
    -------
    pathlib.Path
    """
    buffer = io.BytesIO()
    crop = "tight" if figure.get_layout_engine() is None else None
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches=crop)
    return write_bytes_atomic(path, buffer.getvalue())
