"""Shared fixtures and helpers of the kernel tests.

Fixtures
    cpu   the CPU backend (NumPy + the host kernel library)
    gpu   the GPU backend; the test is skipped where no CUDA device answers
    emulated, emulated_reversed
          the kernels' device code run on the host over a small emulated grid,
          threads in forward / reversed order (glasscuda.backend.emulated)
    rng   a NumPy Generator seeded from the test's node id (reproducible per test)

Helpers (import them with ``from conftest import ...``)
    poisoned(shape, dtype)   an output buffer every element of which is wrong:
                             NaN for real arrays, POISON_INT for int64 arrays
    rel_err(a, b)            max|a - b| / max(max|b|, tiny)  (glasscuda.reference.rel_err)

Hypothesis profiles: ``glasscuda`` (the default) and ``sanitizer`` (fewer
examples, for the slow instrumented run); pick one with the environment
variable GLASSCUDA_HYPOTHESIS_PROFILE.
"""
from __future__ import annotations

import os
import zlib

import numpy as np
import pytest
from hypothesis import settings

from glasscuda.backend import get_backend, gpu_available
from glasscuda.reference import rel_err  # noqa: F401  (the tests import it from here)

POISON_INT = -7

settings.register_profile("glasscuda", max_examples=20, deadline=None, derandomize=True)
settings.register_profile("sanitizer", max_examples=4, deadline=None, derandomize=True)
settings.load_profile(os.environ.get("GLASSCUDA_HYPOTHESIS_PROFILE", "glasscuda"))


def poisoned(shape, dtype) -> np.ndarray:
    """A NumPy array of ``shape`` whose every element is a value no kernel writes.

    Real arrays are filled with NaN, int64 arrays with POISON_INT, so an
    element a kernel leaves unwritten fails any comparison with an oracle.
    """
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return np.full(shape, np.nan, dtype=dtype)
    if dtype.kind in "iu":
        return np.full(shape, POISON_INT, dtype=dtype)
    raise TypeError(f"no poison value for dtype {dtype}")




def require_cupy():
    """CuPy and its NVRTC, which the GPU dry runs need but no GPU; skipped only outside CI.

    The test extra installs both where CuPy has wheels (Linux and Windows on
    x86_64 and aarch64). In CI (``CI`` set) their absence fails the test
    instead of skipping it, so the GPU path cannot go silently unproven.
    """
    try:
        from glasscuda.backend.gpu import import_cupy, nvrtc_module
        cupy = import_cupy(require_device=False)
        nvrtc_module()
    except RuntimeError as error:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the GPU dry runs, but {error}")
        pytest.skip(str(error))
    return cupy


@pytest.fixture(scope="session")
def cpu():
    return get_backend("cpu")


@pytest.fixture(scope="session")
def gpu():
    if not gpu_available():
        from glasscuda.backend import probe_gpu
        reason = f"no usable CUDA GPU here: {probe_gpu()[1]}"
        if os.environ.get("GLASSCUDA_REQUIRE_GPU"):  # python -m bench.gpu_acceptance
            pytest.fail(reason)
        pytest.skip(reason)
    return get_backend("gpu")


@pytest.fixture(scope="session")
def emulated():
    """The kernels' device code on the host over a small emulated grid (never skipped)."""
    from glasscuda.backend.emulated import emulated_backend
    return emulated_backend()


@pytest.fixture(scope="session")
def emulated_reversed():
    """As ``emulated``, running the grid's blocks and threads in reverse order."""
    from glasscuda.backend.emulated import emulated_backend
    return emulated_backend(reverse=True)


@pytest.fixture
def rng(request):
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


def numerical_gradient(f, x, step=1e-6, indices=None):
    """Central differences of the scalar f() with respect to elements of x.

    ``x`` is modified in place and restored. With ``indices`` (into the
    flattened x) only those entries are differenced and a 1-D array is
    returned; otherwise the full gradient, shaped like x.
    """
    flat = x.reshape(-1)
    picks = range(flat.size) if indices is None else indices
    values = []
    for i in picks:
        original = flat[i]
        flat[i] = original + step
        plus = f()
        flat[i] = original - step
        minus = f()
        flat[i] = original
        values.append((plus - minus) / (2 * step))
    values = np.array(values)
    return values.reshape(x.shape) if indices is None else values
