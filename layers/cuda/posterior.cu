// The VAE posterior sample on the device (layers/dod_model_util.c dispatches here for DEV_CUDA).
// Same formula and f32 arithmetic as the CPU loop: expf of a float.
#include "autograd/cuda/device.h"

extern "C" {
#include "layers/cuda/layers_cuda.h"
}

__global__ static void posterior_forward_kernel(const float *__restrict__ mean, const float *__restrict__ logvar,
                                                const float *__restrict__ eps, float *__restrict__ out, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        out[i] = mean[i] + expf(0.5f * logvar[i]) * eps[i];
}

// grad_mean / grad_logvar may each be NULL (that input needs no gradient).
__global__ static void posterior_backward_kernel(const float *__restrict__ g, const float *__restrict__ logvar,
                                                 const float *__restrict__ eps, float *grad_mean,
                                                 float *grad_logvar, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        if (grad_mean) grad_mean[i] += g[i];
        if (grad_logvar) grad_logvar[i] += g[i] * eps[i] * 0.5f * expf(0.5f * logvar[i]);
    }
}

void cuda_posterior_sample_forward(const float *mean, const float *logvar, const float *eps, float *out, int64_t n) {
    if (n == 0) return;
    posterior_forward_kernel<<<dod_grid(n, 256), 256>>>(mean, logvar, eps, out, n);
    CUDA_CHECK_LAUNCH("posterior_forward_kernel");
}

void cuda_posterior_sample_backward(const float *g, const float *logvar, const float *eps, float *grad_mean,
                                    float *grad_logvar, int64_t n) {
    if (n == 0 || (!grad_mean && !grad_logvar)) return;
    posterior_backward_kernel<<<dod_grid(n, 256), 256>>>(g, logvar, eps, grad_mean, grad_logvar, n);
    CUDA_CHECK_LAUNCH("posterior_backward_kernel");
}
