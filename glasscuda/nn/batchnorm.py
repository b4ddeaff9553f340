"""Batch normalisation over the channels of NCHW maps, and its inference form folded into a convolution.

``BatchNorm2d`` has PyTorch's semantics and state: parameters ``weight``
(gamma, initially 1) and ``bias`` (beta, initially 0); buffers
``running_mean`` (0), ``running_var`` (1) and ``num_batches_tracked`` (0, an
int64 counter). The counter is carried so that a state dict loads into
``torch.nn.BatchNorm2d`` with ``strict=True`` and back; it also gives
``momentum=None`` its meaning (a cumulative average, momentum 1 / batches).

In training mode a forward pass normalises with the batch's own mean and
biased variance over (N, H, W) and updates the running averages (with the
unbiased variance, as PyTorch); in eval mode it normalises with the running
statistics. The kernels are in kernels/batchnorm.cu.
"""
from __future__ import annotations

import numpy as np

from .. import ops
from .layers import Conv2d, _check_input, _checked
from .module import Module, Parameter


class BatchNorm2d(Module):
    """y = (x - mean) / sqrt(var + eps) * weight + bias per channel of x [N, C, H, W]."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        (self.num_features,) = _checked("BatchNorm2d", num_features=num_features)
        if not eps >= 0:
            raise ValueError(f"BatchNorm2d: eps must be >= 0, got {eps!r}")
        if momentum is not None and not 0 <= momentum <= 1:
            raise ValueError(f"BatchNorm2d: momentum must lie in [0, 1] or be None, got {momentum!r}")
        self.eps, self.momentum = float(eps), momentum
        C, be = self.num_features, self.backend
        self._params = {"weight": Parameter(np.ones(C, np.float32), be),
                        "bias": Parameter(np.zeros(C, np.float32), be)}
        self._buffers = {"running_mean": be.asarray(np.zeros(C, np.float32)),
                         "running_var": be.asarray(np.ones(C, np.float32)),
                         "num_batches_tracked": np.zeros((), np.int64)}

    weight = property(lambda self: self._params["weight"])
    bias = property(lambda self: self._params["bias"])
    running_mean = property(lambda self: self._buffers["running_mean"])
    running_var = property(lambda self: self._buffers["running_var"])
    num_batches_tracked = property(lambda self: int(self._buffers["num_batches_tracked"]))

    def forward(self, x):
        x = self._input(x)
        _check_input("BatchNorm2d", x, 4, "[N, C, H, W]")
        N, C, H, W = x.shape
        if C != self.num_features:
            raise ValueError(f"BatchNorm2d: input has {C} channels, num_features is {self.num_features}")
        be = self.backend
        if not self.training:
            return ops.batchnorm_forward(be, x, self.running_mean, self.running_var, self.weight.data,
                                         self.bias.data, self.eps)
        if N * H * W < 2:
            raise ValueError(f"BatchNorm2d: training needs more than one value per channel, got input shape "
                             f"{tuple(x.shape)}")
        mean, var = ops.batchnorm_stats(be, x)
        self._buffers["num_batches_tracked"] += 1
        momentum = 1.0 / self.num_batches_tracked if self.momentum is None else self.momentum
        ops.batchnorm_running_update(be, mean, var, self.running_mean, self.running_var, N * H * W, momentum)
        self._keep((x, mean, var))
        return ops.batchnorm_forward(be, x, mean, var, self.weight.data, self.bias.data, self.eps)

    def backward(self, grad_out, need_input_grad=True):
        x, mean, var = self._take()
        dx, dweight, dbias = ops.batchnorm_backward(self.backend, grad_out, x, mean, var, self.weight.data,
                                                    self.eps, need_dx=need_input_grad)
        self.weight.grad += dweight
        self.bias.grad += dbias
        return dx

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"


def fold_batchnorm(conv: Conv2d, bn: BatchNorm2d) -> Conv2d:
    """A new Conv2d computing ``bn(conv(x))`` with ``bn`` in eval mode (its running statistics):

        weight' = weight * gamma / sqrt(running_var + eps)           (per output channel)
        bias'   = (bias - running_mean) * gamma / sqrt(running_var + eps) + beta

    on the convolution's device and precision, in eval mode; ``conv`` and ``bn`` are unchanged.
    """
    if not isinstance(conv, Conv2d) or not isinstance(bn, BatchNorm2d):
        raise TypeError(f"fold_batchnorm takes a Conv2d and a BatchNorm2d, got {type(conv).__name__} and "
                        f"{type(bn).__name__}")
    if bn.num_features != conv.out_channels:
        raise ValueError(f"fold_batchnorm: the convolution has {conv.out_channels} output channels, the batch "
                         f"norm {bn.num_features} features")
    if bn.backend.name != conv.backend.name or bn.dtype != conv.dtype:
        raise ValueError(f"fold_batchnorm: the convolution is on {conv.backend.name} in {conv.dtype}, the batch "
                         f"norm on {bn.backend.name} in {bn.dtype}; move one with .to(...)")
    weight, bias = ops.fold_batchnorm_conv(conv.backend, conv.weight.data, conv.bias.data, bn.running_mean,
                                           bn.running_var, bn.weight.data, bn.bias.data, bn.eps)
    folded = Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    rng=np.random.default_rng(0)).to(conv.backend, conv.dtype)
    folded.weight.data[...] = weight
    folded.bias.data[...] = bias
    return folded.eval()
