// Per-element formulas and kind enums of the engine, written once for the CPU ops (autograd/op_*.c,
// optim.c) and the CUDA kernels (autograd/cuda/*.cu): plain C here, host and device code under nvcc
// (autograd/hostdev.h). So a kind number means the same on both sides by construction, and the CPU
// tests (tests/test_op_*.c) run the very expressions the kernels run; what only a GPU checks is the
// kernels' indexing and launch glue (tests/test_cuda_ops.c). The expression order is part of the
// contract: the CPU ops' results did not move by a bit when their loops started calling these.
// Each function returns a value (or, where it says so, writes (=) through its pointers); the callers
// decide whether they store (=) or accumulate (+=) it.
#pragma once
#include <math.h>
#include <stdbool.h>
#include <stdint.h>

#include "autograd/hostdev.h"

// ---- activations (op_activation.c, activation.cu; op_group_norm_silu) --------------------------------
// PyTorch's formulas and gradient conventions:
//   silu(x)      = x * sigmoid(x)
//   gelu(x)      = 0.5 x (1 + erf(x / sqrt 2))                       (F.gelu, approximate='none')
//   gelu_tanh(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))    (approximate='tanh')
//   quick_gelu(x) = x * sigmoid(1.702 x)                             (transformers' QuickGELUActivation, CLIP)
//   relu'(0) = 0, leaky_relu'(0) = slope, clamp' = 1 on [lo, hi] inclusive, 0 outside; exp' = exp.
typedef enum { ACT_SILU, ACT_GELU_ERF, ACT_GELU_TANH, ACT_RELU, ACT_LEAKY, ACT_CLAMP, ACT_EXP, ACT_QUICK_GELU } ActKind;

#define ACT_SQRT_2_OVER_PI 0.7978845608028654f
#define ACT_INV_SQRT_2 0.7071067811865476f
#define ACT_INV_SQRT_2PI 0.3989422804014327f
#define ACT_GELU_TANH_C 0.044715f
#define ACT_QUICK_GELU_C 1.702f

DOD_HOSTDEV float act_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }
DOD_HOSTDEV float act_gelu_erf(float x) { return 0.5f * x * (1.0f + erff(x * ACT_INV_SQRT_2)); }
DOD_HOSTDEV float act_gelu_erf_grad(float x) {
    return 0.5f * (1.0f + erff(x * ACT_INV_SQRT_2)) + x * ACT_INV_SQRT_2PI * expf(-0.5f * x * x);
}
DOD_HOSTDEV float act_gelu_tanh(float x) {
    return 0.5f * x * (1.0f + tanhf(ACT_SQRT_2_OVER_PI * (x + ACT_GELU_TANH_C * x * x * x)));
}
DOD_HOSTDEV float act_gelu_tanh_grad(float x) {
    float t = tanhf(ACT_SQRT_2_OVER_PI * (x + ACT_GELU_TANH_C * x * x * x));
    return 0.5f * (1.0f + t) +
           0.5f * x * (1.0f - t * t) * ACT_SQRT_2_OVER_PI * (1.0f + 3.0f * ACT_GELU_TANH_C * x * x);
}

// act(x). p0: the leaky slope or the clamp's lo; p1: the clamp's hi.
DOD_HOSTDEV float act_value(ActKind kind, float p0, float p1, float x) {
    switch (kind) {
    case ACT_SILU: return x * act_sigmoid(x);
    case ACT_GELU_ERF: return act_gelu_erf(x);
    case ACT_GELU_TANH: return act_gelu_tanh(x);
    case ACT_RELU: return x > 0.0f ? x : 0.0f;
    case ACT_LEAKY: return x > 0.0f ? x : p0 * x;
    case ACT_CLAMP: return x < p0 ? p0 : (x > p1 ? p1 : x);
    case ACT_EXP: return expf(x);
    case ACT_QUICK_GELU: return x * act_sigmoid(ACT_QUICK_GELU_C * x);
    }
    return x;
}

// g * act'(x): what the backward adds to grad_x for output gradient g.
DOD_HOSTDEV float act_grad(ActKind kind, float p0, float p1, float x, float g) {
    switch (kind) {
    case ACT_SILU: {
        float s = act_sigmoid(x);
        return g * s * (1.0f + x * (1.0f - s));
    }
    case ACT_GELU_ERF: return g * act_gelu_erf_grad(x);
    case ACT_GELU_TANH: return g * act_gelu_tanh_grad(x);
    case ACT_RELU: return x > 0.0f ? g : 0.0f;
    case ACT_LEAKY: return x > 0.0f ? g : p0 * g;
    case ACT_CLAMP: return (x >= p0 && x <= p1) ? g : 0.0f;
    case ACT_EXP: return g * expf(x);
    case ACT_QUICK_GELU: {  // d/dx x s(cx) = s(cx) + c x s(cx) (1 - s(cx))
        float s = act_sigmoid(ACT_QUICK_GELU_C * x);
        return g * (s + ACT_QUICK_GELU_C * x * s * (1.0f - s));
    }
    }
    return g;
}

// GEGLU (diffusers): y = hidden * gelu_erf(gate); what its backward adds to d hidden and d gate.
DOD_HOSTDEV float geglu_value(float hidden, float gate) { return hidden * act_gelu_erf(gate); }
DOD_HOSTDEV float geglu_grad_hidden(float g, float gate) { return g * act_gelu_erf(gate); }
DOD_HOSTDEV float geglu_grad_gate(float g, float hidden, float gate) { return g * hidden * act_gelu_erf_grad(gate); }

// ---- diagonal-Gaussian posterior sample (op_posterior_sample; elementwise.cu) -------------------------
// z = mean + exp(0.5 logvar) eps (diffusers DiagonalGaussianDistribution.sample with given noise; the
// VAE clamps logvar to [-30, 20] before, layers/vae.c). dz/dmean = 1; what the backward adds to
// d logvar and d eps for output gradient g:
DOD_HOSTDEV float posterior_sample_value(float mean, float logvar, float eps) {
    return mean + expf(0.5f * logvar) * eps;
}
DOD_HOSTDEV float posterior_sample_grad_logvar(float g, float logvar, float eps) {
    return g * eps * 0.5f * expf(0.5f * logvar);
}
DOD_HOSTDEV float posterior_sample_grad_eps(float g, float logvar) { return g * expf(0.5f * logvar); }

// ---- binary elementwise (op_elementwise.c, elementwise.cu) ------------------------------------------
typedef enum { EW_ADD, EW_SUB, EW_MUL } EwKind;
DOD_HOSTDEV float ew_value(EwKind kind, float a, float b) {
    return kind == EW_ADD ? a + b : kind == EW_SUB ? a - b : a * b;
}

// ---- full reductions and point losses (op_reduce.c, op_loss.c, optim.c; reduce.cu) ------------------
// The term summed (in double) for element i: p (op_sum, op_mean), (p - t)^2 (op_mse_loss), |p - t|
// (op_l1_loss), p^2 (the gradient norm). t is unused for REDUCE_SUM and REDUCE_SQUARES.
typedef enum { REDUCE_SUM, REDUCE_SQUARED_DIFF, REDUCE_ABS_DIFF, REDUCE_SQUARES } ReduceKind;
DOD_HOSTDEV double reduce_term(ReduceKind kind, float p, float t) {
    if (kind == REDUCE_SUM) return p;
    if (kind == REDUCE_SQUARES) return (double)p * p;
    double d = (double)p - t;
    return kind == REDUCE_SQUARED_DIFF ? d * d : fabs(d);
}
// What the backward of mean((p - t)^2) (l1 false) or mean(|p - t|) adds to grad_p for d = p - t and
// k = output gradient / n (sign(0) = 0); grad_t gets the negative.
DOD_HOSTDEV float point_loss_grad(bool l1, float d, float k) {
    return l1 ? (d > 0.0f ? k : d < 0.0f ? -k : 0.0f) : 2.0f * k * d;
}

// ---- AdamW (optim.c, optim.cu) ------------------------------------------------------------------------
// One element's update (writes (=) *w, *m, *v): w *= decay; m = b1 m + (1 - b1) g;
// v = b2 v + (1 - b2) g^2; w -= step_size * m / (sqrt(v) / bc2_sqrt + eps).
DOD_HOSTDEV void adamw_update_element(float *w, float *m, float *v, float g, float beta1, float beta2, float eps,
                                      float decay, float step_size, float bc2_sqrt) {
    float wj = *w * decay;
    float mj = beta1 * *m + (1.0f - beta1) * g;
    float vj = beta2 * *v + (1.0f - beta2) * g * g;
    float denom = sqrtf(vj) / bc2_sqrt + eps;
    *w = wj - step_size * (mj / denom);
    *m = mj;
    *v = vj;
}

// ---- group norm (op_norm.c, norm.cu) -----------------------------------------------------------------
// y for x given the group's mean m and rstd r and the channel's gamma, beta (1, 0 without affine):
// x * (r gamma) + (beta - m r gamma).
DOD_HOSTDEV float group_norm_value(float x, float m, float r, float gamma, float beta) {
    float a = r * gamma;
    return x * a + (beta - m * a);
}
DOD_HOSTDEV float norm_xhat(float x, float m, float r) { return (x - m) * r; }
// What the backward adds to dx: r (dy gamma - mean(dxhat) - xhat mean(dxhat xhat)), dxhat = dy gamma.
DOD_HOSTDEV float norm_dx(float r, float dxhat, float xhat, float mean_dxhat, float mean_dxhat_xhat) {
    return r * (dxhat - mean_dxhat - xhat * mean_dxhat_xhat);
}

// ---- SSIM (op_loss.c, ssim.cu) ------------------------------------------------------------------------
// The five filtered signals of x (a) and y (b): q = 0 x, 1 y, 2 x^2, 3 y^2, 4 xy.
DOD_HOSTDEV double ssim_signal(int q, double a, double b) {
    return q == 0 ? a : q == 1 ? b : q == 2 ? a * a : q == 3 ? b * b : a * b;
}
// SSIM's four factors at one pixel from the filtered statistics mu1, mu2, e11 = E[x^2], e22, e12
// (written (=)): SSIM = (a1 a2) / (b1 b2).
DOD_HOSTDEV void ssim_factors(double u1, double u2, double e11, double e22, double e12, double C1, double C2,
                              double *a1, double *b1, double *a2, double *b2) {
    *a1 = 2 * u1 * u2 + C1;
    *b1 = u1 * u1 + u2 * u2 + C1;
    *a2 = 2 * (e12 - u1 * u2) + C2;
    *b2 = (e11 - u1 * u1) + (e22 - u2 * u2) + C2;
}
// gs * d SSIM / d (mu1, mu2, e11 (= e22), e12) at one pixel (written (=) to d[0], d[1], d[2], d[3]).
DOD_HOSTDEV void ssim_dstats(double u1, double u2, double a1, double b1, double a2, double b2, double gs,
                             double *d) {
    double S = a1 * a2 / (b1 * b2), common = (a2 - a1) / (b1 * b2), sd = S * (1 / b2 - 1 / b1);
    d[0] = gs * (2 * u2 * common + 2 * u1 * sd);
    d[1] = gs * (2 * u1 * common + 2 * u2 * sd);
    d[2] = gs * (-S / b2);
    d[3] = gs * (2 * a1 / (b1 * b2));
}

// ---- data movement (op_shape.c, shape.cu) ----------------------------------------------------------------
// op_upsample_nearest2x's backward at input pixel (h, w) of a plane: the 2x2 block it was copied to,
// g0 = the gradient's row 2h, g1 = row 2h + 1.
DOD_HOSTDEV float upsample2x_grad(const float *g0, const float *g1, int64_t w) {
    return g0[2 * w] + g0[2 * w + 1] + g1[2 * w] + g1[2 * w + 1];
}

// op_gather_hw over planes of x [.., H, W] -> y [.., Ho, Wo] with y[p, i, j] = x[p, src_y[i], src_x[j]].
// The value of output element k (row-major over [planes, Ho, Wo]).
DOD_HOSTDEV float gather_hw_value(const float *x, int64_t k, int64_t H, int64_t W, const int64_t *src_y, int64_t Ho,
                                  const int64_t *src_x, int64_t Wo) {
    int64_t j = k % Wo, i = (k / Wo) % Ho, p = k / (Wo * Ho);
    return x[(p * H + src_y[i]) * W + src_x[j]];
}
// The backward at input element k (row-major over [planes, H, W]): gx + every g[p, i, j] that read it,
// added one by one in row-major (i, j) order, as a scatter loop over the output would. The output
// rows reading input row h are rows[row_start[h] .. row_start[h + 1]) in increasing order, likewise
// the columns (the inverse of src_y / src_x, op_shape.c's gather_hw_inverse).
DOD_HOSTDEV float gather_hw_grad(float gx, const float *g, int64_t k, int64_t H, int64_t W, int64_t Ho, int64_t Wo,
                                 const int64_t *row_start, const int64_t *rows, const int64_t *col_start,
                                 const int64_t *cols) {
    int64_t w = k % W, h = (k / W) % H, p = k / (W * H);
    const float *gp = g + p * Ho * Wo;
    for (int64_t a = row_start[h]; a < row_start[h + 1]; a++)
        for (int64_t b = col_start[w]; b < col_start[w + 1]; b++) gx += gp[rows[a] * Wo + cols[b]];
    return gx;
}

// ---- max pooling (op_pool.c, pool.cu) ------------------------------------------------------------------
// Offset within a plane (W wide) of the maximum of the k x k window of output (ho, wo) at stride s:
// the first one in row-major order, or the first NaN (PyTorch's rule). Forward reads it, backward
// routes the gradient to it, so ties and NaNs resolve the same way on both sides.
DOD_HOSTDEV int64_t max_pool_window_argmax(const float *plane, int64_t W, int k, int s, int64_t ho, int64_t wo) {
    int64_t best = ho * s * W + wo * s;
    float m = plane[best];
    for (int i = 0; i < k; i++)
        for (int j = 0; j < k; j++) {
            int64_t at = (ho * s + i) * W + wo * s + j;
            float v = plane[at];
            if (v > m || (isnan(v) && !isnan(m))) m = v, best = at;
        }
    return best;
}

// ---- channel normalisation (op_channel_norm.c, channel_norm.cu) ----------------------------------------
// At one position with n = sqrt(sum_c x_c^2) (summed in float, c ascending) and d = n + eps:
// y_c = x_c / d; the backward adds g_c / d - x_c coef to grad x_c, coef = (sum_k g_k x_k) / (d^2 n),
// taken as 0 at n = 0 (PyTorch's sqrt'(0) = inf would give NaN there).
DOD_HOSTDEV float channel_norm_value(float x, float n, float eps) { return x / (n + eps); }
DOD_HOSTDEV float channel_norm_grad_coef(float dot, float n, float eps) {
    float d = n + eps;
    return n > 0 ? dot / (d * d * n) : 0.0f;
}
DOD_HOSTDEV float channel_norm_grad(float g, float x, float n, float eps, float coef) { return g / (n + eps) - x * coef; }
