"""The GPU launcher: kernels/*.cu compiled at run time by NVRTC through CuPy.

Each kernel file is compiled once per process and precision into a
``cupy.RawModule`` and cached; a launch takes one grid-stride kernel with one
logical thread per output element. Compile and launch errors are re-raised
with the kernel's name.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from . import launch
from .sources import kernel_dir

THREADS_PER_BLOCK = 256
MAX_BLOCKS = 65535 * 8
REAL_NUMPY = {"f32": np.float32, "f64": np.float64}


def import_cupy():
    """Import CuPy and check that a CUDA device answers; RuntimeError otherwise."""
    try:
        import cupy
    except Exception as error:  # ImportError, or a broken CUDA installation
        raise RuntimeError(f"the GPU backend needs CuPy ({error}); install it with "
                           "`pip install -e \".[gpu]\"` (cupy-cuda12x) on a machine with CUDA") from error
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as error:
        raise RuntimeError(f"CuPy is installed but no CUDA device answers ({error})") from error
    if count < 1:
        raise RuntimeError("CuPy is installed but no CUDA device answers (0 devices)")
    return cupy


class GpuLauncher:
    """Launches ``<kernel>_f32`` / ``<kernel>_f64`` from NVRTC-compiled modules."""

    name = "gpu"

    def __init__(self):
        self.cupy = import_cupy()
        self.array_type = self.cupy.ndarray
        self._kernels = {}

    @lru_cache(maxsize=None)
    def module(self, source: str, suffix: str):
        real = "float" if suffix == "f32" else "double"
        code = (Path(kernel_dir()) / source).read_text()
        options = ("-std=c++14", f"-Dreal={real}", f"-DPRECISION={suffix}",
                   f"-I{kernel_dir()}")
        try:
            module = self.cupy.RawModule(code=code, options=options)
            module.compile()
        except Exception as error:
            raise RuntimeError(f"NVRTC could not compile kernels/{source} ({real}): {error}") from error
        return module

    def function(self, kernel, suffix: str):
        key = (kernel.name, suffix)
        if key not in self._kernels:
            try:
                self._kernels[key] = self.module(kernel.source, suffix).get_function(
                    f"{kernel.name}_{suffix}")
            except RuntimeError:
                raise
            except Exception as error:
                raise RuntimeError(f"{kernel.name}_{suffix}: not found in kernels/{kernel.source}: "
                                   f"{error}") from error
        return self._kernels[key]

    def __call__(self, kernel_name: str, **args) -> None:
        kernel, suffix, values = launch.prepare(kernel_name, args, self.cupy.ndarray,
                                                self.cupy.may_share_memory)
        threads = launch.thread_count(kernel, args)
        if threads == 0:
            return
        n_arrays, n_ints = len(kernel.arrays), len(kernel.ints)
        real = REAL_NUMPY[suffix]
        typed = (values[:n_arrays]
                 + [np.int64(v) for v in values[n_arrays:n_arrays + n_ints]]
                 + [real(v) for v in values[n_arrays + n_ints:]])
        blocks = min((threads + THREADS_PER_BLOCK - 1) // THREADS_PER_BLOCK, MAX_BLOCKS)
        try:
            self.function(kernel, suffix)((blocks,), (THREADS_PER_BLOCK,), tuple(typed))
        except Exception as error:
            raise RuntimeError(f"launching {kernel.name}_{suffix} failed: {error}") from error

    def synchronize(self) -> None:
        self.cupy.cuda.get_current_stream().synchronize()
