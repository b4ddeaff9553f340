"""The argument table: every kernel's parameters, in the order the C kernel takes them.

Both launchers read this one table, so the GPU launcher can never pass an
argument the CPU launcher did not. Each kernel takes its arrays first, then its
integers (``long long``), then its real scalars (the kernel's own precision).

An array's size is an expression over the kernel's integer arguments; the
launcher checks it before every launch. ``checks`` are further conditions on
the integers (shapes that must agree). ``threads`` is the number of logical
threads, one per output element, that the device grid covers.
"""
from __future__ import annotations

from dataclasses import dataclass, field

REAL, INT64 = "real", "int64"


@dataclass(frozen=True)
class Array:
    name: str
    size: str              # element count, as an expression over the integer arguments
    dtype: str = REAL      # REAL: the kernel's precision; INT64: indices
    output: bool = False   # written by the kernel
    input: bool = True     # read by the kernel


def In(name, size, dtype=REAL):
    return Array(name, size, dtype)


def Out(name, size, dtype=REAL):
    return Array(name, size, dtype, output=True, input=False)


def InOut(name, size, dtype=REAL):
    return Array(name, size, dtype, output=True, input=True)


@dataclass(frozen=True)
class Kernel:
    name: str
    source: str                      # file in kernels/
    arrays: tuple[Array, ...]
    ints: tuple[str, ...]
    reals: tuple[str, ...] = ()
    threads: str = "0"
    checks: tuple[str, ...] = ()
    may_alias: tuple[tuple[str, str], ...] = ()   # (input, output) pairs that may be one buffer
    positive: tuple[str, ...] = field(default=())  # integers that must be >= 1

    @property
    def params(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.arrays) + self.ints + self.reals


_CONV_INTS = ("N", "C", "H", "W", "KH", "KW", "SH", "SW", "PH", "PW", "HO", "WO")
_CONV_CHECKS = ("HO == (H + 2 * PH - KH) // SH + 1", "WO == (W + 2 * PW - KW) // SW + 1",
                "KH <= H + 2 * PH", "KW <= W + 2 * PW", "PH < KH", "PW < KW")
_POOL_INTS = ("N", "C", "H", "W", "KH", "KW", "SH", "SW", "HO", "WO")
_POOL_CHECKS = ("HO == (H - KH) // SH + 1", "WO == (W - KW) // SW + 1", "KH <= H", "KW <= W")

KERNELS: dict[str, Kernel] = {k.name: k for k in (
    Kernel("im2col", "im2col.cu",
           (In("x", "N * C * H * W"), Out("col", "N * C * KH * KW * HO * WO")),
           _CONV_INTS, threads="N * C * KH * KW * HO * WO", checks=_CONV_CHECKS,
           positive=("KH", "KW", "SH", "SW")),
    Kernel("col2im", "im2col.cu",
           (In("col", "N * C * KH * KW * HO * WO"), Out("x", "N * C * H * W")),
           _CONV_INTS, threads="N * C * H * W", checks=_CONV_CHECKS,
           positive=("KH", "KW", "SH", "SW")),
    Kernel("conv_direct_forward", "conv_direct.cu",
           (In("x", "N * C * H * W"), In("weight", "O * C * KH * KW"), In("bias", "O"),
            Out("y", "N * O * HO * WO")),
           _CONV_INTS + ("O", "relu"), threads="N * O * HO * WO", checks=_CONV_CHECKS + ("relu in (0, 1)",),
           positive=("KH", "KW", "SH", "SW")),
    Kernel("conv_direct_grad_partial", "conv_direct.cu",
           (In("dy", "N * O * HO * WO"), In("x", "N * C * H * W"),
            Out("partial", "N * J * O * (C * KH * KW + 1)")),
           _CONV_INTS + ("O", "rows", "J"), threads="N * J * O * (C * KH + 1)",
           checks=_CONV_CHECKS + ("J == (HO + rows - 1) // rows",), positive=("KH", "KW", "SH", "SW", "rows")),
    Kernel("conv_direct_grad_reduce", "conv_direct.cu",
           (In("partial", "K * O * T"), Out("dweight", "O * (T - 1)"), Out("dbias", "O")),
           ("O", "T", "K"), threads="O * T", positive=("T",)),
    Kernel("maxpool_forward", "pool.cu",
           (In("x", "N * C * H * W"), Out("y", "N * C * HO * WO"),
            Out("argmax", "N * C * HO * WO", INT64)),
           _POOL_INTS + ("relu",), threads="N * C * HO * WO", checks=_POOL_CHECKS + ("relu in (0, 1)",),
           positive=("KH", "KW", "SH", "SW")),
    Kernel("maxpool_backward", "pool.cu",
           (In("dy", "N * C * HO * WO"), In("argmax", "N * C * HO * WO", INT64), In("y", "N * C * HO * WO"),
            Out("dx", "N * C * H * W")),
           _POOL_INTS + ("relu",), threads="N * C * H * W", checks=_POOL_CHECKS + ("relu in (0, 1)",),
           positive=("KH", "KW", "SH", "SW")),
    Kernel("maxpool_backward_disjoint", "pool.cu",
           (In("dy", "N * C * HO * WO"), In("argmax", "N * C * HO * WO", INT64), In("y", "N * C * HO * WO"),
            Out("dx", "N * C * H * W")),
           ("N", "C", "H", "W", "SH", "SW", "HO", "WO", "relu"), threads="N * C * H * WO",
           checks=("(HO - 1) * SH < H", "(WO - 1) * SW < W", "relu in (0, 1)"), positive=("SH", "SW", "HO", "WO")),
    Kernel("global_avgpool_forward", "pool.cu",
           (In("x", "NC * HW"), Out("y", "NC")), ("NC", "HW"), threads="NC", positive=("HW",)),
    Kernel("global_avgpool_backward", "pool.cu",
           (In("dy", "NC"), Out("dx", "NC * HW")), ("NC", "HW"), threads="NC * HW",
           positive=("HW",)),
    Kernel("relu_forward", "activation.cu",
           (In("x", "n"), Out("y", "n")), ("n",), threads="n", may_alias=(("x", "y"),)),
    Kernel("relu_backward", "activation.cu",
           (In("x", "n"), In("dy", "n"), Out("dx", "n")), ("n",), threads="n",
           may_alias=(("dy", "dx"),)),
    Kernel("bias_add", "activation.cu",
           (In("x", "N * C * S"), In("b", "C"), Out("y", "N * C * S")), ("N", "C", "S"),
           threads="N * C * S", may_alias=(("x", "y"),)),
    Kernel("bias_grad_partial", "activation.cu",
           (In("dy", "N * C * S"), Out("partial", "C * N * J")), ("N", "C", "S", "chunk", "J"),
           threads="C * N * J", checks=("J == (S + chunk - 1) // chunk",), positive=("chunk",)),
    Kernel("bias_grad_reduce", "activation.cu",
           (In("partial", "C * K"), Out("db", "C")), ("C", "K"), threads="C"),
    Kernel("swap_outer_axes", "layout.cu",
           (In("x", "A * B * L"), Out("y", "A * B * L")), ("A", "B", "L"), threads="A * B * L"),
    Kernel("swap_outer_axes_bias", "layout.cu",
           (In("x", "A * B * L"), In("bias", "A"), Out("y", "A * B * L")), ("A", "B", "L", "relu"),
           threads="A * B * L", checks=("relu in (0, 1)",)),
    Kernel("bce_with_logits", "loss.cu",
           (In("z", "n"), In("y", "n"), Out("loss", "n"), Out("grad", "n")), ("n",),
           ("eps", "scale"), threads="n", checks=("0 < eps < 0.5",)),
    Kernel("focal_with_logits", "loss.cu",
           (In("z", "N * K"), In("y", "N * K"), In("weight", "K"), Out("loss", "N * K"),
            Out("grad", "N * K")), ("N", "K"), ("gamma", "scale"), threads="N * K",
           checks=("gamma >= 0",)),
    Kernel("softmax_cross_entropy", "loss.cu",
           (In("z", "N * K"), In("label", "N", INT64), Out("loss", "N"), Out("grad", "N * K")),
           ("N", "K"), ("scale",), threads="N * K", positive=("K",)),
    Kernel("adam_update", "adam.cu",
           (InOut("param", "n"), In("grad", "n"), InOut("m", "n"), InOut("v", "n")),
           ("n", "decoupled"), ("lr", "one_minus_beta1", "one_minus_beta2", "eps", "weight_decay",
                                "bc1", "bc2"),
           threads="n", checks=("decoupled in (0, 1)", "0 < one_minus_beta1 <= 1",
                                "0 < one_minus_beta2 <= 1",
                                "eps > 0", "0 < bc1 <= 1", "0 < bc2 <= 1", "lr >= 0",
                                "weight_decay >= 0")),
    Kernel("flip_rotate90", "augment.cu",
           (In("x", "N * C * S * S"), In("op", "N", INT64), Out("y", "N * C * S * S")),
           ("N", "C", "S"), threads="N * C * S * S"),
    Kernel("rotate_bilinear", "augment.cu",
           (In("x", "N * C * H * W"), In("cos_t", "N"), In("sin_t", "N"),
            Out("y", "N * C * H * W")), ("N", "C", "H", "W"), threads="N * C * H * W"),
    Kernel("batchnorm_stats_partial", "batchnorm.cu",
           (In("x", "N * C * S"), Out("pmean", "C * N * J"), Out("pm2", "C * N * J")),
           ("N", "C", "S", "chunk", "J"), threads="C * N * J",
           checks=("J == (S + chunk - 1) // chunk",), positive=("chunk",)),
    Kernel("batchnorm_stats_reduce", "batchnorm.cu",
           (In("pmean", "C * N * J"), In("pm2", "C * N * J"), Out("mean", "C"), Out("var", "C")),
           ("N", "C", "S", "chunk", "J"), threads="C",
           checks=("J == (S + chunk - 1) // chunk",), positive=("N", "S", "chunk")),
    Kernel("batchnorm_running_update", "batchnorm.cu",
           (In("mean", "C"), In("var", "C"), InOut("running_mean", "C"), InOut("running_var", "C")),
           ("C", "M"), ("momentum",), threads="C", checks=("M >= 2", "0 <= momentum <= 1")),
    Kernel("batchnorm_forward", "batchnorm.cu",
           (In("x", "N * C * S"), In("mean", "C"), In("var", "C"), In("weight", "C"), In("bias", "C"),
            Out("y", "N * C * S")), ("N", "C", "S"), ("eps",), threads="N * C * S", checks=("eps >= 0",)),
    Kernel("batchnorm_backward_partial", "batchnorm.cu",
           (In("dy", "N * C * S"), In("x", "N * C * S"), In("mean", "C"), Out("pdy", "C * N * J"),
            Out("pdyx", "C * N * J")), ("N", "C", "S", "chunk", "J"), threads="C * N * J",
           checks=("J == (S + chunk - 1) // chunk",), positive=("chunk",)),
    Kernel("batchnorm_backward_reduce", "batchnorm.cu",
           (In("pdy", "C * K"), In("pdyx", "C * K"), In("var", "C"), Out("dweight", "C"), Out("dbias", "C")),
           ("C", "K"), ("eps",), threads="C", checks=("eps >= 0",)),
    Kernel("batchnorm_backward_dx", "batchnorm.cu",
           (In("dy", "N * C * S"), In("x", "N * C * S"), In("mean", "C"), In("var", "C"), In("weight", "C"),
            In("dweight", "C"), In("dbias", "C"), Out("dx", "N * C * S")), ("N", "C", "S"), ("eps",),
           threads="N * C * S", checks=("eps >= 0",)),
    Kernel("batchnorm_fold_conv", "batchnorm.cu",
           (In("weight", "O * K"), In("bias", "O"), In("mean", "O"), In("var", "O"), In("gamma", "O"),
            In("beta", "O"), Out("weight_out", "O * K"), Out("bias_out", "O")), ("O", "K"), ("eps",),
           threads="O * (K + 1)", checks=("eps >= 0",)),
)}
