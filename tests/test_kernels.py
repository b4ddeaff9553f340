"""Every kernel against its float64 oracle in glasscuda.reference.

Kernels are launched directly through ``backend.launch`` with every output
poisoned (NaN, or -7 for int64) beforehand, so an element a kernel leaves
unwritten fails the comparison; inputs are checked to come back unmodified.
The ops.* wrappers are tested against the same oracles.

Tolerances, on the relative error max|a - b| / max(max|b|, tiny) (see
``conftest.rel_err``): float32 <= 1e-5 for elementwise kernels and <= 1e-4 for
the GEMM-based ops (conv2d forward/backward, linear); float64 <= 1e-10.

The ``run_<kernel>`` functions draw inputs from a NumPy Generator, launch the
kernel on a backend and return its outputs beside the oracle's. They are shared
with tests/test_gpu_parity.py and tests/kernel_error_table.py.
"""
from __future__ import annotations

import inspect
import math
import re
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from conftest import POISON_INT, poisoned, rel_err
from glasscuda import ops
from glasscuda import reference as ref
from glasscuda.backend.cases import CASES, KernelCases
from glasscuda.backend.sources import kernel_dir
from glasscuda.backend.table import INT64, KERNELS, In, Kernel, Out

DTYPES = (np.float32, np.float64)
ELEMENTWISE, GEMM, EXACT = "elementwise", "gemm", "exact"
TOLERANCE = {
    ELEMENTWISE: {np.float32: 1e-5, np.float64: 1e-10},
    GEMM: {np.float32: 1e-4, np.float64: 1e-10},
}
# |z| beyond which bce_with_logits clamps with eps = 1e-7: -log(1e-7) ~ 16.118.
BCE_CLAMP_BAND = (15.8, 16.5)

each_dtype = pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
seeds = st.integers(0, 2**32 - 1)


# Running a kernel ------------------------------------------------------------

@dataclass
class Result:
    """One output of a kernel (as NumPy) beside the float64 oracle's value."""

    name: str
    actual: np.ndarray
    expected: np.ndarray
    kind: str = ELEMENTWISE   # ELEMENTWISE / GEMM: relative tolerance; EXACT: bit for bit


def launch(be, kernel, dtype, inputs, outputs, **scalars):
    """Launch ``kernel`` on ``be``; return its outputs as NumPy arrays.

    ``inputs`` maps argument names to host arrays (copied to the device; for
    in-out arguments the copy is updated). ``outputs`` maps the output-only
    arguments to shapes; they are allocated poisoned. Inputs that the kernel
    only reads must come back unchanged.
    """
    spec = KERNELS[kernel]
    arrays = {a.name: a for a in spec.arrays}
    device = {name: be.asarray(np.array(host, copy=True)) for name, host in inputs.items()}
    for name, shape in outputs.items():
        device[name] = be.asarray(poisoned(shape, np.int64 if arrays[name].dtype == INT64 else dtype))
    be.launch(kernel, **device, **scalars)
    be.synchronize()
    for a in spec.arrays:
        if a.input and not a.output:
            np.testing.assert_array_equal(be.to_numpy(device[a.name]), inputs[a.name],
                                          err_msg=f"{kernel} modified its input '{a.name}'")
    return {a.name: np.array(be.to_numpy(device[a.name])) for a in spec.arrays if a.output}


def check(results, dtype, what=""):
    """Assert each result is within its tolerance of the oracle (exact ones bit for bit)."""
    for r in results:
        label = f"{what}{r.name} ({np.dtype(dtype).name})"
        if r.kind == EXACT:
            np.testing.assert_array_equal(r.actual, r.expected, err_msg=label)
        else:
            error, tolerance = rel_err(r.actual, r.expected), TOLERANCE[r.kind][dtype]
            assert error <= tolerance, f"{label}: relative error {error:.3g} > {tolerance:g}"


def normal(rng, shape, dtype, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(dtype)


def conv_ints(N, C, H, W, KH, KW, SH, SW, PH, PW):
    return dict(N=N, C=C, H=H, W=W, KH=KH, KW=KW, SH=SH, SW=SW, PH=PH, PW=PW,
                HO=(H + 2 * PH - KH) // SH + 1, WO=(W + 2 * PW - KW) // SW + 1)


def col_shape(g):
    """im2col's columns: [C*KH*KW, N*HO*WO], the images side by side (kernels/im2col.cu)."""
    return (g["C"] * g["KH"] * g["KW"], g["N"] * g["HO"] * g["WO"])


def pool_ints(N, C, H, W, KH, KW, SH, SW):
    return dict(N=N, C=C, H=H, W=W, KH=KH, KW=KW, SH=SH, SW=SW,
                HO=(H - KH) // SH + 1, WO=(W - KW) // SW + 1)


def pool_input(rng, shape, dtype, ties, relu=0):
    """Distinct values, or (ties=True) values from {0, 1, 2} so that windows tie; for a pool that applies
    ReLU (``relu``) shifted down by 1, so that many windows hold nothing above 0 and some tie at 0."""
    x = rng.integers(0, 3, shape).astype(dtype) if ties else normal(rng, shape, dtype)
    return x - 1 if relu else x


# One runner per kernel -------------------------------------------------------

def run_im2col(be, dtype, rng, **geometry):
    g = conv_ints(**geometry)
    x = normal(rng, (g["N"], g["C"], g["H"], g["W"]), dtype)
    out = launch(be, "im2col", dtype, {"x": x}, {"col": col_shape(g)}, **g)
    expected = ref.im2col(x, g["KH"], g["KW"], g["SH"], g["SW"], g["PH"], g["PW"])
    return [Result("col", out["col"], expected, EXACT)]


def run_col2im(be, dtype, rng, **geometry):
    g = conv_ints(**geometry)
    x_shape = (g["N"], g["C"], g["H"], g["W"])
    col = normal(rng, col_shape(g), dtype)
    out = launch(be, "col2im", dtype, {"col": col}, {"x": x_shape}, **g)
    expected = ref.col2im(col, x_shape, g["KH"], g["KW"], g["SH"], g["SW"], g["PH"], g["PW"])
    return [Result("x", out["x"], expected)]


def run_conv_direct_forward(be, dtype, rng, O, relu, **geometry):
    g = conv_ints(**geometry)
    x = normal(rng, (g["N"], g["C"], g["H"], g["W"]), dtype)
    weight, bias = normal(rng, (O, g["C"], g["KH"], g["KW"]), dtype), normal(rng, (O,), dtype)
    out = launch(be, "conv_direct_forward", dtype, {"x": x, "weight": weight, "bias": bias},
                 {"y": (g["N"], O, g["HO"], g["WO"])}, O=O, relu=relu, **g)
    expected = ref.conv_direct(x, weight, bias, g["SH"], g["SW"], g["PH"], g["PW"], relu=relu)
    return [Result("y", out["y"], expected, GEMM)]


def run_conv_direct_grad_partial(be, dtype, rng, O, rows, **geometry):
    g = conv_ints(**geometry)
    J = -(-g["HO"] // rows)
    x = normal(rng, (g["N"], g["C"], g["H"], g["W"]), dtype)
    dy = normal(rng, (g["N"], O, g["HO"], g["WO"]), dtype)
    T = g["C"] * g["KH"] * g["KW"] + 1
    out = launch(be, "conv_direct_grad_partial", dtype, {"dy": dy, "x": x}, {"partial": (g["N"] * J, O, T)},
                 O=O, rows=rows, J=J, **g)
    expected = ref.conv_direct_grad_partial(dy, x, g["KH"], g["KW"], g["SH"], g["SW"], g["PH"], g["PW"], rows)
    return [Result("partial", out["partial"], expected, GEMM)]


def run_conv_direct_grad_reduce(be, dtype, rng, O, T, K):
    partial = normal(rng, (K, O, T), dtype)
    out = launch(be, "conv_direct_grad_reduce", dtype, {"partial": partial},
                 {"dweight": (O, T - 1), "dbias": (O,)}, O=O, T=T, K=K)
    dweight, dbias = ref.conv_direct_grad_reduce(partial)
    return [Result("dweight", out["dweight"], dweight), Result("dbias", out["dbias"], dbias)]


def pool_window(g):
    return g["KH"], g["KW"], g["SH"], g["SW"]


def run_maxpool_forward(be, dtype, rng, ties=False, relu=0, **geometry):
    g = pool_ints(**geometry)
    x = pool_input(rng, (g["N"], g["C"], g["H"], g["W"]), dtype, ties, relu)
    shape = (g["N"], g["C"], g["HO"], g["WO"])
    out = launch(be, "maxpool_forward", dtype, {"x": x}, {"y": shape, "argmax": shape}, relu=relu, **g)
    y, argmax = (ref.relu_maxpool2d if relu else ref.maxpool2d)(x, *pool_window(g))
    return [Result("y", out["y"], y), Result("argmax", out["argmax"], argmax, EXACT)]


def pool_backward_inputs(rng, dtype, g, ties, relu):
    """x, and the forward's (y, argmax) for it with a random dy: what a max-pool's backward receives."""
    x = pool_input(rng, (g["N"], g["C"], g["H"], g["W"]), dtype, ties, relu)
    y, argmax = (ref.relu_maxpool2d if relu else ref.maxpool2d)(x, *pool_window(g))
    return x, {"dy": normal(rng, argmax.shape, dtype), "argmax": argmax, "y": y.astype(dtype)}


def run_maxpool_backward(be, dtype, rng, ties=False, relu=0, **geometry):
    g = pool_ints(**geometry)
    x, inputs = pool_backward_inputs(rng, dtype, g, ties, relu)
    out = launch(be, "maxpool_backward", dtype, inputs, {"dx": x.shape}, relu=relu, **g)
    return [Result("dx", out["dx"], ref.maxpool2d_backward(inputs["dy"], inputs["argmax"], x.shape) if not relu
                   else ref.relu_maxpool2d_backward(inputs["dy"], x, *pool_window(g)))]


def run_maxpool_backward_disjoint(be, dtype, rng, ties=False, relu=0, **geometry):
    """Non-overlapping windows (KH <= SH, KW <= SW): each pixel's gradient from its one candidate window."""
    g = pool_ints(**geometry)
    assert g["KH"] <= g["SH"] and g["KW"] <= g["SW"], "windows overlap"
    x, inputs = pool_backward_inputs(rng, dtype, g, ties, relu)
    out = launch(be, "maxpool_backward_disjoint", dtype, inputs, {"dx": x.shape}, relu=relu, **disjoint_ints(g))
    return [Result("dx", out["dx"], ref.maxpool2d_backward(inputs["dy"], inputs["argmax"], x.shape) if not relu
                   else ref.relu_maxpool2d_backward(inputs["dy"], x, *pool_window(g)), EXACT)]


def disjoint_ints(g):
    """maxpool_backward_disjoint's integers (it needs no window size) from :func:`pool_ints`."""
    return {k: g[k] for k in ("N", "C", "H", "W", "SH", "SW", "HO", "WO")}


def run_global_avgpool_forward(be, dtype, rng, NC, HW):
    x = normal(rng, (NC, HW), dtype)
    out = launch(be, "global_avgpool_forward", dtype, {"x": x}, {"y": (NC,)}, NC=NC, HW=HW)
    return [Result("y", out["y"], ref.global_avgpool(x.reshape(1, NC, HW, 1))[0])]


def run_global_avgpool_backward(be, dtype, rng, NC, HW):
    dy = normal(rng, (NC,), dtype)
    out = launch(be, "global_avgpool_backward", dtype, {"dy": dy}, {"dx": (NC, HW)}, NC=NC, HW=HW)
    expected = ref.global_avgpool_backward(dy.reshape(1, NC), (1, NC, HW, 1)).reshape(NC, HW)
    return [Result("dx", out["dx"], expected)]


def relu_input(rng, n, dtype):
    """Normal values with exact zeros (both signs) sprinkled in: the kink must give 0."""
    x = normal(rng, n, dtype)
    x[rng.random(n) < 0.1] = 0.0
    x[rng.random(n) < 0.05] = -0.0
    return x


def run_relu_forward(be, dtype, rng, n):
    x = relu_input(rng, n, dtype)
    out = launch(be, "relu_forward", dtype, {"x": x}, {"y": (n,)}, n=n)
    return [Result("y", out["y"], ref.relu(x))]


def run_relu_backward(be, dtype, rng, n):
    x, dy = relu_input(rng, n, dtype), normal(rng, n, dtype)
    out = launch(be, "relu_backward", dtype, {"x": x, "dy": dy}, {"dx": (n,)}, n=n)
    return [Result("dx", out["dx"], ref.relu_backward(x, dy))]


def run_bias_add(be, dtype, rng, N, C, S):
    x, b = normal(rng, (N, C, S), dtype), normal(rng, (C,), dtype)
    out = launch(be, "bias_add", dtype, {"x": x, "b": b}, {"y": (N, C, S)}, N=N, C=C, S=S)
    return [Result("y", out["y"], ref.bias_add(x, b))]


def run_bias_grad_partial(be, dtype, rng, N, C, S, chunk):
    dy = normal(rng, (N, C, S), dtype)
    J = -(-S // chunk)
    out = launch(be, "bias_grad_partial", dtype, {"dy": dy}, {"partial": (C, N * J)},
                 N=N, C=C, S=S, chunk=chunk, J=J)
    return [Result("partial", out["partial"], ref.bias_grad_partial(dy, chunk))]


def run_bias_grad_reduce(be, dtype, rng, C, K):
    partial = normal(rng, (C, K), dtype)
    out = launch(be, "bias_grad_reduce", dtype, {"partial": partial}, {"db": (C,)}, C=C, K=K)
    return [Result("db", out["db"], ref.bias_grad_reduce(partial))]


def run_op_bias_grad(be, dtype, rng, N, C, S):
    dy = normal(rng, (N, C, S), dtype)
    return [Result("db", be.to_numpy(ops.bias_grad(be, be.asarray(dy), N, C, S)), ref.bias_grad(dy))]


def run_swap_outer_axes(be, dtype, rng, A, B, L):
    x = normal(rng, (A, B, L), dtype)
    out = launch(be, "swap_outer_axes", dtype, {"x": x}, {"y": (B, A, L)}, A=A, B=B, L=L)
    return [Result("y", out["y"], ref.swap_outer_axes(x))]


def run_swap_outer_axes_bias(be, dtype, rng, A, B, L, relu):
    x, bias = normal(rng, (A, B, L), dtype), normal(rng, (A,), dtype)
    out = launch(be, "swap_outer_axes_bias", dtype, {"x": x, "bias": bias}, {"y": (B, A, L)},
                 A=A, B=B, L=L, relu=relu)
    return [Result("y", out["y"], ref.swap_outer_axes_bias(x, bias, relu))]


def bce_logits(rng, n, dtype, scale=4.0):
    """Logits around 0 plus some far out where the clamp bites, none near the clamp's edge."""
    z = scale * rng.standard_normal(n)
    far = rng.random(n) < 0.15
    z[far] = rng.choice([-1.0, 1.0], far.sum()) * rng.uniform(17.0, 60.0, far.sum())
    near_edge = (np.abs(z) > BCE_CLAMP_BAND[0]) & (np.abs(z) < BCE_CLAMP_BAND[1])
    z[near_edge] = np.sign(z[near_edge]) * 20.0
    return z.astype(dtype)


def run_bce_with_logits(be, dtype, rng, n, eps=1e-7, scale=None, soft=False, z=None, y=None):
    z = bce_logits(rng, n, dtype) if z is None else np.asarray(z, dtype)
    if y is None:
        y = rng.random(n) if soft else rng.integers(0, 2, n)
    y = np.asarray(y, dtype)
    scale = 1.0 / n if scale is None else scale
    out = launch(be, "bce_with_logits", dtype, {"z": z, "y": y}, {"loss": (n,), "grad": (n,)},
                 n=n, eps=eps, scale=scale)
    loss, grad = ref.bce_with_logits(z, y, eps=float(np.asarray(eps, dtype)))
    return [Result("loss", out["loss"], loss), Result("grad", out["grad"], scale * grad)]


def run_focal_with_logits(be, dtype, rng, N, K, gamma=2.0, scale=None, z=None, y=None, weight=None):
    z = normal(rng, (N, K), dtype, 3.0) if z is None else np.asarray(z, dtype)
    y = (rng.integers(0, 2, (N, K)) if y is None else np.asarray(y)).astype(dtype)
    weight = (rng.uniform(0.25, 4.0, K) if weight is None else np.asarray(weight)).astype(dtype)
    scale = 1.0 / (N * K) if scale is None else scale
    out = launch(be, "focal_with_logits", dtype, {"z": z, "y": y, "weight": weight},
                 {"loss": (N, K), "grad": (N, K)}, N=N, K=K, gamma=gamma, scale=scale)
    loss, grad = ref.focal_with_logits(z, y, weight, gamma=gamma)
    return [Result("loss", out["loss"], loss), Result("grad", out["grad"], scale * grad)]


def run_softmax_cross_entropy(be, dtype, rng, N, K, scale=None, spread=3.0, z=None, label=None):
    z = normal(rng, (N, K), dtype, spread) if z is None else np.asarray(z, dtype)
    label = rng.integers(0, K, N) if label is None else np.asarray(label, np.int64)
    scale = 1.0 / N if scale is None else scale
    out = launch(be, "softmax_cross_entropy", dtype, {"z": z, "label": label},
                 {"loss": (N,), "grad": (N, K)}, N=N, K=K, scale=scale)
    loss, grad = ref.softmax_cross_entropy(z, label)
    return [Result("loss", out["loss"], loss), Result("grad", out["grad"], scale * grad)]


def run_adam_update(be, dtype, rng, n, decoupled=False, steps=4, lr=1e-2, beta1=0.9, beta2=0.999,
                    eps=1e-8, weight_decay=0.0, exact_hyperparameters=False):
    """``steps`` consecutive steps from m = v = 0, each compared with reference.adam_step.

    The kernel takes its real scalars in its own precision (1 - beta1 and
    1 - beta2 formed in double by the caller), so by default the oracle gets
    the hyperparameters rounded to ``dtype`` as the kernel sees them;
    ``exact_hyperparameters`` gives the oracle the values as written.
    """
    hyper = dict(lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay)
    scalars = dict(lr=lr, one_minus_beta1=1.0 - beta1, one_minus_beta2=1.0 - beta2, eps=eps,
                   weight_decay=weight_decay)
    if not exact_hyperparameters:
        scalars = {k: float(dtype(v)) for k, v in scalars.items()}
        hyper = dict(scalars, beta1=1.0 - scalars["one_minus_beta1"], beta2=1.0 - scalars["one_minus_beta2"])
        del hyper["one_minus_beta1"], hyper["one_minus_beta2"]
    param = normal(rng, n, dtype)
    m, v = np.zeros(n, dtype), np.zeros(n, dtype)
    want = (param, m, v)
    results = []
    for step in range(1, steps + 1):
        grad = normal(rng, n, dtype)
        out = launch(be, "adam_update", dtype, {"param": param, "grad": grad, "m": m, "v": v}, {},
                     n=n, decoupled=int(decoupled), bc1=1.0 - hyper["beta1"] ** step,
                     bc2=1.0 - hyper["beta2"] ** step, **scalars)
        param, m, v = out["param"], out["m"], out["v"]
        want = ref.adam_step(want[0], grad, want[1], want[2], step=step, decoupled=decoupled, **hyper)
        results += [Result(f"param@{step}", param, want[0]), Result(f"m@{step}", m, want[1]),
                    Result(f"v@{step}", v, want[2])]
    return results


def run_flip_rotate90(be, dtype, rng, N, C, S, codes=None):
    x = normal(rng, (N, C, S, S), dtype)
    op = (rng.integers(0, 16, N) if codes is None else np.asarray(codes)).astype(np.int64)
    out = launch(be, "flip_rotate90", dtype, {"x": x, "op": op}, {"y": x.shape}, N=N, C=C, S=S)
    return [Result("y", out["y"], ref.flip_rotate90(x, op), EXACT)]


def run_rotate_bilinear(be, dtype, rng, N, C, H, W, angles=None):
    x = normal(rng, (N, C, H, W), dtype)
    angles = rng.uniform(-math.pi, math.pi, N) if angles is None else np.asarray(angles, np.float64)
    out = launch(be, "rotate_bilinear", dtype,
                 {"x": x, "cos_t": np.cos(angles).astype(dtype), "sin_t": np.sin(angles).astype(dtype)},
                 {"y": x.shape}, N=N, C=C, H=H, W=W)
    return [Result("y", out["y"], ref.rotate_bilinear(x, angles))]


# Batch normalisation (kernels/batchnorm.cu) -------------------------------------

def bn_input(rng, N, C, S, dtype, offset=3.0):
    """x [N, C, S]: channel c is offset_c + spread_c * normal(), offset_c in [-offset, offset], spread_c in [0.5, 2]."""
    offsets, spreads = rng.uniform(-offset, offset, (1, C, 1)), rng.uniform(0.5, 2.0, (1, C, 1))
    return (offsets + spreads * rng.standard_normal((N, C, S))).astype(dtype)


def bn_chunks(S, chunk):
    return -(-S // chunk)


def run_batchnorm_stats_partial(be, dtype, rng, N, C, S, chunk, offset=3.0):
    x, J = bn_input(rng, N, C, S, dtype, offset), bn_chunks(S, chunk)
    out = launch(be, "batchnorm_stats_partial", dtype, {"x": x}, {"pmean": (C, N * J), "pm2": (C, N * J)},
                 N=N, C=C, S=S, chunk=chunk, J=J)
    pmean, pm2 = ref.batchnorm_stats_partial(x, chunk)
    return [Result("pmean", out["pmean"], pmean), Result("pm2", out["pm2"], pm2)]


def run_batchnorm_stats_reduce(be, dtype, rng, N, C, S, chunk, offset=3.0):
    """The partials of real data in, its mean and variance (straight from x) out."""
    x, J = bn_input(rng, N, C, S, dtype, offset), bn_chunks(S, chunk)
    pmean, pm2 = (p.astype(dtype) for p in ref.batchnorm_stats_partial(x, chunk))
    out = launch(be, "batchnorm_stats_reduce", dtype, {"pmean": pmean, "pm2": pm2}, {"mean": (C,), "var": (C,)},
                 N=N, C=C, S=S, chunk=chunk, J=J)
    mean, var = ref.batchnorm_stats(x)
    return [Result("mean", out["mean"], mean), Result("var", out["var"], var)]


def run_batchnorm_running_update(be, dtype, rng, C, M, momentum, steps=1):
    """``steps`` updates in a row; the oracle gets momentum rounded to ``dtype``, as the kernel sees it."""
    momentum = float(dtype(momentum))
    running_mean, running_var = normal(rng, C, dtype), rng.uniform(0.5, 2.0, C).astype(dtype)
    want = (running_mean, running_var)
    results = []
    for step in range(1, steps + 1):
        mean, var = normal(rng, C, dtype), rng.uniform(0.0, 3.0, C).astype(dtype)
        out = launch(be, "batchnorm_running_update", dtype,
                     {"mean": mean, "var": var, "running_mean": running_mean, "running_var": running_var}, {},
                     C=C, M=M, momentum=momentum)
        running_mean, running_var = out["running_mean"], out["running_var"]
        want = ref.batchnorm_running_update(*want, mean, var, M, momentum)
        results += [Result(f"running_mean@{step}", running_mean, want[0]),
                    Result(f"running_var@{step}", running_var, want[1])]
    return results


def bn_running_stats(rng, C, dtype):
    """Running statistics as eval mode meets them, one variance exactly 0 (only eps keeps it finite)."""
    mean, var = 2.0 * rng.standard_normal(C), rng.uniform(0.2, 3.0, C)
    var[0] = 0.0
    return mean.astype(dtype), var.astype(dtype)


def run_batchnorm_forward(be, dtype, rng, N, C, S, eps=1e-5, stats="batch"):
    x = bn_input(rng, N, C, S, dtype)
    weight, bias = normal(rng, C, dtype), normal(rng, C, dtype)
    if stats == "batch":
        mean, var = (s.astype(dtype) for s in ref.batchnorm_stats(x))
    else:
        mean, var = bn_running_stats(rng, C, dtype)
    out = launch(be, "batchnorm_forward", dtype,
                 {"x": x, "mean": mean, "var": var, "weight": weight, "bias": bias}, {"y": (N, C, S)},
                 N=N, C=C, S=S, eps=eps)
    return [Result("y", out["y"], ref.batchnorm(x, mean, var, weight, bias, float(dtype(eps))))]


def run_batchnorm_backward_partial(be, dtype, rng, N, C, S, chunk):
    x, dy, J = bn_input(rng, N, C, S, dtype), normal(rng, (N, C, S), dtype), bn_chunks(S, chunk)
    mean = ref.batchnorm_stats(x)[0].astype(dtype)
    out = launch(be, "batchnorm_backward_partial", dtype, {"dy": dy, "x": x, "mean": mean},
                 {"pdy": (C, N * J), "pdyx": (C, N * J)}, N=N, C=C, S=S, chunk=chunk, J=J)
    pdy, pdyx = ref.batchnorm_backward_partial(dy, x, mean, chunk)
    return [Result("pdy", out["pdy"], pdy), Result("pdyx", out["pdyx"], pdyx)]


def run_batchnorm_backward_reduce(be, dtype, rng, N, C, S, chunk, eps=1e-5):
    """The partials of real data in, dweight and dbias (straight from dy and x) out."""
    x, dy, J = bn_input(rng, N, C, S, dtype), normal(rng, (N, C, S), dtype), bn_chunks(S, chunk)
    mean, var = ref.batchnorm_stats(x)
    pdy, pdyx = (p.astype(dtype) for p in ref.batchnorm_backward_partial(dy, x, mean, chunk))
    out = launch(be, "batchnorm_backward_reduce", dtype, {"pdy": pdy, "pdyx": pdyx, "var": var.astype(dtype)},
                 {"dweight": (C,), "dbias": (C,)}, C=C, K=N * J, eps=eps)
    _, dweight, dbias = ref.batchnorm_backward(dy, x, np.ones(C), float(dtype(eps)))
    return [Result("dweight", out["dweight"], dweight), Result("dbias", out["dbias"], dbias)]


def run_batchnorm_backward_dx(be, dtype, rng, N, C, S, eps=1e-5):
    x, dy, weight = bn_input(rng, N, C, S, dtype), normal(rng, (N, C, S), dtype), normal(rng, C, dtype)
    eps64 = float(dtype(eps))
    mean, var = (s.astype(dtype) for s in ref.batchnorm_stats(x))
    _, dweight, dbias = (g.astype(dtype) for g in ref.batchnorm_backward(dy, x, weight, eps64))
    out = launch(be, "batchnorm_backward_dx", dtype,
                 {"dy": dy, "x": x, "mean": mean, "var": var, "weight": weight, "dweight": dweight,
                  "dbias": dbias}, {"dx": (N, C, S)}, N=N, C=C, S=S, eps=eps)
    return [Result("dx", out["dx"], ref.batchnorm_backward_dx(dy, x, mean, var, weight, dweight, dbias, eps64))]


def run_batchnorm_fold_conv(be, dtype, rng, O, K, eps=1e-5):
    weight, bias = normal(rng, (O, K), dtype), normal(rng, O, dtype)
    mean, var = bn_running_stats(rng, O, dtype)
    gamma, beta = normal(rng, O, dtype), normal(rng, O, dtype)
    out = launch(be, "batchnorm_fold_conv", dtype,
                 {"weight": weight, "bias": bias, "mean": mean, "var": var, "gamma": gamma, "beta": beta},
                 {"weight_out": (O, K), "bias_out": (O,)}, O=O, K=K, eps=eps)
    weight_out, bias_out = ref.fold_batchnorm_conv(weight, bias, mean, var, gamma, beta, float(dtype(eps)))
    return [Result("weight_out", out["weight_out"], weight_out), Result("bias_out", out["bias_out"], bias_out)]


RUNNERS = {
    "im2col": run_im2col, "col2im": run_col2im,
    "conv_direct_forward": run_conv_direct_forward, "conv_direct_grad_partial": run_conv_direct_grad_partial,
    "conv_direct_grad_reduce": run_conv_direct_grad_reduce,
    "maxpool_forward": run_maxpool_forward, "maxpool_backward": run_maxpool_backward,
    "maxpool_backward_disjoint": run_maxpool_backward_disjoint,
    "global_avgpool_forward": run_global_avgpool_forward,
    "global_avgpool_backward": run_global_avgpool_backward,
    "relu_forward": run_relu_forward, "relu_backward": run_relu_backward,
    "bias_add": run_bias_add, "bias_grad_partial": run_bias_grad_partial,
    "bias_grad_reduce": run_bias_grad_reduce, "swap_outer_axes": run_swap_outer_axes,
    "swap_outer_axes_bias": run_swap_outer_axes_bias,
    "bce_with_logits": run_bce_with_logits, "focal_with_logits": run_focal_with_logits,
    "softmax_cross_entropy": run_softmax_cross_entropy, "adam_update": run_adam_update,
    "flip_rotate90": run_flip_rotate90, "rotate_bilinear": run_rotate_bilinear,
    "batchnorm_stats_partial": run_batchnorm_stats_partial, "batchnorm_stats_reduce": run_batchnorm_stats_reduce,
    "batchnorm_running_update": run_batchnorm_running_update, "batchnorm_forward": run_batchnorm_forward,
    "batchnorm_backward_partial": run_batchnorm_backward_partial,
    "batchnorm_backward_reduce": run_batchnorm_backward_reduce, "batchnorm_backward_dx": run_batchnorm_backward_dx,
    "batchnorm_fold_conv": run_batchnorm_fold_conv,
}

# A fixed set of cases per kernel, from glasscuda/backend/cases.py: the oracle tests
# below, the GPU parity test and the error table run these.
FIXED_CASES = {name: list(entry.cases) for name, entry in CASES.items()}


def missing_pieces(name, kernel, cases=CASES, runners=RUNNERS, kernels=KERNELS) -> list[str]:
    """What a kernel still lacks, one line per piece (see "Adding a kernel" in the README)."""
    if kernel is None:
        return [f"{name}: has cases or a runner but no row in glasscuda/backend/table.py"]
    problems = []
    source = kernel_dir() / kernel.source
    if not source.is_file():
        problems.append(f"{name}: its table row names kernels/{kernel.source}, which does not exist")
    elif not re.search(rf"\b{name}\b", source.read_text()):
        problems.append(f"{name}: kernels/{kernel.source} does not define it (KERNEL {name}_f32/_f64)")
    entry = cases.get(name)
    if entry is None or not entry.cases:
        problems.append(f"{name}: no test cases: add KernelCases(valid=..., cases=(...)) for it to "
                        "glasscuda/backend/cases.py")
    elif set(entry.valid) != set(kernel.ints + kernel.reals):
        problems.append(f"{name}: the valid launch in glasscuda/backend/cases.py must set exactly the row's "
                        f"integer and real arguments {sorted(kernel.ints + kernel.reals)}, "
                        f"it sets {sorted(entry.valid)}")
    runner = runners.get(name)
    if runner is None:
        problems.append(f"{name}: no runner: add run_{name} (inputs, launch, oracle) to RUNNERS in "
                        "tests/test_kernels.py")
    elif "ref." not in inspect.getsource(runner):
        problems.append(f"{name}: {runner.__name__} compares with no oracle from glasscuda.reference")
    if f'"{name}"' not in inspect.getsource(ops):
        problems.append(f"{name}: nothing in glasscuda/ops.py launches it: add its ops wrapper")
    return problems


def test_every_kernel_in_the_table_has_all_its_pieces():
    names = set(KERNELS) | set(CASES) | set(RUNNERS)
    problems = [p for name in sorted(names) for p in missing_pieces(name, KERNELS.get(name))]
    assert not problems, "\n".join(problems)


def test_a_forgotten_piece_is_named():
    """A row whose kernel has no source, cases, runner or wrapper gets one message per missing piece."""
    ghost = Kernel("scale_rows", "scale.cu", (In("x", "n"), Out("y", "n")), ("n",), threads="n")
    problems = missing_pieces("scale_rows", ghost)
    assert [p.split(":", 2)[1].strip() for p in problems] == [
        "its table row names kernels/scale.cu, which does not exist", "no test cases", "no runner",
        "nothing in glasscuda/ops.py launches it"]
    relu = KERNELS["relu_forward"]
    assert missing_pieces("relu_forward", relu) == []
    wrong_valid = dict(CASES, relu_forward=KernelCases(valid=dict(m=5), cases=CASES["relu_forward"].cases))
    assert "the valid launch" in missing_pieces("relu_forward", relu, cases=wrong_valid)[0]
    no_oracle = dict(RUNNERS, relu_forward=normal)
    assert missing_pieces("relu_forward", relu, runners=no_oracle) == [
        "relu_forward: normal compares with no oracle from glasscuda.reference"]
    assert missing_pieces("ghost", None) == ["ghost: has cases or a runner but no row in glasscuda/backend/table.py"]


@pytest.mark.parametrize("kernel,case", [(k, c) for k, cases in FIXED_CASES.items() for c in cases],
                         ids=lambda v: v if isinstance(v, str) else "-".join(
                             f"{k}{v[k]}" for k in v if k != "codes"))
@each_dtype
def test_fixed_case_matches_oracle(cpu, rng, kernel, case, dtype):
    check(RUNNERS[kernel](cpu, dtype, rng, **case), dtype, f"{kernel}.")


# im2col / col2im --------------------------------------------------------------

@st.composite
def conv_geometries(draw):
    KH, KW = draw(st.sampled_from([1, 3, 5])), draw(st.sampled_from([1, 3, 5]))
    PH, PW = draw(st.integers(0, min(2, KH - 1))), draw(st.integers(0, min(2, KW - 1)))
    return dict(N=draw(st.integers(1, 3)), C=draw(st.integers(1, 3)),
                H=draw(st.integers(max(1, KH - 2 * PH), 11)), W=draw(st.integers(max(1, KW - 2 * PW), 11)),
                KH=KH, KW=KW, SH=draw(st.sampled_from([1, 2])), SW=draw(st.sampled_from([1, 2])),
                PH=PH, PW=PW)


CONV_EDGE_CASES = [
    # N, C, H, W, KH, KW, SH, SW, PH, PW
    (1, 1, 1, 1, 1, 1, 1, 1, 0, 0),       # one pixel, 1x1 kernel
    (1, 1, 5, 5, 5, 5, 1, 1, 2, 2),       # "same" 5x5
    (2, 3, 7, 5, 3, 3, 2, 2, 1, 1),       # odd, non-square, stride 2
    (1, 2, 6, 9, 5, 3, 1, 2, 2, 0),       # mixed kernel / stride / padding per axis
    (3, 1, 4, 7, 3, 5, 2, 1, 0, 2),
    (1, 1, 2, 3, 5, 5, 2, 2, 2, 2),       # kernel larger than the image
    (1, 1, 1, 8, 1, 3, 1, 2, 0, 1),       # a single row
    (2, 1, 8, 8, 1, 1, 2, 2, 0, 0),       # 1x1 kernel, stride 2
    (1, 4, 17, 13, 5, 5, 2, 2, 2, 2),
    (1, 2, 3, 3, 5, 5, 1, 1, 2, 2),       # stride 1, padding on both sides of a narrow image
    (2, 1, 4, 1, 3, 3, 1, 1, 1, 1),       # a single column
]
conv_edge_cases = pytest.mark.parametrize(
    "geometry", [dict(zip(("N", "C", "H", "W", "KH", "KW", "SH", "SW", "PH", "PW"), c))
                 for c in CONV_EDGE_CASES], ids=lambda g: "x".join(map(str, g.values())))


@each_dtype
@given(geometry=conv_geometries(), seed=seeds)
def test_im2col_random_shapes(cpu, dtype, geometry, seed):
    check(run_im2col(cpu, dtype, np.random.default_rng(seed), **geometry), dtype)


@each_dtype
@conv_edge_cases
def test_im2col_edge_cases(cpu, rng, dtype, geometry):
    check(run_im2col(cpu, dtype, rng, **geometry), dtype)


@each_dtype
@given(geometry=conv_geometries(), seed=seeds)
def test_col2im_random_shapes(cpu, dtype, geometry, seed):
    check(run_col2im(cpu, dtype, np.random.default_rng(seed), **geometry), dtype)


@each_dtype
@conv_edge_cases
def test_col2im_edge_cases(cpu, rng, dtype, geometry):
    check(run_col2im(cpu, dtype, rng, **geometry), dtype)


# The direct kernels' own argument beside the geometry, from a small integer k: the forward's relu flag, the
# weight gradient's rows per chunk.
DIRECT_KERNELS = pytest.mark.parametrize("run,option", [
    (run_conv_direct_forward, lambda k: dict(relu=k % 2)),
    (run_conv_direct_grad_partial, lambda k: dict(rows=k + 1)),
], ids=["forward", "grad_partial"])


@each_dtype
@DIRECT_KERNELS
@given(geometry=conv_geometries(), O=st.integers(1, 3), k=st.integers(0, 3), seed=seeds)
def test_conv_direct_random_shapes(cpu, dtype, run, option, geometry, O, k, seed):
    check(run(cpu, dtype, np.random.default_rng(seed), O=O, **option(k), **geometry), dtype)


@each_dtype
@DIRECT_KERNELS
@conv_edge_cases
def test_conv_direct_edge_cases(cpu, rng, dtype, run, option, geometry):
    """Rows narrower than the kernel, single columns: outputs at the edge of their row, taps that reach the
    image for a few outputs only."""
    check(run(cpu, dtype, rng, O=2, **option(1), **geometry), dtype)


@conv_edge_cases
def test_col2im_is_the_adjoint_of_im2col(cpu, rng, geometry):
    """<im2col(x), c> == <x, col2im(c)> for the kernels themselves."""
    g = conv_ints(**geometry)
    x = normal(rng, (g["N"], g["C"], g["H"], g["W"]), np.float64)
    c = normal(rng, col_shape(g), np.float64)
    col = launch(cpu, "im2col", np.float64, {"x": x}, {"col": c.shape}, **g)["col"]
    back = launch(cpu, "col2im", np.float64, {"col": c}, {"x": x.shape}, **g)["x"]
    lhs, rhs = float(np.sum(col * c)), float(np.sum(x * back))
    assert abs(lhs - rhs) <= 1e-12 * max(abs(lhs), np.sum(np.abs(col * c)))


# Max pooling -----------------------------------------------------------------

@st.composite
def pool_geometries(draw):
    KH, KW = draw(st.sampled_from([2, 3])), draw(st.sampled_from([2, 3]))
    return dict(N=draw(st.integers(1, 3)), C=draw(st.integers(1, 3)),
                H=draw(st.integers(KH, 11)), W=draw(st.integers(KW, 11)), KH=KH, KW=KW,
                SH=draw(st.sampled_from([1, 2, 3])), SW=draw(st.sampled_from([1, 2, 3])))


POOL_EDGE_CASES = [
    # N, C, H, W, KH, KW, SH, SW
    (1, 1, 2, 2, 2, 2, 2, 2),     # one window
    (2, 3, 7, 9, 2, 2, 2, 2),     # last row / column not covered by any window
    (1, 2, 8, 8, 3, 3, 1, 1),     # overlapping windows
    (2, 1, 9, 7, 3, 3, 2, 2),     # overlapping, stride 2
    (1, 1, 10, 11, 3, 2, 3, 1),   # different windows and strides per axis
    (3, 2, 8, 8, 2, 3, 3, 3),     # stride larger than the window: gaps
    (1, 1, 3, 3, 3, 3, 1, 1),     # window = image
    (1, 3, 2, 9, 2, 2, 1, 1),     # a single window row
]
pool_edge_cases = pytest.mark.parametrize(
    "geometry", [dict(zip(("N", "C", "H", "W", "KH", "KW", "SH", "SW"), c)) for c in POOL_EDGE_CASES],
    ids=lambda g: "x".join(map(str, g.values())))
ties = pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])


with_relu = pytest.mark.parametrize("relu", [0, 1], ids=["pool", "relu+pool"])


@each_dtype
@given(geometry=pool_geometries(), seed=seeds, ties=st.booleans(), relu=st.sampled_from([0, 1]))
def test_maxpool_forward_random_shapes(cpu, dtype, geometry, seed, ties, relu):
    check(run_maxpool_forward(cpu, dtype, np.random.default_rng(seed), ties=ties, relu=relu, **geometry), dtype)


@each_dtype
@ties
@with_relu
@pool_edge_cases
def test_maxpool_forward_edge_cases(cpu, rng, dtype, ties, relu, geometry):
    """Values and argmax (exactly; the first maximum in row-major window order wins a tie)."""
    check(run_maxpool_forward(cpu, dtype, rng, ties=ties, relu=relu, **geometry), dtype)


@each_dtype
@given(geometry=pool_geometries(), seed=seeds, ties=st.booleans(), relu=st.sampled_from([0, 1]))
def test_maxpool_backward_random_shapes(cpu, dtype, geometry, seed, ties, relu):
    check(run_maxpool_backward(cpu, dtype, np.random.default_rng(seed), ties=ties, relu=relu, **geometry), dtype)


@each_dtype
@ties
@with_relu
@pool_edge_cases
def test_maxpool_backward_edge_cases(cpu, rng, dtype, ties, relu, geometry):
    """Overlapping windows that share a maximum must add their gradients."""
    check(run_maxpool_backward(cpu, dtype, rng, ties=ties, relu=relu, **geometry), dtype)


@st.composite
def disjoint_pool_geometries(draw):
    g = draw(pool_geometries())
    g["SH"], g["SW"] = max(g["SH"], g["KH"]), max(g["SW"], g["KW"])
    return g


DISJOINT_EDGE_CASES = [c for c in POOL_EDGE_CASES if c[4] <= c[6] and c[5] <= c[7]]


@each_dtype
@given(geometry=disjoint_pool_geometries(), seed=seeds, ties=st.booleans(), relu=st.sampled_from([0, 1]))
def test_maxpool_backward_disjoint_random_shapes(cpu, dtype, geometry, seed, ties, relu):
    check(run_maxpool_backward_disjoint(cpu, dtype, np.random.default_rng(seed), ties=ties, relu=relu,
                                        **geometry), dtype)


@each_dtype
@ties
@with_relu
@pytest.mark.parametrize("geometry", [dict(zip(("N", "C", "H", "W", "KH", "KW", "SH", "SW"), c))
                                      for c in DISJOINT_EDGE_CASES], ids=lambda g: "x".join(map(str, g.values())))
def test_maxpool_backward_disjoint_edge_cases(cpu, rng, dtype, ties, relu, geometry):
    check(run_maxpool_backward_disjoint(cpu, dtype, rng, ties=ties, relu=relu, **geometry), dtype)


@each_dtype
@with_relu
@pytest.mark.parametrize("geometry", [dict(N=2, C=3, H=7, W=9, KH=2, KW=2, SH=2, SW=2),
                                      dict(N=1, C=2, H=9, W=8, KH=2, KW=3, SH=3, SW=3)],
                         ids=["2x2s2", "2x3s3"])
def test_maxpool_backward_disjoint_equals_the_gather(cpu, rng, dtype, relu, geometry):
    """Where windows do not overlap, both backward kernels give the same dx, to the bit."""
    g = pool_ints(**geometry)
    x, inputs = pool_backward_inputs(rng, dtype, g, False, relu)
    gathered = launch(cpu, "maxpool_backward", dtype, inputs, {"dx": x.shape}, relu=relu, **g)["dx"]
    routed = launch(cpu, "maxpool_backward_disjoint", dtype, inputs, {"dx": x.shape}, relu=relu,
                    **disjoint_ints(g))["dx"]
    np.testing.assert_array_equal(routed, gathered)


def test_maxpool_backward_sums_every_window_sharing_a_maximum(cpu):
    x = np.zeros((1, 1, 5, 5))
    x[0, 0, 2, 2] = 1.0                       # inside all nine 3x3 windows at stride 1
    g = pool_ints(N=1, C=1, H=5, W=5, KH=3, KW=3, SH=1, SW=1)
    out = launch(cpu, "maxpool_forward", np.float64, {"x": x}, {"y": (1, 1, 3, 3), "argmax": (1, 1, 3, 3)},
                 relu=0, **g)
    argmax = out["argmax"]
    assert (argmax == 2 * 5 + 2).all()
    dy = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    dx = launch(cpu, "maxpool_backward", np.float64, {"dy": dy, "argmax": argmax, "y": out["y"]}, {"dx": x.shape},
                relu=0, **g)["dx"]
    np.testing.assert_array_equal(dx, ref.maxpool2d_backward(dy, argmax, x.shape))


# Global average pooling ------------------------------------------------------

avgpool_shapes = pytest.mark.parametrize("NC,HW", [(1, 1), (3, 1), (1, 7), (7, 49), (5, 4097), (0, 3)])


@each_dtype
@avgpool_shapes
def test_global_avgpool_forward(cpu, rng, dtype, NC, HW):
    check(run_global_avgpool_forward(cpu, dtype, rng, NC=NC, HW=HW), dtype)


@each_dtype
@avgpool_shapes
def test_global_avgpool_backward(cpu, rng, dtype, NC, HW):
    check(run_global_avgpool_backward(cpu, dtype, rng, NC=NC, HW=HW), dtype)


# ReLU and bias ---------------------------------------------------------------

relu_sizes = pytest.mark.parametrize("n", [1, 7, 1000, 40001])


@each_dtype
@relu_sizes
def test_relu_forward(cpu, rng, dtype, n):
    check(run_relu_forward(cpu, dtype, rng, n=n), dtype)


@each_dtype
@relu_sizes
def test_relu_backward(cpu, rng, dtype, n):
    """The subgradient at x = 0 (of either sign) is 0."""
    check(run_relu_backward(cpu, dtype, rng, n=n), dtype)


@each_dtype
def test_relu_forward_in_place(cpu, rng, dtype):
    x = relu_input(rng, 40001, dtype)
    expected = ref.relu(x)
    cpu.launch("relu_forward", x=x, y=x, n=x.size)
    check([Result("y", x, expected)], dtype)


@each_dtype
def test_relu_backward_in_place(cpu, rng, dtype):
    x, dy = relu_input(rng, 999, dtype), normal(rng, 999, dtype)
    expected = ref.relu_backward(x, dy)
    cpu.launch("relu_backward", x=x, dy=dy, dx=dy, n=x.size)
    check([Result("dx", dy, expected)], dtype)


bias_shapes = pytest.mark.parametrize("N,C,S", [(1, 1, 1), (2, 3, 5), (3, 7, 1), (1, 4, 49),
                                                (2, 16, 1024), (4, 3, 5000)])


@each_dtype
@bias_shapes
def test_bias_add(cpu, rng, dtype, N, C, S):
    check(run_bias_add(cpu, dtype, rng, N=N, C=C, S=S), dtype)


@each_dtype
@bias_shapes
def test_bias_add_in_place(cpu, rng, dtype, N, C, S):
    x, b = normal(rng, (N, C, S), dtype), normal(rng, (C,), dtype)
    expected = ref.bias_add(x, b)
    cpu.launch("bias_add", x=x, b=b, y=x, N=N, C=C, S=S)
    check([Result("y", x, expected)], dtype)


@each_dtype
@bias_shapes
def test_bias_grad(cpu, rng, dtype, N, C, S):
    check(run_op_bias_grad(cpu, dtype, rng, N=N, C=C, S=S), dtype)


# Losses ----------------------------------------------------------------------

@each_dtype
@pytest.mark.parametrize("n", [1, 2, 63, 20001])
@pytest.mark.parametrize("soft", [False, True], ids=["binary", "soft"])
def test_bce_with_logits(cpu, rng, dtype, n, soft):
    check(run_bce_with_logits(cpu, dtype, rng, n=n, soft=soft, scale=0.37), dtype)


@each_dtype
@pytest.mark.parametrize("eps,far", [(1e-7, [17.0, 20.0, 50.0, 1e3, 1e30]), (1e-3, [7.5, 10.0, 40.0])])
def test_bce_with_logits_where_the_clamp_bites(cpu, rng, dtype, eps, far):
    """Beyond the clamp the loss is constant in z, so its gradient is exactly 0."""
    magnitudes = np.array(far + [0.0, 0.5, 2.0, 5.0])
    z = np.concatenate([magnitudes, -magnitudes, magnitudes, -magnitudes])
    y = np.repeat([1.0, 1.0, 0.0, 0.0], len(magnitudes))
    results = run_bce_with_logits(cpu, dtype, rng, n=z.size, eps=eps, scale=0.5, z=z, y=y)
    check(results, dtype)
    grad = results[1].actual
    clamped = np.abs(z) >= min(far)
    assert (grad[clamped] == 0).all()
    assert (grad[~clamped] != 0).all()


@each_dtype
@pytest.mark.parametrize("gamma", [0.0, 1.0, 2.0, 2.5])
@given(N=st.integers(1, 40), K=st.integers(1, 6), seed=seeds)
def test_focal_with_logits_random_shapes(cpu, dtype, gamma, N, K, seed):
    check(run_focal_with_logits(cpu, dtype, np.random.default_rng(seed), N=N, K=K, gamma=gamma,
                                scale=0.7), dtype)


@each_dtype
@pytest.mark.parametrize("gamma", [0.0, 1.0, 2.0, 2.5])
def test_focal_with_logits_far_from_zero(cpu, rng, dtype, gamma):
    z = np.array([[-80.0, -30.0, -12.0, 12.0, 30.0, 80.0]] * 2)
    y = np.array([[0.0] * 6, [1.0] * 6])
    check(run_focal_with_logits(cpu, dtype, rng, N=2, K=6, gamma=gamma, z=z, y=y), dtype)


@each_dtype
def test_focal_with_gamma_0_is_weighted_bce(cpu, rng, dtype):
    """gamma = 0: loss = w_k * BCE for positives, BCE for negatives (BCE oracle, no clamp)."""
    N, K = 37, 4
    z, y = normal(rng, (N, K), dtype, 3.0), rng.integers(0, 2, (N, K)).astype(dtype)
    weight = rng.uniform(0.25, 4.0, K).astype(dtype)
    out = launch(cpu, "focal_with_logits", dtype, {"z": z, "y": y, "weight": weight},
                 {"loss": (N, K), "grad": (N, K)}, N=N, K=K, gamma=0.0, scale=1.0)
    bce_loss, bce_grad = ref.bce_with_logits(z, y, eps=1e-300)
    w = np.where(y == 1, weight.astype(np.float64)[None, :], 1.0)
    check([Result("loss", out["loss"], w * bce_loss), Result("grad", out["grad"], w * bce_grad)], dtype)


@each_dtype
@given(N=st.integers(1, 20), K=st.integers(1, 12), seed=seeds)
def test_softmax_cross_entropy_random_shapes(cpu, dtype, N, K, seed):
    check(run_softmax_cross_entropy(cpu, dtype, np.random.default_rng(seed), N=N, K=K, scale=0.3), dtype)


@each_dtype
@pytest.mark.parametrize("N,K,spread", [(1, 1, 1.0), (5, 1, 1.0), (1, 2, 1.0), (4, 10, 300.0),
                                         (3, 1000, 30.0)])
def test_softmax_cross_entropy_edge_cases(cpu, rng, dtype, N, K, spread):
    """One class (loss and gradient 0), batch 1, and logits far apart (no overflow)."""
    check(run_softmax_cross_entropy(cpu, dtype, rng, N=N, K=K, spread=spread), dtype)


# Confident predictions: every logit far on the right side, so every loss and
# gradient is small and float32 must not lose them to cancellation.

def test_bce_with_logits_confident_predictions_f32(cpu, rng):
    n = 64
    y = rng.integers(0, 2, n).astype(np.float64)
    z = np.where(y == 1, 1.0, -1.0) * rng.uniform(8.0, 14.0, n)
    check(run_bce_with_logits(cpu, np.float32, rng, n=n, z=z, y=y), np.float32)


def test_softmax_cross_entropy_confident_predictions_f32(cpu, rng):
    N, K = 6, 5
    label = rng.integers(0, K, N)
    z = rng.standard_normal((N, K))
    z[np.arange(N), label] += 12.0
    check(run_softmax_cross_entropy(cpu, np.float32, rng, N=N, K=K, z=z, label=label), np.float32)


# Adam / AdamW ----------------------------------------------------------------

@each_dtype
@pytest.mark.parametrize("decoupled", [False, True], ids=["adam", "adamw"])
@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
@pytest.mark.parametrize("n", [1, 7, 20001])
def test_adam_update_several_steps(cpu, rng, dtype, decoupled, weight_decay, n):
    check(run_adam_update(cpu, dtype, rng, n=n, decoupled=decoupled, weight_decay=weight_decay,
                          steps=5), dtype)


def test_adam_update_f32_with_hyperparameters_as_written(cpu, rng):
    check(run_adam_update(cpu, np.float32, rng, n=101, beta2=0.999, exact_hyperparameters=True),
          np.float32)


# Augmentation ----------------------------------------------------------------

@each_dtype
@pytest.mark.parametrize("S", [1, 4, 5])
def test_flip_rotate90_all_16_codes(cpu, rng, dtype, S):
    check(run_flip_rotate90(cpu, dtype, rng, N=16, C=2, S=S, codes=np.arange(16)), dtype)


def test_flip_rotate90_codes_mean_what_they_say(cpu, rng):
    x = normal(rng, (4, 1, 5, 5), np.float64)
    out = launch(cpu, "flip_rotate90", np.float64, {"x": x, "op": np.array([1, 2, 4, 3 << 2])},
                 {"y": x.shape}, N=4, C=1, S=5)["y"]
    np.testing.assert_array_equal(out[0], x[0, :, :, ::-1])
    np.testing.assert_array_equal(out[1], x[1, :, ::-1, :])
    np.testing.assert_array_equal(out[2], np.rot90(x[2], 1, axes=(1, 2)))
    np.testing.assert_array_equal(out[3], np.rot90(x[3], 3, axes=(1, 2)))


@each_dtype
@given(N=st.integers(1, 3), C=st.integers(1, 3), H=st.integers(1, 12), W=st.integers(1, 12), seed=seeds)
def test_rotate_bilinear_random_shapes(cpu, dtype, N, C, H, W, seed):
    check(run_rotate_bilinear(cpu, dtype, np.random.default_rng(seed), N=N, C=C, H=H, W=W), dtype)


def _rotate_by(cpu, x, angle):
    N, C, H, W = x.shape
    angles = np.full(N, angle)
    return launch(cpu, "rotate_bilinear", x.dtype.type,
                  {"x": x, "cos_t": np.cos(angles).astype(x.dtype), "sin_t": np.sin(angles).astype(x.dtype)},
                  {"y": x.shape}, N=N, C=C, H=H, W=W)["y"]


@each_dtype
def test_rotate_bilinear_angle_0_is_identity(cpu, rng, dtype):
    x = normal(rng, (2, 3, 7, 10), dtype)
    np.testing.assert_array_equal(_rotate_by(cpu, x, 0.0), x)


@each_dtype
@pytest.mark.parametrize("S", [5, 9])
def test_rotate_bilinear_by_pi_is_rot180(cpu, rng, dtype, S):
    x = normal(rng, (2, 2, S, S), dtype)
    check([Result("y", _rotate_by(cpu, x, math.pi), np.rot90(x, 2, axes=(2, 3)))], dtype)


@each_dtype
@pytest.mark.parametrize("S", [5, 9])
def test_rotate_bilinear_by_half_pi_is_numpy_rot90(cpu, rng, dtype, S):
    x = normal(rng, (2, 2, S, S), dtype)
    check([Result("y", _rotate_by(cpu, x, math.pi / 2), np.rot90(x, 1, axes=(2, 3)))], dtype)


# The ops.* wrappers ----------------------------------------------------------

def run_op_conv2d(be, dtype, rng, N, C, H, W, O, K, S, P, bias=True, method="gemm"):
    x, weight = normal(rng, (N, C, H, W), dtype), normal(rng, (O, C, K, K), dtype)
    b = normal(rng, (O,), dtype) if bias else None
    X, Wt = be.asarray(x), be.asarray(weight)
    y, saved = ops.conv2d_forward(be, X, Wt, None if b is None else be.asarray(b), stride=S, padding=P,
                                  method=method)
    dy = normal(rng, y.shape, dtype)
    dx, dweight, dbias = ops.conv2d_backward(be, be.asarray(dy), saved, x.shape, Wt, stride=S, padding=P,
                                             method=method)
    want_dx, want_dweight, want_dbias = ref.conv2d_backward(dy, x, weight, stride=S, padding=P)
    to = be.to_numpy
    return [Result("y", to(y), ref.conv2d(x, weight, b, stride=S, padding=P), GEMM),
            Result("dx", to(dx), want_dx, GEMM), Result("dweight", to(dweight), want_dweight, GEMM),
            Result("dbias", to(dbias), want_dbias, GEMM)]


def run_op_linear(be, dtype, rng, N, IN, OUT):
    x, weight, b = normal(rng, (N, IN), dtype), normal(rng, (OUT, IN), dtype), normal(rng, (OUT,), dtype)
    X, Wt = be.asarray(x), be.asarray(weight)
    y = ops.linear_forward(be, X, Wt, be.asarray(b))
    dy = normal(rng, y.shape, dtype)
    dx, dweight, dbias = ops.linear_backward(be, be.asarray(dy), X, Wt)
    want = ref.linear_backward(dy, x, weight)
    to = be.to_numpy
    return [Result("y", to(y), ref.linear(x, weight, b), GEMM), Result("dx", to(dx), want[0], GEMM),
            Result("dweight", to(dweight), want[1], GEMM), Result("dbias", to(dbias), want[2], GEMM)]


def run_op_maxpool2d(be, dtype, rng, N, C, H, W, K, S, relu=False):
    x = pool_input(rng, (N, C, H, W), dtype, False, relu)
    y, argmax = ops.maxpool2d_forward(be, be.asarray(x), K, S, relu=relu)
    dy = normal(rng, y.shape, dtype)
    dx = ops.maxpool2d_backward(be, be.asarray(dy), argmax, y, x.shape, K, S, relu=relu)
    window = (K, K) + ((K, K) if S is None else (S, S))
    want_y, want_argmax = (ref.relu_maxpool2d if relu else ref.maxpool2d)(x, *window)
    want_dx = (ref.relu_maxpool2d_backward(dy, x, *window) if relu
               else ref.maxpool2d_backward(dy, want_argmax, x.shape))
    return [Result("y", be.to_numpy(y), want_y), Result("argmax", be.to_numpy(argmax), want_argmax, EXACT),
            Result("dx", be.to_numpy(dx), want_dx)]


def run_op_global_avgpool(be, dtype, rng, N, C, H, W):
    x, dy = normal(rng, (N, C, H, W), dtype), normal(rng, (N, C), dtype)
    y = ops.global_avgpool_forward(be, be.asarray(x))
    dx = ops.global_avgpool_backward(be, be.asarray(dy), x.shape)
    return [Result("y", be.to_numpy(y), ref.global_avgpool(x)),
            Result("dx", be.to_numpy(dx), ref.global_avgpool_backward(dy, x.shape))]


def run_op_relu(be, dtype, rng, shape):
    x, dy = relu_input(rng, int(np.prod(shape)), dtype).reshape(shape), normal(rng, shape, dtype)
    y, dx = ops.relu_forward(be, be.asarray(x)), ops.relu_backward(be, be.asarray(x), be.asarray(dy))
    return [Result("y", be.to_numpy(y), ref.relu(x)), Result("dx", be.to_numpy(dx), ref.relu_backward(x, dy))]


def run_op_losses(be, dtype, rng, N, K, gamma):
    """Mean BCE, focal and softmax cross-entropy: the loss (a float) and the gradient of the mean."""
    z, y = normal(rng, (N, K), dtype, 3.0), rng.integers(0, 2, (N, K)).astype(dtype)
    weight, label = rng.uniform(0.25, 4.0, K).astype(dtype), rng.integers(0, K, N)
    results = []
    bce_loss, bce_grad = ops.bce_with_logits(be, be.asarray(z), be.asarray(y))
    want_loss, want_grad = ref.bce_with_logits(z, y)
    results += [Result("bce loss", np.array(bce_loss), want_loss.mean()),
                Result("bce grad", be.to_numpy(bce_grad), want_grad / z.size)]
    focal_loss, focal_grad = ops.focal_with_logits(be, be.asarray(z), be.asarray(y), be.asarray(weight),
                                                   gamma=gamma)
    want_loss, want_grad = ref.focal_with_logits(z, y, weight, gamma=gamma)
    results += [Result("focal loss", np.array(focal_loss), want_loss.mean()),
                Result("focal grad", be.to_numpy(focal_grad), want_grad / z.size)]
    ce_loss, ce_grad = ops.softmax_cross_entropy(be, be.asarray(z), be.asarray(label))
    want_loss, want_grad = ref.softmax_cross_entropy(z, label)
    results += [Result("cross-entropy loss", np.array(ce_loss), want_loss.mean()),
                Result("cross-entropy grad", be.to_numpy(ce_grad), want_grad / N)]
    return results


def run_op_adam(be, dtype, rng, n, decoupled, steps=4):
    # Hyperparameters that float32 holds exactly, so the oracle sees what the kernel sees.
    hyper = dict(lr=2.0**-8, beta1=0.875, beta2=1 - 2.0**-10, eps=2.0**-27, weight_decay=2.0**-6,
                 decoupled=decoupled)
    param = normal(rng, n, dtype)
    P, M, V = be.asarray(param.copy()), be.asarray(np.zeros(n, dtype)), be.asarray(np.zeros(n, dtype))
    want = (param, np.zeros(n), np.zeros(n))
    results = []
    for step in range(1, steps + 1):
        grad = normal(rng, n, dtype)
        ops.adam_update(be, P, be.asarray(grad), M, V, step=step, **hyper)
        want = ref.adam_step(want[0], grad, want[1], want[2], step=step, **hyper)
        results += [Result(f"param@{step}", be.to_numpy(P).copy(), want[0]),
                    Result(f"m@{step}", be.to_numpy(M).copy(), want[1]),
                    Result(f"v@{step}", be.to_numpy(V).copy(), want[2])]
    return results


def run_op_augment(be, dtype, rng, N, C, S):
    x = normal(rng, (N, C, S, S), dtype)
    codes, angles = rng.integers(0, 16, N), rng.uniform(-0.5, 0.5, N)
    flipped = ops.flip_rotate90(be, be.asarray(x), codes)
    rotated = ops.rotate_bilinear(be, be.asarray(x), angles)
    return [Result("flip_rotate90", be.to_numpy(flipped), ref.flip_rotate90(x, codes), EXACT),
            Result("rotate_bilinear", be.to_numpy(rotated), ref.rotate_bilinear(x, angles))]


def run_op_im2col_col2im(be, dtype, rng, N, C, H, W, K, S, P):
    g = ops.ConvGeometry.of((N, C, H, W), (1, C, K, K), S, P)
    x = normal(rng, (N, C, H, W), dtype)
    col = normal(rng, (C * K * K, N * g.HO * g.WO), dtype)
    return [Result("im2col", be.to_numpy(ops.im2col(be, be.asarray(x), g)), ref.im2col(x, K, K, S, S, P, P), EXACT),
            Result("col2im", be.to_numpy(ops.col2im(be, be.asarray(col), g)),
                   ref.col2im(col, x.shape, K, K, S, S, P, P))]



def run_op_batchnorm(be, dtype, rng, N, C, H, W, momentum=0.1, eps=1e-5, offset=3.0):
    """A training step of batch norm (statistics, running averages, forward, backward), then eval mode
    with the updated running statistics, and those folded into a convolution before it."""
    x = bn_input(rng, N, C, H * W, dtype, offset).reshape(N, C, H, W)
    weight, bias, dy = normal(rng, C, dtype), normal(rng, C, dtype), normal(rng, (N, C, H, W), dtype)
    running_mean, running_var = normal(rng, C, dtype), rng.uniform(0.5, 2.0, C).astype(dtype)
    conv_weight, conv_bias = normal(rng, (C, 2, 3, 3), dtype), normal(rng, C, dtype)
    X, Wt, B = be.asarray(x), be.asarray(weight), be.asarray(bias)
    RM, RV = be.asarray(running_mean.copy()), be.asarray(running_var.copy())
    mean, var = ops.batchnorm_stats(be, X)
    ops.batchnorm_running_update(be, mean, var, RM, RV, N * H * W, momentum)
    y = ops.batchnorm_forward(be, X, mean, var, Wt, B, eps)
    dx, dweight, dbias = ops.batchnorm_backward(be, be.asarray(dy), X, mean, var, Wt, eps)
    y_eval = ops.batchnorm_forward(be, X, RM, RV, Wt, B, eps)
    folded_weight, folded_bias = ops.fold_batchnorm_conv(be, be.asarray(conv_weight), be.asarray(conv_bias),
                                                         RM, RV, Wt, B, eps)
    want_mean, want_var = ref.batchnorm_stats(x)
    want_rm, want_rv = ref.batchnorm_running_update(running_mean, running_var, want_mean, want_var, N * H * W,
                                                    momentum)
    want_dx, want_dweight, want_dbias = ref.batchnorm_backward(dy, x, weight, eps)
    want_fw, want_fb = ref.fold_batchnorm_conv(conv_weight, conv_bias, want_rm, want_rv, weight, bias, eps)
    to = be.to_numpy
    return [Result("mean", to(mean), want_mean), Result("var", to(var), want_var),
            Result("running_mean", to(RM), want_rm), Result("running_var", to(RV), want_rv),
            Result("y", to(y), ref.batchnorm(x, want_mean, want_var, weight, bias, eps)),
            Result("dx", to(dx), want_dx), Result("dweight", to(dweight), want_dweight),
            Result("dbias", to(dbias), want_dbias),
            Result("y (eval)", to(y_eval), ref.batchnorm(x, want_rm, want_rv, weight, bias, eps)),
            Result("folded weight", to(folded_weight), want_fw), Result("folded bias", to(folded_bias), want_fb)]

OP_CASES = {
    "conv2d": (run_op_conv2d, [
        # N, C, H, W, O, K, S, P
        dict(N=1, C=1, H=5, W=5, O=1, K=1, S=1, P=0),
        dict(N=2, C=3, H=7, W=6, O=4, K=3, S=1, P=1),
        dict(N=2, C=2, H=9, W=7, O=3, K=3, S=2, P=1),
        dict(N=1, C=3, H=8, W=11, O=2, K=5, S=2, P=2),
        dict(N=3, C=2, H=6, W=6, O=5, K=3, S=2, P=0),
        dict(N=1, C=1, H=3, W=3, O=2, K=5, S=1, P=2, bias=False),
        dict(N=4, C=16, H=16, W=16, O=32, K=3, S=1, P=1),
        # the direct method (kernels/conv_direct.cu), on few input channels as it is meant for and on many
        dict(N=2, C=1, H=20, W=20, O=8, K=5, S=1, P=2, method="direct"),
        dict(N=2, C=2, H=9, W=7, O=3, K=3, S=2, P=1, method="direct"),
        dict(N=1, C=3, H=8, W=11, O=2, K=5, S=2, P=2, method="direct"),
        dict(N=1, C=1, H=3, W=3, O=2, K=5, S=1, P=2, bias=False, method="direct"),
        dict(N=2, C=16, H=10, W=10, O=8, K=3, S=1, P=1, method="direct"),
    ]),
    "linear": (run_op_linear, [dict(N=1, IN=1, OUT=1), dict(N=5, IN=7, OUT=3), dict(N=32, IN=300, OUT=17)]),
    "maxpool2d": (run_op_maxpool2d, [dict(N=2, C=3, H=8, W=8, K=2, S=None), dict(N=1, C=2, H=7, W=9, K=3, S=2),
                                     dict(N=1, C=1, H=6, W=5, K=2, S=1), dict(N=2, C=2, H=9, W=7, K=3, S=None),
                                     dict(N=1, C=3, H=8, W=11, K=2, S=3),
                                     dict(N=2, C=3, H=8, W=8, K=2, S=None, relu=True),
                                     dict(N=1, C=2, H=7, W=9, K=3, S=2, relu=True)]),
    "global_avgpool": (run_op_global_avgpool, [dict(N=1, C=1, H=1, W=1), dict(N=3, C=5, H=7, W=4)]),
    "relu": (run_op_relu, [dict(shape=(1,)), dict(shape=(3, 4, 5, 7))]),
    "losses": (run_op_losses, [dict(N=1, K=1, gamma=2.0), dict(N=9, K=4, gamma=0.0),
                               dict(N=32, K=4, gamma=2.0), dict(N=7, K=3, gamma=2.5)]),
    "adam": (run_op_adam, [dict(n=33, decoupled=False), dict(n=33, decoupled=True)]),
    "augment": (run_op_augment, [dict(N=5, C=2, S=7), dict(N=3, C=1, S=8)]),
    "bias_grad": (run_op_bias_grad, [dict(N=1, C=16, S=20000), dict(N=8, C=5, S=1), dict(N=3, C=7, S=5000)]),
    "im2col/col2im": (run_op_im2col_col2im, [dict(N=2, C=3, H=7, W=5, K=3, S=2, P=1),
                                             dict(N=1, C=2, H=6, W=9, K=5, S=1, P=2)]),
    "batchnorm": (run_op_batchnorm, [dict(N=1, C=1, H=1, W=3), dict(N=2, C=3, H=5, W=7),
                                     dict(N=8, C=3, H=1, W=1, momentum=0.5), dict(N=3, C=2, H=40, W=35),
                                     dict(N=4, C=16, H=16, W=16, offset=50.0)]),
}
OP_PARAMS = [pytest.param(name, case, id=f"{name}-" + "-".join(f"{k}{v}" for k, v in case.items()))
             for name, (_, cases) in OP_CASES.items() for case in cases]


@each_dtype
@pytest.mark.parametrize("op,case", OP_PARAMS)
def test_op_matches_oracle(cpu, rng, dtype, op, case):
    run, _ = OP_CASES[op]
    check(run(cpu, dtype, rng, **case), dtype, f"ops {op}: ")


@each_dtype
@given(N=st.integers(1, 3), C=st.integers(1, 3), H=st.integers(3, 9), W=st.integers(3, 9),
       O=st.integers(1, 4), K=st.sampled_from([1, 3, 5]), S=st.sampled_from([1, 2]), P=st.integers(0, 2),
       method=st.sampled_from(["gemm", "direct"]), seed=seeds)
def test_op_conv2d_random_shapes(cpu, dtype, N, C, H, W, O, K, S, P, method, seed):
    P = min(P, K - 1)
    assume(K <= H + 2 * P and K <= W + 2 * P)
    check(run_op_conv2d(cpu, dtype, np.random.default_rng(seed), N=N, C=C, H=H, W=W, O=O, K=K, S=S, P=P,
                        method=method), dtype, f"ops conv2d ({method}): ")


def test_ops_reject_inconsistent_shapes(cpu):
    with pytest.raises(ValueError, match="channels"):
        ops.conv2d_forward(cpu, np.zeros((1, 2, 5, 5)), np.zeros((3, 1, 3, 3)), None)
    with pytest.raises(ValueError, match="does not fit"):
        ops.conv2d_forward(cpu, np.zeros((1, 1, 2, 2)), np.zeros((1, 1, 5, 5)), None)
    with pytest.raises(ValueError, match="method must be one of gemm, direct, got 'winograd'"):
        ops.conv2d_forward(cpu, np.zeros((1, 1, 5, 5)), np.zeros((1, 1, 3, 3)), None, method="winograd")
    with pytest.raises(ValueError, match="labels must lie"):
        ops.softmax_cross_entropy(cpu, np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(ValueError, match="square"):
        ops.flip_rotate90(cpu, np.zeros((1, 1, 3, 4)), [0])


def test_poisoned_outputs_really_fail(cpu, rng):
    """The harness itself: an output left poisoned fails ``check``."""
    x = normal(rng, (3,), np.float64)
    with pytest.raises(AssertionError):
        check([Result("y", poisoned((3,), np.float64), ref.relu(x))], np.float64)
    with pytest.raises(AssertionError):
        check([Result("argmax", poisoned((3,), np.int64), np.zeros(3, np.int64), EXACT)], np.float64)


# NaN propagates (as in PyTorch): a diverging run must show, not turn into zeros ---------

def with_nans(rng, shape, dtype, fraction=0.15):
    x = normal(rng, shape, dtype)
    x[rng.random(shape) < fraction] = np.nan
    x.reshape(-1)[0] = np.nan          # a NaN where a window's scan starts
    return x


@each_dtype
def test_relu_forward_propagates_nan(cpu, rng, dtype):
    x = relu_input(rng, 1001, dtype)
    x[rng.random(x.size) < 0.1] = np.nan
    x[:6] = [np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0]
    y = np.full_like(x, 7.0)           # not NaN: an unwritten element must not pass for a NaN
    cpu.launch("relu_forward", x=x, y=y, n=x.size)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(x))
    np.testing.assert_array_equal(y, ref.relu(x))
    assert y[2] == np.inf and y[3] == 0


nan_pool_geometries = pytest.mark.parametrize("geometry", [
    dict(N=2, C=3, H=7, W=9, KH=2, KW=2, SH=2, SW=2),   # the fixed 2x2 fast path
    dict(N=1, C=2, H=8, W=8, KH=2, KW=2, SH=2, SW=2),
    dict(N=2, C=2, H=9, W=8, KH=3, KW=3, SH=2, SW=2),   # overlapping windows, general path
    dict(N=1, C=3, H=6, W=7, KH=2, KW=2, SH=1, SW=1),
    dict(N=2, C=1, H=7, W=9, KH=2, KW=3, SH=2, SW=3),   # disjoint, general path
])


@each_dtype
@nan_pool_geometries
def test_maxpool_forward_yields_nan_for_a_window_with_nan(cpu, rng, dtype, geometry):
    g = pool_ints(**geometry)
    x = with_nans(rng, (g["N"], g["C"], g["H"], g["W"]), dtype)
    shape = (g["N"], g["C"], g["HO"], g["WO"])
    y, argmax = np.full(shape, 7.0, dtype), np.full(shape, POISON_INT, np.int64)
    cpu.launch("maxpool_forward", x=x, y=y, argmax=argmax, relu=0, **g)
    want_y, want_argmax = ref.maxpool2d(x, g["KH"], g["KW"], g["SH"], g["SW"])
    np.testing.assert_array_equal(y, want_y)
    np.testing.assert_array_equal(argmax, want_argmax)
    # Independently of the oracle: NaN exactly where the window holds one, and argmax points at a NaN.
    has_nan = np.zeros(shape, bool)
    for ki in range(g["KH"]):
        for kj in range(g["KW"]):
            has_nan |= np.isnan(x[:, :, ki:ki + g["SH"] * g["HO"]:g["SH"], kj:kj + g["SW"] * g["WO"]:g["SW"]])
    assert has_nan.any() and (~has_nan).any()
    np.testing.assert_array_equal(np.isnan(y), has_nan)
    planes = x.reshape(g["N"], g["C"], -1)
    picked = np.take_along_axis(planes, argmax.reshape(g["N"], g["C"], -1), axis=2).reshape(shape)
    np.testing.assert_array_equal(np.isnan(picked), has_nan)


@each_dtype
@pytest.mark.parametrize("geometry", [dict(N=2, C=3, H=7, W=9, KH=2, KW=2, SH=2, SW=2),
                                      dict(N=2, C=1, H=7, W=9, KH=2, KW=3, SH=2, SW=3)])
def test_maxpool_backward_sends_the_gradient_to_the_nan(cpu, rng, dtype, geometry):
    g = pool_ints(**geometry)
    x_shape = (g["N"], g["C"], g["H"], g["W"])
    x = with_nans(rng, x_shape, dtype)
    shape = (g["N"], g["C"], g["HO"], g["WO"])
    forward = launch(cpu, "maxpool_forward", dtype, {"x": x}, {"y": shape, "argmax": shape}, relu=0, **g)
    argmax = forward["argmax"]
    inputs = {"dy": normal(rng, shape, dtype), "argmax": argmax, "y": forward["y"]}
    routed = launch(cpu, "maxpool_backward_disjoint", dtype, inputs, {"dx": x_shape}, relu=0,
                    **disjoint_ints(g))["dx"]
    gathered = launch(cpu, "maxpool_backward", dtype, inputs, {"dx": x_shape}, relu=0, **g)["dx"]
    want = ref.maxpool2d_backward(inputs["dy"], argmax, x_shape)
    np.testing.assert_array_equal(routed, want)
    check([Result("dx", gathered, want)], dtype)
    assert (want[np.isnan(x)] != 0).any()    # some gradient did land on a NaN pixel


@each_dtype
def test_softmax_cross_entropy_gives_a_label_outside_the_classes_nan_not_a_stray_read(cpu, rng, dtype):
    z = normal(rng, (4, 3), dtype)
    label = np.array([0, 3, -1, 2], np.int64)
    out = launch(cpu, "softmax_cross_entropy", dtype, {"z": z, "label": label},
                 {"loss": (4,), "grad": (4, 3)}, N=4, K=3, scale=0.25)
    loss, _ = ref.softmax_cross_entropy(z[[0, 3]], label[[0, 3]])
    assert np.isnan(out["loss"][[1, 2]]).all()
    np.testing.assert_allclose(out["loss"][[0, 3]], loss, rtol=TOLERANCE[ELEMENTWISE][dtype])
