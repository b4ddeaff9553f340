"""Build the CPU kernel library from kernels/*.cu with the host C++ compiler.

Every kernel file is compiled twice, once per precision (``-Dreal=float
-DPRECISION=f32`` and ``-Dreal=double -DPRECISION=f64``), as C++ with OpenMP,
and the objects are linked into one shared library that the CPU backend loads
with ctypes. Where the compiler has no OpenMP the library is built for one
thread and a warning says so.

This module imports nothing outside the standard library: ``setup.py`` runs
it before glasscuda or its dependencies are installed, and the sanitizer test
runs it to build an instrumented copy of the library.
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

PRECISIONS = (("float", "f32"), ("double", "f64"))
# -fno-math-errno lets sqrt vectorise (Adam); it changes no result, only whether errno is set.
BASE_FLAGS = ("-x", "c++", "-std=c++14", "-O3", "-fno-math-errno", "-fPIC", "-Wall", "-Wextra", "-Werror")
# Host-tuned code is fine: the library is compiled on the machine that runs it.
OPTIONAL_FLAGS = ("-march=native",)


def compiler() -> str:
    """The C++ compiler: $CXX, else the first of c++, g++, clang++ found."""
    if os.environ.get("CXX"):
        return os.environ["CXX"]
    for name in ("c++", "g++", "clang++"):
        if shutil.which(name):
            return name
    raise RuntimeError("no C++ compiler found: install g++ (or set CXX) to build glasscuda's CPU kernels")


def _accepts(cxx: str, flags: list[str], tmp: Path) -> bool:
    probe = tmp / "probe.cpp"
    probe.write_text("#include <omp.h>\nint main() { return omp_get_max_threads() > 0 ? 0 : 1; }\n"
                     if "-fopenmp" in flags else "int main() { return 0; }\n")
    result = subprocess.run([cxx, *flags, str(probe), "-o", str(tmp / "probe")],
                            capture_output=True, text=True)
    return result.returncode == 0


def build_kernel_library(kernel_dir: str | os.PathLike, output: str | os.PathLike, *,
                         extra_flags: tuple[str, ...] = (), openmp: bool = True,
                         verbose: bool = False) -> Path:
    """Compile every ``kernel_dir/*.cu`` for float and double into ``output`` (.so).

    Parameters
    ----------
    kernel_dir : folder with the ``.cu`` files and ``portable.cuh``.
    output : path of the shared library to write; written atomically.
    extra_flags : added to every compile and link (e.g. sanitizer flags).
    openmp : build with OpenMP when the compiler supports it.
    """
    kernel_dir, output = Path(kernel_dir), Path(output)
    sources = sorted(kernel_dir.glob("*.cu"))
    if not sources:
        raise FileNotFoundError(f"no kernel sources (*.cu) in {kernel_dir}")
    cxx = compiler()
    with tempfile.TemporaryDirectory(prefix="glasscuda-build-") as tmp_name:
        tmp = Path(tmp_name)
        flags = list(BASE_FLAGS) + list(extra_flags)
        for flag in OPTIONAL_FLAGS:
            if _accepts(cxx, [flag], tmp):
                flags.append(flag)
        if openmp:
            if _accepts(cxx, ["-fopenmp"], tmp):
                flags.append("-fopenmp")
            else:
                warnings.warn(f"{cxx} does not support OpenMP (-fopenmp): glasscuda's CPU kernels "
                              "are built to run on one thread. Install a compiler with OpenMP "
                              "(e.g. g++ with libgomp) and reinstall for multi-core speed.")
                print("warning: building glasscuda's CPU kernels without OpenMP (one thread)",
                      file=sys.stderr)

        def compile_one(job):
            source, (real, suffix) = job
            obj = tmp / f"{source.stem}_{suffix}.o"
            cmd = [cxx, *flags, f"-Dreal={real}", f"-DPRECISION={suffix}",
                   "-I", str(kernel_dir), "-c", str(source), "-o", str(obj)]
            if verbose:
                print(shlex.join(cmd))
            result = subprocess.run(cmd, capture_output=True, text=True)
            if result.returncode != 0:
                raise RuntimeError(f"compiling {source.name} ({real}) failed:\n"
                                   f"{shlex.join(cmd)}\n{result.stderr}")
            return obj

        jobs = [(s, p) for s in sources for p in PRECISIONS]
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            objects = list(pool.map(compile_one, jobs))
        link_flags = [f for f in flags if f not in ("-x", "c++", "-Werror")]
        staged = tmp / output.name
        cmd = [cxx, "-shared", *link_flags, *map(str, objects), "-o", str(staged)]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"linking the kernel library failed:\n{shlex.join(cmd)}\n{result.stderr}")
        output.parent.mkdir(parents=True, exist_ok=True)
        partial = output.with_name(output.name + ".partial")
        shutil.copyfile(staged, partial)
        os.replace(partial, output)
    return output


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kernel_dir")
    parser.add_argument("output")
    parser.add_argument("--extra-flag", action="append", default=[])
    args = parser.parse_args()
    print(build_kernel_library(args.kernel_dir, args.output, extra_flags=tuple(args.extra_flag),
                               verbose=True))
