"""Build glasscuda: compile kernels/*.cu into the CPU kernel library and ship the sources.

The library is a plain shared object loaded with ctypes (``glasscuda._kernels``),
built by ``glasscuda/_build.py`` with the host C++ compiler and OpenMP. The
``.cu`` files are also installed as package data (``glasscuda/kernels``) so the
GPU backend can compile them with NVRTC at run time.
"""
import runpy
import shutil
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
KERNELS = ROOT / "kernels"
KERNEL_FILES = sorted(p.name for p in KERNELS.iterdir() if p.suffix in (".cu", ".cuh"))


class BuildKernelLibrary(build_ext):
    def build_extension(self, ext):
        build = runpy.run_path(str(ROOT / "glasscuda" / "_build.py"))
        build["build_kernel_library"](KERNELS, self.get_ext_fullpath(ext.name), verbose=True)


class BuildPyWithKernelSources(build_py):
    def run(self):
        super().run()
        target = Path(self.build_lib) / "glasscuda" / "kernels"
        target.mkdir(parents=True, exist_ok=True)
        for name in KERNEL_FILES:
            shutil.copy2(KERNELS / name, target / name)


setup(
    ext_modules=[Extension("glasscuda._kernels", sources=[f"kernels/{n}" for n in KERNEL_FILES])],
    cmdclass={"build_ext": BuildKernelLibrary, "build_py": BuildPyWithKernelSources},
)
