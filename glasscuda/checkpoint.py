"""Checkpoints: a NumPy ``.npz`` of arrays plus a JSON header, written atomically.

Layout of the archive:

* ``header``        — a JSON string: format version, the model's ``config()``,
  task, class names, thresholds, input normalisation, optimizer/scheduler
  scalars, versions;
* ``model/<name>``  — each parameter, as in ``model.state_dict()``;
* ``optim/<name>``  — optimizer moment arrays, when saved for resuming.

Files are written to a temporary name in the same folder and renamed into
place, so a crash never leaves a half-written checkpoint; they are read with
``allow_pickle=False``, so opening one cannot execute code.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit."""


def versions() -> dict:
    from . import __version__
    return {"glasscuda": __version__, "numpy": np.__version__}


def atomic_write(path: str | os.PathLike, write) -> Path:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@dataclass
class Checkpoint:
    header: dict
    model_state: dict
    optimizer_state: dict = field(default_factory=dict)


def save_checkpoint(path, model, header: dict, optimizer=None) -> Path:
    """Write ``model`` (and ``optimizer``'s arrays) with ``header`` to ``path`` atomically."""
    arrays = {f"model/{k}": v for k, v in model.state_dict().items()}
    full_header = {"format_version": FORMAT_VERSION, "model": model.config(),
                   "versions": versions(), **header}
    if optimizer is not None:
        state = optimizer.state_dict()
        full_header["optimizer"] = {k: v for k, v in state.items() if not isinstance(v, np.ndarray)}
        arrays.update({f"optim/{k}": v for k, v in state.items() if isinstance(v, np.ndarray)})
    arrays["header"] = np.array(json.dumps(full_header))
    return atomic_write(path, lambda f: np.savez(f, **arrays))


def load_checkpoint(path) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` (never unpickles anything)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as archive:
            header = json.loads(str(archive["header"]))
            model_state = {k[len("model/"):]: archive[k] for k in archive.files if k.startswith("model/")}
            optim_state = {k[len("optim/"):]: archive[k] for k in archive.files if k.startswith("optim/")}
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path} is not a glasscuda checkpoint ({error})") from error
    if header.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format {header.get('format_version')}; "
                              f"this glasscuda reads format {FORMAT_VERSION}")
    optim_state.update(header.get("optimizer", {}))
    return Checkpoint(header, model_state, optim_state)


def load_model(path, device="auto"):
    """Rebuild the network stored at ``path`` on ``device``; returns (model, header)."""
    from .models import build_model

    checkpoint = load_checkpoint(path)
    model = build_model(checkpoint.header["model"])
    try:
        model.load_state_dict(checkpoint.model_state)
    except (KeyError, ValueError) as error:
        raise CheckpointError(f"{path}: {error}") from error
    return model.to(device).eval(), checkpoint.header
