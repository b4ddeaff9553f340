/*
 * augment.cu — geometric augmentation of a batch where it lives, one
 * transform per image.
 *
 * flip_rotate90 — x, y [N, C, S, S] (square images), op [N] int64 with
 *   bit 0: flip left-right, bit 1: flip up-down, bits 2-3: k, rotate by k * 90°
 *   counter-clockwise (NumPy's rot90 on the last two axes), applied in that
 *   order: y[n] = rot90(flipud?(fliplr?(x[n])), k).
 *   Each output pixel reads the one input pixel it comes from.
 *
 * rotate_bilinear — x, y [N, C, H, W], cos_t, sin_t [N]: y[n] is x[n] rotated
 *   by angle t_n counter-clockwise about the image centre, sampled bilinearly;
 *   pixels whose source falls outside the image take the nearest edge pixel.
 *   For output (i, j), with centre (ci, cj) = ((H - 1) / 2, (W - 1) / 2):
 *     source row = ci + cos_t (i - ci) + sin_t (j - cj)
 *     source col = cj - sin_t (i - ci) + cos_t (j - cj)
 *   (so t = pi/2 gives NumPy's rot90). Coordinates are computed in double so
 *   that float32 images of any size sample the same points as float64 ones.
 */
#include "portable.cuh"

KERNEL(flip_rotate90)(const real* x, const long long* op, real* y,
                      long long N, long long C, long long S)
{
    /* One line per (n, c, i): a row of S output pixels. */
    FOR_EACH_LINE(line, N * C * S, S) {
        long long i = line % S;
        long long nc = line / S;
        long long code = op[nc / C];
        long long k = (code >> 2) & 3;
        bool flip_lr = code & 1, flip_ud = (code >> 1) & 1;
        const real* plane = x + nc * S * S;
        FOR_EACH_IN_RUN(j, S) {
            /* (r, c): where (i, j) comes from in the flipped image. */
            long long r = i, c = j;
            if (k == 1)      { r = j;         c = S - 1 - i; }
            else if (k == 2) { r = S - 1 - i; c = S - 1 - j; }
            else if (k == 3) { r = S - 1 - j; c = i; }
            if (flip_ud) r = S - 1 - r;
            if (flip_lr) c = S - 1 - c;
            y[line * S + j] = plane[r * S + c];
        }
    }
}

KERNEL(rotate_bilinear)(const real* x, const real* cos_t, const real* sin_t, real* y,
                        long long N, long long C, long long H, long long W)
{
    FOR_EACH_LINE(line, N * C * H, W) {
        long long i = line % H;
        long long nc = line / H;
        long long n = nc / C;
        double ci = (double)(H - 1) / 2, cj = (double)(W - 1) / 2;
        double c = cos_t[n], s = sin_t[n];
        const real* plane = x + nc * H * W;
        FOR_EACH_IN_RUN(j, W) {
            double di = (double)i - ci, dj = (double)j - cj;
            double src_r = fmin(fmax(ci + c * di + s * dj, 0.0), (double)(H - 1));
            double src_c = fmin(fmax(cj - s * di + c * dj, 0.0), (double)(W - 1));
            long long r0 = (long long)src_r, c0 = (long long)src_c;
            long long r1 = gc_minll(r0 + 1, H - 1), c1 = gc_minll(c0 + 1, W - 1);
            real fr = (real)(src_r - (double)r0), fc = (real)(src_c - (double)c0);
            real top = plane[r0 * W + c0] * (1 - fc) + plane[r0 * W + c1] * fc;
            real bottom = plane[r1 * W + c0] * (1 - fc) + plane[r1 * W + c1] * fc;
            y[line * W + j] = top * (1 - fr) + bottom * fr;
        }
    }
}
