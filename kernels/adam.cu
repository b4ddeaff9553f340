/*
 * adam.cu — one fused Adam / AdamW step over a parameter tensor, in place.
 *
 * For every element (PyTorch's formulation, so the two agree step for step):
 *     g  = grad + weight_decay * param          (Adam's L2 penalty; not for AdamW)
 *     m  = beta1 * m + (1 - beta1) * g   = m + (1 - beta1) (g - m)
 *     v  = beta2 * v + (1 - beta2) * g^2 = v + (1 - beta2) (g^2 - v)
 *     param *= 1 - lr * weight_decay            (AdamW's decoupled decay; not for Adam)
 *     param -= (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps)
 * with the bias corrections bc1 = 1 - beta1^t and bc2 = 1 - beta2^t computed by
 * the caller for step t. `decoupled` = 0 selects Adam, 1 selects AdamW.
 * The caller passes 1 - beta1 and 1 - beta2 formed in double: formed in float
 * from beta2 = 0.999 rounded to float, 1 - beta2 would be off by 1e-5.
 *   param, grad, m, v: [n]
 */
#include "portable.cuh"

KERNEL(adam_update)(real* param, const real* grad, real* m, real* v, long long n,
                    long long decoupled, real lr, real one_minus_beta1, real one_minus_beta2, real eps,
                    real weight_decay, real bc1, real bc2)
{
    real step_size = lr / bc1;
    real sqrt_bc2 = gc_sqrt(bc2);
    FOR_EACH(i, n) {
        real p = param[i];
        real g = decoupled ? grad[i] : grad[i] + weight_decay * p;
        real m_i = m[i] + one_minus_beta1 * (g - m[i]);
        real v_i = v[i] + one_minus_beta2 * (g * g - v[i]);
        if (decoupled) p *= 1 - lr * weight_decay;
        param[i] = p - step_size * m_i / (gc_sqrt(v_i) / sqrt_bc2 + eps);
        m[i] = m_i;
        v[i] = v_i;
    }
}
