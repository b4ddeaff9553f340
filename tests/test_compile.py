"""Every kernels/*.cu compiles for the GPU: sm_75, sm_80, sm_86 and sm_90, in float and in double.

With nvcc (``-cubin``, so ptxas runs too) where it is on PATH, else with NVRTC
through CuPy; skipped only where neither exists. The compiled cubin must hold
an entry point ``<kernel>_<f32|f64>`` for every table row of that file. All
compilations run up front on two workers; each case then reports its own
result with the compiler's output.
"""
from __future__ import annotations

import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from glasscuda.backend.sources import kernel_dir
from glasscuda.backend.table import KERNELS

pytestmark = pytest.mark.compile

ARCHITECTURES = ("sm_75", "sm_80", "sm_86", "sm_90")
PRECISIONS = (("float", "f32"), ("double", "f64"))
SOURCES = sorted(p.name for p in Path(kernel_dir()).glob("*.cu"))


def _nvrtc():
    try:
        from cupy_backends.cuda.libs import nvrtc
    except Exception:
        return None
    return nvrtc


def _compile_with_nvcc(nvcc, source, arch, real, suffix, out_dir):
    cubin = out_dir / f"{Path(source).stem}_{arch}_{suffix}.cubin"
    cmd = [nvcc, f"-arch={arch}", "-cubin", "-std=c++14", f"-Dreal={real}", f"-DPRECISION={suffix}",
           "-I", str(kernel_dir()), str(Path(kernel_dir()) / source), "-o", str(cubin)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    log = f"$ {' '.join(cmd)}\n{result.stdout}{result.stderr}"
    return result.returncode == 0, log, cubin.read_bytes() if result.returncode == 0 else b""


def _compile_with_nvrtc(nvrtc, source, arch, real, suffix, out_dir):
    code = (Path(kernel_dir()) / source).read_text()
    options = [f"-arch={arch}", "-std=c++14", f"-Dreal={real}", f"-DPRECISION={suffix}",
               f"-I{kernel_dir()}"]
    program = nvrtc.createProgram(code, source, [], [])
    try:
        nvrtc.compileProgram(program, options)
        ok = True
    except Exception as error:
        ok = False
        first = f"{error}\n"
    else:
        first = ""
    try:
        log = f"NVRTC {' '.join(options)} {source}\n{first}{nvrtc.getProgramLog(program)}"
        binary = nvrtc.getCUBIN(program) if ok else b""
    finally:
        nvrtc.destroyProgram(program)
    return ok, log, binary


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """{(source, arch, suffix): (ok, compiler output, cubin bytes)} for every combination."""
    nvcc, nvrtc = shutil.which("nvcc"), _nvrtc()
    if nvcc is None and nvrtc is None:
        pytest.skip("neither nvcc nor CuPy's NVRTC is available")
    out_dir = tmp_path_factory.mktemp("cubins")

    def one(job):
        source, arch, (real, suffix) = job
        if nvcc is not None:
            return _compile_with_nvcc(nvcc, source, arch, real, suffix, out_dir)
        return _compile_with_nvrtc(nvrtc, source, arch, real, suffix, out_dir)

    jobs = [(s, a, p) for s in SOURCES for a in ARCHITECTURES for p in PRECISIONS]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(one, jobs))
    return {(s, a, p[1]): r for (s, a, p), r in zip(jobs, results)}


def test_there_are_kernel_sources():
    assert SOURCES, f"no .cu files in {kernel_dir()}"


@pytest.mark.parametrize("suffix", [p[1] for p in PRECISIONS])
@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("source", SOURCES)
def test_kernel_file_compiles_for_gpu(compiled, source, arch, suffix):
    ok, log, cubin = compiled[(source, arch, suffix)]
    assert ok, f"kernels/{source} does not compile for {arch} ({suffix}):\n{log}"
    expected = [f"{k.name}_{suffix}" for k in KERNELS.values() if k.source == source]
    missing = [name for name in expected if name.encode() + b"\0" not in cubin]
    assert not missing, f"kernels/{source} for {arch} ({suffix}) lacks entry points {missing}"
