"""What every benchmark shares: the binary network's shapes, the peers, and the checks.

Peers are the implementations a benchmark times side by side:

==============  ==============================================================
``cpu``         glasscuda on the CPU (kernels/*.cu built with the host compiler)
``reference``   the float64 NumPy oracles of :mod:`glasscuda.reference`
``torch``       PyTorch on the CPU (whole network only; skipped when absent)
``gpu``         glasscuda on a CUDA GPU (skipped where none answers)
``torch-cuda``  PyTorch on a CUDA GPU (whole network only)
==============  ==============================================================

A benchmark is parametrised by ``peer``; ``pytest bench/ --peer cpu`` keeps
one peer's rows (see ``bench/conftest.py``). Before it is timed, every
glasscuda and PyTorch row checks its result once against the NumPy
reference, so a broken kernel cannot post a fast number.
"""
from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pytest

from glasscuda.models import BACKBONE, DOWNSAMPLE
from glasscuda.ops import ConvGeometry
from glasscuda.reference import rel_err

BATCH = 32
IMAGE = 128
IN_CHANNELS = 1
HIDDEN = 128
INFERENCE_BATCH = 128
POOL = 2

PEERS = {
    "cpu": "glasscuda CPU",
    "reference": "NumPy reference",
    "torch": "PyTorch CPU",
    "gpu": "glasscuda GPU",
    "torch-cuda": "PyTorch CUDA",
}
KERNEL_PEERS = ("cpu", "reference", "gpu")
NETWORK_PEERS = tuple(PEERS)


@dataclass(frozen=True)
class ConvLayer:
    """One conv block of the binary network: Conv(k, same padding) -> ReLU -> MaxPool 2x2."""

    index: int
    in_channels: int
    out_channels: int
    kernel: int
    size: int

    @property
    def padding(self) -> int:
        return self.kernel // 2

    @property
    def name(self) -> str:
        return f"conv{self.index}"

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (BATCH, self.in_channels, self.size, self.size)

    @property
    def output_shape(self) -> tuple[int, int, int, int]:
        return (BATCH, self.out_channels, self.size, self.size)

    @property
    def pooled_shape(self) -> tuple[int, int, int, int]:
        return (BATCH, self.out_channels, self.size // POOL, self.size // POOL)

    def geometry(self) -> ConvGeometry:
        k, p = self.kernel, self.padding
        return ConvGeometry(BATCH, self.in_channels, self.size, self.size, k, k, 1, 1, p, p)

    def describe(self) -> str:
        return (f"{self.name} {self.in_channels}→{self.out_channels} k{self.kernel} p{self.padding} "
                f"@{self.size}")


def conv_layers() -> tuple[ConvLayer, ...]:
    """The four conv blocks of glasscuda.models.BinaryDetector at batch 32, 128×128."""
    layers, channels, size = [], IN_CHANNELS, IMAGE
    for i, (out_channels, kernel) in enumerate(BACKBONE, start=1):
        layers.append(ConvLayer(i, channels, out_channels, kernel, size))
        channels, size = out_channels, size // POOL
    return tuple(layers)


CONV_LAYERS = conv_layers()
FLAT_FEATURES = BACKBONE[-1][0] * (IMAGE // DOWNSAMPLE) ** 2


def shape_text(shape) -> str:
    return "×".join(str(int(s)) for s in shape)


# Peers -----------------------------------------------------------------------

@lru_cache(maxsize=None)
def _gpu_answers() -> bool:
    from glasscuda.backend import gpu_available
    return gpu_available()


def glasscuda_backend(peer: str):
    """The glasscuda backend of ``peer`` ("cpu" or "gpu"); skips the benchmark where no GPU answers."""
    from glasscuda.backend import get_backend
    if peer == "gpu" and not _gpu_answers():
        pytest.skip("no CUDA GPU answers here (CuPy missing or no device)")
    return get_backend(peer)


def cpu_threads() -> int:
    """The cores this process may run on: glasscuda's OpenMP and OpenBLAS use them all."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def import_torch(peer: str):
    """PyTorch for ``peer`` ("torch" or "torch-cuda"), on as many threads as glasscuda; skips when absent."""
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    if peer == "torch-cuda" and not torch.cuda.is_available():
        pytest.skip("PyTorch has no CUDA device here")
    torch.set_num_threads(cpu_threads())
    return torch


# BLAS ------------------------------------------------------------------------

BLAS_KEYS = ("user_api", "internal_api", "version", "architecture", "threading_layer", "num_threads")


def blas_info() -> list[dict]:
    """The BLAS and OpenMP libraries loaded in this process and how they run.

    threadpoolctl's ``threadpool_info()`` (for NumPy's OpenBLAS, its
    ``architecture`` is the kernel family it chose: SkylakeX, Haswell, ...), and
    PyTorch's own BLAS where torch is imported: its MKL is linked statically,
    which threadpoolctl cannot see.
    """
    from threadpoolctl import threadpool_info
    pools = [{"library": os.path.basename(pool.get("filepath") or pool.get("prefix") or "?"),
              **{key: pool.get(key) for key in BLAS_KEYS}} for pool in threadpool_info()]
    torch = sys.modules.get("torch")
    if torch is not None:
        pools.append(torch_blas(torch))
    return pools


def torch_blas(torch) -> dict:
    """PyTorch's CPU BLAS as its build reports it; architecture is the CPU capability ATen dispatches to."""
    config = torch.__config__.show()
    blas = re.search(r"BLAS_INFO=(\w+)", config)
    mkl = re.search(r"Math Kernel Library Version (\S+)", config)
    capability = getattr(getattr(torch.backends, "cpu", None), "get_cpu_capability", None)
    return {"library": f"torch {torch.__version__}", "user_api": "blas",
            "internal_api": blas.group(1) if blas else None,
            "version": mkl.group(1) if mkl and blas and blas.group(1) == "mkl" else None,
            "architecture": capability() if capability else None, "threading_layer": None,
            "num_threads": torch.get_num_threads()}


# Checks ----------------------------------------------------------------------

def assert_close(actual, expected, tol: float, what: str) -> None:
    """Fail unless ``actual`` matches the reference ``expected`` within relative error ``tol``."""
    err = rel_err(actual, expected)
    assert err <= tol, f"{what}: relative error {err:.3g} against the NumPy reference exceeds {tol:g}"


def nbytes(*arrays) -> int:
    """Total size in bytes of ``arrays`` (NumPy or CuPy)."""
    return int(sum(a.nbytes for a in arrays))


def glasscuda_detector(backend, params):
    """glasscuda's BinaryDetector on ``backend``, its parameters set to ``params`` (parameter order)."""
    from glasscuda.models import BinaryDetector
    model = BinaryDetector(IN_CHANNELS, IMAGE)
    names = [name for name, _ in model.named_parameters()]
    if len(names) != len(params):
        raise ValueError(f"BinaryDetector has {len(names)} parameters, got {len(params)} arrays")
    model.load_state_dict(dict(zip(names, params)))
    return model.to(backend)
