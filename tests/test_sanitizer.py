"""The CPU kernel library built with AddressSanitizer and UBSan runs the kernel tests clean.

The instrumented library is built into a temporary folder and the kernel tests
run against it in a subprocess (GLASSCUDA_KERNEL_LIB points at it; the
sanitizer runtimes are preloaded because the Python interpreter is not
instrumented). A second test proves the setup can fail: a deliberately
overflowing kernel, built with the same flags and called the same way, must be
reported.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from glasscuda import _build
from glasscuda.backend.sources import kernel_dir

pytestmark = pytest.mark.sanitizer

SANITIZER_FLAGS = ("-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=undefined")
TESTS = Path(__file__).resolve().parent
REPORTS = ("ERROR: AddressSanitizer", "runtime error:")


def _runtime(cxx, name):
    """Absolute path of the compiler's sanitizer runtime ``name`` (e.g. libasan.so), or None."""
    try:
        result = subprocess.run([cxx, f"-print-file-name={name}"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    path = Path(result.stdout.strip())
    return str(path.resolve()) if result.returncode == 0 and path.is_absolute() and path.exists() else None


@pytest.fixture(scope="module")
def sanitizer_env():
    """Environment that preloads the sanitizer runtimes; skips where there is no compiler or runtime."""
    try:
        cxx = _build.compiler()
    except RuntimeError as error:
        pytest.skip(str(error))
    if shutil.which(cxx) is None and not Path(cxx).exists():
        pytest.skip(f"C++ compiler {cxx} not found")
    runtimes = [_runtime(cxx, "libasan.so"), _runtime(cxx, "libubsan.so")]
    if None in runtimes:
        pytest.skip(f"{cxx} has no AddressSanitizer / UBSan runtime (libasan.so, libubsan.so)")
    env = dict(os.environ)
    env.update(LD_PRELOAD=":".join(runtimes), ASAN_OPTIONS="detect_leaks=0",
               UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
    return env


def _run(cmd, env, timeout, cwd):
    """Run ``cmd``; return (exit code, its stdout and stderr, the sanitizers' reports).

    AddressSanitizer writes its reports to files (log_path); UBSan, loaded
    beside it, writes to stderr. A pytest run underneath uses --capture=sys so
    that what native code writes to stderr is not swallowed by a capture file
    when the sanitizer ends the process.
    """
    logs = Path(cwd) / "sanitizer-logs"
    logs.mkdir(exist_ok=True)
    env = dict(env)
    for variable in ("ASAN_OPTIONS", "UBSAN_OPTIONS"):
        name = variable.split("_")[0].lower()
        env[variable] = f"{env[variable]}:log_path={logs / name}"
    result = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    reports = "".join(p.read_text(errors="replace") for p in sorted(logs.iterdir()))
    return result.returncode, result.stdout + result.stderr, reports


@pytest.fixture(scope="module")
def sanitized_library(sanitizer_env, tmp_path_factory):
    return _build.build_kernel_library(kernel_dir(), tmp_path_factory.mktemp("asan") / "libglasscuda_asan.so",
                                       extra_flags=SANITIZER_FLAGS)


def test_kernel_tests_run_clean_under_asan_and_ubsan(sanitizer_env, sanitized_library, tmp_path):
    env = dict(sanitizer_env, GLASSCUDA_KERNEL_LIB=str(sanitized_library),
               GLASSCUDA_HYPOTHESIS_PROFILE="sanitizer")
    code, output, reports = _run([sys.executable, "-m", "pytest", str(TESTS / "test_kernels.py"), "-x", "-q",
                                  "--capture=sys", "-p", "no:cacheprovider", "-m", "not gpu"],
                                 env, timeout=600, cwd=tmp_path)
    shown = f"{output[-3000:]}\n{reports[:6000]}"
    assert code == 0, f"kernel tests failed under the sanitizers (exit {code}):\n{shown}"
    for report in REPORTS:
        assert report not in output + reports, f"sanitizer reported '{report}':\n{shown}"
    assert " passed" in output, shown


def test_the_sanitized_library_is_the_one_loaded(sanitizer_env, sanitized_library, tmp_path):
    env = dict(sanitizer_env, GLASSCUDA_KERNEL_LIB=str(sanitized_library))
    code, output, reports = _run([sys.executable, "-c", "from glasscuda.backend import get_backend; "
                                  "print(get_backend('cpu').launcher.path)"], env, timeout=120, cwd=tmp_path)
    assert code == 0 and output.strip().splitlines()[-1] == str(sanitized_library), output + reports


OVERFLOWING = textwrap.dedent("""
    extern "C" void write_one_past_the_end(double* a, long long n) { for (long long i = 0; i <= n; ++i) a[i] = 1.0; }
    extern "C" long long add_one(long long a) { return a + 1; }
""")

CALLS = {
    "heap overflow": ("ERROR: AddressSanitizer", """
        import ctypes, numpy as np
        lib = ctypes.CDLL(LIB)
        a = np.zeros(1000)
        lib.write_one_past_the_end(ctypes.c_void_p(a.ctypes.data), ctypes.c_longlong(a.size))
    """),
    "signed overflow": ("runtime error:", """
        import ctypes
        lib = ctypes.CDLL(LIB)
        lib.add_one.restype = ctypes.c_longlong
        lib.add_one(ctypes.c_longlong(2**63 - 1))
    """),
}


@pytest.mark.parametrize("fault", sorted(CALLS))
def test_the_sanitizers_catch_a_deliberate_fault(sanitizer_env, tmp_path, fault):
    source, library = tmp_path / "faulty.cpp", tmp_path / "libfaulty.so"
    source.write_text(OVERFLOWING)
    cxx = _build.compiler()
    build = subprocess.run([cxx, "-shared", "-fPIC", "-O1", *SANITIZER_FLAGS, str(source), "-o", str(library)],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    report, call = CALLS[fault]
    script = f"LIB = {str(library)!r}\n" + textwrap.dedent(call)
    code, output, reports = _run([sys.executable, "-c", script], sanitizer_env, timeout=120, cwd=tmp_path)
    assert code != 0 and report in output + reports, f"the {fault} went unreported (exit {code}):\n{output}{reports}"
