"""One backend, two targets: an array module plus a kernel launcher.

=========  ===========  ===========================================
device     array module  launcher
=========  ===========  ===========================================
``cpu``    NumPy         host library (kernels/*.cu, C++ + OpenMP)
``gpu``    CuPy          cubins compiled by NVRTC (through CuPy)
=========  ===========  ===========================================

:mod:`glasscuda.backend.emulated` gives a third, for tests: NumPy arrays and
the GPU launcher running the kernels' device code on the host.

Everything above this package is written once against :class:`Backend`:
``backend.xp`` for array creation and GEMM, ``backend.launch(kernel, **args)``
for the hand-written kernels.

>>> from glasscuda.backend import get_backend
>>> be = get_backend("cpu")
>>> be.launch("relu_forward", x=x, y=y, n=x.size)       # doctest: +SKIP
"""
from __future__ import annotations

import sys

import numpy as np

DEVICES = ("auto", "cpu", "gpu")


class Backend:
    """An array module (``xp``) and a launcher for the kernels that work on its arrays."""

    def __init__(self, launcher, xp):
        self.launcher = launcher
        self.xp = xp
        self.name = launcher.name

    @property
    def split_reductions(self) -> bool:
        """Whether long sums should be split into chunks summed in parallel: a GPU needs the threads;
        a CPU's few cores each take whole rows."""
        return bool(getattr(self.launcher, "split_reductions", False))

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

    def random_generator(self, host_rng: np.random.Generator):
        """A generator that draws where this backend's arrays live, from ``host_rng``'s stream.

        On the CPU it is ``host_rng`` itself. On the GPU it is a CuPy generator
        seeded by one draw of ``host_rng``, so its numbers never cross to the
        device, and a run stays reproducible (and resumable) from the host
        generator's state.
        """
        if self.xp is np:
            return host_rng
        return self.xp.random.default_rng(int(host_rng.integers(2 ** 62)))

    def __repr__(self) -> str:
        return f"Backend({self.name!r})"


_backends: dict[str, Backend] = {}
_probe: tuple[Backend | None, str] | None = None
_told_why: list[str] = []


def probe_gpu() -> tuple[Backend | None, str]:
    """(the GPU backend, "") when a device answers, a kernel compiles and runs and a GEMM is right;
    else (None, what is missing). Probed once per process."""
    global _probe
    if _probe is None:
        try:
            from .gpu import GpuLauncher
            launcher = GpuLauncher()
            backend = Backend(launcher, launcher.cupy)
            cp = launcher.cupy
            x = cp.arange(-8, 8, dtype=cp.float32)
            y = cp.empty_like(x)
            backend.launch("relu_forward", x=x, y=y, n=x.size)
            a = cp.arange(64, dtype=cp.float32).reshape(8, 8) / 64
            expected = np.maximum(np.arange(-8, 8, dtype=np.float32), 0)
            if not (np.array_equal(cp.asnumpy(y), expected)
                    and np.allclose(cp.asnumpy(a @ a), cp.asnumpy(a) @ cp.asnumpy(a), rtol=1e-5)):
                raise RuntimeError("the probe kernel or GEMM gave wrong results on the GPU")
            backend.synchronize()
            _probe = (backend, "")
        except Exception as error:  # any failure means: not this GPU, and say why
            _probe = (None, str(error).splitlines()[0] if str(error) else type(error).__name__)
    return _probe


def gpu_available() -> bool:
    """True when CuPy imports, a CUDA device answers, and a probe kernel and GEMM run right."""
    return probe_gpu()[0] is not None


def get_backend(device: str | Backend = "auto") -> Backend:
    """The backend for ``device``: ``"auto"`` (GPU when one answers, else CPU), ``"cpu"`` or ``"gpu"``.

    ``"auto"`` takes the GPU only after a probe (a kernel compiled by NVRTC and
    run, a small cuBLAS GEMM) succeeds, and otherwise prints one line saying
    why it runs on the CPU. Asking for ``"gpu"`` where the probe fails raises
    ``RuntimeError`` naming the missing piece; there is no silent fallback.
    """
    if isinstance(device, Backend):
        return device
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device in ("auto", "gpu") and "gpu" not in _backends:
        backend, reason = probe_gpu()
        if backend is not None:
            _backends["gpu"] = backend
        elif device == "gpu":
            raise RuntimeError(f"no usable GPU: {reason}")
        elif not _told_why:
            _told_why.append(reason)
            print(f"device auto: running on the CPU ({reason})", file=sys.stderr)
    if device == "auto":
        device = "gpu" if "gpu" in _backends else "cpu"
    if device not in _backends:
        from .cpu import CpuLauncher
        _backends[device] = Backend(CpuLauncher(), np)
    return _backends[device]
