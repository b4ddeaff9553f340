"""Read CIFAR-10 from the "CIFAR-10 python version" batch files in a local folder.

The official archive ``cifar-10-python.tar.gz`` extracts to a folder
``cifar-10-batches-py/`` holding ``data_batch_1`` ... ``data_batch_5`` (the
50 000 training images), ``test_batch`` (10 000 test images) and
``batches.meta`` (the class names). Each batch file is a pickle of a dict:

* ``b"data"``   — uint8 array [N, 3072]; each row is one 32x32 image stored
  as three planes, red then green then blue, each plane row-major;
* ``b"labels"`` — N class indices in 0..9.

These files are pickles because that is the official format. They are read
only from the folder the user names, with an unpickler that can build nothing
but plain containers and NumPy arrays (no other class or function is looked
up, so a tampered file cannot run code), and every field is checked after
loading: a problem is a :class:`DatasetError` naming the file.

glasscuda never downloads anything; when the files are absent the error says
where to get them and where to put them.
"""
from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .dataset import DatasetError

__all__ = [
    "CLASS_NAMES",
    "FOLDER_NAME",
    "HOW_TO_GET",
    "TEST_BATCH",
    "TRAIN_BATCHES",
    "Cifar10",
    "find_batches_folder",
    "load_cifar10",
    "not_found_message",
    "read_batch",
    "read_label_names",
]

FOLDER_NAME = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
META_FILE = "batches.meta"
CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer",
               "dog", "frog", "horse", "ship", "truck")
SIDE = 32
CHANNELS = 3
ROW_LENGTH = CHANNELS * SIDE * SIDE

# The only globals a batch file may name: NumPy's array and dtype
# reconstructors (under their NumPy 1 and NumPy 2 module paths) and the codec
# Python 3 uses for byte strings in protocol-2 pickles.
_ALLOWED_GLOBALS = frozenset({
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
})


HOW_TO_GET = ("download 'CIFAR-10 python version' (cifar-10-python.tar.gz) from "
              "https://www.cs.toronto.edu/~kriz/cifar.html yourself, extract it, and pass --data "
              f"pointing at the {FOLDER_NAME} folder (or the folder that contains it); "
              "glasscuda never downloads data")


def not_found_message(where) -> str:
    """The error for a folder ``where`` without CIFAR-10: what to download and where to put it."""
    return f"CIFAR-10 not found in {where}: {HOW_TO_GET}"


@dataclass
class Cifar10:
    """The CIFAR-10 training and test sets.

    Attributes
    ----------
    train_images, test_images : np.ndarray
        float32 [N, 3, 32, 32] in [0, 1], channels in RGB order.
    train_labels, test_labels : np.ndarray
        int64 [N], class indices into ``class_names``.
    class_names : tuple of str
        The ten class names (from ``batches.meta`` when present).
    folder : Path
        The ``cifar-10-batches-py`` folder the batches were read from.
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: tuple
    folder: Path


class _BatchUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals in ``_ALLOWED_GLOBALS``."""

    def find_class(self, module, name):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a CIFAR-10 batch "
                                         "holds only a dict of a NumPy array and a list")
        return super().find_class(module, name)


def _unpickle(path: Path):
    """The object pickled in ``path``, byte strings kept as bytes (the batches are Python 2 pickles)."""
    try:
        payload = path.read_bytes()
    except OSError as error:
        raise DatasetError(f"{path}: cannot read CIFAR-10 batch ({error})") from error
    try:
        return _BatchUnpickler(io.BytesIO(payload), encoding="bytes").load()
    except Exception as error:  # any failure to unpickle means the file is not a batch
        raise DatasetError(f"{path}: not a CIFAR-10 python batch file "
                           f"({type(error).__name__}: {error})") from error


def find_batches_folder(root) -> Path:
    """The folder holding the batch files: ``root`` itself or ``root/cifar-10-batches-py``.

    Parameters
    ----------
    root : str or PathLike
        What the user passed as ``--data``.

    Returns
    -------
    Path

    Raises
    ------
    DatasetError
        When neither folder holds a batch file; the message says what to
        download and where to put it.
    """
    root = Path(root)
    for folder in (root, root / FOLDER_NAME):
        if any((folder / name).is_file() for name in (*TRAIN_BATCHES, TEST_BATCH)):
            return folder
    raise DatasetError(not_found_message(root))


def read_batch(path) -> tuple[np.ndarray, np.ndarray]:
    """Read and check one batch file.

    Parameters
    ----------
    path : str or PathLike
        A ``data_batch_*`` or ``test_batch`` file.

    Returns
    -------
    images : np.ndarray
        uint8 [N, 3, 32, 32]: ``images[n, c, h, w] = data[n, c * 1024 + h * 32 + w]``.
    labels : np.ndarray
        int64 [N] in 0..9.

    Raises
    ------
    DatasetError
        Naming ``path`` when the file is not a dict with a uint8 [N, 3072]
        ``b"data"`` array and N integer ``b"labels"`` in 0..9.
    """
    path = Path(path)
    batch = _unpickle(path)
    if not isinstance(batch, dict):
        raise DatasetError(f"{path}: expected a pickled dict with keys b'data' and b'labels', "
                           f"got {type(batch).__name__}")
    missing = [repr(key) for key in (b"data", b"labels") if key not in batch]
    if missing:
        raise DatasetError(f"{path}: the batch dict has no {' or '.join(missing)} "
                           f"(keys: {sorted(map(repr, batch))})")
    data, labels = batch[b"data"], _labels_array(path, batch[b"labels"])
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
        kind = f"{data.dtype} array" if isinstance(data, np.ndarray) else type(data).__name__
        raise DatasetError(f"{path}: b'data' must be a uint8 array, got {kind}")
    if data.ndim != 2 or data.shape[1] != ROW_LENGTH:
        raise DatasetError(f"{path}: b'data' must have shape [N, {ROW_LENGTH}] "
                           f"(3 x 32 x 32 per row), got {list(data.shape)}")
    if len(data) == 0:
        raise DatasetError(f"{path}: the batch holds no image")
    if len(labels) != len(data):
        raise DatasetError(f"{path}: {len(data)} images but {len(labels)} labels")
    images = np.ascontiguousarray(data).reshape(len(data), CHANNELS, SIDE, SIDE)
    return images, labels


def _labels_array(path: Path, labels) -> np.ndarray:
    """``labels`` (a list or 1-D integer array of values in 0..9) as int64, or a DatasetError."""
    if isinstance(labels, np.ndarray):
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise DatasetError(f"{path}: b'labels' must be a list of integers, got a "
                               f"{labels.dtype} array of shape {list(labels.shape)}")
    elif not isinstance(labels, (list, tuple)):
        raise DatasetError(f"{path}: b'labels' must be a list of integers, got {type(labels).__name__}")
    elif not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in labels):
        raise DatasetError(f"{path}: b'labels' must hold only integers")
    array = np.asarray(labels, dtype=np.int64)
    bad = np.flatnonzero((array < 0) | (array >= len(CLASS_NAMES)))
    if bad.size:
        raise DatasetError(f"{path}: label {int(array[bad[0]])} at position {int(bad[0])} is "
                           f"outside 0..{len(CLASS_NAMES) - 1}")
    return array


def read_label_names(folder) -> tuple:
    """The class names from ``folder/batches.meta``, or :data:`CLASS_NAMES` when it is absent.

    Raises
    ------
    DatasetError
        When the file exists but holds no list of ten names.
    """
    path = Path(folder) / META_FILE
    if not path.is_file():
        return CLASS_NAMES
    meta = _unpickle(path)
    names = meta.get(b"label_names") if isinstance(meta, dict) else None
    if (not isinstance(names, list) or len(names) != len(CLASS_NAMES)
            or not all(isinstance(n, (bytes, str)) for n in names)):
        raise DatasetError(f"{path}: expected a dict whose b'label_names' is a list of "
                           f"{len(CLASS_NAMES)} names")
    return tuple(n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in names)


def _read_batches(folder: Path, names) -> tuple[np.ndarray, np.ndarray]:
    """The batches ``names`` of ``folder``, concatenated, images as float32 in [0, 1]."""
    absent = [name for name in names if not (folder / name).is_file()]
    if absent:
        raise DatasetError(f"{folder} has no {', '.join(absent)}: a complete {FOLDER_NAME} folder "
                           f"holds {', '.join(TRAIN_BATCHES)} and {TEST_BATCH}; "
                           "extract cifar-10-python.tar.gz again")
    parts = [read_batch(folder / name) for name in names]
    raw = np.concatenate([images for images, _ in parts])
    labels = np.concatenate([labels for _, labels in parts])
    images = raw.astype(np.float32)
    images /= np.float32(255)
    return images, labels


def load_cifar10(root) -> Cifar10:
    """Load the five training batches and the test batch found under ``root``.

    Parameters
    ----------
    root : str or PathLike
        The ``cifar-10-batches-py`` folder or the folder that contains it.

    Returns
    -------
    Cifar10

    Raises
    ------
    DatasetError
        When the folder or a batch file is missing (saying what to put where)
        or a file is malformed (naming it).
    """
    folder = find_batches_folder(root)
    train_images, train_labels = _read_batches(folder, TRAIN_BATCHES)
    test_images, test_labels = _read_batches(folder, (TEST_BATCH,))
    return Cifar10(train_images, train_labels, test_images, test_labels,
                   read_label_names(folder), folder)
