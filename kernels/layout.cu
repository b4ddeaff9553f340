/*
 * layout.cu — the transpose between a convolution's GEMM layout and NCHW.
 *
 *   swap_outer_axes:  y[b, a, l] = x[a, b, l]          x [A, B, L], y [B, A, L]
 *
 * The batch-wide GEMM yields channel-major [O, N, HO*WO]; layers hand each
 * other NCHW [N, O, HO*WO], and the backward pass goes the other way. Each
 * (b, a) row is one contiguous run of L elements on both sides.
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
