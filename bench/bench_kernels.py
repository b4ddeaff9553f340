"""Each kernel at the binary network's real shapes (batch 32, 128×128 input).

Rows per group: glasscuda CPU (``ops`` over the host kernel library, float32),
the NumPy reference (``glasscuda.reference`` on the same float32 inputs; it
computes in float64) and glasscuda GPU where one answers. Memory-bound kernels
record ``extra_info["bytes"]``: the bytes they must read plus the bytes they
must write, each array counted once.
"""
from __future__ import annotations

import numpy as np
import pytest

from glasscuda import ops
from glasscuda import reference as R
from glasscuda.optim import Adam

from .common import (BATCH, CONV_LAYERS, HIDDEN, KERNEL_PEERS, POOL, assert_close,
                     glasscuda_backend, glasscuda_detector, shape_text)

EXACT = 1e-6        # copies, maxima, and sums of a few float32 terms
ADAM = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, decoupled=False)

peers = pytest.mark.parametrize("peer", KERNEL_PEERS)


@pytest.fixture(params=[c.name for c in CONV_LAYERS])
def layer(request):
    """Each conv block of the network in turn (recorded by name in the benchmark JSON)."""
    return {c.name: c for c in CONV_LAYERS}[request.param]


def random(shape, seed, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def to_host(backend, out):
    """A kernel's output(s) as NumPy arrays (Python floats pass through)."""
    if isinstance(out, tuple):
        return tuple(to_host(backend, o) for o in out)
    if isinstance(out, float):
        return out
    return backend.to_numpy(out)


def time_kernel(benchmark, peer, *, group, inputs, reference_fn, glasscuda_fn, check,
                bytes_moved=None):
    """Time one peer's row of ``group``.

    ``reference_fn(*inputs)`` is the NumPy reference and the expected result;
    ``glasscuda_fn(backend, *inputs on the device)`` is glasscuda's, checked
    once with ``check(actual, expected)`` before it is timed.
    """
    benchmark.group = group
    benchmark.extra_info["kind"] = "kernel"
    if bytes_moved is not None:
        benchmark.extra_info["bytes"] = int(bytes_moved)
    if peer == "reference":
        benchmark(reference_fn, *inputs)
        return
    be = glasscuda_backend(peer)
    device_inputs = [be.asarray(a) if isinstance(a, np.ndarray) else a for a in inputs]

    def run():
        out = glasscuda_fn(be, *device_inputs)
        be.synchronize()
        return out

    check(to_host(be, run()), reference_fn(*inputs))
    benchmark(run)


def check_array(what, tol=EXACT):
    return lambda actual, expected: assert_close(actual, expected, tol, what)


# Convolution: im2col and col2im ---------------------------------------------

@peers
def test_im2col(benchmark, peer, layer):
    g = layer.geometry()
    x = random(layer.input_shape, seed=layer.index)
    col_bytes = g.C * g.KH * g.KW * g.N * g.HO * g.WO * x.itemsize
    time_kernel(benchmark, peer, group=f"im2col {layer.describe()}", inputs=(x,),
                reference_fn=lambda x: R.im2col(x, g.KH, g.KW, g.SH, g.SW, g.PH, g.PW),
                glasscuda_fn=lambda be, x: ops.im2col(be, x, g),
                check=check_array("im2col"), bytes_moved=x.nbytes + col_bytes)


@peers
def test_col2im(benchmark, peer, layer):
    g = layer.geometry()
    col = random((g.C * g.KH * g.KW, g.N * g.HO * g.WO), seed=layer.index)
    x_bytes = g.N * g.C * g.H * g.W * col.itemsize
    time_kernel(benchmark, peer, group=f"col2im {layer.describe()}", inputs=(col,),
                reference_fn=lambda c: R.col2im(c, layer.input_shape, g.KH, g.KW, g.SH, g.SW,
                                                g.PH, g.PW),
                glasscuda_fn=lambda be, c: ops.col2im(be, c, g),
                check=check_array("col2im"), bytes_moved=col.nbytes + x_bytes)


# The first convolution, both ways ------------------------------------------------------------

FIRST = CONV_LAYERS[0]
METHODS = {"gemm": "im2col + GEMM", "direct": "direct"}
methods = pytest.mark.parametrize("method", list(METHODS))


def _first_conv_inputs():
    weight = random((FIRST.out_channels, FIRST.in_channels, FIRST.kernel, FIRST.kernel), seed=60) * 0.2
    return random(FIRST.input_shape, seed=61), weight, random((FIRST.out_channels,), seed=62)


@peers
@methods
def test_first_conv_forward(benchmark, peer, method):
    """conv1 with its bias and ReLU, by im2col + GEMM (what the layers run) and direct."""
    x, weight, bias = _first_conv_inputs()
    time_kernel(benchmark, peer, group=f"conv forward + ReLU {FIRST.describe()} ({METHODS[method]})",
                inputs=(x, weight, bias),
                reference_fn=lambda x, w, b: R.relu(R.conv2d(x, w, b, padding=FIRST.padding)),
                glasscuda_fn=lambda be, x, w, b: ops.conv2d_forward(be, x, w, b, padding=FIRST.padding,
                                                                    relu=True, method=method)[0],
                check=check_array("conv forward", tol=1e-4))


@peers
@methods
def test_first_conv_weight_grad(benchmark, peer, method):
    """conv1's weight and bias gradients (the first layer needs no input gradient), from what its forward
    kept: im2col's columns, or the input itself with its padding written out."""
    x, weight, _ = _first_conv_inputs()
    dy = random(FIRST.output_shape, seed=63)
    g = FIRST.geometry()
    saved = (np.pad(x, ((0, 0), (0, 0), (g.PH, g.PH), (g.PW, g.PW))) if method == "direct"
             else R.im2col(x, g.KH, g.KW, g.SH, g.SW, g.PH, g.PW).astype(np.float32))

    def glasscuda_fn(be, dy, saved, weight):
        return ops.conv2d_backward(be, dy, saved, x.shape, weight, padding=FIRST.padding, need_dx=False,
                                   method=method)[1:]

    def check(actual, expected):
        assert_close(actual[0], expected[1], 1e-4, "conv weight gradient")
        assert_close(actual[1], expected[2], 1e-4, "conv bias gradient")

    time_kernel(benchmark, peer, group=f"conv weight gradient {FIRST.describe()} ({METHODS[method]})",
                inputs=(dy, saved, weight),
                reference_fn=lambda dy, _, w: R.conv2d_backward(dy, x, w, padding=FIRST.padding),
                glasscuda_fn=glasscuda_fn, check=check)


# ReLU then max pooling 2x2, stride 2, after each conv: one pass each way --------------

def check_pool_forward(actual, expected):
    """Values as the reference's; argmax as well wherever a window's max is > 0 (elsewhere the fused kernel
    names the max of the pre-activations and the reference the first 0, both without a gradient)."""
    assert_close(actual[0], expected[0], EXACT, "ReLU + maxpool forward values")
    positive = expected[0] > 0
    assert np.array_equal(actual[1][positive], expected[1][positive]), \
        "ReLU + maxpool forward argmax differs from the reference"


@peers
def test_maxpool_forward(benchmark, peer, layer):
    x = random(layer.output_shape, seed=layer.index)
    out_elements = int(np.prod(layer.pooled_shape))
    moved = x.nbytes + out_elements * (x.itemsize + np.dtype(np.int64).itemsize)
    time_kernel(benchmark, peer, group=f"ReLU + maxpool forward {shape_text(x.shape)}", inputs=(x,),
                reference_fn=lambda x: R.maxpool2d(R.relu(x), POOL),
                glasscuda_fn=lambda be, x: ops.maxpool2d_forward(be, x, POOL, relu=True),
                check=check_pool_forward, bytes_moved=moved)


@peers
def test_maxpool_backward(benchmark, peer, layer):
    """The gradient through the pool and the ReLU before it: the reference in two steps from the ReLU's
    output, glasscuda in one from the pool's output."""
    activated = np.maximum(random(layer.output_shape, seed=layer.index), 0)
    y, argmax = R.maxpool2d(activated, POOL)
    y = y.astype(np.float32)
    dy = random(layer.pooled_shape, seed=100 + layer.index)
    x_shape = layer.output_shape
    moved = dy.nbytes + argmax.nbytes + y.nbytes + int(np.prod(x_shape)) * dy.itemsize
    time_kernel(benchmark, peer, group=f"ReLU + maxpool backward {shape_text(x_shape)}",
                inputs=(dy, argmax, y, activated),
                reference_fn=lambda dy, argmax, _, a: R.relu_backward(a, R.maxpool2d_backward(dy, argmax, x_shape)),
                glasscuda_fn=lambda be, dy, argmax, y, _: ops.maxpool2d_backward(be, dy, argmax, y, x_shape, POOL,
                                                                                relu=True),
                check=check_array("ReLU + maxpool backward"), bytes_moved=moved)


# The pass the network runs after each conv's GEMM --------------------------------------------

@peers
def test_conv_epilogue(benchmark, peer, layer):
    """The GEMM's [O, N, HO*WO] output laid out as NCHW with the bias added, in one pass (the ReLU follows in
    the pool)."""
    N, O, H, W = layer.output_shape
    y, bias = random((O, N, H * W), seed=layer.index), random((O,), seed=50 + layer.index)
    time_kernel(benchmark, peer, group=f"conv epilogue (bias, NCHW) {shape_text(layer.output_shape)}",
                inputs=(y, bias),
                reference_fn=lambda y, b: R.swap_outer_axes_bias(y, b, relu=False),
                glasscuda_fn=lambda be, y, b: _conv_epilogue(be, y, b, N, O, H * W),
                check=check_array("conv epilogue"), bytes_moved=2 * y.nbytes + bias.nbytes)


def _conv_epilogue(be, y, bias, N, O, S):
    out = be.xp.empty((N, O, S), dtype=y.dtype)
    be.launch("swap_outer_axes_bias", x=y, bias=bias, y=out, A=O, B=N, L=S, relu=0)
    return out


# ReLU on its own: at each conv's output (where no pool follows) and after the hidden Linear ----------

RELU_SHAPES = [c.output_shape for c in CONV_LAYERS] + [(BATCH, HIDDEN)]
relu_shapes = pytest.mark.parametrize("shape", RELU_SHAPES, ids=[shape_text(s) for s in RELU_SHAPES])


@peers
@relu_shapes
def test_relu_forward(benchmark, peer, shape):
    x = random(shape, seed=1)
    time_kernel(benchmark, peer, group=f"relu forward {shape_text(shape)}", inputs=(x,),
                reference_fn=R.relu, glasscuda_fn=ops.relu_forward,
                check=check_array("relu forward"), bytes_moved=2 * x.nbytes)


@peers
@relu_shapes
def test_relu_backward(benchmark, peer, shape):
    x, dy = random(shape, seed=1), random(shape, seed=2)
    time_kernel(benchmark, peer, group=f"relu backward {shape_text(shape)}", inputs=(x, dy),
                reference_fn=R.relu_backward, glasscuda_fn=ops.relu_backward,
                check=check_array("relu backward"), bytes_moved=3 * x.nbytes)


# Loss -------------------------------------------------------------------------

@peers
def test_bce(benchmark, peer):
    z = random((BATCH, 1), seed=3)
    y = (np.arange(BATCH) % 2).astype(np.float32).reshape(BATCH, 1)

    def check(actual, expected):
        loss, grad = actual
        ref_loss, ref_grad = expected
        assert abs(loss - ref_loss.mean()) <= 1e-5 * max(1.0, abs(ref_loss.mean())), \
            f"bce loss {loss} != reference {ref_loss.mean()}"
        assert_close(grad, ref_grad / z.size, 1e-5, "bce gradient")

    time_kernel(benchmark, peer, group=f"bce {shape_text(z.shape)}", inputs=(z, y),
                reference_fn=R.bce_with_logits, glasscuda_fn=ops.bce_with_logits, check=check)


# Optimizer --------------------------------------------------------------------

@peers
def test_adam(benchmark, peer, initial_params):
    """One Adam step over every parameter of the network (model.parameters()): one launch over the flat buffer."""
    grads = [random(p.shape, seed=10 + i) * 1e-2 for i, p in enumerate(initial_params)]
    zeros = [np.zeros_like(p) for p in initial_params]
    n = sum(p.size for p in initial_params)
    benchmark.group = f"adam {len(initial_params)} tensors, {n} parameters"
    benchmark.extra_info["kind"] = "kernel"
    benchmark.extra_info["bytes"] = 7 * n * initial_params[0].itemsize   # read p, g, m, v; write p, m, v

    def reference_step():
        return [R.adam_step(p, g, zero, zero, step=1, **ADAM)
                for p, g, zero in zip(initial_params, grads, zeros)]

    if peer == "reference":
        benchmark(reference_step)
        return
    be = glasscuda_backend(peer)
    model = glasscuda_detector(be, initial_params)
    for p, g in zip(model.parameters(), grads):
        p.grad[...] = be.asarray(g)
    optimizer = Adam(model.parameters(), lr=ADAM["lr"], betas=(ADAM["beta1"], ADAM["beta2"]),
                     eps=ADAM["eps"])

    def run():
        optimizer.step()
        be.synchronize()

    run()
    state = optimizer.state_dict()   # the flat moment buffers, per parameter
    for i, (p, (param, m, v)) in enumerate(zip(model.parameters(), reference_step())):
        assert_close(be.to_numpy(p.data), param, EXACT, f"adam parameter {i}")
        assert_close(state[f"m.{i}"], m, EXACT, f"adam m {i}")
        assert_close(state[f"v.{i}"], v, 1e-4, f"adam v {i}")   # 1 - beta2 in float32
    benchmark(run)
