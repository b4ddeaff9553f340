"""The binary network written with glasscuda.reference ops: the whole-network baseline.

Same architecture as :class:`glasscuda.models.BinaryDetector`, same algorithm
(convolution as im2col + GEMM, so both sides use the same BLAS), but every
step glasscuda does with a kernel is a float64 NumPy oracle from
:mod:`glasscuda.reference` here. Activations and parameters are kept in
float32 between ops, as in the float32 network. The optimizer is a plain
NumPy Adam.

Parameters are a list in ``BinaryDetector.parameters()`` order: conv1 weight,
conv1 bias, ..., conv4 bias, fc1 weight, fc1 bias, fc2 weight, fc2 bias.
"""
from __future__ import annotations

import math

import numpy as np

from glasscuda import reference as R

from .common import CONV_LAYERS, FLAT_FEATURES, HIDDEN, POOL


def f32(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float32)


def initial_parameters(seed: int = 0) -> list[np.ndarray]:
    """PyTorch's default initialisation, U(±1/sqrt(fan_in)) for weights and biases, in float32."""
    rng = np.random.default_rng(seed)
    shapes = [((c.out_channels, c.in_channels, c.kernel, c.kernel), (c.out_channels,))
              for c in CONV_LAYERS]
    shapes += [((HIDDEN, FLAT_FEATURES), (HIDDEN,)), ((1, HIDDEN), (1,))]
    params = []
    for weight_shape, bias_shape in shapes:
        bound = 1.0 / math.sqrt(int(np.prod(weight_shape[1:])))
        params.append(f32(rng.uniform(-bound, bound, weight_shape)))
        params.append(f32(rng.uniform(-bound, bound, bias_shape)))
    return params


def bce_loss(logits, targets, eps: float = 1e-7):
    """Mean clamped BCE of sigmoid(logits) and its gradient with respect to the logits."""
    loss, grad = R.bce_with_logits(logits, targets, eps)
    return float(loss.mean()), f32(grad / logits.size)


class ReferenceDetector:
    """BinaryDetector's forward and backward over glasscuda.reference ops."""

    def __init__(self, params: list[np.ndarray]):
        self.params = [f32(p).copy() for p in params]

    # Layers ---------------------------------------------------------------
    @staticmethod
    def conv_forward(x, weight, bias, padding):
        """Returns (y [N, O, H, W], col) by im2col + GEMM + bias."""
        N, _, H, W = x.shape
        O, _, K, _ = weight.shape
        col = f32(R.im2col(x, K, K, 1, 1, padding, padding))
        y = (weight.reshape(O, -1) @ col).reshape(O, N, H, W).transpose(1, 0, 2, 3)
        return f32(R.bias_add(y, bias)), col

    @staticmethod
    def conv_backward(dy, col, x_shape, weight, padding, need_dx):
        """Returns (dx or None, dweight, dbias)."""
        O, _, K, _ = weight.shape
        dy_rows = np.ascontiguousarray(dy.transpose(1, 0, 2, 3)).reshape(O, -1)
        dweight = (dy_rows @ col.T).reshape(weight.shape)
        dbias = f32(R.bias_grad(dy))
        dx = None
        if need_dx:
            dcol = weight.reshape(O, -1).T @ dy_rows
            dx = f32(R.col2im(dcol, x_shape, K, K, 1, 1, padding, padding))
        return dx, dweight, dbias

    # Network --------------------------------------------------------------
    def forward(self, x, train: bool = True):
        """Logits [N, 1]; with ``train`` also what backward needs."""
        cache = []
        for i, layer in enumerate(CONV_LAYERS):
            weight, bias = self.params[2 * i], self.params[2 * i + 1]
            z, col = self.conv_forward(x, weight, bias, layer.padding)
            a = f32(R.relu(z))
            pooled, argmax = R.maxpool2d(a, POOL)
            if train:
                cache.append((x.shape, col, a, argmax))
            x = f32(pooled)
        w1, b1, w2, b2 = self.params[-4:]
        flat = x.reshape(x.shape[0], -1)
        hidden = f32(R.relu(R.linear(flat, w1, b1)))
        logits = f32(R.linear(hidden, w2, b2))
        if train:
            cache.append((flat, hidden, x.shape))
        return logits, cache

    def backward(self, dlogits, cache) -> list[np.ndarray]:
        """Gradients of every parameter, in parameter order."""
        grads = [None] * len(self.params)
        w1, _, w2, _ = self.params[-4:]
        flat, hidden, pooled_shape = cache[-1]
        dhidden, grads[-2], grads[-1] = (f32(g) for g in R.linear_backward(dlogits, hidden, w2))
        dhidden = f32(R.relu_backward(hidden, dhidden))
        dflat, grads[-4], grads[-3] = (f32(g) for g in R.linear_backward(dhidden, flat, w1))
        grad = dflat.reshape(pooled_shape)
        for i in range(len(CONV_LAYERS) - 1, -1, -1):
            x_shape, col, a, argmax = cache[i]
            da = f32(R.maxpool2d_backward(grad, argmax, a.shape))
            dz = f32(R.relu_backward(a, da))
            grad, grads[2 * i], grads[2 * i + 1] = self.conv_backward(
                dz, col, x_shape, self.params[2 * i], CONV_LAYERS[i].padding, need_dx=i > 0)
        return grads

    def loss_and_gradients(self, x, targets):
        """(mean BCE, gradients) of one forward and backward pass."""
        logits, cache = self.forward(x)
        loss, dlogits = bce_loss(logits, targets)
        return loss, self.backward(dlogits, cache)


class NumpyAdam:
    """Adam as torch.optim.Adam defines it, on float32 NumPy arrays, in place."""

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8):
        self.params, self.lr, self.betas, self.eps = params, lr, betas, eps
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]
        self.t = 0

    def step(self, grads) -> None:
        self.t += 1
        beta1, beta2 = self.betas
        step_size = self.lr / (1 - beta1 ** self.t)
        root_bc2 = math.sqrt(1 - beta2 ** self.t)
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            m *= beta1
            m += (1 - beta1) * g
            v *= beta2
            v += (1 - beta2) * g * g
            p -= step_size * m / (np.sqrt(v) / root_bc2 + self.eps)


class ReferenceTrainer:
    """One training step of the reference network: forward, BCE, backward, Adam."""

    def __init__(self, params, lr: float = 1e-3):
        self.model = ReferenceDetector(params)
        self.optimizer = NumpyAdam(self.model.params, lr=lr)

    def step(self, x, targets) -> float:
        loss, grads = self.model.loss_and_gradients(x, targets)
        self.optimizer.step(grads)
        return loss
