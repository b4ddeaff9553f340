"""Finite-difference gradient checks in float64, through the real kernels.

Each op's backward is compared with central differences (step 1e-6) of a
scalar: for ops with a tensor output the random projection sum(out * R), whose
gradient with respect to the output is R; for the losses the mean loss the op
returns. The error is rel_err(analytic, numerical) = max|a - n| / max|n|
(see conftest.rel_err) and must be <= 1e-6.

Piecewise-linear ops are checked away from their kinks: ReLU inputs keep
|x| >= 0.01 and max-pool inputs are distinct by at least 0.01, both far
beyond the finite-difference step.
"""
from __future__ import annotations

import numpy as np
import pytest

from conftest import numerical_gradient, rel_err
from glasscuda import ops

STEP = 1e-6
TOLERANCE = 1e-6


def assert_gradient(analytic, numerical, name):
    error = rel_err(analytic, numerical)
    assert error <= TOLERANCE, f"{name}: relative error {error:.3g} > {TOLERANCE:g}"
    assert np.abs(numerical).max() > 0, f"{name}: the numerical gradient is identically zero"


def kinkless(rng, shape):
    """Values with |x| in [0.01, 2]: no ReLU kink within a finite-difference step."""
    return rng.choice([-1.0, 1.0], shape) * rng.uniform(0.01, 2.0, shape)


def distinct(rng, shape):
    """A permutation of 0, 0.01, 0.02, ...: no two max-pool candidates within a step of each other."""
    n = int(np.prod(shape))
    return (rng.permutation(n) * 0.01 - 0.005 * n).reshape(shape)


@pytest.mark.parametrize("method", ["gemm", "direct"])
@pytest.mark.parametrize("K,stride,padding", [(3, 1, 1), (3, 2, 1), (5, 2, 2), (1, 2, 0), (3, 2, 0)])
def test_conv2d_gradients(cpu, rng, K, stride, padding, method):
    x = rng.standard_normal((2, 2, 7, 6))
    weight = rng.standard_normal((3, 2, K, K))
    bias = rng.standard_normal(3)
    y, saved = ops.conv2d_forward(cpu, x, weight, bias, stride=stride, padding=padding, method=method)
    R = rng.standard_normal(y.shape)

    def f():
        return float(np.sum(ops.conv2d_forward(cpu, x, weight, bias, stride=stride, padding=padding,
                                               method=method)[0] * R))

    dx, dweight, dbias = ops.conv2d_backward(cpu, R, saved, x.shape, weight, stride=stride, padding=padding,
                                             method=method)
    assert_gradient(dx, numerical_gradient(f, x), "conv2d dx")
    assert_gradient(dweight, numerical_gradient(f, weight), "conv2d dweight")
    assert_gradient(dbias, numerical_gradient(f, bias), "conv2d dbias")


@pytest.mark.parametrize("relu", [False, True], ids=["pool", "relu+pool"])
@pytest.mark.parametrize("K,stride", [(2, None), (3, 2), (3, 1), (2, 3)])
def test_maxpool_gradient(cpu, rng, K, stride, relu):
    x = distinct(rng, (2, 2, 7, 8)) - (0.595 if relu else 0)   # with ReLU, windows with nothing above 0; none at 0
    y, argmax = ops.maxpool2d_forward(cpu, x, K, stride, relu=relu)
    if relu:
        assert (y == 0).any() and (y > 0).any()   # windows on both sides of ReLU's kink
    R = rng.standard_normal(y.shape)

    def f():
        return float(np.sum(ops.maxpool2d_forward(cpu, x, K, stride, relu=relu)[0] * R))

    dx = ops.maxpool2d_backward(cpu, R, argmax, y, x.shape, K, stride, relu=relu)
    assert_gradient(dx, numerical_gradient(f, x), "maxpool dx")


def test_relu_gradient(cpu, rng):
    x = kinkless(rng, (3, 4, 5))
    R = rng.standard_normal(x.shape)

    def f():
        return float(np.sum(ops.relu_forward(cpu, x) * R))

    assert_gradient(ops.relu_backward(cpu, x, R), numerical_gradient(f, x), "relu dx")


def test_global_avgpool_gradient(cpu, rng):
    x = rng.standard_normal((2, 3, 4, 5))
    R = rng.standard_normal((2, 3))

    def f():
        return float(np.sum(ops.global_avgpool_forward(cpu, x) * R))

    assert_gradient(ops.global_avgpool_backward(cpu, R, x.shape), numerical_gradient(f, x), "avgpool dx")


@pytest.mark.parametrize("N,IN,OUT", [(1, 1, 1), (4, 7, 3), (5, 3, 9)])
def test_linear_gradients(cpu, rng, N, IN, OUT):
    x, weight, bias = rng.standard_normal((N, IN)), rng.standard_normal((OUT, IN)), rng.standard_normal(OUT)
    R = rng.standard_normal((N, OUT))

    def f():
        return float(np.sum(ops.linear_forward(cpu, x, weight, bias) * R))

    dx, dweight, dbias = ops.linear_backward(cpu, R, x, weight)
    assert_gradient(dx, numerical_gradient(f, x), "linear dx")
    assert_gradient(dweight, numerical_gradient(f, weight), "linear dweight")
    assert_gradient(dbias, numerical_gradient(f, bias), "linear dbias")


@pytest.mark.parametrize("targets", ["binary", "soft"])
def test_bce_gradient_of_the_mean_loss(cpu, rng, targets):
    z = 2.0 * rng.standard_normal((6, 5))
    z[0, :2] = [20.0, -20.0]          # beyond the clamp: the loss is flat there
    y = rng.integers(0, 2, z.shape).astype(float) if targets == "binary" else rng.random(z.shape)
    _, grad = ops.bce_with_logits(cpu, z, y)
    numerical = numerical_gradient(lambda: ops.bce_with_logits(cpu, z, y)[0], z)
    assert_gradient(grad, numerical, "bce dz")
    assert (grad[0, :2] == 0).all() and (numerical[0, :2] == 0).all()


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0, 2.5])
def test_focal_gradient_of_the_mean_loss(cpu, rng, gamma):
    z = 2.0 * rng.standard_normal((6, 4))
    y = rng.integers(0, 2, z.shape).astype(float)
    weight = rng.uniform(0.5, 3.0, 4)
    _, grad = ops.focal_with_logits(cpu, z, y, weight, gamma=gamma)
    numerical = numerical_gradient(lambda: ops.focal_with_logits(cpu, z, y, weight, gamma=gamma)[0], z)
    assert_gradient(grad, numerical, f"focal (gamma={gamma}) dz")


@pytest.mark.parametrize("N,K", [(1, 2), (5, 6), (8, 3)])
def test_softmax_cross_entropy_gradient_of_the_mean_loss(cpu, rng, N, K):
    z = 2.0 * rng.standard_normal((N, K))
    label = rng.integers(0, K, N)
    _, grad = ops.softmax_cross_entropy(cpu, z, label)
    numerical = numerical_gradient(lambda: ops.softmax_cross_entropy(cpu, z, label)[0], z)
    assert_gradient(grad, numerical, "cross-entropy dz")


@pytest.mark.parametrize("N,C,H,W", [(2, 3, 4, 5), (6, 2, 1, 1), (1, 2, 3, 1)])
def test_batchnorm_gradients(cpu, rng, N, C, H, W):
    """Training mode: the output depends on x through the batch's mean and variance too."""
    x = rng.standard_normal((N, C, H, W)) + rng.uniform(-2.0, 2.0, (1, C, 1, 1))
    weight, bias = rng.uniform(0.5, 2.0, C), rng.standard_normal(C)
    R = rng.standard_normal(x.shape)

    def forward():
        mean, var = ops.batchnorm_stats(cpu, x)
        return ops.batchnorm_forward(cpu, x, mean, var, weight, bias), mean, var

    def f():
        return float(np.sum(forward()[0] * R))

    _, mean, var = forward()
    dx, dweight, dbias = ops.batchnorm_backward(cpu, R, x, mean, var, weight)
    assert_gradient(dx, numerical_gradient(f, x), "batchnorm dx")
    assert_gradient(dweight, numerical_gradient(f, weight), "batchnorm dweight")
    assert_gradient(dbias, numerical_gradient(f, bias), "batchnorm dbias")

def test_gradient_check_detects_a_wrong_gradient(cpu, rng):
    """The check itself can fail: ReLU's gradient with one element's sign flipped."""
    x = kinkless(rng, (20,))
    x[3] = 1.0
    R = rng.standard_normal(x.shape)
    wrong = ops.relu_backward(cpu, x, R).copy()
    wrong[3] = -wrong[3]
    numerical = numerical_gradient(lambda: float(np.sum(ops.relu_forward(cpu, x) * R)), x)
    with pytest.raises(AssertionError):
        assert_gradient(wrong, numerical, "flipped")
