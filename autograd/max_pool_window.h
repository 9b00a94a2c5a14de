// The window scan of op_max_pool2d, written once for the CPU loops (autograd/op_pool.c) and the CUDA
// kernels (autograd/cuda/pool.cu), so ties and NaNs resolve the same way on both.
#pragma once
#include <math.h>
#include <stdint.h>

#ifdef __CUDACC__
#define POOL_FN static __host__ __device__ __forceinline__
#else
#define POOL_FN static inline
#endif

// Offset within a plane (W wide) of the maximum of the k x k window of output (ho, wo) at stride s:
// the first one in row-major order, or the first NaN (PyTorch's rule).
POOL_FN int64_t max_pool_window_argmax(const float *plane, int64_t W, int k, int s, int64_t ho, int64_t wo) {
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
