/*
 * batchnorm.cu — batch normalisation over the channels of x [N, C, S] (S = H*W of an
 * NCHW tensor), training and inference, forward and backward, and the inference form
 * folded into the preceding convolution. PyTorch's BatchNorm2d semantics.
 *
 * Each channel c has M = N*S values x[n, c, s]; weight (gamma) and bias (beta) are [C].
 *   mean[c] = (1/M) sum_{n,s} x[n,c,s]
 *   var[c]  = (1/M) sum_{n,s} (x[n,c,s] - mean[c])^2          (biased: what normalises)
 *
 * The statistics take two passes, so that every channel's sum runs on many threads
 * and still adds up in a fixed order (no atomics), as bias_grad does. The j-th chunk
 * of s is [j*chunk, min(S, (j+1)*chunk)), of length L_j; J = ceil(S / chunk);
 * k = n*J + j indexes the N*J chunks of a channel:
 *   batchnorm_stats_partial:  pmean[c, k] = the chunk's mean, pm2[c, k] = the chunk's sum of
 *                             (x - pmean[c, k])^2                  pmean, pm2  [C, N*J]
 *       One thread reads its chunk three times (it is in cache): its plain mean, that mean
 *       corrected by the mean of the deviations from it, then the squares centred on the
 *       corrected mean. Centred sums, never E[x^2] - E[x]^2, which cancels catastrophically
 *       in float when |mean| >> std.
 *   batchnorm_stats_reduce:   mean[c] = p + (1/M) sum_k L_k (pmean[c,k] - p),  p = pmean[c, 0]
 *                             var[c]  = (1/M) sum_k (pm2[c,k] + L_k (pmean[c,k] - mean[c])^2)
 *       (the exact combination of centred partial sums; Chan, Golub & LeVeque)
 *   batchnorm_running_update: running_mean[c] = (1 - momentum) running_mean[c] + momentum mean[c]
 *                             running_var[c]  = (1 - momentum) running_var[c]
 *                                               + momentum var[c] M / (M - 1)
 *       the unbiased variance in the running average, as PyTorch keeps it; M >= 2
 *
 * Forward, with (mean, var) the batch's in training and the running ones in eval:
 *   batchnorm_forward:  y[n,c,s] = (x[n,c,s] - mean[c]) * weight[c] / sqrt(var[c] + eps) + bias[c]
 *
 * Backward of training mode, invstd = 1 / sqrt(var + eps), xhat = (x - mean) * invstd:
 *   dbias[c]   = sum_{n,s} dy[n,c,s]
 *   dweight[c] = sum_{n,s} dy[n,c,s] * xhat[n,c,s]
 *   dx[n,c,s]  = weight[c] * invstd[c] * (dy - dbias[c] / M - xhat * dweight[c] / M)
 * the two sums in the same two passes as the statistics:
 *   batchnorm_backward_partial: pdy[c, k] = the chunk's sum of dy,
 *                               pdyx[c, k] = the chunk's sum of dy * (x - mean[c])   [C, N*J]
 *   batchnorm_backward_reduce:  dbias[c] = sum_k pdy[c, k], dweight[c] = invstd[c] sum_k pdyx[c, k]
 *   batchnorm_backward_dx:      dx as above                                 dy, x, dx [N, C, S]
 *
 * Inference folded into the convolution before it: conv weight [O, K] (K = C_in*KH*KW),
 * conv bias [O], then batch norm of O channels with running (mean, var), gamma, beta:
 *   batchnorm_fold_conv: scale[o] = gamma[o] / sqrt(var[o] + eps)
 *                        weight_out[o, k] = weight[o, k] * scale[o]
 *                        bias_out[o]      = (bias[o] - mean[o]) * scale[o] + beta[o]
 */
#include "portable.cuh"

KERNEL(batchnorm_stats_partial)(const real* x, real* pmean, real* pm2, long long N, long long C,
                                long long S, long long chunk, long long J)
{
    FOR_EACH_REDUCTION(i, C * N * J, 3 * chunk) {
        long long j = i % J, n = i / J % N, c = i / (J * N);
        const real* run = x + (n * C + c) * S + j * chunk;
        long long length = gc_minll(chunk, S - j * chunk);
        real sum = 0;
        SUM_LOOP(sum) for (long long s = 0; s < length; ++s) sum += run[s];
        real centre = sum / (real)length;
        real deviation = 0;
        SUM_LOOP(deviation) for (long long s = 0; s < length; ++s) deviation += run[s] - centre;
        real mean = centre + deviation / (real)length;
        real m2 = 0;
        SUM_LOOP(m2) for (long long s = 0; s < length; ++s) m2 += (run[s] - mean) * (run[s] - mean);
        pmean[i] = mean;
        pm2[i] = m2;
    }
}

KERNEL(batchnorm_stats_reduce)(const real* pmean, const real* pm2, real* mean, real* var,
                               long long N, long long C, long long S, long long chunk, long long J)
{
    FOR_EACH_REDUCTION(c, C, 2 * N * J) {
        const real* means = pmean + c * N * J;
        const real* m2s = pm2 + c * N * J;
        real count = (real)(N * S), pivot = means[0], shift = 0;
        for (long long n = 0; n < N; ++n)
            for (long long j = 0; j < J; ++j)
                shift += (real)gc_minll(chunk, S - j * chunk) * (means[n * J + j] - pivot);
        real m = pivot + shift / count, m2 = 0;
        for (long long n = 0; n < N; ++n)
            for (long long j = 0; j < J; ++j) {
                real d = means[n * J + j] - m;
                m2 += m2s[n * J + j] + (real)gc_minll(chunk, S - j * chunk) * d * d;
            }
        mean[c] = m;
        var[c] = m2 / count;
    }
}

KERNEL(batchnorm_running_update)(const real* mean, const real* var, real* running_mean, real* running_var,
                                 long long C, long long M, real momentum)
{
    FOR_EACH(c, C) {
        real unbiased = var[c] * ((real)M / (real)(M - 1));
        running_mean[c] = (1 - momentum) * running_mean[c] + momentum * mean[c];
        running_var[c] = (1 - momentum) * running_var[c] + momentum * unbiased;
    }
}

KERNEL(batchnorm_forward)(const real* x, const real* mean, const real* var, const real* weight,
                          const real* bias, real* y, long long N, long long C, long long S, real eps)
{
    FOR_EACH_LINE(line, N * C, S) {
        long long c = line % C;
        real centre = mean[c], scale = weight[c] / gc_sqrt(var[c] + eps), shift = bias[c];
        FOR_EACH_IN_RUN(s, S) y[line * S + s] = (x[line * S + s] - centre) * scale + shift;
    }
}

KERNEL(batchnorm_backward_partial)(const real* dy, const real* x, const real* mean, real* pdy, real* pdyx,
                                   long long N, long long C, long long S, long long chunk, long long J)
{
    FOR_EACH_REDUCTION(i, C * N * J, 2 * chunk) {
        long long j = i % J, n = i / J % N, c = i / (J * N);
        long long start = (n * C + c) * S + j * chunk, length = gc_minll(chunk, S - j * chunk);
        const real* g = dy + start;
        const real* v = x + start;
        real centre = mean[c], sum = 0, sum_x = 0;
        SUM_LOOP(sum) for (long long s = 0; s < length; ++s) sum += g[s];
        SUM_LOOP(sum_x) for (long long s = 0; s < length; ++s) sum_x += g[s] * (v[s] - centre);
        pdy[i] = sum;
        pdyx[i] = sum_x;
    }
}

KERNEL(batchnorm_backward_reduce)(const real* pdy, const real* pdyx, const real* var, real* dweight,
                                  real* dbias, long long C, long long K, real eps)
{
    FOR_EACH_REDUCTION(c, C, 2 * K) {
        real sum = 0, sum_x = 0;
        for (long long k = 0; k < K; ++k) sum += pdy[c * K + k];
        for (long long k = 0; k < K; ++k) sum_x += pdyx[c * K + k];
        dbias[c] = sum;
        dweight[c] = sum_x / gc_sqrt(var[c] + eps);
    }
}

KERNEL(batchnorm_backward_dx)(const real* dy, const real* x, const real* mean, const real* var,
                              const real* weight, const real* dweight, const real* dbias, real* dx,
                              long long N, long long C, long long S, real eps)
{
    FOR_EACH_LINE(line, N * C, S) {
        long long c = line % C;
        real count = (real)(N * S), invstd = 1 / gc_sqrt(var[c] + eps);
        real centre = mean[c], scale = weight[c] * invstd, mean_dy = dbias[c] / count;
        real slope = dweight[c] * invstd / count;   /* xhat * dweight / M = (x - mean) * slope */
        FOR_EACH_IN_RUN(s, S)
            dx[line * S + s] = scale * (dy[line * S + s] - mean_dy - (x[line * S + s] - centre) * slope);
    }
}

KERNEL(batchnorm_fold_conv)(const real* weight, const real* bias, const real* mean, const real* var,
                            const real* gamma, const real* beta, real* weight_out, real* bias_out,
                            long long O, long long K, real eps)
{
    /* One logical thread per element of weight_out and bias_out: K + 1 of them per channel. */
    FOR_EACH(i, O * (K + 1)) {
        long long o = i / (K + 1), k = i % (K + 1);
        real scale = gamma[o] / gc_sqrt(var[o] + eps);
        if (k < K)
            weight_out[o * K + k] = weight[o * K + k] * scale;
        else
            bias_out[o] = (bias[o] - mean[o]) * scale + beta[o];
    }
}
