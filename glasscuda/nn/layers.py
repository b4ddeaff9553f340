"""Layers with explicit forward and backward passes.

Parameter layouts and default initialisation are PyTorch's (conv weight
[out, in, kh, kw], linear weight [out, in], both drawn from
U(-1/sqrt(fan_in), 1/sqrt(fan_in)), as ``kaiming_uniform_(a=sqrt(5))`` gives),
so weights move between the two without reshaping.

Each layer keeps, during ``forward`` in training mode, exactly what its
``backward`` needs; in eval mode it keeps nothing.
"""
from __future__ import annotations

import math

import numpy as np

from .. import ops
from .module import Module, Parameter


def _checked(layer: str, minimum: int = 1, **arguments):
    """Each argument (an int or a pair) as int(s); a ValueError naming ``layer`` and the argument if below ``minimum``."""
    out = []
    for name, value in arguments.items():
        pair = ops._pair(value)
        if min(pair) < minimum:
            raise ValueError(f"{layer}: {name} must be >= {minimum}, got {value!r}")
        out.append(pair if name in ("kernel_size", "stride", "padding") else pair[0])
    return out


def _check_input(layer: str, x, ndim: int, layout: str):
    """A ValueError naming ``layer`` unless ``x`` has ``ndim`` axes and at least one sample."""
    if x.ndim != ndim:
        raise ValueError(f"{layer}: input must be {ndim}-D {layout}, got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{layer}: input batch is empty (shape {tuple(x.shape)}); pass at least one sample")


def _uniform(rng, bound, shape):
    rng = rng if rng is not None else np.random.default_rng()
    return rng.uniform(-bound, bound, size=shape).astype(np.float32)


class Conv2d(Module):
    """2-D convolution (cross-correlation) by im2col + GEMM, with bias; a one-channel first layer by the
    direct kernels instead (see :func:`glasscuda.ops.direct_conv_suits`)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, *, rng=None):
        super().__init__()
        self.in_channels, self.out_channels, self.kernel_size, self.stride = _checked(
            "Conv2d", in_channels=in_channels, out_channels=out_channels, kernel_size=kernel_size, stride=stride)
        (self.padding,) = _checked("Conv2d", 0, padding=padding)
        fan_in = self.in_channels * self.kernel_size[0] * self.kernel_size[1]
        bound = 1.0 / math.sqrt(fan_in)
        be = self.backend
        self._params = {
            "weight": Parameter(_uniform(rng, bound, (out_channels, in_channels, *self.kernel_size)), be),
            "bias": Parameter(_uniform(rng, bound, (out_channels,)), be),
        }

    weight = property(lambda self: self._params["weight"])
    bias = property(lambda self: self._params["bias"])

    def forward(self, x, relu: "ReLU | None" = None):
        """The convolution; with ``relu`` (the ReLU layer that follows it) also that ReLU, in the same pass."""
        x = self._input(x)
        _check_input("Conv2d", x, 4, "[N, C, H, W]")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"Conv2d: input has {x.shape[1]} channels, in_channels is {self.in_channels}")
        method = self._method(x)
        y, saved = ops.conv2d_forward(self.backend, x, self.weight.data, self.bias.data,
                                      self.stride, self.padding, relu=relu is not None, method=method)
        self._keep((saved, x.shape, method))
        if relu is not None:
            relu._keep(y)   # what ReLU.forward would have kept
        return y

    def forward_folded(self, x, bn, relu: "ReLU | None" = None):
        """bn(conv(x)) in eval mode (then ``relu``) as one convolution with the batch norm folded into its
        weights and bias; nothing is kept for backward."""
        x = self._input(x)
        _check_input("Conv2d", x, 4, "[N, C, H, W]")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"Conv2d: input has {x.shape[1]} channels, in_channels is {self.in_channels}")
        weight, bias = ops.fold_batchnorm_conv(self.backend, self.weight.data, self.bias.data, bn.running_mean,
                                               bn.running_var, bn.weight.data, bn.bias.data, bn.eps)
        return ops.conv2d_forward(self.backend, x, weight, bias, self.stride, self.padding,
                                  relu=relu is not None, method=self._method(x))[0]

    def _method(self, x) -> str:
        suits = ops.direct_conv_suits(x.shape, self.weight.data.shape, self.stride, self.padding)
        return "direct" if suits else "gemm"

    def backward(self, grad_out, need_input_grad=True):
        saved, x_shape, method = self._take()
        dx, dw, db = ops.conv2d_backward(self.backend, grad_out, saved, x_shape, self.weight.data,
                                         self.stride, self.padding, need_dx=need_input_grad, method=method)
        self.weight.grad += dw
        self.bias.grad += db
        return dx

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}")


class Linear(Module):
    """y = x @ weight.T + bias."""

    def __init__(self, in_features, out_features, *, rng=None):
        super().__init__()
        self.in_features, self.out_features = _checked("Linear", in_features=in_features,
                                                       out_features=out_features)
        bound = 1.0 / math.sqrt(self.in_features)
        be = self.backend
        self._params = {
            "weight": Parameter(_uniform(rng, bound, (out_features, in_features)), be),
            "bias": Parameter(_uniform(rng, bound, (out_features,)), be),
        }

    weight = property(lambda self: self._params["weight"])
    bias = property(lambda self: self._params["bias"])

    def forward(self, x):
        x = self._input(x)
        _check_input("Linear", x, 2, "[N, in_features]")
        self._keep(x)
        return ops.linear_forward(self.backend, x, self.weight.data, self.bias.data)

    def backward(self, grad_out, need_input_grad=True):
        dx, dw, db = ops.linear_backward(self.backend, grad_out, self._take(), self.weight.data,
                                         need_dx=need_input_grad)
        self.weight.grad += dw
        self.bias.grad += db
        return dx

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}"


# What a ReLU keeps when the max-pool after it applies it: its backward passes the gradient on unchanged.
_APPLIED_BY_POOL = "applied by the max-pool after it"


class ReLU(Module):
    def forward(self, x):
        y = ops.relu_forward(self.backend, self._input(x))
        self._keep(y)   # y > 0 exactly where x > 0
        return y

    def backward(self, grad_out, need_input_grad=True):
        kept = self._take()
        if kept is _APPLIED_BY_POOL:   # the pool's backward masked the gradient
            return grad_out
        return ops.relu_backward(self.backend, kept, grad_out)


class MaxPool2d(Module):
    """Max pooling without padding; ``stride`` defaults to ``kernel_size``."""

    def __init__(self, kernel_size, stride=None):
        super().__init__()
        self.kernel_size, self.stride = _checked(
            "MaxPool2d", kernel_size=kernel_size, stride=stride if stride is not None else kernel_size)

    def forward(self, x, relu: "ReLU | None" = None):
        """The pooling; with ``relu`` (the ReLU layer before it) pooling of that ReLU's output, in one pass."""
        x = self._input(x)
        _check_input("MaxPool2d", x, 4, "[N, C, H, W]")
        y, argmax = ops.maxpool2d_forward(self.backend, x, self.kernel_size, self.stride, relu=relu is not None)
        if relu is not None:
            relu._keep(_APPLIED_BY_POOL)
        self._keep((argmax, y, x.shape, relu is not None))
        return y

    def backward(self, grad_out, need_input_grad=True):
        argmax, y, x_shape, relu = self._take()
        return ops.maxpool2d_backward(self.backend, grad_out, argmax, y, x_shape,
                                      self.kernel_size, self.stride, relu=relu)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}"


class GlobalAvgPool2d(Module):
    """[N, C, H, W] -> [N, C], the mean over each feature map."""

    def forward(self, x):
        x = self._input(x)
        _check_input("GlobalAvgPool2d", x, 4, "[N, C, H, W]")
        self._keep(x.shape)
        return ops.global_avgpool_forward(self.backend, x)

    def backward(self, grad_out, need_input_grad=True):
        return ops.global_avgpool_backward(self.backend, grad_out, self._take())


class GlobalMaxPool2d(Module):
    """[N, C, H, W] -> [N, C], the largest value of each feature map (the gradient goes to its first maximum)."""

    def forward(self, x):
        x = self._input(x)
        _check_input("GlobalMaxPool2d", x, 4, "[N, C, H, W]")
        N, C, H, W = x.shape
        flat = x.reshape(N * C, H * W)
        index = flat.argmax(axis=1)
        self._keep((x.shape, index))
        return flat[self.backend.xp.arange(N * C), index].reshape(N, C)

    def backward(self, grad_out, need_input_grad=True):
        shape, index = self._take()
        xp = self.backend.xp
        dx = xp.zeros((shape[0] * shape[1], shape[2] * shape[3]), dtype=grad_out.dtype)
        dx[xp.arange(dx.shape[0]), index] = grad_out.reshape(-1)
        return dx.reshape(shape)


class Flatten(Module):
    """[N, ...] -> [N, prod(...)]."""

    def forward(self, x):
        x = self._input(x)
        if x.ndim < 1 or x.shape[0] == 0:
            raise ValueError(f"Flatten: input batch is empty (shape {tuple(x.shape)}); pass at least one sample")
        self._keep(x.shape)
        return x.reshape(x.shape[0], -1)

    def backward(self, grad_out, need_input_grad=True):
        return grad_out.reshape(self._take())


class Sequential(Module):
    """Layers applied in order; backward runs them in reverse.

    A ReLU followed by a MaxPool2d runs as one pass (the ReLU taken of each
    window's max, its gradient masked in the pool's backward), and a Conv2d
    followed by a ReLU that no max-pool follows as one pass after the GEMM
    (the bias and the ReLU applied as the GEMM's output is laid out); either
    way the results are those of the layers one by one, to the bit. In eval
    mode a Conv2d followed by a BatchNorm2d (and a ReLU) runs as one
    convolution whose weights and bias have the batch norm folded in
    (``fold_batchnorm``), folded afresh on each call so that it always follows
    the current parameters and statistics.
    """

    def __init__(self, *layers):
        super().__init__()
        self.layers = list(layers)
        self._children = {str(i): layer for i, layer in enumerate(self.layers)}
        if layers:
            self.backend, self.dtype = layers[0].backend, layers[0].dtype

    def __getitem__(self, index):
        return self.layers[index]

    def __len__(self):
        return len(self.layers)

    def forward(self, x):
        from .batchnorm import BatchNorm2d   # batchnorm.py builds on this module

        layers, i = self.layers, 0
        while i < len(layers):
            layer, after = layers[i], layers[i + 1:i + 3]
            if (isinstance(layer, Conv2d) and not self.training and after and isinstance(after[0], BatchNorm2d)
                    and not after[0].training):
                relu = after[1] if len(after) > 1 and isinstance(after[1], ReLU) else None
                x = layer.forward_folded(x, after[0], relu=relu)
                i += 3 if relu is not None else 2
            elif isinstance(layer, ReLU) and after and isinstance(after[0], MaxPool2d):
                x = after[0].forward(x, relu=layer)   # one pass for the pair
                i += 2
            elif (isinstance(layer, Conv2d) and after and isinstance(after[0], ReLU)
                  and not (len(after) > 1 and isinstance(after[1], MaxPool2d))):
                x = layer.forward(x, relu=after[0])   # one pass for the pair
                i += 2
            else:
                x = layer.forward(x)
                i += 1
        return x

    def backward(self, grad_out, need_input_grad=True):
        grad = grad_out
        for i in range(len(self.layers) - 1, -1, -1):
            grad = self.layers[i].backward(grad, need_input_grad=need_input_grad or i > 0)
        return grad

