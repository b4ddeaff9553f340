"""The GPU launcher: kernels/*.cu compiled at run time by NVRTC through CuPy.

Each kernel file is compiled once per precision into a cubin for the device's
architecture and cached, in the process and on disk. What NVRTC compiles is
the file's text with ``portable.cuh`` inlined (:func:`kernel_code`), so the
cache key, a hash of that text and the options, changes whenever the header
does. A launch takes one grid-stride kernel with one logical thread per output
element. Compile, load and launch errors are re-raised with the kernel's name.

The same launcher drives the dry runs of the tests (CuPy arrays on fake device
memory, an explicit ``arch``, no device) and the emulated grid
(:mod:`glasscuda.backend.emulated`), which replaces only how a compiled kernel
is run.
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..reports import write_bytes_atomic
from . import launch
from .sources import kernel_dir
from .table import Kernel

THREADS_PER_BLOCK = 256
MAX_BLOCKS = 65535 * 8
REAL_NUMPY = {"f32": np.float32, "f64": np.float64}
REAL_C = {"f32": "float", "f64": "double"}
INSTALL_HINT = 'pip install -e ".[gpu]"'
_INCLUDE = re.compile(r'^#include "portable\.cuh"[ \t]*$', re.MULTILINE)


def import_cupy(*, require_device: bool = True):
    """Import CuPy (and, by default, check that a CUDA device answers); RuntimeError saying what is missing."""
    try:
        import cupy
    except Exception as error:  # ImportError, or a broken CUDA installation
        raise RuntimeError(f"the GPU backend needs CuPy, which does not import ({error}); "
                           f"install it with `{INSTALL_HINT}` on a machine with an NVIDIA driver") from error
    if require_device:
        try:
            count = cupy.cuda.runtime.getDeviceCount()
        except Exception as error:
            raise RuntimeError(f"CuPy is installed but no CUDA device answers ({error}); "
                               "check the NVIDIA driver (`nvidia-smi`)") from error
        if count < 1:
            raise RuntimeError("CuPy is installed but no CUDA device answers (0 devices)")
    return cupy


def nvrtc_module():
    """CuPy's binding of NVRTC; RuntimeError naming the missing library and the install command."""
    try:
        from cupy_backends.cuda.libs import nvrtc
        nvrtc.getVersion()
    except Exception as error:
        raise RuntimeError(f"NVRTC, the CUDA runtime compiler, is not available ({error}); "
                           f"`{INSTALL_HINT}` installs it (nvidia-cuda-nvrtc-cu12)") from error
    return nvrtc


def kernel_code(source: str, directory: str | os.PathLike | None = None) -> str:
    """The text NVRTC compiles for ``kernels/<source>``: the file with ``portable.cuh`` inlined."""
    directory = Path(directory or kernel_dir())
    code = (directory / source).read_text()
    header = (directory / "portable.cuh").read_text()
    if not _INCLUDE.search(code):
        raise RuntimeError(f"kernels/{source} does not include \"portable.cuh\"")
    return _INCLUDE.sub(lambda _: f'/* portable.cuh, inlined */\n{header}\n', code, count=1)


def compile_options(suffix: str, arch: str) -> tuple[str, ...]:
    """The exact NVRTC options of a kernel file in precision ``suffix`` for ``arch`` ("sm_80")."""
    return (f"-arch={arch}", "-std=c++14", f"-Dreal={REAL_C[suffix]}", f"-DPRECISION={suffix}")


def cache_key(code: str, options: tuple[str, ...], nvrtc_version: tuple[int, int]) -> str:
    """The on-disk cache key of one compile: the full text, the options and the compiler version."""
    text = "\0".join([code, *options, "nvrtc %d.%d" % tuple(nvrtc_version)])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def nvrtc_compile(code: str, options: tuple[str, ...], name: str) -> bytes:
    """Compile ``code`` with NVRTC; the cubin (``-arch=sm_XY``) or PTX (``-arch=compute_XY``).
    RuntimeError with the compiler log on failure."""
    nvrtc = nvrtc_module()
    program = nvrtc.createProgram(code, name, [], [])
    try:
        try:
            nvrtc.compileProgram(program, list(options))
        except nvrtc.NVRTCError as error:
            raise RuntimeError(f"NVRTC could not compile {name} ({' '.join(options)}): {error}\n"
                               f"{nvrtc.getProgramLog(program)}") from None
        return nvrtc.getPTX(program) if "-arch=compute_" in " ".join(options) else nvrtc.getCUBIN(program)
    finally:
        nvrtc.destroyProgram(program)


def device_arch(cupy) -> str:
    """``sm_XY`` of the current device when NVRTC knows it; else ``compute_XY`` of the newest
    architecture it knows below it, as PTX that the driver compiles for the device."""
    capability = int(cupy.cuda.Device().compute_capability)
    supported = [a for a in nvrtc_module().getSupportedArchs() if a <= capability]
    if capability in supported or not supported:
        return f"sm_{capability}"
    return f"compute_{max(supported)}"


def blocks_for(threads: int, threads_per_block: int, max_blocks: int) -> int:
    """Blocks of a grid-stride launch of ``threads`` logical threads (at most ``max_blocks``)."""
    return min((threads + threads_per_block - 1) // threads_per_block, max_blocks)


def default_cache_dir() -> Path:
    """Where compiled kernels are kept: ``$GLASSCUDA_CACHE/cubin`` (default ``~/.cache/glasscuda/cubin``)."""
    return Path(os.environ.get("GLASSCUDA_CACHE") or "~/.cache/glasscuda").expanduser() / "cubin"


@dataclass(frozen=True)
class Launch:
    """One launch, as it goes to the device: the kernel, its precision, the grid and the typed arguments."""

    kernel: Kernel
    suffix: str
    blocks: int
    threads_per_block: int
    args: tuple

    @property
    def symbol(self) -> str:
        return f"{self.kernel.name}_{self.suffix}"


class GpuLauncher:
    """Launches ``<kernel>_f32`` / ``<kernel>_f64`` from NVRTC-compiled modules.

    Parameters
    ----------
    cupy : the CuPy module; imported (and a device required) when omitted.
    arch : ``"sm_80"`` and the like; the current device's when omitted.
    cache_dir : where cubins are kept between processes (None: the default;
        False: in this process only).
    """

    name = "gpu"
    split_reductions = True
    threads_per_block = THREADS_PER_BLOCK
    max_blocks = MAX_BLOCKS

    def __init__(self, cupy=None, *, arch: str | None = None, cache_dir=None):
        self.cupy = cupy if cupy is not None else import_cupy()
        self.array_type = self.cupy.ndarray
        self.arch = arch or device_arch(self.cupy)
        self.cache_dir = None if cache_dir is False else Path(cache_dir or default_cache_dir())
        self.cubins: dict[tuple[str, str], bytes] = {}
        self._modules = {}
        self._functions = {}

    def shares_memory(self, a, b) -> bool:
        return bool(self.cupy.may_share_memory(a, b))

    def cubin(self, source: str, suffix: str) -> bytes:
        """The compiled ``kernels/<source>`` in precision ``suffix``, from the caches or NVRTC."""
        key = (source, suffix)
        if key in self.cubins:
            return self.cubins[key]
        code, options = kernel_code(source), compile_options(suffix, self.arch)
        path = None
        if self.cache_dir is not None:
            path = self.cache_dir / f"{Path(source).stem}-{suffix}-{self.arch}-" \
                f"{cache_key(code, options, nvrtc_module().getVersion())}.cubin"
            if path.is_file():
                self.cubins[key] = path.read_bytes()
                return self.cubins[key]
        binary = nvrtc_compile(code, options, f"kernels/{source}")
        if path is not None:
            try:
                write_bytes_atomic(path, binary)
            except OSError:
                pass  # an unwritable cache costs a recompile next time, nothing else
        self.cubins[key] = binary
        return binary

    def module(self, source: str, suffix: str):
        key = (source, suffix)
        if key not in self._modules:
            binary = self.cubin(source, suffix)
            module = self.cupy.cuda.function.Module()
            try:
                module.load(binary)
            except Exception as error:
                raise RuntimeError(f"kernels/{source} ({REAL_C[suffix]}) compiled, but the device "
                                   f"would not load it: {error}") from error
            self._modules[key] = module
        return self._modules[key]

    def function(self, kernel: Kernel, suffix: str):
        key = (kernel.name, suffix)
        if key not in self._functions:
            try:
                module = self.module(kernel.source, suffix)
            except RuntimeError as error:
                raise RuntimeError(f"{kernel.name}_{suffix}: {error}") from error
            try:
                self._functions[key] = module.get_function(f"{kernel.name}_{suffix}")
            except Exception as error:
                raise RuntimeError(f"{kernel.name}_{suffix}: not found in kernels/{kernel.source}: "
                                   f"{error}") from error
        return self._functions[key]

    def plan(self, kernel_name: str, **args) -> Launch | None:
        """Check and type the arguments of one launch and size its grid; None when there is nothing to do."""
        kernel, suffix, values = launch.prepare(kernel_name, args, self.array_type, self.shares_memory)
        threads = launch.thread_count(kernel, args)
        if threads == 0:
            return None
        n_arrays, n_ints = len(kernel.arrays), len(kernel.ints)
        real = REAL_NUMPY[suffix]
        typed = (tuple(values[:n_arrays])
                 + tuple(np.int64(v) for v in values[n_arrays:n_arrays + n_ints])
                 + tuple(real(v) for v in values[n_arrays + n_ints:]))
        blocks = blocks_for(threads, self.threads_per_block, self.max_blocks)
        return Launch(kernel, suffix, blocks, self.threads_per_block, typed)

    def __call__(self, kernel_name: str, **args) -> None:
        try:
            planned = self.plan(kernel_name, **args)
        except ValueError:
            raise
        except Exception as error:
            raise RuntimeError(f"{kernel_name}: preparing the launch failed: "
                               f"{type(error).__name__}: {error}") from error
        if planned is None:
            return
        function = self.function(planned.kernel, planned.suffix)
        try:
            function((planned.blocks,), (planned.threads_per_block,), planned.args)
        except Exception as error:
            raise RuntimeError(f"launching {planned.symbol} failed: {error}") from error

    def synchronize(self) -> None:
        self.cupy.cuda.get_current_stream().synchronize()
