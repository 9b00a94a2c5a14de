// Optimizer kernels for parameters on DEV_CUDA: the device side of AdamW and gradient-norm clipping.
// autograd/optim.c calls them for parameters whose device is CUDA (moments live on the device).
// C API; without DOD_HAVE_CUDA every entry is an inline stub that fails naming the call.
#pragma once
#include "autograd/cuda/cuda_backend.h"

// Entries are declared with cuda_backend.h's DOD_CUDA_API (real declarations, or failing stubs).
DOD_CUDA_API_BEGIN

// sum_i x[i]^2 in double, deterministic (fixed-order two-pass reduction, reduce.cu); synchronises
// (host result).
DOD_CUDA_API(double, cuda_sum_squares, (const float *x, int64_t n))
// One AdamW update of n elements, autograd/kernel_math.h's adamw_update_element as in autograd/optim.c:
//   w *= decay; m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2; w -= step_size * m / (sqrt(v) / bc2_sqrt + eps)
// (writes w, m, v in place).
DOD_CUDA_API(void, cuda_adamw_update,
                   (float *w, const float *g, float *m, float *v, int64_t n, float beta1, float beta2, float eps,
                    float decay, float step_size, float bc2_sqrt))

DOD_CUDA_API_END
