"""One backend, two targets: an array module plus a kernel launcher.

=========  ===========  ===========================================
device     array module  launcher
=========  ===========  ===========================================
``cpu``    NumPy         host library (kernels/*.cu, C++ + OpenMP)
``gpu``    CuPy          RawModules compiled by NVRTC
=========  ===========  ===========================================

Everything above this package is written once against :class:`Backend`:
``backend.xp`` for array creation and GEMM, ``backend.launch(kernel, **args)``
for the hand-written kernels.

>>> from glasscuda.backend import get_backend
>>> be = get_backend("cpu")
>>> be.launch("relu_forward", x=x, y=y, n=x.size)       # doctest: +SKIP
"""
from __future__ import annotations

import numpy as np

DEVICES = ("auto", "cpu", "gpu")


class Backend:
    """An array module (``xp``) and a launcher for the kernels that work on its arrays."""

    def __init__(self, launcher, xp):
        self.launcher = launcher
        self.xp = xp
        self.name = launcher.name

    def launch(self, kernel: str, **args) -> None:
        """Run ``kernel`` after checking every argument (see :mod:`glasscuda.backend.table`)."""
        self.launcher(kernel, **args)

    def asarray(self, array, dtype=None):
        """``array`` on this backend's device, C-contiguous, in ``dtype`` when given."""
        return self.xp.ascontiguousarray(self.xp.asarray(array, dtype=dtype))

    def to_numpy(self, array) -> np.ndarray:
        """A NumPy copy (GPU) or the array itself (CPU)."""
        if self.name == "gpu":
            return self.xp.asnumpy(array)
        return np.asarray(array)

    def synchronize(self) -> None:
        self.launcher.synchronize()

    def __repr__(self) -> str:
        return f"Backend({self.name!r})"


_backends: dict[str, Backend] = {}


def gpu_available() -> bool:
    """True when CuPy imports and a CUDA device answers."""
    try:
        from .gpu import import_cupy
        import_cupy()
        return True
    except RuntimeError:
        return False


def get_backend(device: str | Backend = "auto") -> Backend:
    """The backend for ``device``: ``"auto"`` (GPU when one answers, else CPU), ``"cpu"`` or ``"gpu"``.

    Asking for ``"gpu"`` where none answers raises ``RuntimeError`` saying why;
    there is no silent fallback.
    """
    if isinstance(device, Backend):
        return device
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "auto":
        device = "gpu" if gpu_available() else "cpu"
    if device not in _backends:
        if device == "gpu":
            from .gpu import GpuLauncher
            launcher = GpuLauncher()
            _backends[device] = Backend(launcher, launcher.cupy)
        else:
            from .cpu import CpuLauncher
            _backends[device] = Backend(CpuLauncher(), np)
    return _backends[device]
