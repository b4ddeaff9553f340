"""Every kernel and op on the GPU against the CPU, on the same inputs.

Each test runs on three devices: the real GPU (marked ``gpu``; skipped where
no GPU answers) and the kernels' device code on the host over an emulated
grid (glasscuda.backend.emulated), in forward and in reversed thread order —
those two never skip.

The runners of tests/test_kernels.py draw the inputs from a seeded Generator,
so the two backends see identical data. Tolerances on
rel_err(gpu, cpu) = max|g - c| / max(max|c|, tiny): float32 <= 1e-5 for
elementwise kernels, <= 1e-4 for the GEMM-based ops, float64 <= 1e-10;
argmax, im2col and the flips must agree exactly. Skipped where no GPU answers.
"""
from __future__ import annotations

import numpy as np
import pytest

from conftest import poisoned, rel_err
from glasscuda import reference as ref
from glasscuda.backend.table import KERNELS
from test_kernels import (CONV_EDGE_CASES, DISJOINT_EDGE_CASES, DTYPES, EXACT, FIXED_CASES, OP_CASES,
                          POOL_EDGE_CASES, RUNNERS, TOLERANCE, check, normal)

DEVICES = [pytest.param("gpu", marks=pytest.mark.gpu), "emulated", "emulated-reversed"]


@pytest.fixture(params=DEVICES)
def device(request):
    """The device under test: the real GPU, or the emulated grid in either thread order."""
    return request.getfixturevalue(request.param.replace("-", "_"))

each_dtype = pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])


def assert_parity(gpu_results, cpu_results, dtype, what):
    assert [r.name for r in gpu_results] == [r.name for r in cpu_results]
    for g, c in zip(gpu_results, cpu_results):
        label = f"{what} {g.name} ({np.dtype(dtype).name})"
        if g.kind == EXACT:
            np.testing.assert_array_equal(g.actual, c.actual, err_msg=f"{label}: GPU != CPU")
        else:
            error, tolerance = rel_err(g.actual, c.actual), TOLERANCE[g.kind][dtype]
            assert error <= tolerance, f"{label}: GPU vs CPU relative error {error:.3g} > {tolerance:g}"


def both(run, device, cpu, dtype, seed, **case):
    return (run(device, dtype, np.random.default_rng(seed), **case),
            run(cpu, dtype, np.random.default_rng(seed), **case))


KERNEL_CASES = [(k, c) for k, cases in FIXED_CASES.items() for c in cases]
KERNEL_CASES += [(k, dict(zip(("N", "C", "H", "W", "KH", "KW", "SH", "SW", "PH", "PW"), g)))
                 for k in ("im2col", "col2im") for g in CONV_EDGE_CASES]
KERNEL_CASES += [(k, dict(zip(("N", "C", "H", "W", "KH", "KW", "SH", "SW"), g), ties=t, relu=r))
                 for k in ("maxpool_forward", "maxpool_backward") for g in POOL_EDGE_CASES for t in (False, True)
                 for r in (0, 1)]
KERNEL_CASES += [("maxpool_backward_disjoint", dict(zip(("N", "C", "H", "W", "KH", "KW", "SH", "SW"), g), ties=t,
                                                    relu=r))
                 for g in DISJOINT_EDGE_CASES for t in (False, True) for r in (0, 1)]


def _case_id(kernel, case):
    return f"{kernel}-" + "-".join(f"{k}{v}" for k, v in case.items() if k != "codes")


def test_every_kernel_has_a_parity_case():
    assert {k for k, _ in KERNEL_CASES} == set(KERNELS)


@each_dtype
@pytest.mark.parametrize("kernel,case", [pytest.param(k, c, id=_case_id(k, c)) for k, c in KERNEL_CASES])
def test_kernel_gpu_matches_cpu(device, cpu, dtype, kernel, case):
    gpu_results, cpu_results = both(RUNNERS[kernel], device, cpu, dtype, 20240917, **case)
    check(cpu_results, dtype, f"{kernel} (cpu) ")
    assert_parity(gpu_results, cpu_results, dtype, kernel)


@each_dtype
@pytest.mark.parametrize("op,case", [pytest.param(name, c, id=f"{name}-" + "-".join(f"{k}{v}" for k, v in c.items()))
                                     for name, (_, cases) in OP_CASES.items() for c in cases])
def test_op_gpu_matches_cpu(device, cpu, dtype, op, case):
    run, _ = OP_CASES[op]
    gpu_results, cpu_results = both(run, device, cpu, dtype, 77, **case)
    assert_parity(gpu_results, cpu_results, dtype, f"ops {op}")


@each_dtype
def test_in_place_kernels_on_the_gpu(device, rng, dtype):
    x, b = normal(rng, (3, 5, 37), dtype), normal(rng, (5,), dtype)
    X = device.asarray(x.copy())
    device.launch("bias_add", x=X, b=device.asarray(b), y=X, N=3, C=5, S=37)
    device.launch("relu_forward", x=X, y=X, n=X.size)
    device.synchronize()
    expected = ref.relu(ref.bias_add(x, b))
    error = rel_err(device.to_numpy(X), expected)
    assert error <= TOLERANCE["elementwise"][dtype], error


@pytest.mark.gpu
def test_gpu_launch_rejects_host_arrays(gpu):
    with pytest.raises(ValueError, match="relu_forward.*'x'"):
        gpu.launch("relu_forward", x=np.zeros(4), y=gpu.asarray(poisoned(4, np.float64)), n=4)


def test_gpu_writes_every_output_element_of_a_large_launch(device):
    """More logical threads than one grid covers: the grid-stride loop must reach them all."""
    xp, launcher = device.xp, device.launcher
    n = launcher.max_blocks * launcher.threads_per_block * 3 + 12345
    x = xp.linspace(-1.0, 1.0, n, dtype=xp.float32)
    y = xp.full(n, xp.nan, dtype=xp.float32)
    device.launch("relu_forward", x=x, y=y, n=n)
    device.synchronize()
    assert not bool(xp.isnan(y).any())
    assert bool((y == xp.maximum(x, 0)).all())
