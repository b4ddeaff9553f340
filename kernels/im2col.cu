/*
 * im2col.cu — unfold images into columns for convolution as a GEMM, and fold
 * column gradients back.
 *
 *   x    [N, C, H, W]                      input images, NCHW, contiguous
 *   col  [C*KH*KW, N*HO*WO]                one column per output pixel of the batch
 *
 *   col[(c*KH + ki)*KW + kj, (n*HO + oh)*WO + ow] = x[n, c, oh*SH - PH + ki, ow*SW - PW + kj]
 *                                                   (0 where that falls in the padding)
 *
 * with HO = (H + 2*PH - KH) / SH + 1 and WO = (W + 2*PW - KW) / SW + 1.
 * The images sit side by side so that the whole batch's convolution is one
 * GEMM, y[O, N*HO*WO] = Wt[O, C*KH*KW] @ col (the BLAS's), and its gradients
 * two more: dWt = dy @ col^T and dcol = Wt^T @ dy.
 *
 * col2im is the adjoint of im2col: each input pixel sums the column entries
 * that were copied from it,
 *
 *   dx[n, c, h, w] = sum over (ki, kj, oh, ow) with oh*SH - PH + ki = h
 *                    and ow*SW - PW + kj = w of dcol[(c*KH + ki)*KW + kj, (n*HO + oh)*WO + ow].
 *
 * It is written as a gather (one thread per input pixel), never a scatter with
 * atomics, so the sum is in a fixed order and the result is deterministic.
 */
#include "portable.cuh"

KERNEL(im2col)(const real* x, real* col,
               long long N, long long C, long long H, long long W,
               long long KH, long long KW, long long SH, long long SW,
               long long PH, long long PW, long long HO, long long WO)
{
    /* One line per (c, ki, kj, n): the HO rows of WO output pixels of one image, contiguous in col, so
       that the index arithmetic is per image and not per row (rows of 16 or 32 pixels are short). */
    FOR_EACH_LINE(line, C * KH * KW * N, WO) {
        long long n = line % N;
        long long kj = line / N % KW;
        long long ki = line / (N * KW) % KH;
        long long c = line / (N * KW * KH);
        const real* image = x + (n * C + c) * H * W;
        /* SW == 1: contiguous reads, which the host vectorises, valid for first <= ow < end */
        long long first = gc_maxll(PW - kj, 0), end = gc_minll(W + PW - kj, WO);
        for (long long oh = 0; oh < HO; ++oh) {
            long long h = oh * SH - PH + ki;
            real* out = col + (line * HO + oh) * WO;
            if (h < 0 || h >= H) {
                FOR_EACH_IN_RUN(ow, WO) out[ow] = 0;
                continue;
            }
            const real* row = image + h * W;
            if (SW == 1) {
                const real* shifted = row + kj - PW;
                FOR_EACH_IN_RUN(ow, WO) out[ow] = (ow >= first && ow < end) ? shifted[ow] : (real)0;
            } else {
                FOR_EACH_IN_RUN(ow, WO) {
                    long long w = ow * SW - PW + kj;
                    out[ow] = (w >= 0 && w < W) ? row[w] : (real)0;
                }
            }
        }
    }
}

KERNEL(col2im)(const real* col, real* x,
               long long N, long long C, long long H, long long W,
               long long KH, long long KW, long long SH, long long SW,
               long long PH, long long PW, long long HO, long long WO)
{
    /* One line per (c, n, h): a row of W input pixels. Lines in this order read each of the KH*KW rows of
       col that a channel owns front to back, N*HO*WO floats each, rather than in runs of one image. */
    FOR_EACH_LINE(line, C * N * H, W) {
        long long h = line % H;
        long long n = line / H % N;
        long long c = line / (H * N);
        real* out = x + ((n * C + c) * H + h) * W;
        FOR_EACH_IN_RUN(w, W) out[w] = 0;
        for (long long ki = 0; ki < KH; ++ki) {
            long long th = h + PH - ki;  /* = oh * SH when kernel row ki covers h */
            if (th < 0 || th % SH != 0 || th / SH >= HO) continue;
            long long oh = th / SH;
            for (long long kj = 0; kj < KW; ++kj) {
                const real* src = col + ((((c * KH + ki) * KW + kj) * N + n) * HO + oh) * WO;
                if (SW == 1) {  /* contiguous reads over the covered range, which the host vectorises */
                    const real* shifted = src + PW - kj;
                    long long first = gc_maxll(kj - PW, 0), end = gc_minll(WO + kj - PW, W);
                    FOR_EACH_IN_RUN(w, W) out[w] += (w >= first && w < end) ? shifted[w] : (real)0;
                } else {
                    FOR_EACH_IN_RUN(w, W) {
                        long long tw = w + PW - kj;
                        if (tw >= 0 && tw % SW == 0 && tw / SW < WO) out[w] += src[tw / SW];
                    }
                }
            }
        }
    }
}
