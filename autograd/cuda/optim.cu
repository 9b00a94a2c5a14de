// AdamW and gradient-norm kernels for DEV_CUDA parameters; see cuda_optim.h.
#include "autograd/cuda/device.h"

extern "C" {
#include "autograd/cuda/cuda_optim.h"
}

#define OPTIM_THREADS 256
#define OPTIM_MAX_BLOCKS 1024

__global__ static void sum_squares_partial_kernel(const float *x, int64_t n, double *partial) {
    double acc = 0;
    DOD_GRID_STRIDE(i, n) acc += (double)x[i] * x[i];
    acc = dod_block_sum(acc);
    if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

double cuda_sum_squares(const float *x, int64_t n) {
    if (n == 0) return 0.0;
    int64_t want = (n + OPTIM_THREADS - 1) / OPTIM_THREADS;
    int blocks = (int)(want > OPTIM_MAX_BLOCKS ? OPTIM_MAX_BLOCKS : want);
    size_t mark = cuda_arena_mark();
    double *partial = (double *)cuda_arena_alloc((size_t)blocks * sizeof(double), "sum of squares partials");
    sum_squares_partial_kernel<<<blocks, OPTIM_THREADS>>>(x, n, partial);
    CUDA_CHECK_LAUNCH("sum_squares_partial_kernel");
    double host[OPTIM_MAX_BLOCKS];
    cuda_copy_d2h(host, partial, (size_t)blocks * sizeof(double));  // synchronous: the kernel has finished
    cuda_arena_release(mark);
    double s = 0;
    for (int b = 0; b < blocks; b++) s += host[b];  // fixed order: deterministic
    return s;
}

__global__ static void scale_kernel(float *x, float s, int64_t n) {
    DOD_GRID_STRIDE(i, n) x[i] *= s;
}

void cuda_scale_inplace(float *x, float s, int64_t n) {
    if (n == 0) return;
    scale_kernel<<<dod_grid(n, OPTIM_THREADS), OPTIM_THREADS>>>(x, s, n);
    CUDA_CHECK_LAUNCH("scale_kernel");
}

__global__ static void adamw_kernel(float *w, const float *g, float *m, float *v, int64_t n, float beta1, float beta2,
                                    float eps, float decay, float step_size, float bc2_sqrt) {
    DOD_GRID_STRIDE(j, n) {
        float gj = g[j];
        float wj = w[j] * decay;
        float mj = beta1 * m[j] + (1.0f - beta1) * gj;
        float vj = beta2 * v[j] + (1.0f - beta2) * gj * gj;
        float denom = sqrtf(vj) / bc2_sqrt + eps;
        w[j] = wj - step_size * (mj / denom);
        m[j] = mj;
        v[j] = vj;
    }
}

void cuda_adamw_update(float *w, const float *g, float *m, float *v, int64_t n, float beta1, float beta2, float eps,
                       float decay, float step_size, float bc2_sqrt) {
    if (n == 0) return;
    adamw_kernel<<<dod_grid(n, OPTIM_THREADS), OPTIM_THREADS>>>(w, g, m, v, n, beta1, beta2, eps, decay, step_size,
                                                                 bc2_sqrt);
    CUDA_CHECK_LAUNCH("adamw_kernel");
}
