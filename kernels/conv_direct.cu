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
 *       one logical thread per row of KW taps (and one for the bias): each dy element it loads serves
 *       all KW; consecutive threads share the chunk's dy and x rows, which stay in cache
 *   conv_direct_grad_reduce:  sum over k of partial[k, o, t], into dweight and dbias
 */
#include "portable.cuh"

/* sum + the taps of kernel rows first <= ki < last of one input channel, in (ki, kj) order:
   taps[ki*K + kj] * rows[ki][kj], the rows of the image a stride `row_step` apart. Called with K, first = 0
   and last = K constants, the host unrolls all K*K taps. */
DEVICE real conv_window_taps(real sum, const real* rows, long long row_step, const real* taps, long long K,
                             long long first, long long last)
{
    for (long long ki = first; ki < last; ++ki)
        for (long long kj = 0; kj < K; ++kj) sum += taps[ki * K + kj] * rows[ki * row_step + kj];
    return sum;
}

/* The interior pass of the forward for a K x K kernel (K a constant): outputs inner <= ow < outer, whose
   windows lie inside the image across, each summed in a register over one channel's taps at a time, kernel
   rows FIRST <= ki < LAST (those inside the image; rows in the padding add nothing). The taps are copied to
   a local array first, which the host keeps in registers (read through `weight` they could alias `y`, and
   would be loaded again for every vector). */
#define CONV_INTERIOR_PASS(K, FIRST, LAST)                                                             \
    {                                                                                                  \
        FOR_EACH_IN_RANGE(ow, inner, outer) out[ow] = bias[o];                                         \
        for (long long c = 0; c < C; ++c) {                                                            \
            real tap[K * K];                                                                           \
            for (long long t = 0; t < K * K; ++t) tap[t] = weight[(o * C + c) * K * K + t];            \
            const real* rows = x + ((n * C + c) * H + top) * W - PW;   /* window of ow: rows + ow */   \
            if (relu && c == C - 1)                                                                    \
                FOR_EACH_IN_RANGE(ow, inner, outer) {                                                  \
                    real sum = conv_window_taps(out[ow], rows + ow, W, tap, K, FIRST, LAST);           \
                    out[ow] = sum > 0 ? sum : (real)0;                                                 \
                }                                                                                      \
            else                                                                                       \
                FOR_EACH_IN_RANGE(ow, inner, outer)                                                    \
                    out[ow] = conv_window_taps(out[ow], rows + ow, W, tap, K, FIRST, LAST);             \
        }                                                                                              \
    }

/* The outputs on either side of the interior (ow < inner, outer <= ow), for the same kernels: each window
   is read into a local K x K array, 0 in the columns in the padding, and summed as the interior's; the taps
   add up in the generic path's order (bias, then (c, ki, kj), columns in the padding adding tap * 0), but
   without a branch per tap. */
#define CONV_EDGE_PASS(K, FIRST, LAST)                                                                 \
    for (long long part = 0; part < 2; ++part) {                                                       \
        FOR_EACH_IN_RANGE(ow, part ? outer : 0, part ? WO : inner) {                                   \
            real sum = bias[o];                                                                        \
            for (long long c = 0; c < C; ++c) {                                                        \
                real window[K * K];                                                                    \
                const real* rows = x + ((n * C + c) * H + top) * W;                                    \
                for (long long ki = FIRST; ki < LAST; ++ki)                                            \
                    for (long long kj = 0; kj < K; ++kj) {                                             \
                        long long w = ow - PW + kj;                                                    \
                        real v = rows[ki * W + gc_minll(gc_maxll(w, 0), W - 1)];                      \
                        window[ki * K + kj] = w >= 0 && w < W ? v : (real)0;                           \
                    }                                                                                  \
                sum = conv_window_taps(sum, window, K, weight + (o * C + c) * K * K, K, FIRST, LAST);  \
            }                                                                                          \
            out[ow] = relu ? (sum > 0 ? sum : (real)0) : sum;                                          \
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
        /* [inner, outer): the outputs whose window is inside the image across, for a square 3x3 or 5x5
           kernel at column stride 1: contiguous unmasked reads there, which the host vectorises; kernel
           rows [first, last) are inside the image, all of them but in the first and last few output rows. */
        if (SW == 1 && KH == KW && (KW == 3 || KW == 5)) {
            long long inner = gc_minll(PW, WO);
            long long outer = gc_maxll(gc_minll(W + PW - KW + 1, WO), inner);
            long long first = gc_maxll(-top, 0), last = gc_minll(H - top, KH);
            bool every_row = first == 0 && last == KH;
            if (KW == 3) {
                if (every_row) { CONV_INTERIOR_PASS(3, 0, 3) CONV_EDGE_PASS(3, 0, 3) }
                else { CONV_INTERIOR_PASS(3, first, last) CONV_EDGE_PASS(3, first, last) }
            } else {
                if (every_row) { CONV_INTERIOR_PASS(5, 0, 5) CONV_EDGE_PASS(5, 0, 5) }
                else { CONV_INTERIOR_PASS(5, first, last) CONV_EDGE_PASS(5, first, last) }
            }
            continue;
        }
        /* Any other kernel: every output, each tap masked by the padding: the same sum, in the same order
           (bias, then (c, ki, kj); rows in the padding add nothing, columns in it add tap * 0). */
        FOR_EACH_IN_RUN(ow, WO) {
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

/* The KW sums of one kernel row at column stride 1 (KW = K, a constant), side by side: each dy element is
   loaded once for all K taps, and the K running sums are independent chains. `shifted[ow + kj]` is the input
   under output ow for tap kj, inside the image for PW - kj <= ow < W + PW - kj; [inner, outer) are the
   outputs where every tap of the row is inside it, the outputs on either side take the taps that are. */
#define TAP_SUM_DECLARE(k) real sum##k = 0;
#define TAP_SUM_ADD(k) sum##k += v * shifted[ow + k];
#define TAP_SUM_EDGES(k)                                                                                \
    for (long long ow = gc_maxll(PW - k, 0); ow < gc_minll(inner, W + PW - k); ++ow)                    \
        sum##k += grow[ow] * shifted[ow + k];                                                           \
    for (long long ow = gc_maxll(outer, PW - k); ow < gc_minll(W + PW - k, WO); ++ow)                   \
        sum##k += grow[ow] * shifted[ow + k];
#define TAP_SUM_STORE(k) out[ki * KW + k] = sum##k;
#define TAPS_3(X) X(0) X(1) X(2)
#define TAPS_5(X) X(0) X(1) X(2) X(3) X(4)
#define TAP_ROW_SUMS(TAPS, K, ...)                                                                      \
    {                                                                                                   \
        TAPS(TAP_SUM_DECLARE)                                                                           \
        long long inner = gc_minll(PW, WO), outer = gc_maxll(gc_minll(W + PW - K + 1, WO), inner);     \
        for (long long oh = first_row; oh < end_row; ++oh) {                                            \
            long long h = oh * SH - PH + ki;                                                            \
            if (h < 0 || h >= H) continue;                                                              \
            const real* grow = g + oh * WO;                                                             \
            const real* shifted = x + ((n * C + c) * H + h) * W - PW;                                   \
            SUM_LOOP(__VA_ARGS__) for (long long ow = inner; ow < outer; ++ow) {                        \
                real v = grow[ow];                                                                      \
                TAPS(TAP_SUM_ADD)                                                                       \
            }                                                                                           \
            TAPS(TAP_SUM_EDGES)                                                                         \
        }                                                                                               \
        TAPS(TAP_SUM_STORE)                                                                             \
    }

KERNEL(conv_direct_grad_partial)(const real* dy, const real* x, real* partial,
                                 long long N, long long C, long long H, long long W,
                                 long long KH, long long KW, long long SH, long long SW,
                                 long long PH, long long PW, long long HO, long long WO,
                                 long long O, long long rows, long long J)
{
    /* One logical thread per (n, j, o, row of taps): r = c * KH + ki takes the KW taps (c, ki, 0..KW-1);
       r = C * KH, the last, takes the bias. */
    long long T = C * KH * KW + 1, R = C * KH + 1;
    FOR_EACH_REDUCTION(i, N * J * O * R, rows * WO * KW) {
        long long r = i % R;
        long long o = i / R % O;
        long long j = i / (R * O) % J;
        long long n = i / (R * O * J);
        long long first_row = j * rows, end_row = gc_minll(HO, first_row + rows);
        const real* g = dy + (n * O + o) * HO * WO;
        real* out = partial + ((n * J + j) * O + o) * T;
        if (r == R - 1) {
            real sum = 0;
            for (long long oh = first_row; oh < end_row; ++oh) {
                const real* grow = g + oh * WO;
                SUM_LOOP(sum) for (long long ow = 0; ow < WO; ++ow) sum += grow[ow];
            }
            out[T - 1] = sum;
            continue;
        }
        long long c = r / KH, ki = r % KH;
        out += c * KH * KW;
        if (SW == 1 && KW == 5) TAP_ROW_SUMS(TAPS_5, 5, sum0, sum1, sum2, sum3, sum4)
        else if (SW == 1 && KW == 3) TAP_ROW_SUMS(TAPS_3, 3, sum0, sum1, sum2)
        else {
            for (long long kj = 0; kj < KW; ++kj) {
                real sum = 0;
                for (long long oh = first_row; oh < end_row; ++oh) {
                    long long h = oh * SH - PH + ki;
                    if (h < 0 || h >= H) continue;
                    const real* grow = g + oh * WO;
                    const real* row = x + ((n * C + c) * H + h) * W;
                    for (long long ow = 0; ow < WO; ++ow) {
                        long long w = ow * SW - PW + kj;
                        if (w >= 0 && w < W) sum += grow[ow] * row[w];
                    }
                }
                out[ki * KW + kj] = sum;
            }
        }
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
