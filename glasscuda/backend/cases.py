"""The test cases of every kernel in :data:`glasscuda.backend.table.KERNELS`, beside the table.

Each kernel has one :class:`KernelCases`: ``valid``, the integer and real
arguments of one small launch that passes every check of its table row (the
launch-validation tests start from it and break one thing at a time), and
``cases``, the fixed cases its test runner compares with the float64 oracle
on every backend (tests/test_kernels.py, the GPU parity test and the error
table run them). A case holds the runner's keyword arguments: the kernel's
sizes, plus options of the runner such as ``ties=True``.

The large cases exceed the host's 16384-element threshold, so they run on the
OpenMP team as well as in one thread.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KernelCases:
    valid: dict
    cases: tuple[dict, ...]


# im2col and col2im are adjoint: the same geometries serve both.
_CONV_VALID = dict(N=2, C=3, H=5, W=4, KH=3, KW=3, SH=2, SW=1, PH=1, PW=0, HO=3, WO=2)
_CONV_CASES = (dict(N=2, C=3, H=7, W=5, KH=3, KW=3, SH=2, SW=2, PH=1, PW=1),
               dict(N=1, C=2, H=6, W=9, KH=5, KW=3, SH=1, SW=2, PH=2, PW=0),
               dict(N=2, C=3, H=40, W=40, KH=3, KW=3, SH=1, SW=1, PH=1, PW=1))
_POOL_VALID = dict(N=2, C=1, H=5, W=4, KH=2, KW=2, SH=2, SW=2, HO=2, WO=2)

CASES: dict[str, KernelCases] = {
    "im2col": KernelCases(valid=_CONV_VALID, cases=_CONV_CASES),
    "col2im": KernelCases(valid=_CONV_VALID, cases=_CONV_CASES),
    "conv_direct_forward": KernelCases(
        valid=dict(_CONV_VALID, O=2, relu=1),
        cases=(dict(N=2, C=1, H=7, W=6, KH=5, KW=5, SH=1, SW=1, PH=2, PW=2, O=3, relu=0),
               dict(N=2, C=3, H=7, W=5, KH=3, KW=3, SH=2, SW=2, PH=1, PW=1, O=4, relu=1),
               dict(N=1, C=2, H=6, W=9, KH=5, KW=3, SH=1, SW=2, PH=2, PW=0, O=2, relu=1),
               dict(N=2, C=1, H=40, W=40, KH=5, KW=5, SH=1, SW=1, PH=2, PW=2, O=8, relu=1))),
    "conv_direct_grad_partial": KernelCases(
        valid=dict(_CONV_VALID, O=2, rows=2, J=2),
        cases=(dict(N=2, C=1, H=7, W=6, KH=5, KW=5, SH=1, SW=1, PH=2, PW=2, O=3, rows=7),
               dict(N=2, C=3, H=7, W=5, KH=3, KW=3, SH=2, SW=2, PH=1, PW=1, O=4, rows=3),
               dict(N=1, C=2, H=6, W=9, KH=5, KW=3, SH=1, SW=2, PH=2, PW=0, O=2, rows=1),
               dict(N=2, C=2, H=9, W=8, KH=3, KW=3, SH=1, SW=1, PH=1, PW=1, O=3, rows=4),
               dict(N=1, C=1, H=7, W=11, KH=3, KW=5, SH=2, SW=1, PH=0, PW=1, O=2, rows=2),
               dict(N=1, C=1, H=3, W=3, KH=5, KW=5, SH=1, SW=1, PH=2, PW=2, O=2, rows=2),
               dict(N=2, C=1, H=40, W=40, KH=5, KW=5, SH=1, SW=1, PH=2, PW=2, O=8, rows=16))),
    "conv_direct_grad_reduce": KernelCases(
        valid=dict(O=2, T=4, K=3),
        cases=(dict(O=3, T=26, K=1),
               dict(O=4, T=28, K=7),
               dict(O=16, T=26, K=300))),
    "maxpool_forward": KernelCases(
        valid=dict(_POOL_VALID, relu=1),
        cases=(dict(N=2, C=3, H=7, W=9, KH=2, KW=2, SH=2, SW=2),
               dict(N=2, C=2, H=8, W=10, KH=2, KW=2, SH=2, SW=2, ties=True),
               dict(N=2, C=2, H=8, W=10, KH=2, KW=2, SH=2, SW=2, ties=True, relu=1),
               dict(N=1, C=2, H=7, W=9, KH=2, KW=2, SH=1, SW=2, ties=True),
               dict(N=1, C=2, H=9, W=8, KH=3, KW=3, SH=1, SW=2, ties=True, relu=1),
               dict(N=4, C=4, H=64, W=64, KH=2, KW=2, SH=2, SW=2, relu=1))),
    "maxpool_backward": KernelCases(
        valid=dict(_POOL_VALID, relu=1),
        cases=(dict(N=2, C=3, H=7, W=9, KH=2, KW=2, SH=2, SW=2),
               dict(N=1, C=2, H=9, W=8, KH=3, KW=3, SH=1, SW=2, ties=True),
               dict(N=1, C=2, H=9, W=8, KH=3, KW=3, SH=1, SW=2, ties=True, relu=1),
               dict(N=4, C=4, H=64, W=64, KH=3, KW=3, SH=2, SW=2, relu=1))),
    "maxpool_backward_disjoint": KernelCases(
        valid=dict(N=2, C=1, H=5, W=4, SH=2, SW=2, HO=2, WO=2, relu=1),
        cases=(dict(N=2, C=3, H=7, W=9, KH=2, KW=2, SH=2, SW=2),
               dict(N=2, C=3, H=7, W=9, KH=2, KW=2, SH=2, SW=2, ties=True, relu=1),
               dict(N=1, C=2, H=9, W=8, KH=2, KW=3, SH=3, SW=3, ties=True),
               dict(N=2, C=3, H=8, W=7, KH=2, KW=2, SH=2, SW=3, relu=1),
               dict(N=4, C=4, H=64, W=64, KH=2, KW=2, SH=2, SW=2, relu=1))),
    "global_avgpool_forward": KernelCases(
        valid=dict(NC=3, HW=4),
        cases=(dict(NC=6, HW=49),
               dict(NC=12, HW=4096))),
    "global_avgpool_backward": KernelCases(
        valid=dict(NC=3, HW=4),
        cases=(dict(NC=6, HW=49),
               dict(NC=12, HW=4096))),
    "relu_forward": KernelCases(
        valid=dict(n=5),
        cases=(dict(n=101),
               dict(n=40001))),
    "relu_backward": KernelCases(
        valid=dict(n=5),
        cases=(dict(n=101),
               dict(n=40001))),
    "bias_add": KernelCases(
        valid=dict(N=2, C=3, S=4),
        cases=(dict(N=2, C=3, S=35),
               dict(N=8, C=5, S=1),
               dict(N=2, C=16, S=1024))),
    "bias_grad_partial": KernelCases(
        valid=dict(N=2, C=3, S=4, chunk=3, J=2),
        cases=(dict(N=2, C=3, S=35, chunk=35),
               dict(N=2, C=3, S=35, chunk=8),
               dict(N=8, C=5, S=1, chunk=1),
               dict(N=1, C=16, S=20000, chunk=4096))),
    "bias_grad_reduce": KernelCases(
        valid=dict(C=3, K=4),
        cases=(dict(C=3, K=1),
               dict(C=5, K=37),
               dict(C=64, K=300))),
    "swap_outer_axes_bias": KernelCases(
        valid=dict(A=2, B=3, L=4, relu=1),
        cases=(dict(A=3, B=5, L=7, relu=0),
               dict(A=3, B=5, L=7, relu=1),
               dict(A=1, B=4, L=1, relu=1),
               dict(A=16, B=32, L=1024, relu=1))),
    "swap_outer_axes": KernelCases(
        valid=dict(A=2, B=3, L=4),
        cases=(dict(A=3, B=5, L=7),
               dict(A=1, B=4, L=1),
               dict(A=4, B=1, L=3),
               dict(A=16, B=32, L=1024))),
    "bce_with_logits": KernelCases(
        valid=dict(n=5, eps=1e-07, scale=0.2),
        cases=(dict(n=257),
               dict(n=257, soft=True),
               dict(n=20000, scale=1.0))),
    "focal_with_logits": KernelCases(
        valid=dict(N=2, K=3, gamma=2.0, scale=1.0),
        cases=(dict(N=33, K=4, gamma=0.0),
               dict(N=33, K=4, gamma=1.0),
               dict(N=33, K=4, gamma=2.0),
               dict(N=5000, K=4, gamma=2.5))),
    "softmax_cross_entropy": KernelCases(
        valid=dict(N=2, K=3, scale=0.5),
        cases=(dict(N=17, K=5),
               dict(N=3, K=1000, spread=30.0),
               dict(N=4096, K=8))),
    "adam_update": KernelCases(
        valid=dict(n=5, decoupled=0, lr=1e-3, one_minus_beta1=0.1, one_minus_beta2=0.001, eps=1e-8,
                   weight_decay=0.0, bc1=0.1, bc2=0.001),
        cases=(dict(n=101, decoupled=False, weight_decay=0.01),
               dict(n=101, decoupled=True, weight_decay=0.01),
               dict(n=20001, decoupled=False))),
    "flip_rotate90": KernelCases(
        valid=dict(N=2, C=1, S=3),
        cases=(dict(N=16, C=2, S=5, codes=range(16)),
               dict(N=16, C=1, S=4, codes=range(16)),
               dict(N=4, C=3, S=64))),
    "rotate_bilinear": KernelCases(
        valid=dict(N=2, C=1, H=3, W=4),
        cases=(dict(N=3, C=2, H=9, W=7),
               dict(N=4, C=3, H=64, W=48))),
    # Batch norm: S = H*W; a chunk that divides S, one that does not, S = 1, and large offsets
    # (|mean| >> std), where uncentred sums would cancel.
    "batchnorm_stats_partial": KernelCases(
        valid=dict(N=2, C=3, S=4, chunk=3, J=2),
        cases=(dict(N=2, C=3, S=35, chunk=35),
               dict(N=2, C=3, S=35, chunk=8),
               dict(N=8, C=5, S=1, chunk=1),
               dict(N=2, C=4, S=20000, chunk=1024, offset=1000.0),
               dict(N=1, C=16, S=20000, chunk=1024))),
    "batchnorm_stats_reduce": KernelCases(
        valid=dict(N=2, C=3, S=4, chunk=3, J=2),
        cases=(dict(N=1, C=3, S=35, chunk=35),
               dict(N=3, C=5, S=35, chunk=8),
               dict(N=9, C=5, S=1, chunk=1),
               dict(N=4, C=4, S=20000, chunk=1024, offset=1000.0),
               dict(N=32, C=16, S=4096, chunk=1024))),
    "batchnorm_running_update": KernelCases(
        valid=dict(C=3, M=2, momentum=0.1),
        cases=(dict(C=5, M=2, momentum=0.1, steps=4),
               dict(C=64, M=35, momentum=0.5),
               dict(C=7, M=100, momentum=1.0),
               dict(C=20000, M=4096, momentum=0.1))),
    "batchnorm_forward": KernelCases(
        valid=dict(N=2, C=3, S=4, eps=1e-5),
        cases=(dict(N=2, C=3, S=35),
               dict(N=8, C=5, S=1),
               dict(N=3, C=4, S=50, stats="running"),
               dict(N=2, C=16, S=1024),
               dict(N=2, C=16, S=1024, eps=0.1, stats="running"))),
    "batchnorm_backward_partial": KernelCases(
        valid=dict(N=2, C=3, S=4, chunk=3, J=2),
        cases=(dict(N=2, C=3, S=35, chunk=35),
               dict(N=2, C=3, S=35, chunk=8),
               dict(N=8, C=5, S=1, chunk=1),
               dict(N=1, C=16, S=20000, chunk=1024))),
    "batchnorm_backward_reduce": KernelCases(
        valid=dict(C=3, K=4, eps=1e-5),
        cases=(dict(N=1, C=3, S=35, chunk=35),
               dict(N=3, C=5, S=35, chunk=8),
               dict(N=9, C=5, S=1, chunk=1),
               dict(N=32, C=16, S=4096, chunk=1024))),
    "batchnorm_backward_dx": KernelCases(
        valid=dict(N=2, C=3, S=4, eps=1e-5),
        cases=(dict(N=2, C=3, S=35),
               dict(N=8, C=5, S=1),
               dict(N=2, C=16, S=1024),
               dict(N=2, C=4, S=300, eps=0.1))),
    "batchnorm_fold_conv": KernelCases(
        valid=dict(O=2, K=3, eps=1e-5),
        cases=(dict(O=1, K=1),
               dict(O=5, K=27),
               dict(O=64, K=576, eps=1e-3))),
}
