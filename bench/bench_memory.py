"""A large array copy: the bandwidth memory-bound kernels are measured against.

Copy bandwidth = 2 × bytes / time (each byte is read once and written once),
taken in glasscuda's own process (``cpu``: ``np.copyto``; ``gpu``:
``cupy.copyto``). ``bench/report.py`` divides each memory-bound kernel's
(bytes read + bytes written) / time by it.

On the host both buffers start on a page boundary, as two fresh large NumPy
arrays do. Where the destination sits a few bytes past the source modulo
4 KiB — as two consecutive allocations from glasscuda's process heap do — the
copy stalls on 4K aliasing and runs at about a third of the speed, which
would understate the machine's bandwidth.
"""
from __future__ import annotations

import numpy as np
import pytest

from .common import glasscuda_backend

COPY_BYTES = 256 * 2 ** 20
COPY_GROUP = "copy 256 MiB"
PAGE = 4096


def page_aligned(n: int, dtype=np.float32) -> np.ndarray:
    """A NumPy array of ``n`` elements whose first byte starts a page."""
    itemsize = np.dtype(dtype).itemsize
    raw = np.empty(n + PAGE // itemsize, dtype=dtype)
    start = (-raw.ctypes.data % PAGE) // itemsize
    return raw[start:start + n]


def copy_buffers(be, n):
    """(source, destination) of ``n`` float32 each on ``be``'s device, every page touched."""
    if be.name == "cpu":
        src, dst = page_aligned(n), page_aligned(n)
        src[...] = np.arange(n, dtype=np.float32)
        dst.fill(0)
        return src, dst
    return be.xp.arange(n, dtype=np.float32), be.xp.zeros(n, dtype=np.float32)


@pytest.mark.parametrize("peer", ("cpu", "gpu"))
def test_copy(benchmark, peer):
    be = glasscuda_backend(peer)
    src, dst = copy_buffers(be, COPY_BYTES // np.dtype(np.float32).itemsize)

    def run():
        be.xp.copyto(dst, src)
        be.synchronize()

    run()
    assert bool((dst == src).all()), "the copy differs from its source"
    benchmark.group = COPY_GROUP
    benchmark.extra_info["kind"] = "copy"
    benchmark.extra_info["bytes"] = 2 * COPY_BYTES
    benchmark(run)
