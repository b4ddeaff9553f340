/*
 * adam.cu — one fused Adam / AdamW step over a parameter tensor, in place.
 *
 * For every element (PyTorch's formulation, so the two agree step for step):
 *     g  = grad + weight_decay * param          (Adam's L2 penalty; not for AdamW)
 *     m  = beta1 * m + (1 - beta1) * g
 *     v  = beta2 * v + (1 - beta2) * g^2
 *     param *= 1 - lr * weight_decay            (AdamW's decoupled decay; not for Adam)
 *     param -= (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps)
 * with the bias corrections bc1 = 1 - beta1^t and bc2 = 1 - beta2^t computed by
 * the caller for step t. `decoupled` = 0 selects Adam, 1 selects AdamW.
 *   param, grad, m, v: [n]
 */
#include "portable.cuh"

KERNEL(adam_update)(real* param, const real* grad, real* m, real* v, long long n,
                    long long decoupled, real lr, real beta1, real beta2, real eps,
                    real weight_decay, real bc1, real bc2)
{
    real step_size = lr / bc1;
    real sqrt_bc2 = gc_sqrt(bc2);
    FOR_EACH(i, n) {
        real p = param[i];
        real g = decoupled ? grad[i] : grad[i] + weight_decay * p;
        real m_i = beta1 * m[i] + (1 - beta1) * g;
        real v_i = beta2 * v[i] + (1 - beta2) * g * g;
        if (decoupled) p *= 1 - lr * weight_decay;
        param[i] = p - step_size * m_i / (gc_sqrt(v_i) / sqrt_bc2 + eps);
        m[i] = m_i;
        v[i] = v_i;
    }
}
