// CUDA kernels of the model layers that have no engine op: the VAE posterior sample (exp of the log
// variance has no op). C API; without DOD_HAVE_CUDA every entry is an inline stub that fails naming
// the call (unreachable there: no tensor can be on DEV_CUDA in such a build).
#pragma once
#include "autograd/cuda/cuda_backend.h"

// Entries are declared with cuda_backend.h's DOD_CUDA_API (real declarations, or failing stubs).
DOD_CUDA_API_BEGIN

// out[i] = mean[i] + exp(0.5 * logvar[i]) * eps[i] (=). Device pointers, n elements.
DOD_CUDA_API(void, cuda_posterior_sample_forward,
                    (const float *mean, const float *logvar, const float *eps, float *out, int64_t n))
// grad_mean += g (when grad_mean); grad_logvar += g * eps * 0.5 * exp(0.5 * logvar) (when grad_logvar).
DOD_CUDA_API(void, cuda_posterior_sample_backward,
                    (const float *g, const float *logvar, const float *eps, float *grad_mean, float *grad_logvar,
                     int64_t n))

DOD_CUDA_API_END
