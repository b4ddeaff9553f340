"""Operations over the kernels: what the layers call.

Each function takes a :class:`~glasscuda.backend.Backend` and arrays on its
device and returns new arrays. Convolution is im2col + GEMM (the array
library's BLAS) + bias; its backward is GEMMs + col2im + bias_grad
(``method="direct"``: without im2col, for few input channels). Everything
elementwise, every reduction that defines a result, and every index shuffle is
a hand-written kernel; NumPy/CuPy provide allocation and GEMM only.

Shapes follow PyTorch: images NCHW, conv weight [O, C, KH, KW], linear weight
[out, in].
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace

import numpy as np


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if np.isscalar(v) else (int(v[0]), int(v[1]))


@dataclass(frozen=True)
class ConvGeometry:
    """Sizes of one convolution: input [N, C, H, W], kernel [O, C, KH, KW], output [N, O, HO, WO]."""

    N: int
    C: int
    H: int
    W: int
    KH: int
    KW: int
    SH: int
    SW: int
    PH: int
    PW: int

    @property
    def HO(self) -> int:
        return (self.H + 2 * self.PH - self.KH) // self.SH + 1

    @property
    def WO(self) -> int:
        return (self.W + 2 * self.PW - self.KW) // self.SW + 1

    def kernel_args(self) -> dict:
        return dict(N=self.N, C=self.C, H=self.H, W=self.W, KH=self.KH, KW=self.KW,
                    SH=self.SH, SW=self.SW, PH=self.PH, PW=self.PW, HO=self.HO, WO=self.WO)

    @classmethod
    def of(cls, x_shape, weight_shape, stride=1, padding=0) -> "ConvGeometry":
        if len(x_shape) != 4:
            raise ValueError(f"conv2d expects input [N, C, H, W], got shape {tuple(x_shape)}")
        N, C, H, W = x_shape
        O, C_w, KH, KW = weight_shape
        if C != C_w:
            raise ValueError(f"conv2d: input has {C} channels but the weight expects {C_w} "
                             f"(weight shape {tuple(weight_shape)})")
        (SH, SW), (PH, PW) = _pair(stride), _pair(padding)
        if min(KH, KW, SH, SW, O, C) < 1 or min(PH, PW) < 0:
            raise ValueError(f"conv2d: kernel {KH}x{KW}, stride {SH},{SW}, {C} input and {O} output channels "
                             f"must all be >= 1 and padding {PH},{PW} >= 0")
        geometry = cls(N, C, H, W, KH, KW, SH, SW, PH, PW)
        if geometry.HO < 1 or geometry.WO < 1:
            raise ValueError(f"conv2d: a {KH}x{KW} kernel with padding {PH},{PW} does not fit "
                             f"a {H}x{W} input")
        return geometry


# Convolution ----------------------------------------------------------------

def _memory_bytes(be) -> int | None:
    """Total memory of the backend's device (host RAM for the CPU), None where it cannot be read."""
    try:
        if be.name == "cpu":
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return int(be.xp.cuda.runtime.memGetInfo()[1])
    except (AttributeError, OSError, ValueError, RuntimeError):
        return None


def im2col(be, x, geometry: ConvGeometry):
    g = geometry
    if tuple(x.shape) != (g.N, g.C, g.H, g.W):
        raise ValueError(f"im2col: input shape {tuple(x.shape)} does not match the geometry "
                         f"[N={g.N}, C={g.C}, H={g.H}, W={g.W}]")
    # Checked before allocating: an empty() of an impossible size may "succeed" lazily and fail later.
    nbytes = g.C * g.KH * g.KW * g.N * g.HO * g.WO * x.dtype.itemsize
    memory = _memory_bytes(be)
    if memory is not None and nbytes > memory:
        raise ValueError(f"im2col: the column buffer [{g.C * g.KH * g.KW}, {g.N * g.HO * g.WO}] needs "
                         f"{nbytes / 2**30:.1f} GiB, more than the {memory / 2**30:.1f} GiB of the {be.name} "
                         "device; use a smaller batch")
    col = be.xp.empty((g.C * g.KH * g.KW, g.N * g.HO * g.WO), dtype=x.dtype)
    be.launch("im2col", x=x, col=col, **g.kernel_args())
    return col


def col2im(be, col, geometry: ConvGeometry):
    g = geometry
    x = be.xp.empty((g.N, g.C, g.H, g.W), dtype=col.dtype)
    be.launch("col2im", col=col, x=x, **g.kernel_args())
    return x


def swap_outer_axes(be, x, A, B, L):
    """[A, B, L] -> a new contiguous [B, A, L] (the GEMM layout <-> NCHW transpose)."""
    y = be.xp.empty((B, A, L), dtype=x.dtype)
    be.launch("swap_outer_axes", x=be.xp.ascontiguousarray(x), y=y, A=A, B=B, L=L)
    return y


CONV_METHODS = ("gemm", "direct")
DIRECT_CONV_GRAD_ELEMENTS = 4096   # dy elements (whole output rows) per partial sum of the direct weight gradient


def _conv_method(method: str) -> str:
    if method not in CONV_METHODS:
        raise ValueError(f"conv2d: method must be one of {', '.join(CONV_METHODS)}, got {method!r}")
    return method


def conv2d_forward(be, x, weight, bias, stride=1, padding=0, relu=False, method="gemm"):
    """y = conv(x, weight) + bias, then ReLU when ``relu``. Returns (y [N, O, HO, WO], saved) — saved is
    what conv2d_backward needs: im2col's columns, or for the direct method x with its padding written out.

    ``method`` "gemm": one GEMM for the whole batch gives channel-major [O, N, HO*WO]; one pass
    (swap_outer_axes_bias) restores NCHW, adding the bias and applying the ReLU on the way. "direct": the
    input padded once, then one pass of kernels/conv_direct.cu, for few input channels; it needs no column
    buffer (C*KH*KW times the input). The layers choose with :func:`direct_conv_suits`.
    """
    g = ConvGeometry.of(x.shape, weight.shape, stride, padding)
    O = weight.shape[0]
    if _conv_method(method) == "direct":
        x, g = _padded(be, x, g)
        y = be.xp.empty((g.N, O, g.HO, g.WO), dtype=x.dtype)
        bias = be.xp.zeros(O, dtype=x.dtype) if bias is None else bias
        be.launch("conv_direct_forward", x=x, weight=weight, bias=bias, y=y, O=O, relu=int(relu),
                  **g.kernel_args())
        return y, x
    col = im2col(be, x, g)
    y = be.xp.matmul(weight.reshape(O, -1), col)          # [O, N*HO*WO]
    if bias is None:
        out = swap_outer_axes(be, y, O, g.N, g.HO * g.WO)
        out = relu_forward(be, out) if relu else out
    else:
        out = be.xp.empty((g.N, O, g.HO * g.WO), dtype=y.dtype)
        be.launch("swap_outer_axes_bias", x=y, bias=bias, y=out, A=O, B=g.N, L=g.HO * g.WO, relu=int(relu))
    return out.reshape(g.N, O, g.HO, g.WO), col


def direct_conv_suits(x_shape, weight_shape, stride=1, padding=0) -> bool:
    """Whether a layer takes the direct method: one input channel, a square 3x3 or 5x5 kernel and column
    stride 1, where conv_direct_forward's unmasked pass covers every output. On the CPU its forward takes
    about 0.6 of the time of im2col + GEMM and its weight gradient about the same (bench/results/report.md,
    "conv forward" and "conv weight gradient"); on every device the layer keeps the padded input for
    backward instead of the columns (KH*KW times larger), and a step makes fewer launches."""
    g = ConvGeometry.of(x_shape, weight_shape, stride, padding)
    return g.C == 1 and g.KH == g.KW and g.KW in (3, 5) and g.SW == 1


def conv2d_backward(be, dy, saved, x_shape, weight, stride=1, padding=0, need_dx=True, method="gemm"):
    """Gradients of conv2d_forward: (dx or None, dweight, dbias); ``saved`` and ``method`` as it had them."""
    g = ConvGeometry.of(x_shape, weight.shape, stride, padding)
    O = weight.shape[0]
    if _conv_method(method) == "direct":
        dweight, dbias = conv_direct_grad(be, dy, saved, _padded_geometry(g), O)   # saved: x padded
        if not need_dx:
            return None, dweight.reshape(weight.shape), dbias
        dy = swap_outer_axes(be, dy, g.N, O, g.HO * g.WO).reshape(O, -1)
        return col2im(be, be.xp.matmul(weight.reshape(O, -1).T, dy), g), dweight.reshape(weight.shape), dbias
    dy = swap_outer_axes(be, dy, g.N, O, g.HO * g.WO).reshape(O, -1)   # channel-major, as the forward GEMM
    # [C*KH*KW, O] then transposed: with O rows OpenBLAS splits this long-K product poorly across threads
    dweight = be.xp.ascontiguousarray(be.xp.matmul(saved, dy.T).T).reshape(weight.shape)
    dbias = bias_grad(be, dy, 1, O, g.N * g.HO * g.WO)
    dx = None
    if need_dx:
        dcol = be.xp.matmul(weight.reshape(O, -1).T, dy)  # [C*KH*KW, N*HO*WO]
        dx = col2im(be, dcol, g)
    return dx, dweight, dbias


def _padded_geometry(g: ConvGeometry) -> ConvGeometry:
    """The same convolution over the input with its zero padding written out (same HO, WO)."""
    return replace(g, H=g.H + 2 * g.PH, W=g.W + 2 * g.PW, PH=0, PW=0)


def _padded(be, x, g: ConvGeometry):
    """(x with its zero padding written out, the geometry over it): the direct kernel then finds every
    window inside its image, where it reads unmasked rows (the padding costs one copy of x, not a mask per
    tap)."""
    if g.PH == 0 and g.PW == 0:
        return x, g
    return be.xp.pad(x, ((0, 0), (0, 0), (g.PH, g.PH), (g.PW, g.PW))), _padded_geometry(g)


def conv_direct_grad(be, dy, x, g: ConvGeometry, O: int):
    """(dweight [O, C*KH*KW], dbias [O]) of the direct method: partial sums per image and chunk of output
    rows (small enough that a chunk's dy and x stay in cache while every tap reads them, and that a device
    gets many threads), then one sum per weight, in a fixed order."""
    rows = max(1, min(g.HO, DIRECT_CONV_GRAD_ELEMENTS // g.WO))
    J = -(-g.HO // rows)
    T = g.C * g.KH * g.KW + 1
    partial = be.xp.empty(g.N * J * O * T, dtype=dy.dtype)
    be.launch("conv_direct_grad_partial", dy=be.xp.ascontiguousarray(dy), x=x, partial=partial, O=O, rows=rows,
              J=J, **g.kernel_args())
    dweight = be.xp.empty((O, T - 1), dtype=dy.dtype)
    dbias = be.xp.empty(O, dtype=dy.dtype)
    be.launch("conv_direct_grad_reduce", partial=partial, dweight=dweight, dbias=dbias, O=O, T=T, K=g.N * J)
    return dweight, dbias


# Pooling --------------------------------------------------------------------

def maxpool2d_forward(be, x, kernel_size, stride=None, *, relu=False):
    """Returns (y [N, C, HO, WO], argmax int64 of the same shape); with ``relu``, max-pool of relu(x), to the bit
    (the ReLU is taken of each window's max, see kernels/pool.cu), argmax then naming the max of x."""
    (KH, KW) = _pair(kernel_size)
    (SH, SW) = _pair(stride if stride is not None else kernel_size)
    if x.ndim != 4:
        raise ValueError(f"max-pool expects input [N, C, H, W], got shape {tuple(x.shape)}")
    if min(KH, KW, SH, SW) < 1:
        raise ValueError(f"max-pool kernel {KH}x{KW} and stride {SH},{SW} must be >= 1")
    N, C, H, W = x.shape
    if KH > H or KW > W:
        raise ValueError(f"max-pool window {KH}x{KW} is larger than the {H}x{W} input")
    HO, WO = (H - KH) // SH + 1, (W - KW) // SW + 1
    y = be.xp.empty((N, C, HO, WO), dtype=x.dtype)
    argmax = be.xp.empty((N, C, HO, WO), dtype=np.int64)
    be.launch("maxpool_forward", x=x, y=y, argmax=argmax, N=N, C=C, H=H, W=W,
              KH=KH, KW=KW, SH=SH, SW=SW, HO=HO, WO=WO, relu=int(relu))
    return y, argmax


def maxpool2d_backward(be, dy, argmax, y, x_shape, kernel_size, stride=None, *, relu=False):
    """dx of max-pool (of relu(x) with ``relu``) from the forward's ``argmax`` and output ``y``."""
    (KH, KW) = _pair(kernel_size)
    (SH, SW) = _pair(stride if stride is not None else kernel_size)
    N, C, H, W = x_shape
    HO, WO = dy.shape[2], dy.shape[3]
    dy = be.xp.ascontiguousarray(dy)
    dx = be.xp.empty(x_shape, dtype=dy.dtype)
    if KH <= SH and KW <= SW:   # windows never overlap: one candidate window per pixel
        be.launch("maxpool_backward_disjoint", dy=dy, argmax=argmax, y=y, dx=dx,
                  N=N, C=C, H=H, W=W, SH=SH, SW=SW, HO=HO, WO=WO, relu=int(relu))
    else:
        be.launch("maxpool_backward", dy=dy, argmax=argmax, y=y, dx=dx,
                  N=N, C=C, H=H, W=W, KH=KH, KW=KW, SH=SH, SW=SW, HO=HO, WO=WO, relu=int(relu))
    return dx


def global_avgpool_forward(be, x):
    """[N, C, H, W] -> [N, C]."""
    N, C, H, W = x.shape
    y = be.xp.empty((N, C), dtype=x.dtype)
    be.launch("global_avgpool_forward", x=x, y=y, NC=N * C, HW=H * W)
    return y


def global_avgpool_backward(be, dy, x_shape):
    N, C, H, W = x_shape
    dx = be.xp.empty(x_shape, dtype=dy.dtype)
    be.launch("global_avgpool_backward", dy=be.xp.ascontiguousarray(dy), dx=dx, NC=N * C, HW=H * W)
    return dx


# Activation and linear ------------------------------------------------------

def relu_forward(be, x):
    y = be.xp.empty_like(x)
    be.launch("relu_forward", x=x, y=y, n=x.size)
    return y


def relu_backward(be, x, dy):
    dx = be.xp.empty_like(x)
    be.launch("relu_backward", x=x, dy=be.xp.ascontiguousarray(dy), dx=dx, n=x.size)
    return dx


def linear_forward(be, x, weight, bias):
    """y = x @ weight.T + bias, x [N, in], weight [out, in]."""
    if x.ndim != 2 or x.shape[1] != weight.shape[1]:
        raise ValueError(f"linear: input shape {tuple(x.shape)} does not match weight "
                         f"[out={weight.shape[0]}, in={weight.shape[1]}]")
    y = be.xp.matmul(x, weight.T)
    if bias is not None:
        be.launch("bias_add", x=y, b=bias, y=y, N=x.shape[0], C=weight.shape[0], S=1)
    return y


BIAS_GRAD_CHUNK = 4096   # elements of one channel summed by one device thread in the first pass


def bias_grad(be, dy, N, C, S):
    """db[c] = sum over n, s of dy viewed as [N, C, S]: partial sums, then one sum per channel, in a
    fixed order. On a device that needs many threads (``Backend.split_reductions``) the partial sums
    are over chunks of s; on the host each is a whole row, summed in one vectorised loop."""
    chunk = min(S, BIAS_GRAD_CHUNK) if be.split_reductions else S
    J = -(-S // chunk)
    partial = be.xp.empty(C * N * J, dtype=dy.dtype)
    be.launch("bias_grad_partial", dy=dy, partial=partial, N=N, C=C, S=S, chunk=chunk, J=J)
    db = be.xp.empty(C, dtype=dy.dtype)
    be.launch("bias_grad_reduce", partial=partial, db=db, C=C, K=N * J)
    return db


def linear_backward(be, dy, x, weight, need_dx=True):
    """Gradients of linear_forward: (dx or None, dweight, dbias)."""
    dy = be.xp.ascontiguousarray(dy)
    dweight = be.xp.matmul(dy.T, x)
    dbias = bias_grad(be, dy, dy.shape[0], dy.shape[1], 1)
    dx = be.xp.matmul(dy, weight) if need_dx else None
    return dx, dweight, dbias


# Losses (mean over elements or rows; the gradient is of that mean) ----------

def bce_with_logits(be, logits, targets, eps=1e-7):
    """Mean binary cross-entropy of sigmoid(logits), probability clamped to [eps, 1-eps].

    Returns (the mean loss as a 0-d array on the device, gradient with respect
    to the logits); nothing is copied to the host."""
    z = be.asarray(logits)
    y = be.asarray(targets, dtype=z.dtype)
    if y.shape != z.shape:
        raise ValueError(f"bce: targets shape {tuple(y.shape)} != logits shape {tuple(z.shape)}")
    loss = be.xp.empty_like(z)
    grad = be.xp.empty_like(z)
    be.launch("bce_with_logits", z=z, y=y, loss=loss, grad=grad, n=z.size, eps=eps,
              scale=1.0 / max(z.size, 1))
    return loss.mean(), grad


def focal_with_logits(be, logits, targets, weights, gamma=2.0):
    """Mean weighted multi-label focal loss over [N, K] logits (see kernels/loss.cu)."""
    z = be.asarray(logits)
    y = be.asarray(targets, dtype=z.dtype)
    w = be.asarray(weights, dtype=z.dtype)
    if z.ndim != 2 or y.shape != z.shape or w.shape != (z.shape[1],):
        raise ValueError(f"focal: expected logits [N, K], targets [N, K], weights [K]; got "
                         f"{tuple(z.shape)}, {tuple(y.shape)}, {tuple(w.shape)}")
    loss = be.xp.empty_like(z)
    grad = be.xp.empty_like(z)
    be.launch("focal_with_logits", z=z, y=y, weight=w, loss=loss, grad=grad,
              N=z.shape[0], K=z.shape[1], gamma=gamma, scale=1.0 / max(z.size, 1))
    return loss.mean(), grad


def softmax_cross_entropy(be, logits, labels):
    """Mean softmax cross-entropy of [N, K] logits against integer labels [N].

    Labels on the host are range-checked here; labels already on a
    GPU are not read back (that would stop the device), and the kernel gives a
    label outside [0, K) a NaN loss instead."""
    z = be.asarray(logits)
    N, K = z.shape
    host = _on_host(be, labels)
    if host is not None and host.size and (host.min() < 0 or host.max() >= K):
        raise ValueError(f"cross-entropy: labels must lie in [0, {K}), got "
                         f"[{int(host.min())}, {int(host.max())}]")
    label = be.asarray(labels, dtype=np.int64)
    if label.shape != (N,):
        raise ValueError(f"cross-entropy: labels shape {tuple(label.shape)} != ({N},)")
    loss = be.xp.empty(N, dtype=z.dtype)
    grad = be.xp.empty_like(z)
    be.launch("softmax_cross_entropy", z=z, label=label, loss=loss, grad=grad, N=N, K=K,
              scale=1.0 / max(N, 1))
    return loss.mean(), grad


# Optimizer ------------------------------------------------------------------

def adam_update(be, param, grad, m, v, *, step, lr, beta1, beta2, eps, weight_decay, decoupled):
    """One fused Adam (decoupled=False) or AdamW (decoupled=True) step, in place; ``step`` counts from 1."""
    be.launch("adam_update", param=param, grad=grad, m=m, v=v, n=param.size,
              decoupled=int(bool(decoupled)), lr=lr, one_minus_beta1=1.0 - beta1,
              one_minus_beta2=1.0 - beta2, eps=eps,
              weight_decay=weight_decay, bc1=1.0 - beta1 ** step, bc2=1.0 - beta2 ** step)


# Augmentation ---------------------------------------------------------------

def _on_host(be, values):
    """``values`` as a NumPy array when reading them costs no device round trip, else None."""
    if be.xp is not np and isinstance(values, be.xp.ndarray):
        return None
    return np.asarray(values)


def flip_rotate90(be, x, codes):
    """Per image: bit 0 flip left-right, bit 1 flip up-down, bits 2-3 quarter turns counter-clockwise.

    Codes on the host are range-checked; codes already on a GPU are
    not read back (that would stop the device) — the kernel reads only their
    low four bits."""
    N, C, H, W = x.shape
    if H != W:
        raise ValueError(f"flip_rotate90 needs square images, got {H}x{W}")
    host = _on_host(be, codes)
    if host is not None and host.size and (host.min() < 0 or host.max() > 15):
        raise ValueError(f"flip_rotate90: codes must lie in [0, 15] (bit 0 left-right, bit 1 up-down, "
                         f"bits 2-3 quarter turns), got [{int(host.min())}, {int(host.max())}]")
    op = be.asarray(codes, dtype=np.int64)
    if op.shape != (N,):
        raise ValueError(f"flip_rotate90: need one code per image ({N}), got shape {tuple(op.shape)}")
    y = be.xp.empty_like(x)
    be.launch("flip_rotate90", x=x, op=op, y=y, N=N, C=C, S=H)
    return y


def rotate_bilinear(be, x, angles):
    """Rotate image n by angles[n] radians counter-clockwise about its centre (bilinear, edge-clamped)."""
    N, C, H, W = x.shape
    angles = be.asarray(angles, dtype=x.dtype)
    cos_t, sin_t = be.asarray(be.xp.cos(angles)), be.asarray(be.xp.sin(angles))
    y = be.xp.empty_like(x)
    be.launch("rotate_bilinear", x=x, cos_t=cos_t, sin_t=sin_t, y=y, N=N, C=C, H=H, W=W)
    return y


# Batch normalisation (kernels/batchnorm.cu) ---------------------------------

BATCHNORM_CHUNK = 1024   # elements of one (n, c) plane reduced by one thread in a first pass


def _batchnorm_chunks(S):
    chunk = max(1, min(S, BATCHNORM_CHUNK))
    return chunk, -(-S // chunk)


def _planes(x, what):
    """x [N, C, H, W] as (N, C, S = H*W)."""
    if x.ndim != 4:
        raise ValueError(f"{what} expects input [N, C, H, W], got shape {tuple(x.shape)}")
    N, C, H, W = x.shape
    return N, C, H * W


def batchnorm_stats(be, x):
    """Per-channel mean and biased variance of x [N, C, H, W] over (N, H, W), two launches in a fixed
    summation order: the mean and centred sum of squares of each chunk of every plane, then one
    exact combination per channel."""
    N, C, S = _planes(x, "batchnorm_stats")
    if N * S < 1:
        raise ValueError(f"batchnorm_stats: no values per channel in input shape {tuple(x.shape)}")
    chunk, J = _batchnorm_chunks(S)
    pmean = be.xp.empty(C * N * J, dtype=x.dtype)
    pm2 = be.xp.empty(C * N * J, dtype=x.dtype)
    be.launch("batchnorm_stats_partial", x=x, pmean=pmean, pm2=pm2, N=N, C=C, S=S, chunk=chunk, J=J)
    mean, var = be.xp.empty(C, dtype=x.dtype), be.xp.empty(C, dtype=x.dtype)
    be.launch("batchnorm_stats_reduce", pmean=pmean, pm2=pm2, mean=mean, var=var, N=N, C=C, S=S,
              chunk=chunk, J=J)
    return mean, var


def batchnorm_running_update(be, mean, var, running_mean, running_var, count, momentum):
    """In place: running_mean/var <- (1 - momentum) * running + momentum * batch (unbiased variance of
    ``count`` values per channel, as PyTorch)."""
    if count < 2:
        raise ValueError(f"batch norm needs more than one value per channel to update its running "
                         f"variance, got {count}")
    be.launch("batchnorm_running_update", mean=mean, var=var, running_mean=running_mean,
              running_var=running_var, C=mean.size, M=int(count), momentum=float(momentum))


def batchnorm_forward(be, x, mean, var, weight, bias, eps=1e-5):
    """y = (x - mean) / sqrt(var + eps) * weight + bias per channel of x [N, C, H, W]."""
    N, C, S = _planes(x, "batchnorm_forward")
    y = be.xp.empty_like(x)
    be.launch("batchnorm_forward", x=x, mean=mean, var=var, weight=weight, bias=bias, y=y, N=N, C=C, S=S,
              eps=eps)
    return y


def batchnorm_backward(be, dy, x, mean, var, weight, eps=1e-5, need_dx=True):
    """Gradients of training-mode batchnorm_forward at x with its batch statistics (mean, var):
    (dx or None, dweight, dbias)."""
    N, C, S = _planes(x, "batchnorm_backward")
    dy = be.xp.ascontiguousarray(dy)
    chunk, J = _batchnorm_chunks(S)
    pdy = be.xp.empty(C * N * J, dtype=x.dtype)
    pdyx = be.xp.empty(C * N * J, dtype=x.dtype)
    be.launch("batchnorm_backward_partial", dy=dy, x=x, mean=mean, pdy=pdy, pdyx=pdyx, N=N, C=C, S=S,
              chunk=chunk, J=J)
    dweight, dbias = be.xp.empty(C, dtype=x.dtype), be.xp.empty(C, dtype=x.dtype)
    be.launch("batchnorm_backward_reduce", pdy=pdy, pdyx=pdyx, var=var, dweight=dweight, dbias=dbias,
              C=C, K=N * J, eps=eps)
    dx = None
    if need_dx:
        dx = be.xp.empty_like(x)
        be.launch("batchnorm_backward_dx", dy=dy, x=x, mean=mean, var=var, weight=weight, dweight=dweight,
                  dbias=dbias, dx=dx, N=N, C=C, S=S, eps=eps)
    return dx, dweight, dbias


def fold_batchnorm_conv(be, weight, bias, mean, var, gamma, beta, eps=1e-5):
    """A convolution's (weight [O, C, KH, KW], bias [O]) with eval-mode batch norm of its O output
    channels folded in: (weight_out, bias_out), one convolution computing both."""
    O = weight.shape[0]
    if any(v.shape != (O,) for v in (bias, mean, var, gamma, beta)):
        raise ValueError(f"fold_batchnorm_conv: the convolution has {O} output channels; bias, mean, var, "
                         f"gamma and beta must be [{O}], got "
                         f"{[tuple(v.shape) for v in (bias, mean, var, gamma, beta)]}")
    weight_out = be.xp.empty_like(weight)
    bias_out = be.xp.empty_like(bias)
    be.launch("batchnorm_fold_conv", weight=be.xp.ascontiguousarray(weight), bias=bias, mean=mean, var=var,
              gamma=gamma, beta=beta, weight_out=weight_out, bias_out=bias_out, O=O, K=weight.size // O,
              eps=eps)
    return weight_out, bias_out
