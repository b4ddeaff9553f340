"""The emulated grid: the kernels' device code on the host, driven by the GPU launcher.

tests/test_gpu_parity.py runs every kernel and op on it (threads in forward
and reversed order). Here: it is sensitive — a planted indexing mutation in
the device expansion of the dialect fails the parity cases; it checks the
launcher's argument typing as strictly as a device would need; and one whole
training step (forward, loss, backward, Adam) of each network on it equals
the CPU backend's.
"""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from glasscuda import models
from glasscuda.backend import Backend
from glasscuda.backend.emulated import EmulatedGridLauncher, build_emulated_library
from glasscuda.backend.sources import kernel_dir
from glasscuda.backend.table import KERNELS
from glasscuda.losses import BCEWithLogitsLoss, CrossEntropyLoss, FocalLoss
from glasscuda.optim import Adam, AdamW
from conftest import rel_err
from test_gpu_parity import KERNEL_CASES, assert_parity, both
from test_kernels import RUNNERS, TOLERANCE

# Each mutation is a one-token change to the device expansion in portable.cuh.
MUTATIONS = {
    "line loop drops its last element": (
        "gc_k_ < (long long)(n_lines) * gc_run_;", "gc_k_ < (long long)(n_lines) * gc_run_ - 1;"),
    "grid-stride step skips a block": (
        "#define GC_THREAD_COUNT ((long long)blockDim.x * gridDim.x)",
        "#define GC_THREAD_COUNT ((long long)blockDim.x * (gridDim.x + 1))"),
}


def parity_failures(device, cpu, dtype=np.float32):
    """The kernel parity cases that fail on ``device``."""
    failed = []
    for kernel, case in KERNEL_CASES:
        device_results, cpu_results = both(RUNNERS[kernel], device, cpu, dtype, 20240917, **case)
        try:
            assert_parity(device_results, cpu_results, dtype, kernel)
        except AssertionError:
            failed.append(kernel)
    return failed


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_a_planted_indexing_mutation_fails_the_emulated_parity_suite(tmp_path, cpu, mutation):
    original, mutated = MUTATIONS[mutation]
    source = tmp_path / "kernels"
    shutil.copytree(kernel_dir(), source)
    header = (source / "portable.cuh").read_text()
    assert header.count(original) == 1, f"the mutation target is no longer in portable.cuh: {original}"
    (source / "portable.cuh").write_text(header.replace(original, mutated))
    library = build_emulated_library(source, cache_dir=tmp_path / "build")
    device = Backend(EmulatedGridLauncher(library=library), np)
    failed = parity_failures(device, cpu)
    assert failed, f"the planted mutation ({mutation}) passed every parity case"


def test_the_unmutated_library_passes_the_same_cases(cpu, emulated):
    assert parity_failures(emulated, cpu) == []


def test_every_kernel_runs_on_the_emulated_grid():
    library = EmulatedGridLauncher().library
    for kernel in KERNELS.values():
        for suffix in ("f32", "f64"):
            assert hasattr(library, f"{kernel.name}_{suffix}"), f"{kernel.name}_{suffix} missing"


@pytest.mark.parametrize("wrong", ["python float", "float64 scalar in a float32 kernel", "python int"])
def test_arguments_typed_other_than_the_device_needs_are_refused(emulated, wrong):
    launcher = emulated.launcher
    x = np.linspace(-1, 1, 100, dtype=np.float32)
    grad = np.zeros_like(x)
    m, v = np.zeros_like(x), np.zeros_like(x)
    planned = launcher.plan("adam_update", param=x, grad=grad, m=m, v=v, n=x.size, decoupled=0,
                            lr=1e-3, one_minus_beta1=0.1, one_minus_beta2=0.001, eps=1e-8,
                            weight_decay=0.0, bc1=0.1, bc2=0.001)
    args = list(planned.args)
    if wrong == "python float":
        args[-1] = float(args[-1])
    elif wrong == "python int":
        args[4] = int(args[4])
    else:
        args[-1] = np.float64(args[-1])
    function = launcher.function(planned.kernel, planned.suffix)
    with pytest.raises(TypeError, match="adam_update_f32: argument"):
        function((planned.blocks,), (planned.threads_per_block,), tuple(args))


def test_the_grid_is_small_enough_to_wrap(emulated):
    launcher = emulated.launcher
    planned = launcher.plan("relu_forward", x=np.zeros(1000, np.float32), y=np.zeros(1000, np.float32),
                            n=1000)
    assert planned.blocks * planned.threads_per_block < 1000


# One training step of each network ---------------------------------------------------------

def binary_setup(device, rng):
    model = models.BinaryDetector(image_size=32, seed=3).to(device)
    x = rng.standard_normal((4, 1, 32, 32)).astype(np.float32)
    y = np.array([[0], [1], [1], [0]], np.float32)
    return model, BCEWithLogitsLoss(device=device), Adam(model.parameters(), lr=1e-3), x, y


def multilabel_setup(device, rng):
    model = models.MultiLabelNet(image_size=32, seed=3).to(device)
    x = rng.standard_normal((4, 1, 32, 32)).astype(np.float32)
    y = (rng.random((4, 4)) < 0.4).astype(np.float32)
    loss = FocalLoss([1.0, 2.0, 3.0, 4.0], gamma=2.0, device=device)
    return model, loss, AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2), x, y


def cifar_setup(device, rng):
    model = models.CifarNet(seed=3).to(device)
    x = rng.standard_normal((4, 3, 32, 32)).astype(np.float32)
    y = np.array([1, 7, 0, 9], np.int64)
    return model, CrossEntropyLoss(device=device), Adam(model.parameters(), lr=1e-3), x, y


def training_step(setup, be, steps=2):
    """Loss, logits and parameters after ``steps`` steps on the same batch, as host arrays."""
    model, loss_fn, optimizer, x, y = setup(be, np.random.default_rng(11))
    X = be.asarray(x)
    Y = be.asarray(y) if y.dtype != np.int64 else be.asarray(y, dtype=np.int64)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        logits = model.forward(X)
        losses.append(float(be.to_numpy(loss_fn.forward(logits, Y))))
        model.backward(loss_fn.backward(), need_input_grad=False)
        optimizer.step()
    params = [be.to_numpy(p.data).copy() for p in model.parameters()]
    return np.array(losses), be.to_numpy(logits).copy(), params


@pytest.mark.parametrize("setup", [binary_setup, multilabel_setup, cifar_setup],
                         ids=["binary", "multilabel", "cifar10"])
@pytest.mark.parametrize("order", ["emulated", "emulated_reversed"])
def test_a_whole_training_step_on_the_emulated_grid_equals_the_cpu(request, cpu, setup, order):
    device = request.getfixturevalue(order)
    tolerance = TOLERANCE["gemm"][np.float32]
    (cpu_loss, cpu_logits, cpu_params), (dev_loss, dev_logits, dev_params) = (
        training_step(setup, cpu), training_step(setup, device))
    assert rel_err(dev_loss, cpu_loss) <= tolerance, (dev_loss, cpu_loss)
    assert rel_err(dev_logits, cpu_logits) <= tolerance
    for i, (d, c) in enumerate(zip(dev_params, cpu_params)):
        assert rel_err(d, c) <= tolerance, f"parameter {i} differs after the step: {rel_err(d, c):.3g}"
