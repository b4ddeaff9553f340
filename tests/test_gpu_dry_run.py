"""The GPU launcher with real CuPy and no GPU: every kernel's launch up to the device.

CuPy arrays are placed on fake device memory (``cupy.cuda.memory.UnownedMemory``
over host buffers, never dereferenced) and given to the real
:class:`~glasscuda.backend.gpu.GpuLauncher` with an explicit architecture. Every
launch the kernel tests make, for every kernel of the table, goes through the
launcher's argument validation, typing and grid sizing, then NVRTC compiles the
kernel's file, and the first step that needs a device — loading the cubin —
fails with an error that names the kernel. Runs in CI (see
``conftest.require_cupy``); no GPU is needed.
"""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from conftest import require_cupy
from glasscuda.backend import Backend, launch
from glasscuda.backend.gpu import (MAX_BLOCKS, REAL_NUMPY, THREADS_PER_BLOCK, GpuLauncher, blocks_for,
                                   cache_key, compile_options, kernel_code)
from glasscuda.backend.sources import kernel_dir
from glasscuda.backend.table import INT64, KERNELS
from test_gpu_parity import KERNEL_CASES
from test_kernels import RUNNERS

ARCH = "sm_80"


class Recorder:
    """A CPU launcher that also keeps every launch's arguments."""

    def __init__(self, cpu):
        self.inner, self.name, self.launches = cpu.launcher, "cpu", []

    def __call__(self, kernel_name, **args):
        self.launches.append((kernel_name, dict(args)))
        self.inner(kernel_name, **args)

    def synchronize(self):
        pass


@pytest.fixture(scope="module")
def recorded_launches(cpu):
    """{kernel: [argument dicts]} of the kernel tests' launches, at most three per kernel and precision."""
    recorder = Recorder(cpu)
    backend = Backend(recorder, np)
    for dtype in (np.float32, np.float64):
        for kernel, case in KERNEL_CASES:
            RUNNERS[kernel](backend, dtype, np.random.default_rng(5), **case)
    chosen = {}
    for name, args in recorder.launches:
        arrays = [a for a in args.values() if isinstance(a, np.ndarray)]
        key = (name, next((a.dtype for a in arrays if a.dtype != np.int64), None))
        if len(chosen.setdefault(key, [])) < 3:
            chosen[key].append(args)
    by_kernel = {}
    for (name, _), launches in chosen.items():
        by_kernel.setdefault(name, []).extend(launches)
    return by_kernel


@pytest.fixture(scope="module")
def cupy():
    return require_cupy()


def on_fake_device(cupy, args: dict) -> dict:
    """``args`` with every array replaced by a CuPy array over the same (host) bytes; the same
    host array becomes the same CuPy array, so in-place arguments stay in place."""
    fakes, out = {}, {}
    for name, value in args.items():
        if not isinstance(value, np.ndarray):
            out[name] = value
            continue
        if id(value) not in fakes:
            memory = cupy.cuda.memory.UnownedMemory(value.ctypes.data, max(value.nbytes, 1), value,
                                                    device_id=0)
            fakes[id(value)] = cupy.ndarray(value.shape, value.dtype,
                                            memptr=cupy.cuda.memory.MemoryPointer(memory, 0))
        out[name] = fakes[id(value)]
    return out


@pytest.fixture
def launcher(cupy, tmp_path):
    return GpuLauncher(cupy, arch=ARCH, cache_dir=tmp_path / "cubin")


def test_the_kernel_tests_launch_every_kernel_of_the_table(recorded_launches):
    assert set(recorded_launches) == set(KERNELS)


@pytest.mark.parametrize("kernel_name", sorted(KERNELS))
def test_every_kernel_is_typed_and_sized_as_the_device_needs(cupy, launcher, recorded_launches,
                                                             kernel_name):
    kernel = KERNELS[kernel_name]
    for args in recorded_launches[kernel_name]:
        fake = on_fake_device(cupy, args)
        planned = launcher.plan(kernel_name, **fake)
        threads = launch.thread_count(kernel, args)
        if threads == 0:
            assert planned is None
            continue
        real = REAL_NUMPY[planned.suffix]
        n_arrays, n_ints = len(kernel.arrays), len(kernel.ints)
        for spec, value in zip(kernel.arrays, planned.args[:n_arrays]):
            assert value is fake[spec.name], f"{kernel_name}: array '{spec.name}' is not the caller's"
            assert value.dtype == (np.int64 if spec.dtype == INT64 else real)
        for name, value in zip(kernel.ints, planned.args[n_arrays:n_arrays + n_ints]):
            assert type(value) is np.int64 and value == args[name], (kernel_name, name, value)
        for name, value in zip(kernel.reals, planned.args[n_arrays + n_ints:]):
            assert type(value) is real and value == real(args[name]), (kernel_name, name, value)
        assert planned.threads_per_block == THREADS_PER_BLOCK
        assert planned.blocks == blocks_for(threads, THREADS_PER_BLOCK, MAX_BLOCKS) >= 1
        assert planned.blocks * planned.threads_per_block >= min(threads, MAX_BLOCKS * THREADS_PER_BLOCK)


@pytest.mark.parametrize("kernel_name", sorted(KERNELS))
def test_every_kernel_reaches_nvrtc_and_stops_only_at_the_device(cupy, launcher, recorded_launches,
                                                                 kernel_name):
    kernel = KERNELS[kernel_name]
    args = next(a for a in recorded_launches[kernel_name] if launch.thread_count(kernel, a) > 0)
    suffix = launcher.plan(kernel_name, **on_fake_device(cupy, args)).suffix
    with pytest.raises(RuntimeError, match=f"^{kernel_name}_{suffix}: kernels/{kernel.source} .*compiled, "
                                           "but the device would not load it"):
        launcher(kernel_name, **on_fake_device(cupy, args))
    cubin = launcher.cubins[(kernel.source, suffix)]
    assert f"{kernel_name}_{suffix}".encode() + b"\0" in cubin
    assert list((launcher.cache_dir).glob(f"{kernel.source[:-3]}-{suffix}-{ARCH}-*.cubin"))


def test_a_second_launcher_takes_the_cubin_from_the_disk_cache(cupy, tmp_path, monkeypatch):
    first = GpuLauncher(cupy, arch=ARCH, cache_dir=tmp_path)
    binary = first.cubin("activation.cu", "f32")
    second = GpuLauncher(cupy, arch=ARCH, cache_dir=tmp_path)
    monkeypatch.setattr("glasscuda.backend.gpu.nvrtc_compile",
                        lambda *a: pytest.fail("compiled again despite the cache"))
    assert second.cubin("activation.cu", "f32") == binary


def test_bad_arguments_are_refused_before_nvrtc_with_the_kernel_name(cupy, launcher, recorded_launches):
    args = on_fake_device(cupy, recorded_launches["relu_forward"][0])
    with pytest.raises(ValueError, match="relu_forward: argument 'x' has"):
        launcher("relu_forward", **{**args, "n": args["n"] + 1})
    host = dict(args, x=np.zeros(args["n"], args["y"].dtype))
    with pytest.raises(ValueError, match="relu_forward: argument 'x' must be a cupy"):
        launcher("relu_forward", **host)
    assert launcher.cubins == {}, "NVRTC ran for a launch that was refused"


def test_an_unexpected_error_while_preparing_names_the_kernel(cupy, launcher, recorded_launches, monkeypatch):
    args = on_fake_device(cupy, recorded_launches["relu_forward"][0])

    def broken(*a, **k):
        raise AttributeError("'flags' object has no attribute 'writeable'")
    monkeypatch.setattr(launch, "prepare", broken)
    with pytest.raises(RuntimeError, match="^relu_forward: preparing the launch failed: AttributeError"):
        launcher("relu_forward", **args)


# The compile cache covers portable.cuh ---------------------------------------------------------

def test_what_nvrtc_compiles_inlines_the_header():
    code = kernel_code("activation.cu")
    assert '#include "portable.cuh"' not in code
    assert (kernel_dir() / "portable.cuh").read_text() in code


def test_a_changed_header_gives_a_different_cache_key(tmp_path):
    copy = tmp_path / "kernels"
    shutil.copytree(kernel_dir(), copy)
    options, version = compile_options("f32", ARCH), (12, 9)
    before = cache_key(kernel_code("pool.cu", copy), options, version)
    header = copy / "portable.cuh"
    header.write_text(header.read_text().replace("#define GC_PARALLEL_MIN_WORK 16384",
                                                 "#define GC_PARALLEL_MIN_WORK 16385"))
    after = cache_key(kernel_code("pool.cu", copy), options, version)
    assert before != after
    assert cache_key(kernel_code("pool.cu", copy), compile_options("f64", ARCH), version) != after
    assert cache_key(kernel_code("pool.cu", copy), options, (12, 8)) != after


def test_an_architecture_nvrtc_does_not_know_gets_ptx_the_driver_compiles(cupy, tmp_path, monkeypatch):
    from glasscuda.backend import gpu
    newest = max(gpu.nvrtc_module().getSupportedArchs())

    class Device:
        compute_capability = "80"
    monkeypatch.setattr(cupy.cuda, "Device", lambda: Device())
    assert gpu.device_arch(cupy) == "sm_80"
    Device.compute_capability = str(newest + 10)
    assert gpu.device_arch(cupy) == f"compute_{newest}"
    launcher = GpuLauncher(cupy, arch=f"compute_{newest}", cache_dir=tmp_path)
    ptx = launcher.cubin("activation.cu", "f32")
    assert b".entry relu_forward_f32" in ptx and f".target sm_{newest}".encode() in ptx
