"""Argument checking shared by both launchers.

Every launch goes through :func:`prepare`: it checks each argument against the
kernel's row in :data:`~glasscuda.backend.table.KERNELS` and returns the
arguments in the kernel's order, with the precision suffix to call. A bad call
raises ``ValueError`` naming the kernel and the argument; nothing reaches the
kernel unchecked.

Everything but the overlap of arrays depends only on the launch's signature
(the kernel, each array's type, dtype, size and flags, each scalar's type and
value), and a training step makes the same launches every time: a signature
that passed once is remembered, and only the overlaps are checked again.
"""
from __future__ import annotations

import numbers
from functools import lru_cache

import numpy as np

from .table import INT64, KERNELS, Kernel

INT64_MAX = np.iinfo(np.int64).max
SUFFIX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}


@lru_cache(maxsize=None)
def _compiled(expression: str):
    return compile(expression, f"<{expression}>", "eval")


def _evaluate(expression: str, values: dict):
    return eval(_compiled(expression), {"__builtins__": {}}, values)


def prepare(kernel_name: str, args: dict, array_type: type, shares_memory) -> tuple[Kernel, str, list]:
    """Check ``args`` for ``kernel_name``; return (kernel, "f32"/"f64", ordered values).

    ``array_type`` is the backend's array class; ``shares_memory(a, b)`` tells
    whether two arrays may overlap.
    """
    try:
        kernel = KERNELS[kernel_name]
    except KeyError:
        raise ValueError(f"unknown kernel {kernel_name!r}; known: {', '.join(sorted(KERNELS))}") from None
    key = _signature(kernel, args, array_type)
    suffix = _VALIDATED.get(key) if key is not None else None
    if suffix is None:
        suffix = _validate(kernel, args, array_type)
        if key is not None:
            if len(_VALIDATED) >= MAX_SIGNATURES:
                _VALIDATED.clear()
            _VALIDATED[key] = suffix
    _check_overlaps(kernel, args, shares_memory)
    ordered = [args[a.name] for a in kernel.arrays] + [int(args[n]) for n in kernel.ints] \
        + [float(args[n]) for n in kernel.reals]
    return kernel, suffix, ordered


MAX_SIGNATURES = 4096
_VALIDATED: dict = {}


def _signature(kernel: Kernel, args: dict, array_type: type):
    """What :func:`_validate` depends on; None when an argument is missing or extra."""
    if len(args) != len(kernel.params):
        return None
    try:
        arrays = tuple((type(a), a.dtype, a.size, a.flags.c_contiguous, getattr(a.flags, "writeable", True))
                       for a in (args[spec.name] for spec in kernel.arrays))
        scalars = tuple((type(v), v) for v in (args[n] for n in kernel.ints + kernel.reals))
        key = (kernel.name, array_type, arrays, scalars)
        hash(key)
    except (KeyError, AttributeError, TypeError):
        return None
    return key


def _validate(kernel: Kernel, args: dict, array_type: type) -> str:
    """Every check but the overlaps; the precision suffix."""
    kernel_name = kernel.name

    def fail(message):
        raise ValueError(f"{kernel_name}: {message}")

    missing = [p for p in kernel.params if p not in args]
    extra = [p for p in args if p not in kernel.params]
    if missing or extra:
        fail(("missing argument(s) " + ", ".join(missing) if missing else "")
             + ("; " if missing and extra else "")
             + ("unexpected argument(s) " + ", ".join(extra) if extra else "")
             + f" (takes {', '.join(kernel.params)})")

    ints = {}
    for name in kernel.ints:
        value = args[name]
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
            fail(f"argument '{name}' must be an integer, got {type(value).__name__}")
        value = int(value)
        if not 0 <= value <= INT64_MAX:
            fail(f"argument '{name}' = {value} is out of range (0 .. 2**63-1)")
        if name in kernel.positive and value < 1:
            fail(f"argument '{name}' must be >= 1, got {value}")
        ints[name] = value

    reals = {}
    for name in kernel.reals:
        value = args[name]
        if not isinstance(value, numbers.Real) or isinstance(value, (bool, np.bool_)):
            fail(f"argument '{name}' must be a real number, got {type(value).__name__}")
        value = float(value)
        if not np.isfinite(value):
            fail(f"argument '{name}' must be finite, got {value}")
        reals[name] = value

    for condition in kernel.checks:
        if not _evaluate(condition, {**ints, **reals}):
            shown = ", ".join(f"{k}={v}" for k, v in {**ints, **reals}.items() if k in condition)
            fail(f"arguments do not satisfy {condition} ({shown})")

    precision = None
    arrays = {}
    for spec in kernel.arrays:
        value = args[spec.name]
        if not isinstance(value, array_type):
            fail(f"argument '{spec.name}' must be a {array_type.__module__}.{array_type.__name__} "
                 f"on this backend, got {type(value).__module__}.{type(value).__name__}")
        if spec.dtype == INT64:
            if value.dtype != np.int64:
                fail(f"argument '{spec.name}' must be int64, got {value.dtype}")
        else:
            if value.dtype not in SUFFIX:
                fail(f"argument '{spec.name}' must be float32 or float64, got {value.dtype}")
            if precision is None:
                precision = value.dtype
            elif value.dtype != precision:
                fail(f"argument '{spec.name}' is {value.dtype} but earlier arrays are {precision}; "
                     "all real arrays of one launch share one precision")
        if not value.flags.c_contiguous:
            fail(f"argument '{spec.name}' must be C-contiguous (use ascontiguousarray)")
        # NumPy arrays can be read-only views; CuPy arrays have no such flag.
        if spec.output and not getattr(value.flags, "writeable", True):
            fail(f"argument '{spec.name}' is an output but the array is read-only")
        expected = _evaluate(spec.size, ints)
        if value.size != expected:
            fail(f"argument '{spec.name}' has {value.size} elements, expected {spec.size} = {expected} "
                 f"(shape {tuple(value.shape)})")
        arrays[spec.name] = value

    if precision is None:
        raise ValueError(f"{kernel_name}: has no real array to take its precision from")
    return SUFFIX[precision]


def _check_overlaps(kernel: Kernel, args: dict, shares_memory) -> None:
    allowed = set(kernel.may_alias) | {(b, a) for a, b in kernel.may_alias}
    for out in (a for a in kernel.arrays if a.output):
        for other in kernel.arrays:
            if other.name == out.name or (other.output and other.name < out.name):
                continue  # each output pair is checked once
            a, b = args[out.name], args[other.name]
            if not (a.size and b.size and shares_memory(a, b)):
                continue
            if (other.name, out.name) in allowed and address(a) == address(b):
                continue  # exactly in place, which this kernel allows
            raise ValueError(f"{kernel.name}: output '{out.name}' overlaps argument '{other.name}'; "
                             "pass separate arrays"
                             + (" (or the very same array)" if (other.name, out.name) in allowed else ""))


def address(array) -> int:
    """The first element's address (NumPy and CuPy arrays)."""
    return array.data.ptr if hasattr(array.data, "ptr") else array.ctypes.data


def thread_count(kernel: Kernel, args: dict) -> int:
    """Logical threads of one launch: one per output element."""
    return _threads(kernel.threads, tuple((n, int(args[n])) for n in kernel.ints))


@lru_cache(maxsize=MAX_SIGNATURES)
def _threads(expression: str, ints: tuple) -> int:
    return int(_evaluate(expression, dict(ints)))
