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
 *   bias_grad:      db[c]      = sum over n, s of dy[n, c, s]
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

KERNEL(bias_grad)(const real* dy, real* db, long long N, long long C, long long S)
{
    FOR_EACH_REDUCTION(c, C, N * S) {
        real sum = 0;
        for (long long n = 0; n < N; ++n) {
            const real* run = dy + (n * C + c) * S;
            SUM_LOOP(sum) for (long long s = 0; s < S; ++s) sum += run[s];
        }
        db[c] = sum;
    }
}
