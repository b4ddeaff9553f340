"""The first run on a real GPU, in one command: is glasscuda's GPU path right, clean and fast here?

    pip install -e ".[gpu,test]"        # and torch with CUDA, for the PyTorch CUDA rows
    python -m bench.gpu_acceptance

Steps, each in its own process with its own time limit (about 10 minutes in all):

    parity      the GPU parity suite: every kernel and op on the GPU against the CPU
                (tests/test_gpu_parity.py, GPU rows only; a GPU that does not answer fails)
    memcheck    the kernel parity cases under ``compute-sanitizer --tool memcheck``
                (skipped, and said so, where compute-sanitizer is not installed)
    train       a 3-epoch binary run on the built-in synthetic glass with --device gpu
    bench       the benchmark report's glasscuda GPU rows against the CPU, and PyTorch
                CUDA's where torch is installed (writes bench/results/report.md)

It prints one summary table and exits non-zero when any step fails.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STEPS = ("parity", "memcheck", "train", "bench")
LIMITS = {"parity": 120, "memcheck": 180, "train": 180, "bench": 240}   # seconds
PARITY = [sys.executable, "-m", "pytest", "tests/test_gpu_parity.py", "-m", "gpu", "-q", "-p", "no:cacheprovider"]


def run(cmd, limit, env=None) -> tuple[str, float, str]:
    """(PASS/FAIL, seconds, the output's last line) of ``cmd`` run from the repository root."""
    start = time.perf_counter()
    try:
        result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=limit,
                                env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired:
        return "FAIL", time.perf_counter() - start, f"timed out after {limit} s"
    seconds = time.perf_counter() - start
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    sys.stdout.write(result.stdout[-4000:])
    sys.stderr.write(result.stderr[-4000:])
    return ("PASS" if result.returncode == 0 else "FAIL"), seconds, (lines[-1] if lines else "")


def step_parity():
    return run(PARITY, LIMITS["parity"], env={"GLASSCUDA_REQUIRE_GPU": "1"})


def step_memcheck():
    sanitizer = shutil.which("compute-sanitizer")
    if sanitizer is None:
        return "SKIP", 0.0, "compute-sanitizer is not on PATH (it comes with the CUDA toolkit)"
    cmd = [sanitizer, "--tool", "memcheck", "--error-exitcode", "1", *PARITY, "-k",
           "test_kernel_gpu_matches_cpu and gpu"]
    return run(cmd, LIMITS["memcheck"], env={"GLASSCUDA_REQUIRE_GPU": "1"})


def step_train():
    with tempfile.TemporaryDirectory(prefix="glasscuda-gpu-run-") as out:
        status, seconds, last = run([sys.executable, "-m", "glasscuda.train", "--device", "gpu",
                                     "--epochs", "3", "--out", out, "--no-progress"], LIMITS["train"])
        metrics = Path(out) / "metrics.json"
        if status == "PASS" and metrics.is_file():
            history = json.loads(metrics.read_text())["history"]
            epochs = ", ".join(f"{h['seconds']:.1f}" for h in history)
            last = f"val F1 {history[-1].get('val_f1') or 0:.3f} after {len(history)} epochs; s/epoch {epochs}"
        return status, seconds, last


def step_bench():
    peers = ["--only", "cpu", "--only", "gpu"]
    if importlib.util.find_spec("torch") is not None:
        peers += ["--only", "torch"]
    return run([sys.executable, "-m", "bench.report", "--quick", *peers], LIMITS["bench"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_acceptance", description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default=",".join(STEPS),
                        help=f"comma-separated steps to run, in this order (default: {','.join(STEPS)})")
    args = parser.parse_args(argv)
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        parser.error(f"--steps: unknown step(s) {', '.join(unknown)}; choose from {', '.join(STEPS)}")
    rows = []
    for name in steps:
        print(f"[gpu_acceptance] {name} ...", flush=True)
        rows.append((name, *globals()[f"step_{name}"]()))
    print("\n| step | result | seconds | detail |\n| --- | --- | ---: | --- |")
    for name, status, seconds, detail in rows:
        print(f"| {name} | {status} | {seconds:.1f} | {detail.replace('|', '/')} |")
    return 1 if any(status == "FAIL" for _, status, _, _ in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
