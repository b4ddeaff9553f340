/*
 * loss.cu — losses on logits, each writing the per-element loss and the
 * gradient of `scale * sum(loss)` with respect to the logits in one pass
 * (scale = 1/N gives the gradient of the mean).
 *
 * Logs of sigmoids are taken in the stable form
 *     log p = -softplus(-z),  log(1 - p) = -softplus(z),  softplus(t) = max(t, 0) + log1p(exp(-|t|)),
 * so no probability is rounded to 0 or 1 before its log is taken.
 *
 * bce_with_logits — binary cross-entropy of p = sigmoid(z), the probability
 * clamped to [eps, 1 - eps]:
 *     loss[i] = -(y log pc + (1 - y) log(1 - pc)),    pc = clamp(p, eps, 1 - eps)
 *     grad[i] = scale * ((1 - y) p - y (1 - p)) inside the clamp, 0 where the clamp holds
 *   (p - y written so that nothing cancels when p is near y)
 *   (the exact derivative of the clamped loss; the clamp bites only at |z| > ~16).
 *   z, y, loss, grad: [n]
 *
 * focal_with_logits — weighted multi-label focal loss (Lin et al. 2017), per
 * element of z [N, K] with targets y [N, K] in {0, 1}, per-class positive
 * weights w [K] and focusing parameter gamma:
 *     loss = -( w_k y (1 - p)^gamma log p  +  (1 - y) p^gamma log(1 - p) )
 *     dloss/dz = -( w_k y (1 - p)^gamma ((1 - p) - gamma p log p)
 *                 + (1 - y) p^gamma (gamma (1 - p) log(1 - p) - p) )
 *   With gamma = 0 this is binary cross-entropy with positive weights w.
 *
 * softmax_cross_entropy — z [N, K], integer labels [N] in [0, K):
 *     loss[n]    = logsumexp(z[n, :]) - z[n, label[n]]
 *     grad[n, k] = scale * (softmax(z[n, :])_k - [k == label[n]])
 */
#include "portable.cuh"

DEVICE real softplus(real t)
{
    return gc_max(t, (real)0) + gc_log1p(gc_exp(-(t < 0 ? -t : t)));
}

DEVICE real sigmoid(real z)
{
    return z >= 0 ? 1 / (1 + gc_exp(-z)) : gc_exp(z) / (1 + gc_exp(z));
}

KERNEL(bce_with_logits)(const real* z, const real* y, real* loss, real* grad,
                        long long n, real eps, real scale)
{
    FOR_EACH(i, n) {
        real log_p = -softplus(-z[i]);
        real log_q = -softplus(z[i]);  /* log(1 - p) */
        real log_eps = gc_log(eps);
        bool clamped = false;
        if (log_p < log_eps) { log_p = log_eps; log_q = gc_log1p(-eps); clamped = true; }
        else if (log_q < log_eps) { log_q = log_eps; log_p = gc_log1p(-eps); clamped = true; }
        loss[i] = -(y[i] * log_p + (1 - y[i]) * log_q);
        grad[i] = clamped ? (real)0 : scale * ((1 - y[i]) * sigmoid(z[i]) - y[i] * sigmoid(-z[i]));
    }
}

KERNEL(focal_with_logits)(const real* z, const real* y, const real* weight,
                          real* loss, real* grad,
                          long long N, long long K, real gamma, real scale)
{
    FOR_EACH_LINE(n, N, K) {
        FOR_EACH_IN_RUN(k, K) {
            long long i = n * K + k;
            real p = sigmoid(z[i]), q = sigmoid(-z[i]);
            real log_p = -softplus(-z[i]), log_q = -softplus(z[i]);
            real pos = weight[k] * y[i], neg = 1 - y[i];
            real q_g = gc_pow(q, gamma), p_g = gc_pow(p, gamma);
            loss[i] = -(pos * q_g * log_p + neg * p_g * log_q);
            grad[i] = -scale * (pos * q_g * (q - gamma * p * log_p)
                                + neg * p_g * (gamma * q * log_q - p));
        }
    }
}

KERNEL(softmax_cross_entropy)(const real* z, const long long* label, real* loss, real* grad,
                              long long N, long long K, real scale)
{
    FOR_EACH_LINE(n, N, K) {
        const real* row = z + n * K;
        long long top_k = 0;
        for (long long k = 1; k < K; ++k) if (row[k] > row[top_k]) top_k = k;
        real top = row[top_k];
        /* log of sum exp(z - top) = log1p(the terms other than the top's 1): exact when they are tiny */
        real rest = 0;
        for (long long k = 0; k < K; ++k) if (k != top_k) rest += gc_exp(row[k] - top);
        real log_total = gc_log1p(rest);
        FOR_EACH_IN_RUN(k, K) {
            real log_softmax = row[k] - top - log_total;
            /* softmax - 1 at the label is expm1: no cancellation when it is near 1 */
            grad[n * K + k] = scale * (k == label[n] ? gc_expm1(log_softmax) : gc_exp(log_softmax));
            if (k == 0)  /* a label outside [0, K) gives NaN, never a read outside the row */
                loss[n] = (label[n] >= 0 && label[n] < K) ? log_total - (row[label[n]] - top)
                                                          : (real)nan("");
        }
    }
}
