"""The GPU path without a GPU: the kernels' device code run on the host over an emulated grid.

:func:`build_emulated_library` compiles every ``kernels/*.cu`` with the
device expansion of ``portable.cuh`` (``__global__`` functions, grid-stride
loops over ``blockIdx``/``threadIdx``) for the host, the CUDA built-ins
supplied by ``kernels/emulated_grid.cuh``. :class:`EmulatedGridLauncher` is the
GPU launcher with one change: a compiled kernel is run by calling it for every
(block, thread) of the grid in turn, forward or in reverse. Argument checking,
typing and grid sizing are the GPU launcher's own code; the grid is made
deliberately small (by default 3 blocks of 32 threads) so that every
grid-stride loop wraps several times.

>>> from glasscuda.backend.emulated import emulated_backend
>>> be = emulated_backend(reverse=True)           # doctest: +SKIP
>>> be.launch("relu_forward", x=x, y=y, n=x.size)  # doctest: +SKIP
"""
from __future__ import annotations

import ctypes
import hashlib
import os
from pathlib import Path

import numpy as np

from .. import _build
from . import Backend
from .cpu import REAL_CTYPE
from .gpu import REAL_NUMPY, GpuLauncher, default_cache_dir
from .sources import kernel_dir
from .table import Kernel

SHIM = "emulated_grid.cuh"


class Dim3(ctypes.Structure):
    _fields_ = [("x", ctypes.c_uint), ("y", ctypes.c_uint), ("z", ctypes.c_uint)]


def _flags(directory: Path) -> tuple[str, ...]:
    return ("-DGC_EMULATED_GRID", "-include", str(directory / SHIM))


def build_emulated_library(directory: str | os.PathLike | None = None, *,
                           cache_dir: str | os.PathLike | None = None) -> Path:
    """The host build of the kernels' device expansion, compiled once per source text and cached."""
    directory = Path(directory or kernel_dir())
    files = sorted(directory.glob("*.cu")) + [directory / "portable.cuh", directory / SHIM]
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update(" ".join(_build.BASE_FLAGS).encode())
    cache = Path(cache_dir) if cache_dir else default_cache_dir().parent / "emulated"
    output = cache / f"kernels-emulated-{digest.hexdigest()[:24]}.so"
    if not output.is_file():
        _build.build_kernel_library(directory, output, extra_flags=_flags(directory), openmp=False)
    return output


class EmulatedKernel:
    """One kernel of the emulated library, called as CuPy calls a kernel: ``(grid, block, args)``."""

    def __init__(self, library, kernel: Kernel, suffix: str, reverse: bool):
        self.kernel, self.suffix, self.reverse = kernel, suffix, reverse
        self.symbol = f"{kernel.name}_{suffix}"
        self.function = getattr(library, self.symbol)
        self.function.restype = None
        self.function.argtypes = ([ctypes.c_void_p] * len(kernel.arrays)
                                  + [ctypes.c_longlong] * len(kernel.ints)
                                  + [REAL_CTYPE[suffix]] * len(kernel.reals))
        self.built_in = {name: Dim3.in_dll(library, f"gc_emulated_{name}")
                         for name in ("blockIdx", "threadIdx", "blockDim", "gridDim")}

    def _check_types(self, args: tuple) -> list:
        """The C arguments, after checking that each has the exact type the device would be given."""
        kernel, real = self.kernel, REAL_NUMPY[self.suffix]
        expected = ([np.ndarray] * len(kernel.arrays) + [np.int64] * len(kernel.ints)
                    + [real] * len(kernel.reals))
        if len(args) != len(expected):
            raise TypeError(f"{self.symbol}: {len(args)} arguments, the kernel takes {len(expected)}")
        for name, value, kind in zip(kernel.params, args, expected):
            if type(value) is not kind:
                raise TypeError(f"{self.symbol}: argument '{name}' is {type(value).__name__}, "
                                f"the kernel takes {kind.__name__}")
        n_arrays = len(kernel.arrays)
        return [a.ctypes.data for a in args[:n_arrays]] + list(args[n_arrays:])

    def __call__(self, grid: tuple, block: tuple, args: tuple) -> None:
        values = self._check_types(args)
        (blocks,), (threads,) = grid, block
        self.built_in["gridDim"].x, self.built_in["blockDim"].x = blocks, threads
        block_index, thread_index = self.built_in["blockIdx"], self.built_in["threadIdx"]
        order = (lambda r: reversed(r)) if self.reverse else (lambda r: r)
        for b in order(range(blocks)):
            block_index.x = b
            for t in order(range(threads)):
                thread_index.x = t
                self.function(*values)


class EmulatedGridLauncher(GpuLauncher):
    """The GPU launcher running the kernels' device code on the host (NumPy arrays stand for device memory)."""

    name = "emulated"

    def __init__(self, *, threads_per_block: int = 32, max_blocks: int = 3, reverse: bool = False,
                 library: str | os.PathLike | None = None):
        self.threads_per_block, self.max_blocks, self.reverse = threads_per_block, max_blocks, reverse
        self.array_type = np.ndarray
        self.path = Path(library) if library else build_emulated_library()
        self.library = ctypes.CDLL(str(self.path))
        self._functions = {}

    def shares_memory(self, a, b) -> bool:
        return bool(np.may_share_memory(a, b))

    def function(self, kernel: Kernel, suffix: str):
        key = (kernel.name, suffix)
        if key not in self._functions:
            self._functions[key] = EmulatedKernel(self.library, kernel, suffix, self.reverse)
        return self._functions[key]

    def synchronize(self) -> None:
        pass


def emulated_backend(**options) -> Backend:
    """A :class:`~glasscuda.backend.Backend` (NumPy arrays) whose launcher is an :class:`EmulatedGridLauncher`."""
    return Backend(EmulatedGridLauncher(**options), np)
