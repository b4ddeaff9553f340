/*
 * layout.cu — the transpose between a convolution's GEMM layout and NCHW.
 *
 *   swap_outer_axes:      y[b, a, l] = x[a, b, l]               x [A, B, L], y [B, A, L]
 *   swap_outer_axes_bias: y[b, a, l] = act(x[a, b, l] + bias[a])  bias [A]; act is ReLU when
 *                         relu = 1 (NaN stays NaN, as relu_forward), else the identity
 *
 * The batch-wide GEMM yields channel-major [O, N, HO*WO]; layers hand each
 * other NCHW [N, O, HO*WO], and the backward pass goes the other way. Each
 * (b, a) row is one contiguous run of L elements on both sides. The forward
 * transpose also adds the convolution's bias and, when a ReLU follows, applies
 * it: the same operations in the same order as bias_add and relu_forward, in
 * one pass over the output instead of three.
 */
#include "portable.cuh"

KERNEL(swap_outer_axes)(const real* x, real* y, long long A, long long B, long long L)
{
    /* One line per row of y: line = b * A + a. */
    FOR_EACH_LINE(line, B * A, L) {
        const real* src = x + ((line % A) * B + line / A) * L;
        real* dst = y + line * L;
        FOR_EACH_IN_RUN(l, L) dst[l] = src[l];
    }
}

KERNEL(swap_outer_axes_bias)(const real* x, const real* bias, real* y, long long A, long long B, long long L,
                             long long relu)
{
    /* One line per row of y: line = b * A + a. */
    FOR_EACH_LINE(line, B * A, L) {
        long long a = line % A;
        const real* src = x + (a * B + line / A) * L;
        real* dst = y + line * L;
        real shift = bias[a];
        if (relu) {
            FOR_EACH_IN_RUN(l, L) {
                real v = src[l] + shift;
                dst[l] = (v > 0 || v != v) ? v : (real)0;
            }
        } else {
            FOR_EACH_IN_RUN(l, L) dst[l] = src[l] + shift;
        }
    }
}
