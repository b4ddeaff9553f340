"""What the command lines share: argument types that refuse nonsense at parse time, checks
that an output can be written before any work is done, and warnings shown as plain lines."""
from __future__ import annotations

import argparse
import math
import os
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def probabilities(text: str) -> float | tuple[float, ...]:
    """argparse type: one number in [0, 1], or several separated by commas (a tuple)."""
    values = tuple(_number(part) for part in text.split(","))
    outside = [v for v in values if not 0.0 <= v <= 1.0]
    if outside:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1], got {outside[0]:g}")
    return values[0] if len(values) == 1 else values


def check_writable_folder(folder, flag: str) -> list[Path]:
    """Create ``folder`` (and missing parents) and prove a file can be written in it.

    Returns the folders this call created, so that a run that fails can
    remove them again. Raises ``ValueError``, one line naming ``flag``, when
    the folder cannot be used.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{flag} {folder} is an existing file, not a folder; choose another path")
    created = [p for p in (folder, *folder.parents) if not p.exists()][::-1]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        remove_empty_folders(created)
        raise ValueError(f"{flag} {folder} cannot be written ({error.strerror or error}); "
                         "choose a folder you can write to") from None
    return created


def remove_empty_folders(folders) -> None:
    """Remove each folder of ``folders`` that is empty, deepest first (the ones a failed run created)."""
    for folder in sorted(map(Path, folders), key=lambda p: len(p.parts), reverse=True):
        try:
            folder.rmdir()
        except OSError:
            pass


def check_writable_file(path, flag: str) -> list[Path]:
    """Check up front that ``path`` can be written as a file (its folder is created if missing).

    Returns the folders created; raises ``ValueError`` naming ``flag`` otherwise.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{flag} {path} is a folder; give a file name such as {path / 'predictions.csv'}")
    created = check_writable_folder(path.parent, flag)
    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"{flag} {path} is read-only; choose another file or make it writable")
    return created


@contextmanager
def plain_warnings():
    """Within the block, a dataset warning prints as one line, ``warning: <message>``, on standard error.

    Python's default display adds the library's file and line, which tell a
    user of the command line nothing; other warnings keep that display. Only
    the text changes, so code that records warnings still sees them.
    """
    from .data.dataset import DatasetWarning

    formatted = warnings.formatwarning

    def plain(message, category, filename, lineno, line=None):
        if issubclass(category, DatasetWarning):
            return f"warning: {message}\n"
        return formatted(message, category, filename, lineno, line)

    warnings.formatwarning = plain
    try:
        yield
    finally:
        warnings.formatwarning = formatted
