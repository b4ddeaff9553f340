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

import inspect
import json
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .reports import atomic_write

FORMAT_VERSION = 1
# Largest image side a checkpoint may declare: the dense heads' weights grow with its
# square, so a hand-edited size must not decide an allocation unchecked.
MAX_IMAGE_SIZE = 1024
MAX_CLASSES = 1000
MAX_WIDTH = 16


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit."""


def versions() -> dict:
    from . import __version__
    return {"glasscuda": __version__, "numpy": np.__version__}


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


def _check_members(path: Path) -> None:
    """Refuse an archive whose arrays claim more bytes than the file holds, before any is read.

    A ``.npy`` member's own header gives its shape; NumPy allocates that much
    before reading, so a damaged or hand-edited shape is checked against the
    member's stored size first.
    """
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                continue
            with archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, _, dtype = read_header(member)
                header_bytes = member.tell()
            if dtype.hasobject:
                raise CheckpointError(f"{path}: array {info.filename[:-4]!r} holds Python objects "
                                      "(pickled data), which a glasscuda checkpoint never contains")
            claimed = math.prod(shape) * dtype.itemsize
            if claimed != info.file_size - header_bytes:
                raise CheckpointError(f"{path}: array {info.filename[:-4]!r} claims shape {shape} "
                                      f"({claimed} bytes) but holds {info.file_size - header_bytes} bytes; "
                                      "the file is damaged")


def _read_archive(path: Path):
    """(header dict, model arrays, optimizer arrays) of ``path``, or a CheckpointError saying what is wrong."""
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes), not a glasscuda checkpoint")
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            start = f.read(4)
        damaged = start.startswith(b"PK")
        raise CheckpointError(f"{path} is " + ("a truncated or damaged .npz archive" if damaged else
                              "not a glasscuda checkpoint (not a NumPy .npz archive)")
                              + "; point --checkpoint at a best.npz or last.npz written by glasscuda.train")
    try:
        _check_members(path)
        with np.load(path, allow_pickle=False) as archive:
            if "header" not in archive.files:
                raise CheckpointError(f"{path} is a .npz archive without a glasscuda header, "
                                      "not a glasscuda checkpoint")
            raw = archive["header"]
            if raw.dtype.kind != "U" or raw.ndim != 0:
                raise CheckpointError(f"{path}: the header is not a JSON string")
            header = json.loads(str(raw))
            model_state = {k[len("model/"):]: archive[k] for k in archive.files if k.startswith("model/")}
            optim_state = {k[len("optim/"):]: archive[k] for k in archive.files if k.startswith("optim/")}
    except CheckpointError:
        raise
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path}: the header is not valid JSON ({error})") from None
    except Exception as error:  # zipfile, zlib and NumPy raise many types for a damaged archive
        raise CheckpointError(f"{path} is a truncated or damaged checkpoint "
                              f"({type(error).__name__}); write it again") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: the header is a JSON {type(header).__name__}, not an object")
    return header, model_state, optim_state


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_model_config(path, config) -> None:
    """Check a header's ``model`` block before anything is built from it."""
    from .models import ARCHITECTURES

    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: the header has no 'model' object")
    name = config.get("architecture")
    if name not in ARCHITECTURES:
        raise CheckpointError(f"{path}: unknown architecture {name!r} (known: {', '.join(ARCHITECTURES)})")
    architecture = ARCHITECTURES[name]
    parameters = {key: p.default for key, p in inspect.signature(architecture).parameters.items() if key != "seed"}
    optional = set(getattr(architecture, "optional_config", ()))
    required = set(parameters) - optional
    given = set(config) - {"architecture"}
    if not required <= given <= set(parameters):
        parts = [f"missing {', '.join(sorted(required - given))}" if required - given else "",
                 f"unexpected {', '.join(sorted(given - set(parameters)))}" if given - set(parameters) else ""]
        may = f" (and may hold {', '.join(sorted(optional))})" if optional else ""
        raise CheckpointError(f"{path}: the {name} model block must hold {', '.join(sorted(required))}{may}; "
                              + "; ".join(p for p in parts if p))
    for key in sorted(given):
        kind = type(parameters[key]) if key in optional else int
        if not isinstance(value := config[key], kind) or (kind is int and isinstance(value, bool)):
            what = "an integer" if kind is int else f"a {kind.__name__}"
            raise CheckpointError(f"{path}: model {key} must be {what}, got {value!r}")
    if config["in_channels"] not in (1, 3):
        raise CheckpointError(f"{path}: model in_channels must be 1 or 3, got {config['in_channels']}")
    if not 1 <= config.get("n_classes", 1) <= MAX_CLASSES:
        raise CheckpointError(f"{path}: model n_classes must lie in [1, {MAX_CLASSES}], got {config['n_classes']}")
    if not 1 <= config.get("width", 1) <= MAX_WIDTH:
        raise CheckpointError(f"{path}: model width must lie in [1, {MAX_WIDTH}], got {config['width']}")
    if config.get("head", parameters.get("head", "dense")) not in getattr(architecture, "heads", ("dense",)):
        raise CheckpointError(f"{path}: model head must be one of {', '.join(architecture.heads)}, "
                              f"got {config['head']!r}")
    size = config["image_size"]
    if not 1 <= size <= MAX_IMAGE_SIZE:
        raise CheckpointError(f"{path}: model image_size {size} is outside [1, {MAX_IMAGE_SIZE}]")


def check_header(path, header: dict, model_state: dict) -> None:
    """One clear error for a header or array set that glasscuda did not write."""
    if header.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format {header.get('format_version')!r}; "
                              f"this glasscuda reads format {FORMAT_VERSION}")
    check_model_config(path, header.get("model"))
    for key in ("threshold", "temperature"):
        value = header.get(key)
        if value is not None and not _is_number(value):
            raise CheckpointError(f"{path}: header {key} must be a number or null, got {value!r}")
    if header.get("threshold") is not None and not 0 <= header["threshold"] <= 1:
        raise CheckpointError(f"{path}: header threshold {header['threshold']} is outside [0, 1]")
    if header.get("temperature") is not None and header["temperature"] <= 0:
        raise CheckpointError(f"{path}: header temperature must be > 0, got {header['temperature']}")
    if "tta" in header and not isinstance(header["tta"], bool):
        raise CheckpointError(f"{path}: header tta must be true or false, got {header['tta']!r}")
    thresholds = header.get("thresholds")
    if thresholds is not None and (not isinstance(thresholds, list)
                                   or not all(_is_number(t) and 0 <= t <= 1 for t in thresholds)):
        raise CheckpointError(f"{path}: header thresholds must be a list of numbers in [0, 1], got {thresholds!r}")
    names = header.get("class_names")
    if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) for n in names)):
        raise CheckpointError(f"{path}: header class_names must be a list of strings, got {names!r}")
    norm = header.get("normalization")
    if norm is not None:
        values = [norm.get(k) for k in ("mean", "std")] if isinstance(norm, dict) else [None, None]
        values = [v if isinstance(v, list) else [v] for v in values]
        if (not all(v and all(_is_number(x) for x in v) for v in values) or len(values[0]) != len(values[1])
                or min(values[1]) <= 0 or len(values[0]) not in (1, header["model"]["in_channels"])):
            raise CheckpointError(f"{path}: header normalization must hold a finite mean and a std > 0, "
                                  f"got {norm!r}")
    for name, array in model_state.items():
        if name.endswith(".num_batches_tracked"):   # batch norm's integer counter
            if array.dtype != np.int64 or array.shape != () or int(array) < 0:
                raise CheckpointError(f"{path}: {name!r} must be a non-negative int64 count, got "
                                      f"{array.dtype} {array.shape}")
            continue
        if array.dtype.kind != "f":
            raise CheckpointError(f"{path}: weight {name!r} has dtype {array.dtype}, not floating point")
        if not np.isfinite(array).all():
            bad = int(array.size - np.count_nonzero(np.isfinite(array)))
            raise CheckpointError(f"{path}: weight {name!r} holds {bad} NaN or infinite value(s); "
                                  "the run that wrote it diverged — use an earlier checkpoint")


def load_checkpoint(path) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` (never unpickles anything).

    Every problem, from a truncated file to a hand-edited header or NaN
    weights, is a :class:`CheckpointError` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist" if not path.exists()
                              else f"checkpoint {path} is not a file")
    header, model_state, optim_state = _read_archive(path)
    check_header(path, header, model_state)
    optimizer = header.get("optimizer", {})
    if not isinstance(optimizer, dict):
        raise CheckpointError(f"{path}: header optimizer must be an object, got {optimizer!r}")
    optim_state.update(optimizer)
    return Checkpoint(header, model_state, optim_state)


def load_model(path, device="auto"):
    """Rebuild the network stored at ``path`` on ``device``; returns (model, header)."""
    from .models import build_model

    checkpoint = load_checkpoint(path)
    if checkpoint.header.get("normalization") is None:
        raise CheckpointError(f"{path}: the header has no input normalization (mean and std), "
                              "which every glasscuda checkpoint stores")
    try:
        model = build_model(checkpoint.header["model"])
    except ValueError as error:
        raise CheckpointError(f"{path}: {error}") from None
    try:
        model.load_state_dict(checkpoint.model_state)
    except (KeyError, ValueError) as error:
        raise CheckpointError(f"{path}: {str(error).strip(chr(34) + chr(39))}") from None
    return model.to(device).eval(), checkpoint.header


def default_tta(header: dict, task: str) -> bool:
    """Whether predictions average over flips by default: as the checkpoint was validated (its 'tta');
    a checkpoint without that record: on for multilabel, the only task that validated with it then."""
    return bool(header.get("tta", task == "multilabel"))
