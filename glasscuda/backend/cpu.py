"""The CPU launcher: kernels/*.cu compiled by the host C++ compiler, called through ctypes.

The library is built at install time (``pip install -e .`` runs
``glasscuda/_build.py``). ``GLASSCUDA_KERNEL_LIB`` points at another build of
it, such as the sanitizer build the tests make.
"""
from __future__ import annotations

import ctypes
import importlib.util
import os
from pathlib import Path

import numpy as np

from . import launch
from .table import KERNELS

REAL_CTYPE = {"f32": ctypes.c_float, "f64": ctypes.c_double}


def library_path() -> Path:
    """Where the compiled CPU kernel library is."""
    override = os.environ.get("GLASSCUDA_KERNEL_LIB")
    if override:
        return Path(override)
    spec = importlib.util.find_spec("glasscuda._kernels")
    if spec is None or spec.origin is None:
        raise RuntimeError(
            "glasscuda's CPU kernel library is not built. From the source folder run "
            "`pip install -e .` (it compiles kernels/*.cu with your C++ compiler).")
    return Path(spec.origin)


def keep_freed_memory() -> None:
    """Ask glibc to reuse freed large blocks instead of returning them to the OS.

    A training step allocates the same large arrays (columns, activations,
    gradients) every time. By default glibc hands each block over 32 MiB back
    to the kernel when freed, so the next step page-faults it in again, zeroed,
    a large share of a single-threaded step. Raising the mmap and
    trim thresholds keeps those pages in the process. No-op off glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    libc.mallopt(M_MMAP_THRESHOLD, 1 << 30)
    libc.mallopt(M_TRIM_THRESHOLD, (1 << 31) - 1)


class CpuLauncher:
    """Calls ``<kernel>_f32`` / ``<kernel>_f64`` in the host library."""

    name = "cpu"
    array_type = np.ndarray

    def __init__(self, path: str | os.PathLike | None = None):
        # OpenMP workers that spin after a kernel steal the cores from the BLAS
        # threads of the GEMM that follows; let them sleep instead. Read by
        # libgomp when the library loads, and only where the user chose nothing.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        keep_freed_memory()
        self.path = Path(path) if path else library_path()
        if not self.path.exists():
            raise RuntimeError(f"glasscuda's CPU kernel library {self.path} does not exist; "
                               "rebuild it with `pip install -e .`")
        self.library = ctypes.CDLL(str(self.path))
        self._functions = {}

    def function(self, kernel_name: str, suffix: str):
        key = (kernel_name, suffix)
        if key not in self._functions:
            kernel = KERNELS[kernel_name]
            fn = getattr(self.library, f"{kernel_name}_{suffix}")
            fn.restype = None
            fn.argtypes = ([ctypes.c_void_p] * len(kernel.arrays)
                           + [ctypes.c_longlong] * len(kernel.ints)
                           + [REAL_CTYPE[suffix]] * len(kernel.reals))
            self._functions[key] = fn
        return self._functions[key]

    def __call__(self, kernel_name: str, **args) -> None:
        kernel, suffix, values = launch.prepare(kernel_name, args, np.ndarray, np.may_share_memory)
        n_arrays = len(kernel.arrays)
        pointers = [a.ctypes.data for a in values[:n_arrays]]
        self.function(kernel_name, suffix)(*pointers, *values[n_arrays:])

    def synchronize(self) -> None:
        pass
