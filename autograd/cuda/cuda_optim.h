// Optimizer kernels for parameters on DEV_CUDA: the device side of AdamW and gradient-norm clipping.
// autograd/optim.c calls them for parameters whose device is CUDA (moments live on the device).
// C API; without DOD_HAVE_CUDA every entry is an inline stub that fails naming the call.
#pragma once
#include "autograd/cuda/cuda_backend.h"

// Entries are declared with cuda_backend.h's DOD_CUDA_API (real declarations, or failing stubs).
DOD_CUDA_API_BEGIN

// Gradient clipping without a host round trip (reduce.cu), for clip_grad_norm_into:
// acc[0] += sum_i x[i]^2 in double, deterministic: per-block partial sums, then added in block order by
// one thread (the order the host used when it read the partials back) (accumulates).
DOD_CUDA_API(void, cuda_sum_squares_add, (const float *x, int64_t n, double *acc))
// norm[0] = sqrt(sq[0]); coef[0] = (float)(max_norm / (norm + 1e-6)) when max_norm > 0 and that is below 1,
// else exactly 1 (writes =; torch's clip_grad_norm_ arithmetic, in double, as the CPU path does).
DOD_CUDA_API(void, cuda_clip_coefficient, (const double *sq, double max_norm, double *norm, float *coef))
// x[i] *= coef[0], skipped when coef[0] == 1 (in place).
DOD_CUDA_API(void, cuda_scale_by_device_scalar, (float *x, const float *coef, int64_t n))
// One AdamW update of n elements, autograd/kernel_math.h's adamw_update_element as in autograd/optim.c:
//   w *= decay; m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2; w -= step_size * m / (sqrt(v) / bc2_sqrt + eps)
// (writes w, m, v in place).
DOD_CUDA_API(void, cuda_adamw_update,
                   (float *w, const float *g, float *m, float *v, int64_t n, float beta1, float beta2, float eps,
                    float decay, float step_size, float bc2_sqrt))

DOD_CUDA_API_END
