"""Print, per kernel, the largest relative error against the float64 oracle, as a Markdown table.

    python tests/kernel_error_table.py [--device cpu|gpu]

Relative error is max|a - b| / max(max|b|, tiny) (conftest.rel_err), taken
over every real output of every case: the fixed cases of tests/test_kernels.py
(FIXED_CASES) plus its im2col/col2im and max-pool edge cases, with fixed seeds.
Integer outputs (max-pool argmax) are compared exactly and reported below the
table. The GEMM-based ops (conv2d, linear) follow the kernels.
"""
from __future__ import annotations

import argparse
import sys
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import rel_err  # noqa: E402
from test_kernels import (CONV_EDGE_CASES, DISJOINT_EDGE_CASES, DTYPES, FIXED_CASES, OP_CASES,  # noqa: E402
                          POOL_EDGE_CASES, RUNNERS)

from glasscuda.backend import get_backend  # noqa: E402
from glasscuda.backend.table import KERNELS  # noqa: E402

CONV_KEYS = ("N", "C", "H", "W", "KH", "KW", "SH", "SW", "PH", "PW")
POOL_KEYS = ("N", "C", "H", "W", "KH", "KW", "SH", "SW")


def kernel_cases(kernel):
    cases = list(FIXED_CASES[kernel])
    if kernel in ("im2col", "col2im"):
        cases += [dict(zip(CONV_KEYS, g)) for g in CONV_EDGE_CASES]
    if kernel in ("maxpool_forward", "maxpool_backward"):
        cases += [dict(zip(POOL_KEYS, g), ties=t, relu=r) for g in POOL_EDGE_CASES for t in (False, True)
                  for r in (0, 1)]
    if kernel == "maxpool_backward_disjoint":
        cases += [dict(zip(POOL_KEYS, g), ties=t, relu=r) for g in DISJOINT_EDGE_CASES for t in (False, True)
                  for r in (0, 1)]
    return cases


def worst(run, be, dtype, cases, label):
    """(largest relative error over the real outputs, whether every integer output matched exactly)."""
    largest, exact = 0.0, True
    for i, case in enumerate(cases):
        rng = np.random.default_rng(zlib.crc32(f"{label}/{i}".encode()))
        for result in run(be, dtype, rng, **case):
            if np.asarray(result.actual).dtype.kind in "iu":
                exact &= bool(np.array_equal(result.actual, result.expected))
            else:
                error = rel_err(result.actual, result.expected)
                largest = error if np.isnan(error) else max(largest, error)
    return largest, exact


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "gpu"))
    be = get_backend(parser.parse_args().device)

    rows, inexact = [], []
    for kernel in sorted(KERNELS, key=list(KERNELS).index):
        errors = []
        for dtype in DTYPES:
            error, exact = worst(RUNNERS[kernel], be, dtype, kernel_cases(kernel), kernel)
            errors.append(error)
            if not exact:
                inexact.append(f"{kernel} ({np.dtype(dtype).name})")
        rows.append((kernel, *errors))
    for op in ("conv2d", "linear"):
        run, cases = OP_CASES[op]
        rows.append((f"ops.{op} (GEMM)", *(worst(run, be, dtype, cases, op)[0] for dtype in DTYPES)))

    print(f"Max relative error vs the float64 oracle ({be.name} backend)\n")
    print("| kernel | max rel err f32 | max rel err f64 |")
    print("|---|---|---|")
    for name, f32, f64 in rows:
        print(f"| {name} | {f32:.2e} | {f64:.2e} |")
    print()
    print("Integer outputs (maxpool_forward argmax): "
          + ("all exact." if not inexact else "MISMATCH in " + ", ".join(inexact)))


if __name__ == "__main__":
    main()
