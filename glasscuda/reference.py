"""Float64 NumPy oracles of every kernel and op, written for clarity rather than speed.

These are the tests' truth and the benchmarks' baseline. Each follows the
formula in the header of its kernel file as directly as NumPy allows; none of
them calls a glasscuda kernel.
"""
from __future__ import annotations

import numpy as np

from .numerics import sigmoid


def _f64(*arrays):
    return [np.asarray(a, dtype=np.float64) for a in arrays]


def rel_err(actual, expected) -> float:
    """Relative error of ``actual`` against an oracle: max|a - b| / max(max|b|, tiny).

    The denominator is the largest magnitude of the expected array (not of each
    element), so elements near zero do not blow the error up; ``tiny`` is the
    smallest normal float64 and only matters when the expected array is all
    zeros. NaN anywhere in ``actual`` (a poisoned element left unwritten)
    gives NaN, which fails every ``<=`` comparison.
    """
    a, b = _f64(actual, expected)
    if a.shape != b.shape:
        raise AssertionError(f"shape {a.shape} != expected shape {b.shape}")
    if a.size == 0:
        return 0.0
    if np.isnan(a).any() or np.isnan(b).any():
        return float("nan")
    scale = max(float(np.max(np.abs(b))), np.finfo(np.float64).tiny)
    return float(np.max(np.abs(a - b))) / scale


def conv_output_size(size, kernel, stride, padding):
    return (size + 2 * padding - kernel) // stride + 1


def im2col(x, KH, KW, SH=1, SW=1, PH=0, PW=0):
    """[N, C, H, W] -> [C*KH*KW, N*HO*WO] (the images side by side), zero padding."""
    (x,) = _f64(x)
    N, C, H, W = x.shape
    HO, WO = conv_output_size(H, KH, SH, PH), conv_output_size(W, KW, SW, PW)
    padded = np.pad(x, ((0, 0), (0, 0), (PH, PH), (PW, PW)))
    col = np.empty((N, C, KH, KW, HO, WO))
    for ki in range(KH):
        for kj in range(KW):
            col[:, :, ki, kj] = padded[:, :, ki:ki + SH * HO:SH, kj:kj + SW * WO:SW]
    return col.transpose(1, 2, 3, 0, 4, 5).reshape(C * KH * KW, N * HO * WO)


def col2im(col, x_shape, KH, KW, SH=1, SW=1, PH=0, PW=0):
    """The adjoint of im2col: sum each column entry back onto the pixel it came from."""
    (col,) = _f64(col)
    N, C, H, W = x_shape
    HO, WO = conv_output_size(H, KH, SH, PH), conv_output_size(W, KW, SW, PW)
    col = col.reshape(C, KH, KW, N, HO, WO).transpose(3, 0, 1, 2, 4, 5)
    padded = np.zeros((N, C, H + 2 * PH, W + 2 * PW))
    for ki in range(KH):
        for kj in range(KW):
            padded[:, :, ki:ki + SH * HO:SH, kj:kj + SW * WO:SW] += col[:, :, ki, kj]
    return padded[:, :, PH:PH + H, PW:PW + W]


def conv2d(x, weight, bias=None, stride=1, padding=0):
    """Direct convolution (cross-correlation, as in PyTorch): sum over c, ki, kj."""
    x, weight = _f64(x, weight)
    N, C, H, W = x.shape
    O, _, KH, KW = weight.shape
    HO, WO = conv_output_size(H, KH, stride, padding), conv_output_size(W, KW, stride, padding)
    padded = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    y = np.zeros((N, O, HO, WO))
    for ki in range(KH):
        for kj in range(KW):
            patch = padded[:, :, ki:ki + stride * HO:stride, kj:kj + stride * WO:stride]
            y += np.einsum("nchw,oc->nohw", patch, weight[:, :, ki, kj])
    if bias is not None:
        y += np.asarray(bias, dtype=np.float64)[None, :, None, None]
    return y


def conv2d_backward(dy, x, weight, stride=1, padding=0):
    """(dx, dweight, dbias) of conv2d, by the same sums taken the other way round."""
    dy, x, weight = _f64(dy, x, weight)
    N, C, H, W = x.shape
    O, _, KH, KW = weight.shape
    HO, WO = dy.shape[2:]
    padded = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    dpadded = np.zeros_like(padded)
    dweight = np.zeros_like(weight)
    for ki in range(KH):
        for kj in range(KW):
            rows = slice(ki, ki + stride * HO, stride)
            cols = slice(kj, kj + stride * WO, stride)
            dweight[:, :, ki, kj] = np.einsum("nohw,nchw->oc", dy, padded[:, :, rows, cols])
            dpadded[:, :, rows, cols] += np.einsum("nohw,oc->nchw", dy, weight[:, :, ki, kj])
    dx = dpadded[:, :, padding:padding + H, padding:padding + W]
    return dx, dweight, dy.sum(axis=(0, 2, 3))


def conv_direct(x, weight, bias, SH=1, SW=1, PH=0, PW=0, relu=False):
    """conv2d with separate strides and paddings per axis, then ReLU when ``relu``: [N, O, HO, WO]."""
    x, weight, bias = _f64(x, weight, bias)
    N, _, H, W = x.shape
    O, _, KH, KW = weight.shape
    HO, WO = conv_output_size(H, KH, SH, PH), conv_output_size(W, KW, SW, PW)
    y = weight.reshape(O, -1) @ im2col(x, KH, KW, SH, SW, PH, PW) + bias[:, None]
    y = y.reshape(O, N, HO, WO).transpose(1, 0, 2, 3)
    return np.maximum(y, 0) if relu else y


def conv_direct_grad_partial(dy, x, KH, KW, SH, SW, PH, PW, rows):
    """[N*J, O, C*KH*KW + 1]: per image and chunk of ``rows`` output rows, each weight's sum of dy times its
    input, then the sum of dy (kernels/conv_direct.cu)."""
    dy, x = _f64(dy, x)
    N, O, HO, WO = dy.shape
    J = -(-HO // rows)
    col = im2col(x, KH, KW, SH, SW, PH, PW).reshape(-1, N, HO, WO)
    col = np.concatenate([col, np.ones((1, N, HO, WO))])        # the bias tap
    partial = np.zeros((N, J, O, col.shape[0]))
    for j in range(J):
        chunk = slice(j * rows, (j + 1) * rows)
        partial[:, j] = np.einsum("nohw,tnhw->not", dy[:, :, chunk], col[:, :, chunk])
    return partial.reshape(N * J, O, -1)


def conv_direct_grad_reduce(partial):
    """partial [K, O, T] -> (dweight [O, T-1], dbias [O]): the sums over k."""
    (partial,) = _f64(partial)
    total = partial.sum(axis=0)
    return total[:, :-1], total[:, -1]


def maxpool2d(x, KH, KW=None, SH=None, SW=None):
    """(y, argmax): argmax is h*W + w of the first maximum of each window.

    A window holding a NaN gives NaN and argmax points at its first NaN
    (NumPy's argmax), as kernels/pool.cu specifies.
    """
    (x,) = _f64(x)
    KW = KH if KW is None else KW
    SH = KH if SH is None else SH
    SW = KW if SW is None else SW
    N, C, H, W = x.shape
    HO, WO = (H - KH) // SH + 1, (W - KW) // SW + 1
    windows = np.empty((N, C, HO, WO, KH * KW))
    flat_index = np.empty((HO, WO, KH * KW), dtype=np.int64)
    for ki in range(KH):
        for kj in range(KW):
            windows[..., ki * KW + kj] = x[:, :, ki:ki + SH * HO:SH, kj:kj + SW * WO:SW]
            rows = np.arange(HO)[:, None] * SH + ki
            cols = np.arange(WO)[None, :] * SW + kj
            flat_index[..., ki * KW + kj] = rows * W + cols
    best = windows.argmax(axis=-1)
    y = np.take_along_axis(windows, best[..., None], axis=-1)[..., 0]
    argmax = np.take_along_axis(np.broadcast_to(flat_index, windows.shape), best[..., None], -1)[..., 0]
    return y, argmax


def maxpool2d_backward(dy, argmax, x_shape):
    (dy,) = _f64(dy)
    N, C, H, W = x_shape
    dx = np.zeros((N, C, H * W))
    for n in range(N):
        for c in range(C):
            np.add.at(dx[n, c], argmax[n, c].ravel(), dy[n, c].ravel())
    return dx.reshape(x_shape)


def relu_maxpool2d(x, KH, KW=None, SH=None, SW=None):
    """(y, argmax) of ReLU then max pooling, as the fused kernel gives them: y = maxpool2d(relu(x)), argmax
    that of maxpool2d(x) (in windows with nothing above 0 the two argmaxes may differ; the gradient there is 0)."""
    return maxpool2d(relu(x), KH, KW, SH, SW)[0], maxpool2d(x, KH, KW, SH, SW)[1]


def relu_maxpool2d_backward(dy, x, KH, KW=None, SH=None, SW=None):
    """dx of maxpool2d(relu(x)), layer by layer: the pool routes dy to the argmax of relu(x), then ReLU's
    backward masks it."""
    activated = relu(x)
    return relu_backward(x, maxpool2d_backward(dy, maxpool2d(activated, KH, KW, SH, SW)[1], activated.shape))


def global_avgpool(x):
    (x,) = _f64(x)
    return x.mean(axis=(2, 3))


def global_avgpool_backward(dy, x_shape):
    (dy,) = _f64(dy)
    N, C, H, W = x_shape
    return np.broadcast_to(dy[:, :, None, None] / (H * W), x_shape).copy()


def relu(x):
    """max(x, 0); NaN stays NaN (np.maximum propagates it), as in PyTorch."""
    (x,) = _f64(x)
    return np.maximum(x, 0.0)


def relu_backward(x, dy):
    x, dy = _f64(x, dy)
    return np.where(x > 0, dy, 0.0)


def swap_outer_axes_bias(x, bias, relu):
    """x [A, B, L] -> [B, A, L] with bias[a] added and, when ``relu``, ReLU applied."""
    x, bias = _f64(x, bias)
    y = np.swapaxes(x + bias.reshape(-1, 1, 1), 0, 1)
    return np.ascontiguousarray(np.maximum(y, 0.0) if relu else y)


def bias_add(x, b):
    """x [N, C, ...] + b[C] along axis 1."""
    x, b = _f64(x, b)
    return x + b.reshape((1, -1) + (1,) * (x.ndim - 2))


def bias_grad(dy):
    (dy,) = _f64(dy)
    return dy.sum(axis=tuple(i for i in range(dy.ndim) if i != 1))


def bias_grad_reduce(partial):
    """partial [C, K] -> [C]: each channel's partial sums added up."""
    (partial,) = _f64(partial)
    return partial.sum(axis=1)


def bias_grad_partial(dy, chunk):
    """dy [N, C, S] -> [C, N * J]: the sum of each chunk of ``chunk`` elements of s (J = ceil(S / chunk))."""
    (dy,) = _f64(dy)
    N, C, S = dy.shape
    J = -(-S // chunk)
    padded = np.zeros((N, C, J * chunk))
    padded[:, :, :S] = dy
    return padded.reshape(N, C, J, chunk).sum(axis=3).transpose(1, 0, 2).reshape(C, N * J)


def swap_outer_axes(x):
    """[A, B, ...] -> [B, A, ...]."""
    return np.ascontiguousarray(np.swapaxes(_f64(x)[0], 0, 1))


def linear(x, weight, bias=None):
    x, weight = _f64(x, weight)
    y = x @ weight.T
    return y if bias is None else y + np.asarray(bias, dtype=np.float64)


def linear_backward(dy, x, weight):
    dy, x, weight = _f64(dy, x, weight)
    return dy @ weight, dy.T @ x, dy.sum(axis=0)


def bce_with_logits(z, y, eps=1e-7):
    """Per-element loss and d(loss)/dz of BCE with the probability clamped to [eps, 1-eps]."""
    z, y = _f64(z, y)
    p = sigmoid(z)
    log_p, log_q = -np.logaddexp(0.0, -z), -np.logaddexp(0.0, z)
    low, high = log_p < np.log(eps), log_q < np.log(eps)
    log_p = np.where(low, np.log(eps), np.where(high, np.log1p(-eps), log_p))
    log_q = np.where(high, np.log(eps), np.where(low, np.log1p(-eps), log_q))
    loss = -(y * log_p + (1 - y) * log_q)
    grad = np.where(low | high, 0.0, p - y)
    return loss, grad


def focal_with_logits(z, y, weight, gamma=2.0):
    """Per-element weighted focal loss and its derivative with respect to z."""
    z, y, weight = _f64(z, y, weight)
    p, q = sigmoid(z), sigmoid(-z)
    log_p, log_q = -np.logaddexp(0.0, -z), -np.logaddexp(0.0, z)
    pos, neg = weight[None, :] * y, 1 - y
    loss = -(pos * q ** gamma * log_p + neg * p ** gamma * log_q)
    grad = -(pos * q ** gamma * (q - gamma * p * log_p) + neg * p ** gamma * (gamma * q * log_q - p))
    return loss, grad


def softmax_cross_entropy(z, label):
    """Per-row loss and d(loss)/dz."""
    (z,) = _f64(z)
    label = np.asarray(label)
    shifted = z - z.max(axis=1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    rows = np.arange(len(z))
    loss = -log_softmax[rows, label]
    grad = np.exp(log_softmax)
    grad[rows, label] -= 1.0
    return loss, grad


def adam_step(param, grad, m, v, *, step, lr, beta1, beta2, eps, weight_decay, decoupled):
    """One Adam/AdamW step in PyTorch's formulation; returns new (param, m, v)."""
    param, grad, m, v = _f64(param, grad, m, v)
    if not decoupled:
        grad = grad + weight_decay * param
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad ** 2
    if decoupled:
        param = param * (1 - lr * weight_decay)
    bc1, bc2 = 1 - beta1 ** step, 1 - beta2 ** step
    param = param - lr / bc1 * m / (np.sqrt(v) / np.sqrt(bc2) + eps)
    return param, m, v


def flip_rotate90(x, codes):
    (x,) = _f64(x)
    out = np.empty_like(x)
    for n, code in enumerate(np.asarray(codes)):
        image = x[n]
        if code & 1:
            image = image[:, :, ::-1]
        if code & 2:
            image = image[:, ::-1, :]
        out[n] = np.rot90(image, k=(int(code) >> 2) & 3, axes=(1, 2))
    return out


def rotate_bilinear(x, angles):
    """Rotate each image counter-clockwise about its centre; bilinear, edge-clamped sampling."""
    (x,) = _f64(x)
    N, C, H, W = x.shape
    ci, cj = (H - 1) / 2, (W - 1) / 2
    i, j = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    out = np.empty_like(x)
    for n, angle in enumerate(np.asarray(angles, dtype=np.float64)):
        c, s = np.cos(angle), np.sin(angle)
        r = np.clip(ci + c * (i - ci) + s * (j - cj), 0, H - 1)
        q = np.clip(cj - s * (i - ci) + c * (j - cj), 0, W - 1)
        r0, q0 = np.floor(r).astype(int), np.floor(q).astype(int)
        r1, q1 = np.minimum(r0 + 1, H - 1), np.minimum(q0 + 1, W - 1)
        fr, fq = r - r0, q - q0
        img = x[n]
        top = img[:, r0, q0] * (1 - fq) + img[:, r0, q1] * fq
        bottom = img[:, r1, q0] * (1 - fq) + img[:, r1, q1] * fq
        out[n] = top * (1 - fr) + bottom * fr
    return out


# Batch normalisation (kernels/batchnorm.cu): statistics per channel, axis 1 of x [N, C, ...].

def _channel_shape(x):
    return (1, -1) + (1,) * (x.ndim - 2)


def batchnorm_stats(x):
    """Per-channel mean and biased variance of x [N, C, ...] over every axis but 1."""
    (x,) = _f64(x)
    axes = tuple(i for i in range(x.ndim) if i != 1)
    mean = x.mean(axis=axes)
    return mean, ((x - mean.reshape(_channel_shape(x))) ** 2).mean(axis=axes)


def batchnorm_stats_partial(x, chunk):
    """x [N, C, S] -> (pmean, pm2) [C, N * J]: each chunk's mean and sum of squared deviations from it."""
    (x,) = _f64(x)
    N, C, S = x.shape
    J = -(-S // chunk)
    pmean, pm2 = np.empty((C, N, J)), np.empty((C, N, J))
    for j in range(J):
        part = x[:, :, j * chunk:(j + 1) * chunk]
        mean = part.mean(axis=2)
        pmean[:, :, j] = mean.T
        pm2[:, :, j] = ((part - mean[:, :, None]) ** 2).sum(axis=2).T
    return pmean.reshape(C, N * J), pm2.reshape(C, N * J)


def batchnorm(x, mean, var, weight, bias, eps):
    """(x - mean) / sqrt(var + eps) * weight + bias, each [C] along axis 1 of x [N, C, ...]."""
    x, mean, var, weight, bias = _f64(x, mean, var, weight, bias)
    shape = _channel_shape(x)
    return ((x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps) * weight.reshape(shape)
            + bias.reshape(shape))


def batchnorm_running_update(running_mean, running_var, mean, var, count, momentum):
    """PyTorch's running averages of a batch of ``count`` values per channel; the unbiased variance
    var * count / (count - 1) enters running_var. Returns new (running_mean, running_var)."""
    running_mean, running_var, mean, var = _f64(running_mean, running_var, mean, var)
    return ((1 - momentum) * running_mean + momentum * mean,
            (1 - momentum) * running_var + momentum * var * count / (count - 1))


def batchnorm_backward(dy, x, weight, eps):
    """(dx, dweight, dbias) of training-mode batch norm at x [N, C, ...] (the batch's own statistics)."""
    dy, x, weight = _f64(dy, x, weight)
    axes = tuple(i for i in range(x.ndim) if i != 1)
    shape = _channel_shape(x)
    mean, var = batchnorm_stats(x)
    invstd = 1.0 / np.sqrt(var + eps)
    xhat = (x - mean.reshape(shape)) * invstd.reshape(shape)
    dbias, dweight = dy.sum(axis=axes), (dy * xhat).sum(axis=axes)
    count = x.size // x.shape[1]
    dx = (weight * invstd).reshape(shape) * (dy - dbias.reshape(shape) / count
                                             - xhat * dweight.reshape(shape) / count)
    return dx, dweight, dbias


def batchnorm_backward_partial(dy, x, mean, chunk):
    """dy, x [N, C, S] -> (pdy, pdyx) [C, N * J]: each chunk's sum of dy and of dy * (x - mean[c])."""
    dy, x, mean = _f64(dy, x, mean)
    centred = dy * (x - mean.reshape(1, -1, 1))
    return bias_grad_partial(dy, chunk), bias_grad_partial(centred, chunk)


def batchnorm_backward_dx(dy, x, mean, var, weight, dweight, dbias, eps):
    """dx = weight / sqrt(var + eps) * (dy - dbias / M - xhat * dweight / M) from the given per-channel values."""
    dy, x, mean, var, weight, dweight, dbias = _f64(dy, x, mean, var, weight, dweight, dbias)
    shape = _channel_shape(x)
    count = x.size // x.shape[1]
    invstd = (1.0 / np.sqrt(var + eps)).reshape(shape)
    xhat = (x - mean.reshape(shape)) * invstd
    return weight.reshape(shape) * invstd * (dy - dbias.reshape(shape) / count - xhat * dweight.reshape(shape) / count)


def fold_batchnorm_conv(weight, bias, mean, var, gamma, beta, eps):
    """A convolution (weight [O, ...], bias [O]) followed by eval-mode batch norm, as one convolution."""
    weight, bias, mean, var, gamma, beta = _f64(weight, bias, mean, var, gamma, beta)
    scale = gamma / np.sqrt(var + eps)
    return weight * scale.reshape((-1,) + (1,) * (weight.ndim - 1)), (bias - mean) * scale + beta
