/*
 * activation.cu — ReLU and bias, forward and backward.
 *
 *   relu_forward:   y[i]  = max(x[i], 0)                         x, y  [n]
 *                   NaN stays NaN (as in PyTorch), so a diverging run is seen, not hidden as 0
 *   relu_backward:  dx[i] = x[i] > 0 ? dy[i] : 0                 (the subgradient 0 at x = 0)
 *
 * Bias over channel c of a tensor viewed as [N, C, S] (S = H*W for a
 * convolution's output, S = 1 for a linear layer's [N, C]):
 *   bias_add:       y[n, c, s] = x[n, c, s] + b[c]               y may be x (in place)
 *   bias_grad = sum over n, s of dy[n, c, s], in two passes, so that every
 *   channel's sum runs on many threads and still adds up in a fixed order:
 *     bias_grad_partial: partial[c, n * J + j] = sum of dy[n, c, s] over the j-th
 *                        chunk of s, s in [j * chunk, min(S, (j + 1) * chunk)),
 *                        J = ceil(S / chunk)                       partial [C, N * J]
 *     bias_grad_reduce:  db[c] = sum over k of partial[c, k], k = 0, 1, ...   db [C]
 */
#include "portable.cuh"

KERNEL(relu_forward)(const real* x, real* y, long long n)
{
    FOR_EACH(i, n) y[i] = (x[i] > 0 || x[i] != x[i]) ? x[i] : (real)0;
}

KERNEL(relu_backward)(const real* x, const real* dy, real* dx, long long n)
{
    FOR_EACH(i, n) dx[i] = x[i] > 0 ? dy[i] : (real)0;
}

KERNEL(bias_add)(const real* x, const real* b, real* y, long long N, long long C, long long S)
{
    FOR_EACH_LINE(line, N * C, S) {
        real bias = b[line % C];
        FOR_EACH_IN_RUN(s, S) y[line * S + s] = x[line * S + s] + bias;
    }
}

KERNEL(bias_grad_partial)(const real* dy, real* partial, long long N, long long C, long long S,
                          long long chunk, long long J)
{
    FOR_EACH_REDUCTION(i, C * N * J, chunk) {
        long long j = i % J, n = i / J % N, c = i / (J * N);
        const real* run = dy + (n * C + c) * S + j * chunk;
        long long length = gc_minll(chunk, S - j * chunk);
        real sum = 0;
        SUM_LOOP(sum) for (long long s = 0; s < length; ++s) sum += run[s];
        partial[i] = sum;
    }
}

KERNEL(bias_grad_reduce)(const real* partial, real* db, long long C, long long K)
{
    FOR_EACH_REDUCTION(c, C, K) {
        real sum = 0;
        for (long long k = 0; k < K; ++k) sum += partial[c * K + k];
        db[c] = sum;
    }
}
