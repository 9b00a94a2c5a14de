// Max pooling (op_max_pool2d, autograd/op_pool.c): one thread per output element, which scans its
// window; backward finds the same argmax again and adds the gradient there atomically.
#include "autograd/cuda/device.h"
#include "autograd/kernel_math.h"

__global__ void max_pool_forward_kernel(const float *x, float *y, int64_t H, int64_t W, int64_t Ho, int64_t Wo, int k,
                                        int s, int64_t n) {
    DOD_GRID_STRIDE(i, n) {
        int64_t wo = i % Wo, ho = (i / Wo) % Ho, p = i / (Wo * Ho);
        const float *xp = x + p * H * W;
        y[i] = xp[max_pool_window_argmax(xp, W, k, s, ho, wo)];
    }
}

__global__ void max_pool_backward_kernel(const float *x, const float *g, float *gx, int64_t H, int64_t W, int64_t Ho,
                                         int64_t Wo, int k, int s, int64_t n) {
    DOD_GRID_STRIDE(i, n) {
        int64_t wo = i % Wo, ho = (i / Wo) % Ho, p = i / (Wo * Ho);
        atomicAdd(gx + p * H * W + max_pool_window_argmax(x + p * H * W, W, k, s, ho, wo), g[i]);
    }
}

void cuda_max_pool2d_forward(const float *x, float *y, int64_t planes, int64_t H, int64_t W, int64_t Ho, int64_t Wo,
                             int k, int s) {
    int64_t n = planes * Ho * Wo;
    if (n == 0) return;
    max_pool_forward_kernel<<<dod_grid(n, 256), 256>>>(x, y, H, W, Ho, Wo, k, s, n);
    CUDA_CHECK_LAUNCH("max_pool_forward_kernel");
}

void cuda_max_pool2d_backward(const float *x, const float *g, float *gx, int64_t planes, int64_t H, int64_t W,
                              int64_t Ho, int64_t Wo, int k, int s) {
    int64_t n = planes * Ho * Wo;
    if (n == 0) return;
    max_pool_backward_kernel<<<dod_grid(n, 256), 256>>>(x, g, gx, H, W, Ho, Wo, k, s, n);
    CUDA_CHECK_LAUNCH("max_pool_backward_kernel");
}
