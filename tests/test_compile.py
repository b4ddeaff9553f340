"""Every kernels/*.cu compiles for the GPU: sm_75, sm_80, sm_86 and sm_90, in float and in double.

Two compilers. NVRTC through CuPy, with exactly the text and options the GPU
launcher compiles (``portable.cuh`` inlined, :func:`glasscuda.backend.gpu.compile_options`);
it needs no device and runs in CI, where a missing CuPy fails instead of
skipping. And nvcc (``-cubin``, so ptxas runs too) where it is on PATH. The
cubin must hold an entry point ``<kernel>_<f32|f64>`` for every table row of
that file. All compilations run up front on two workers; each case then
reports its own result with the compiler's output.
"""
from __future__ import annotations

import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import require_cupy
from glasscuda.backend.gpu import compile_options, kernel_code, nvrtc_compile
from glasscuda.backend.sources import kernel_dir
from glasscuda.backend.table import KERNELS

pytestmark = pytest.mark.compile

ARCHITECTURES = ("sm_75", "sm_80", "sm_86", "sm_90")
PRECISIONS = (("float", "f32"), ("double", "f64"))
SOURCES = sorted(p.name for p in Path(kernel_dir()).glob("*.cu"))
COMPILERS = ("nvrtc", "nvcc")


def _compile_with_nvcc(nvcc, source, arch, real, suffix, out_dir):
    cubin = out_dir / f"{Path(source).stem}_{arch}_{suffix}.cubin"
    cmd = [nvcc, f"-arch={arch}", "-cubin", "-std=c++14", f"-Dreal={real}", f"-DPRECISION={suffix}",
           "-I", str(kernel_dir()), str(Path(kernel_dir()) / source), "-o", str(cubin)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    log = f"$ {' '.join(cmd)}\n{result.stdout}{result.stderr}"
    return result.returncode == 0, log, cubin.read_bytes() if result.returncode == 0 else b""


def _compile_with_nvrtc(source, arch, suffix):
    options = compile_options(suffix, arch)
    try:
        return True, "", nvrtc_compile(kernel_code(source), options, f"kernels/{source}")
    except RuntimeError as error:
        return False, str(error), b""


@pytest.fixture(scope="module")
def nvrtc_compiled():
    """{(source, arch, suffix): (ok, compiler output, cubin bytes)}, compiled as the GPU launcher does."""
    require_cupy()
    jobs = [(s, a, p[1]) for s in SOURCES for a in ARCHITECTURES for p in PRECISIONS]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda job: _compile_with_nvrtc(*job), jobs))
    return dict(zip(jobs, results))


@pytest.fixture(scope="module")
def nvcc_compiled(tmp_path_factory):
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is not on PATH")
    out_dir = tmp_path_factory.mktemp("cubins")
    jobs = [(s, a, p) for s in SOURCES for a in ARCHITECTURES for p in PRECISIONS]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda job: _compile_with_nvcc(nvcc, job[0], job[1], *job[2], out_dir), jobs))
    return {(s, a, p[1]): r for (s, a, p), r in zip(jobs, results)}


def test_there_are_kernel_sources():
    assert SOURCES, f"no .cu files in {kernel_dir()}"


@pytest.mark.parametrize("suffix", [p[1] for p in PRECISIONS])
@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("compiler", COMPILERS)
def test_kernel_file_compiles_for_gpu(request, compiler, source, arch, suffix):
    ok, log, cubin = request.getfixturevalue(f"{compiler}_compiled")[(source, arch, suffix)]
    assert ok, f"kernels/{source} does not compile for {arch} ({suffix}) with {compiler}:\n{log}"
    expected = [f"{k.name}_{suffix}" for k in KERNELS.values() if k.source == source]
    missing = [name for name in expected if name.encode() + b"\0" not in cubin]
    assert not missing, f"kernels/{source} for {arch} ({suffix}) lacks entry points {missing}"
