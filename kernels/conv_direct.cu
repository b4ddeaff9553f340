/*
 * conv_direct.cu — convolution without im2col, for layers with few input channels
 * (the first layer of a grayscale or RGB network), forward and weight gradient.
 *
 *   x  [N, C, H, W]   weight [O, C, KH, KW]   bias [O]   y, dy [N, O, HO, WO]
 *
 * Forward, then ReLU when relu = 1:
 *   y[n, o, oh, ow] = bias[o] + sum_{c, ki, kj} weight[o, c, ki, kj] * x[n, c, oh*SH - PH + ki, ow*SW - PW + kj]
 * (x is 0 in the padding), the taps added in (c, ki, kj) order.
 *
 * With C*KH*KW small, im2col's column matrix [C*KH*KW, N*HO*WO] is C*KH*KW times the
 * image (25x for a 5x5 kernel on one channel) and feeds a GEMM too skinny to run at
 * speed; here each output row is built from the input rows it needs, which stay in cache.
 *
 * Weight and bias gradients, T = C*KH*KW + 1 sums per output channel (tap t < T-1 is
 * (c, ki, kj) = (t / (KH*KW), t / KW % KH, t % KW); tap T-1 is the bias):
 *   dweight[o, c, ki, kj] = sum_{n, oh, ow} dy[n, o, oh, ow] * x[n, c, oh*SH - PH + ki, ow*SW - PW + kj]
 *   dbias[o]              = sum_{n, oh, ow} dy[n, o, oh, ow]
 * in two passes, in a fixed order (no atomics), as bias_grad does. The output rows of
 * each image are cut into J = ceil(HO / rows) chunks of `rows` rows; k = n*J + j:
 *   conv_direct_grad_partial: partial[k, o, t] = the chunk's sum for (o, t)    [N*J, O, T]
 *       consecutive threads share the chunk's dy and x rows, which stay in cache
 *   conv_direct_grad_reduce:  sum over k of partial[k, o, t], into dweight and dbias
 */
#include "portable.cuh"

/* sum + the K x K taps of one input channel, in (ki, kj) order: taps[ki*K + kj] * rows[ki][kj], the rows
   of the image a stride `row_step` apart. Called with K a constant, the host unrolls all K*K taps. */
DEVICE real conv_window_taps(real sum, const real* rows, long long row_step, const real* taps, long long K)
{
    for (long long ki = 0; ki < K; ++ki)
        for (long long kj = 0; kj < K; ++kj) sum += taps[ki * K + kj] * rows[ki * row_step + kj];
    return sum;
}

/* The interior pass of the forward for a K x K kernel (K a constant): outputs inner <= ow < outer, whose
   windows lie inside the image, each summed in a register over one channel's taps at a time. The taps are
   copied to a local array first, which the host keeps in registers (read through `weight` they could
   alias `y`, and would be loaded again for every vector). */
#define CONV_INTERIOR_PASS(K)                                                                          \
    {                                                                                                  \
        FOR_EACH_IN_RANGE(ow, inner, outer) out[ow] = bias[o];                                         \
        for (long long c = 0; c < C; ++c) {                                                            \
            real tap[K * K];                                                                           \
            for (long long t = 0; t < K * K; ++t) tap[t] = weight[(o * C + c) * K * K + t];            \
            const real* rows = x + ((n * C + c) * H + top) * W - PW;   /* window of ow: rows + ow */   \
            if (relu && c == C - 1)                                                                    \
                FOR_EACH_IN_RANGE(ow, inner, outer) {                                                  \
                    real sum = conv_window_taps(out[ow], rows + ow, W, tap, K);                        \
                    out[ow] = sum > 0 ? sum : (real)0;                                                 \
                }                                                                                      \
            else                                                                                       \
                FOR_EACH_IN_RANGE(ow, inner, outer) out[ow] = conv_window_taps(out[ow], rows + ow, W, tap, K); \
        }                                                                                              \
    }

KERNEL(conv_direct_forward)(const real* x, const real* weight, const real* bias, real* y,
                            long long N, long long C, long long H, long long W,
                            long long KH, long long KW, long long SH, long long SW,
                            long long PH, long long PW, long long HO, long long WO,
                            long long O, long long relu)
{
    /* One line per (n, o, oh): a row of WO outputs. */
    FOR_EACH_LINE(line, N * O * HO, WO) {
        long long oh = line % HO;
        long long o = line / HO % O;
        long long n = line / (HO * O);
        long long top = oh * SH - PH;   /* the input row under kernel row 0 */
        real* out = y + line * WO;
        /* [inner, outer): the outputs whose whole window is inside the image, for a square 3x3 or 5x5
           kernel at column stride 1: contiguous unmasked reads there, which the host vectorises. */
        long long inner = 0, outer = 0;
        if (SW == 1 && KH == KW && (KW == 3 || KW == 5) && top >= 0 && top + KH <= H) {
            inner = gc_minll(PW, WO);
            outer = gc_maxll(gc_minll(W + PW - KW + 1, WO), inner);
            if (KW == 3) CONV_INTERIOR_PASS(3)
            else CONV_INTERIOR_PASS(5)
        }
        /* Every other output, each tap masked by the padding: the same sum, in the same order
           (bias, then (c, ki, kj); rows in the padding add nothing, columns in it add tap * 0). */
        for (long long part = 0; part < 2; ++part) {
            FOR_EACH_IN_RANGE(ow, part ? outer : 0, part ? WO : inner) {
                real sum = bias[o];
                for (long long c = 0; c < C; ++c)
                    for (long long ki = 0; ki < KH; ++ki) {
                        long long h = top + ki;
                        if (h < 0 || h >= H) continue;
                        const real* row = x + ((n * C + c) * H + h) * W;
                        const real* taps = weight + ((o * C + c) * KH + ki) * KW;
                        for (long long kj = 0; kj < KW; ++kj) {
                            long long w = ow * SW - PW + kj;
                            sum += taps[kj] * ((w >= 0 && w < W) ? row[w] : (real)0);
                        }
                    }
                out[ow] = relu ? (sum > 0 ? sum : (real)0) : sum;
            }
        }
    }
}

KERNEL(conv_direct_grad_partial)(const real* dy, const real* x, real* partial,
                                 long long N, long long C, long long H, long long W,
                                 long long KH, long long KW, long long SH, long long SW,
                                 long long PH, long long PW, long long HO, long long WO,
                                 long long O, long long rows, long long J)
{
    long long T = C * KH * KW + 1;
    FOR_EACH_REDUCTION(i, N * J * O * T, rows * WO) {
        long long t = i % T;
        long long o = i / T % O;
        long long j = i / (T * O) % J;
        long long n = i / (T * O * J);
        long long first_row = j * rows, end_row = gc_minll(HO, first_row + rows);
        const real* g = dy + (n * O + o) * HO * WO;
        real sum = 0;
        if (t == T - 1) {
            for (long long oh = first_row; oh < end_row; ++oh) {
                const real* grow = g + oh * WO;
                SUM_LOOP(sum) for (long long ow = 0; ow < WO; ++ow) sum += grow[ow];
            }
        } else {
            long long c = t / (KH * KW), ki = t / KW % KH, kj = t % KW;
            long long first = SW == 1 ? gc_maxll(PW - kj, 0) : 0, end = SW == 1 ? gc_minll(W + PW - kj, WO) : WO;
            for (long long oh = first_row; oh < end_row; ++oh) {
                long long h = oh * SH - PH + ki;
                if (h < 0 || h >= H) continue;
                const real* grow = g + oh * WO;
                const real* row = x + ((n * C + c) * H + h) * W;
                if (SW == 1) {
                    const real* shifted = row + kj - PW;
                    SUM_LOOP(sum) for (long long ow = first; ow < end; ++ow) sum += grow[ow] * shifted[ow];
                } else {
                    for (long long ow = 0; ow < WO; ++ow) {
                        long long w = ow * SW - PW + kj;
                        if (w >= 0 && w < W) sum += grow[ow] * row[w];
                    }
                }
            }
        }
        partial[i] = sum;
    }
}

KERNEL(conv_direct_grad_reduce)(const real* partial, real* dweight, real* dbias,
                                long long O, long long T, long long K)
{
    FOR_EACH_REDUCTION(r, O * T, K) {
        real sum = 0;
        for (long long k = 0; k < K; ++k) sum += partial[k * O * T + r];
        long long o = r / T, t = r % T;
        if (t == T - 1) dbias[o] = sum;
        else dweight[o * (T - 1) + t] = sum;
    }
}
