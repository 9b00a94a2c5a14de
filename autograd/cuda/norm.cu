// Group norm (and layer norm as its G = 1, S = 1 case): statistics in double per block, as the CPU
// kernels do, so un-normalised inputs with large means keep their variance. Per-element formulas:
// autograd/kernel_math.h (group_norm_value, norm_xhat, norm_dx), as in op_norm.c.
//   forward:  one block per (n, group): mean, rstd, then y = x * (rstd gamma) + (beta - mean rstd gamma)
//   backward: one block per (n, group) for dx, one block per channel for dgamma/dbeta.
#include "autograd/cuda/device.h"

#define NORM_THREADS 256

__global__ void group_norm_forward_kernel(const float *x, const float *gamma, const float *beta, float *y, float *mean,
                                          float *rstd, int64_t C, int64_t S, int64_t G, float eps) {
    int64_t ng = blockIdx.x, cpg = C / G, gsize = cpg * S, c0 = (ng % G) * cpg;
    const float *xg = x + ng * gsize;
    float *yg = y + ng * gsize;
    double s = 0;
    for (int64_t i = threadIdx.x; i < gsize; i += blockDim.x) s += xg[i];
    double m = dod_block_sum(s) / (double)gsize, v = 0;
    for (int64_t i = threadIdx.x; i < gsize; i += blockDim.x) {
        double d = xg[i] - m;
        v += d * d;
    }
    v = dod_block_sum(v) / (double)gsize;
    float mf = (float)m, r = (float)(1.0 / sqrt(v + eps));
    if (threadIdx.x == 0) {
        mean[ng] = mf;
        rstd[ng] = r;
    }
    for (int64_t i = threadIdx.x; i < gsize; i += blockDim.x) {
        int64_t ch = c0 + i / S;
        float ga = gamma ? gamma[ch] : 1.0f, be = beta ? beta[ch] : 0.0f;
        yg[i] = group_norm_value(xg[i], mf, r, ga, be);
    }
}

__global__ void group_norm_dx_kernel(const float *x, const float *gamma, const float *mean, const float *rstd,
                                     const float *dy, float *dx, int64_t C, int64_t S, int64_t G) {
    int64_t ng = blockIdx.x, cpg = C / G, gsize = cpg * S, c0 = (ng % G) * cpg;
    const float *xg = x + ng * gsize, *dyg = dy + ng * gsize;
    float m = mean[ng], r = rstd[ng];
    double s1 = 0, s2 = 0;
    for (int64_t i = threadIdx.x; i < gsize; i += blockDim.x) {
        float ga = gamma ? gamma[c0 + i / S] : 1.0f;
        float xh = norm_xhat(xg[i], m, r), dxh = dyg[i] * ga;
        s1 += dxh;
        s2 += (double)dxh * xh;
    }
    float mean1 = (float)(dod_block_sum(s1) / gsize), mean2 = (float)(dod_block_sum(s2) / gsize);
    float *dxg = dx + ng * gsize;
    for (int64_t i = threadIdx.x; i < gsize; i += blockDim.x) {
        float ga = gamma ? gamma[c0 + i / S] : 1.0f;
        dxg[i] += norm_dx(r, dyg[i] * ga, norm_xhat(xg[i], m, r), mean1, mean2);
    }
}

__global__ void group_norm_affine_kernel(const float *x, const float *mean, const float *rstd, const float *dy,
                                         float *dgamma, float *dbeta, int64_t N, int64_t C, int64_t S, int64_t G) {
    int64_t ch = blockIdx.x, g = ch / (C / G), count = N * S;
    double sg = 0, sb = 0;
    for (int64_t j = threadIdx.x; j < count; j += blockDim.x) {
        int64_t n = j / S, s = j % S, idx = (n * C + ch) * S + s;
        float xh = norm_xhat(x[idx], mean[n * G + g], rstd[n * G + g]);
        sg += (double)dy[idx] * xh;
        sb += dy[idx];
    }
    sg = dod_block_sum(sg);
    sb = dod_block_sum(sb);
    if (threadIdx.x == 0) {
        if (dgamma) dgamma[ch] += (float)sg;
        if (dbeta) dbeta[ch] += (float)sb;
    }
}

void cuda_group_norm_forward(const float *x, const float *gamma, const float *beta, float *y, float *mean, float *rstd,
                             int64_t N, int64_t C, int64_t S, int64_t G, float eps) {
    if (N * C * S == 0) return;
    DOD_CHECK(N * G < (1LL << 31), "cuda_group_norm_forward", "%ld groups exceed one grid", (long)(N * G));
    group_norm_forward_kernel<<<(unsigned)(N * G), NORM_THREADS>>>(x, gamma, beta, y, mean, rstd, C, S, G, eps);
    CUDA_CHECK_LAUNCH("group_norm_forward_kernel");
}

void cuda_group_norm_backward(const float *x, const float *gamma, const float *mean, const float *rstd, const float *dy,
                              float *dx, float *dgamma, float *dbeta, int64_t N, int64_t C, int64_t S, int64_t G) {
    if (N * C * S == 0) return;
    if (dx) {
        group_norm_dx_kernel<<<(unsigned)(N * G), NORM_THREADS>>>(x, gamma, mean, rstd, dy, dx, C, S, G);
        CUDA_CHECK_LAUNCH("group_norm_dx_kernel");
    }
    if (dgamma || dbeta) {
        group_norm_affine_kernel<<<(unsigned)C, NORM_THREADS>>>(x, mean, rstd, dy, dgamma, dbeta, N, C, S, G);
        CUDA_CHECK_LAUNCH("group_norm_affine_kernel");
    }
}
