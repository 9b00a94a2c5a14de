// Channel normalisation (op_channel_normalize, autograd/op_channel_norm.c): one thread per (n, s)
// position loops over the C channels (neighbouring threads read neighbouring s: coalesced).
#include "autograd/cuda/device.h"
#include "autograd/kernel_math.h"

__global__ void channel_norm_forward_kernel(const float *x, float *y, float *norm, int64_t C, int64_t S, float eps,
                                            int64_t n) {
    DOD_GRID_STRIDE(i, n) {
        int64_t s = i % S, b = i / S;
        const float *xp = x + b * C * S + s;
        float acc = 0;
        for (int64_t c = 0; c < C; c++) acc += xp[c * S] * xp[c * S];
        float nrm = sqrtf(acc);
        norm[i] = nrm;
        for (int64_t c = 0; c < C; c++) y[b * C * S + c * S + s] = channel_norm_value(xp[c * S], nrm, eps);
    }
}

__global__ void channel_norm_backward_kernel(const float *x, const float *norm, const float *g, float *gx, int64_t C,
                                             int64_t S, float eps, int64_t n) {
    DOD_GRID_STRIDE(i, n) {
        int64_t s = i % S, b = i / S, base = b * C * S + s;
        float dot = 0;
        for (int64_t c = 0; c < C; c++) dot += g[base + c * S] * x[base + c * S];
        float nrm = norm[i], coef = channel_norm_grad_coef(dot, nrm, eps);
        for (int64_t c = 0; c < C; c++) gx[base + c * S] += channel_norm_grad(g[base + c * S], x[base + c * S], nrm, eps, coef);
    }
}

void cuda_channel_normalize_forward(const float *x, float *y, float *norm, int64_t N, int64_t C, int64_t S, float eps) {
    int64_t n = N * S;
    if (n == 0) return;
    channel_norm_forward_kernel<<<dod_grid(n, 256), 256>>>(x, y, norm, C, S, eps, n);
    CUDA_CHECK_LAUNCH("channel_norm_forward_kernel");
}

void cuda_channel_normalize_backward(const float *x, const float *norm, const float *g, float *gx, int64_t N, int64_t C,
                                     int64_t S, float eps) {
    int64_t n = N * S;
    if (n == 0) return;
    channel_norm_backward_kernel<<<dod_grid(n, 256), 256>>>(x, norm, g, gx, C, S, eps, n);
    CUDA_CHECK_LAUNCH("channel_norm_backward_kernel");
}
