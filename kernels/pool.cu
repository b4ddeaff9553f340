/*
 * pool.cu — 2-D max pooling and global average pooling, forward and backward.
 *
 * Max pooling, windows KH x KW at stride SH x SW, no padding:
 *   x       [N, C, H, W]      input
 *   y       [N, C, HO, WO]    y[n,c,oh,ow] = max over ki<KH, kj<KW of x[n, c, oh*SH + ki, ow*SW + kj],
 *                             then ReLU'd when relu = 1
 *   argmax  [N, C, HO, WO]    int64: h*W + w of that maximum within its (n, c) plane;
 *                             the first maximum in row-major window order wins ties;
 *                             a window holding a NaN gives NaN, and argmax is its first
 *                             NaN (PyTorch also yields NaN), so the gradient goes there
 *   HO = (H - KH) / SH + 1,  WO = (W - KW) / SW + 1
 *
 * With relu = 1 the kernels are ReLU followed by max pooling, in one pass:
 * ReLU is monotone, so the max of ReLU'd values is the ReLU of the max, taken
 * once per window rather than once per pixel, and the layer's full-size ReLU
 * output is never written. Where a window's max is <= 0 its argmax may name
 * another pixel than ReLU-then-pool would, but its gradient is 0 either way.
 *
 * Backward routes each output gradient to its argmax (with relu = 1, only
 * where the window's output y is > 0, which is where ReLU passes a gradient):
 *   dx[n,c,h,w] = sum over windows (oh, ow) containing (h, w) with
 *                 argmax[n,c,oh,ow] == h*W + w of dy[n,c,oh,ow]
 * maxpool_backward is a gather over the windows that cover each input pixel,
 * so overlapping windows need no atomics and the sum order is fixed.
 * maxpool_backward_disjoint is for windows that do not overlap (KH <= SH and
 * KW <= SW, the usual 2x2 / stride 2): every input pixel lies in at most one
 * window, (h / SH, w / SW), so it reads one candidate and needs neither the
 * loop over windows nor a zeroed dx.
 *
 * Global average pooling:
 *   y[n, c]        = (1 / HW) * sum_i x[n, c, i]      x [N, C, HW]
 *   dx[n, c, i]    = dy[n, c] / HW
 */
#include "portable.cuh"

KERNEL(maxpool_forward)(const real* x, real* y, long long* argmax,
                        long long N, long long C, long long H, long long W,
                        long long KH, long long KW, long long SH, long long SW,
                        long long HO, long long WO, long long relu)
{
    /* One line per (n, c, oh): a row of WO windows. */
    FOR_EACH_LINE(line, N * C * HO, WO) {
        long long oh = line % HO;
        const real* plane = x + line / HO * H * W;
        if (KH == 2 && KW == 2 && SW == 2) {  /* the usual 2x2 / stride 2: fixed loads the host vectorises */
            long long top = oh * SH * W;
            FOR_EACH_IN_RUN(ow, WO) {
                long long at = top + 2 * ow;
                real best_value = plane[at];
                long long best = at;
                /* !(v <= best) takes a larger v or a NaN v; best == best keeps the first NaN once taken. */
                if (!(plane[at + 1] <= best_value) && best_value == best_value) { best_value = plane[at + 1]; best = at + 1; }
                if (!(plane[at + W] <= best_value) && best_value == best_value) { best_value = plane[at + W]; best = at + W; }
                if (!(plane[at + W + 1] <= best_value) && best_value == best_value) { best_value = plane[at + W + 1]; best = at + W + 1; }
                y[line * WO + ow] = relu && !(best_value > 0) && best_value == best_value ? (real)0 : best_value;
                argmax[line * WO + ow] = best;
            }
            continue;
        }
        FOR_EACH_IN_RUN(ow, WO) {
            long long best = oh * SH * W + ow * SW;
            real best_value = plane[best];
            for (long long ki = 0; ki < KH; ++ki)
                for (long long kj = 0; kj < KW; ++kj) {
                    long long at = (oh * SH + ki) * W + ow * SW + kj;
                    if (!(plane[at] <= best_value) && best_value == best_value) { best_value = plane[at]; best = at; }
                }
            y[line * WO + ow] = relu && !(best_value > 0) && best_value == best_value ? (real)0 : best_value;
            argmax[line * WO + ow] = best;
        }
    }
}

KERNEL(maxpool_backward)(const real* dy, const long long* argmax, const real* y, real* dx,
                         long long N, long long C, long long H, long long W,
                         long long KH, long long KW, long long SH, long long SW,
                         long long HO, long long WO, long long relu)
{
    /* One line per (n, c, h): a row of W input pixels. */
    FOR_EACH_LINE(line, N * C * H, W) {
        long long h = line % H;
        long long nc = line / H;
        /* Window rows covering h: oh*SH <= h < oh*SH + KH. */
        long long oh_first = h < KH ? 0 : (h - KH) / SH + 1;
        long long oh_last = gc_minll(h / SH, HO - 1);
        const real* dy_plane = dy + nc * HO * WO;
        const real* y_plane = y + nc * HO * WO;
        const long long* arg_plane = argmax + nc * HO * WO;
        FOR_EACH_IN_RUN(w, W) {
            long long ow_last = gc_minll(w / SW, WO - 1);
            long long ow_first = w < KW ? 0 : (w - KW) / SW + 1;
            long long here = h * W + w;
            real sum = 0;
            for (long long oh = oh_first; oh <= oh_last; ++oh)
                for (long long ow = ow_first; ow <= ow_last; ++ow)
                    if (arg_plane[oh * WO + ow] == here && (!relu || y_plane[oh * WO + ow] > 0))
                        sum += dy_plane[oh * WO + ow];
            dx[line * W + w] = sum;
        }
    }
}

KERNEL(maxpool_backward_disjoint)(const real* dy, const long long* argmax, const real* y, real* dx,
                                  long long N, long long C, long long H, long long W,
                                  long long SH, long long SW, long long HO, long long WO, long long relu)
{
    /* One line per (n, c, h): a row of W input pixels, in which window ow owns the columns
       [ow * SW, ow * SW + SW), the last window all columns from (WO - 1) * SW on; one logical thread
       per window writes them. The row reads the windows over it (the last window row for a row below
       them all: its argmax never names such a row). */
    FOR_EACH_LINE(line, N * C * H, WO) {
        long long h = line % H;
        long long first = line / H * HO * WO + gc_minll(h / SH, HO - 1) * WO;
        const real* dy_row = dy + first;
        const real* y_row = y + first;
        const long long* arg_row = argmax + first;
        real* dx_row = dx + line * W;
        long long here = h * W;
        if (SW == 2 && 2 * WO == W) {  /* the usual 2x2 / stride 2: two fixed stores the host vectorises */
            FOR_EACH_IN_RUN(ow, WO) {
                long long at = arg_row[ow] - here - 2 * ow;   /* 0 or 1 where the window's max is on this row */
                real g = !relu || y_row[ow] > 0 ? dy_row[ow] : (real)0;
                dx_row[2 * ow] = at == 0 ? g : (real)0;
                dx_row[2 * ow + 1] = at == 1 ? g : (real)0;
            }
        } else {
            FOR_EACH_IN_RUN(ow, WO) {
                long long at = arg_row[ow] - here - SW * ow;
                real g = !relu || y_row[ow] > 0 ? dy_row[ow] : (real)0;
                long long columns = (ow == WO - 1 ? W : SW * ow + SW) - SW * ow;
                for (long long s = 0; s < columns; ++s) dx_row[SW * ow + s] = at == s ? g : (real)0;
            }
        }
    }
}

KERNEL(global_avgpool_forward)(const real* x, real* y, long long NC, long long HW)
{
    FOR_EACH_REDUCTION(i, NC, HW) {
        const real* plane = x + i * HW;
        real sum = 0;
        SUM_LOOP(sum) for (long long j = 0; j < HW; ++j) sum += plane[j];
        y[i] = sum / (real)HW;
    }
}

KERNEL(global_avgpool_backward)(const real* dy, real* dx, long long NC, long long HW)
{
    FOR_EACH_LINE(i, NC, HW) {
        real g = dy[i] / (real)HW;
        FOR_EACH_IN_RUN(j, HW) dx[i * HW + j] = g;
    }
}
