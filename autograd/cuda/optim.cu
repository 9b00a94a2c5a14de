// The AdamW kernel for DEV_CUDA parameters (the formula: autograd/kernel_math.h's adamw_update_element,
// which optim.c's CPU loop runs too); see cuda_optim.h (the gradient norm's sum of squares is
// in reduce.cu, beside the other full reductions).
#include "autograd/cuda/device.h"

extern "C" {
#include "autograd/cuda/cuda_optim.h"
}

#define OPTIM_THREADS 256

__global__ static void adamw_kernel(float *w, const float *g, float *m, float *v, int64_t n, float beta1, float beta2,
                                    float eps, float decay, float step_size, float bc2_sqrt) {
    DOD_GRID_STRIDE(j, n)
        adamw_update_element(&w[j], &m[j], &v[j], g[j], beta1, beta2, eps, decay, step_size, bc2_sqrt);
}

void cuda_adamw_update(float *w, const float *g, float *m, float *v, int64_t n, float beta1, float beta2, float eps,
                       float decay, float step_size, float bc2_sqrt) {
    if (n == 0) return;
    adamw_kernel<<<dod_grid(n, OPTIM_THREADS), OPTIM_THREADS>>>(w, g, m, v, n, beta1, beta2, eps, decay, step_size,
                                                                 bc2_sqrt);
    CUDA_CHECK_LAUNCH("adamw_kernel");
}
