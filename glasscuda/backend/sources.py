"""Where the kernel sources (kernels/*.cu) are: shipped in the package, or beside it in a checkout."""
from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent.parent


def kernel_dir() -> Path:
    """The folder holding ``portable.cuh`` and the ``.cu`` files."""
    for candidate in (_PACKAGE / "kernels", _PACKAGE.parent / "kernels"):
        if (candidate / "portable.cuh").is_file():
            return candidate
    raise FileNotFoundError(f"glasscuda's kernel sources are missing (looked in {_PACKAGE / 'kernels'} "
                            f"and {_PACKAGE.parent / 'kernels'}); reinstall glasscuda")
