"""Large array copies: the bandwidth memory-bound kernels are measured against.

Copy bandwidth = 2 × bytes / time (each byte is read once and written once),
taken in glasscuda's own process. ``bench/report.py`` divides each
memory-bound kernel's (bytes read + bytes written) / time by the fastest
all-core copy (kind ``copy``) of the same device:

* ``cpu``, two ways on every core: a STREAM-style loop — glasscuda's own
  ``swap_outer_axes`` kernel with A = 1, a plain copy of B rows run by the
  OpenMP team the other kernels run on (static schedule: each thread copies one
  contiguous block) — and the array split into one contiguous chunk per core,
  each copied by ``np.copyto`` (libc's memcpy, which may use streaming stores)
  on its own thread; the faster of the two is the denominator, so it does not
  hang on one copy loop's choice of instructions;
* ``gpu``: ``cupy.copyto``, which already spans the whole device.

The single-thread ``np.copyto`` stays as a context row (``copy-single``): one
core rarely saturates the memory system, so kernels on every core could pass
100% of it.

On the host both buffers start on a page boundary, as two fresh large NumPy
arrays do. Where the destination sits a few bytes past the source modulo
4 KiB — as two consecutive allocations from glasscuda's process heap do — the
copy stalls on 4K aliasing and runs at about a third of the speed, which
would understate the machine's bandwidth.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from .common import cpu_threads, glasscuda_backend

COPY_BYTES = 256 * 2 ** 20
COPY_GROUP = "copy 256 MiB"
THREADED_COPY_GROUP = "copy 256 MiB, np.copyto per core"
SINGLE_COPY_GROUP = "copy 256 MiB, one thread"
PAGE = 4096
ROWS_PER_THREAD = 64        # a multiple of the team size keeps the static schedule balanced


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


def parallel_copy(be, dst, src, rows: int) -> None:
    """``dst[...] = src`` (both contiguous, same size) as ``rows`` rows on the kernels' thread team.

    ``swap_outer_axes`` with A = 1 is y[b, 0, :] = x[0, b, :]: a plain copy
    whose rows the host splits over its OpenMP team. The last n mod rows
    elements, if any, are copied by the array library.
    """
    x, y = src.reshape(-1), dst.reshape(-1)
    n = x.size
    if y.size != n:
        raise ValueError(f"parallel_copy: destination has {y.size} elements, source {n}")
    rows = max(1, min(int(rows), n))
    run = n // rows
    if run:
        be.launch("swap_outer_axes", x=x[:rows * run], y=y[:rows * run], A=1, B=rows, L=run)
    if rows * run < n:
        be.xp.copyto(y[rows * run:], x[rows * run:])


def threaded_copy(pool: ThreadPoolExecutor, dst: np.ndarray, src: np.ndarray, threads: int) -> None:
    """``dst[...] = src`` (NumPy, contiguous, same size): one contiguous chunk per thread, each by np.copyto.

    np.copyto releases the GIL while it copies, so the ``threads`` chunks run at once on ``pool``.
    """
    x, y = src.reshape(-1), dst.reshape(-1)
    if y.size != x.size:
        raise ValueError(f"threaded_copy: destination has {y.size} elements, source {x.size}")
    bounds = np.linspace(0, x.size, max(1, threads) + 1).astype(np.int64)
    chunks = [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]
    for done in [pool.submit(np.copyto, y[c], x[c]) for c in chunks]:
        done.result()


def copy_method(be) -> tuple[str, int]:
    """(how the ``copy`` group copies on ``be``, the threads it uses; 0 where not a host thread count)."""
    if be.name == "cpu":
        threads = cpu_threads()
        return (f"swap_outer_axes with A=1 (STREAM-style copy), {ROWS_PER_THREAD * threads} rows "
                f"on the OpenMP team of {threads} threads"), threads
    return "cupy.copyto", 0


@pytest.mark.parametrize("peer", ("cpu", "gpu"))
def test_copy(benchmark, peer):
    be = glasscuda_backend(peer)
    src, dst = copy_buffers(be, COPY_BYTES // np.dtype(np.float32).itemsize)
    method, threads = copy_method(be)

    if be.name == "cpu":
        def run():
            parallel_copy(be, dst, src, ROWS_PER_THREAD * threads)
    else:
        def run():
            be.xp.copyto(dst, src)
            be.synchronize()

    run()
    assert bool((dst == src).all()), "the copy differs from its source"
    benchmark.group = COPY_GROUP
    benchmark.extra_info.update(kind="copy", bytes=2 * COPY_BYTES, method=method, threads=threads)
    benchmark(run)


@pytest.mark.parametrize("peer", ("cpu",))
def test_copy_threaded(benchmark, peer):
    be = glasscuda_backend(peer)
    src, dst = copy_buffers(be, COPY_BYTES // np.dtype(np.float32).itemsize)
    threads = cpu_threads()

    with ThreadPoolExecutor(threads) as pool:
        def run():
            threaded_copy(pool, dst, src, threads)

        run()
        assert bool((dst == src).all()), "the copy differs from its source"
        benchmark.group = THREADED_COPY_GROUP
        benchmark.extra_info.update(kind="copy", bytes=2 * COPY_BYTES, threads=threads,
                                    method=f"np.copyto on one contiguous chunk per thread, {threads} threads")
        benchmark(run)


@pytest.mark.parametrize("peer", ("cpu",))
def test_copy_one_thread(benchmark, peer):
    be = glasscuda_backend(peer)
    src, dst = copy_buffers(be, COPY_BYTES // np.dtype(np.float32).itemsize)

    def run():
        np.copyto(dst, src)

    run()
    assert bool((dst == src).all()), "the copy differs from its source"
    benchmark.group = SINGLE_COPY_GROUP
    benchmark.extra_info.update(kind="copy-single", bytes=2 * COPY_BYTES,
                                method="np.copyto on one thread", threads=1)
    benchmark(run)
