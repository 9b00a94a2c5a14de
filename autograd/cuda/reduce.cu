// Full reductions to a device scalar (sum, mean, MSE, L1) and their backward kernels, the gradient
// norm's sum of squares, clip factor and scaling (cuda_optim.h), and device-scalar accumulation.
// Two passes: per-block double partial sums, then the partials added in a fixed order (one block on
// the device, or the host), so the result is deterministic.
#include "autograd/cuda/device.h"

extern "C" {
#include "autograd/cuda/cuda_optim.h"
}

#define REDUCE_THREADS 256
#define REDUCE_MAX_BLOCKS 1024

// The terms: autograd/kernel_math.h's reduce_term (t unused, may be NULL, for REDUCE_SUM and REDUCE_SQUARES).
__global__ void reduce_partial_kernel(ReduceKind kind, const float *p, const float *t, int64_t n, double *partial) {
    double acc = 0;
    DOD_GRID_STRIDE(i, n) acc += reduce_term(kind, p[i], t ? t[i] : 0.0f);
    acc = dod_block_sum(acc);
    if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

__global__ void reduce_final_kernel(const double *partial, int n_partial, float scale, float *out) {
    double acc = 0;
    for (int i = threadIdx.x; i < n_partial; i += blockDim.x) acc += partial[i];
    acc = dod_block_sum(acc);
    if (threadIdx.x == 0) out[0] = (float)(acc * scale);
}

static int reduce_blocks(int64_t n) {
    int64_t want = (n + REDUCE_THREADS - 1) / REDUCE_THREADS;
    return (int)(want < 1 ? 1 : want > REDUCE_MAX_BLOCKS ? REDUCE_MAX_BLOCKS : want);
}

void cuda_reduce_sum(ReduceKind kind, const float *p, const float *t, int64_t n, float scale, float *out) {
    int blocks = reduce_blocks(n);
    size_t mark = cuda_arena_mark();
    double *partial = (double *)cuda_arena_alloc((size_t)blocks * sizeof(double), "reduction partials");
    reduce_partial_kernel<<<blocks, REDUCE_THREADS>>>(kind, p, t, n, partial);
    CUDA_CHECK_LAUNCH("reduce_partial_kernel");
    reduce_final_kernel<<<1, REDUCE_THREADS>>>(partial, blocks, scale, out);
    CUDA_CHECK_LAUNCH("reduce_final_kernel");
    cuda_arena_release(mark);  // stream order keeps the partials alive until the kernels ran
}

// acc[0] += the partials in order, by one thread: the order in which the host added them when it read
// them back, so the gradient norm is what it was (deterministic, bit for bit).
__global__ void partials_add_kernel(const double *partial, int n_partial, double *acc) {
    double s = 0;
    for (int i = 0; i < n_partial; i++) s += partial[i];
    acc[0] += s;
}

void cuda_sum_squares_add(const float *x, int64_t n, double *acc) {
    if (n == 0) return;
    int blocks = reduce_blocks(n);
    size_t mark = cuda_arena_mark();
    double *partial = (double *)cuda_arena_alloc((size_t)blocks * sizeof(double), "sum of squares partials");
    reduce_partial_kernel<<<blocks, REDUCE_THREADS>>>(REDUCE_SQUARES, x, NULL, n, partial);
    CUDA_CHECK_LAUNCH("reduce_partial_kernel (sum of squares)");
    partials_add_kernel<<<1, 1>>>(partial, blocks, acc);
    CUDA_CHECK_LAUNCH("partials_add_kernel");
    cuda_arena_release(mark);  // stream order keeps the partials alive until the kernels ran
}

__global__ void clip_coefficient_kernel(const double *sq, double max_norm, double *norm, float *coef) {
    double nrm = sqrt(sq[0]);
    double c = max_norm / (nrm + 1e-6);  // torch: clamp(max_norm / (norm + 1e-6), max=1)
    norm[0] = nrm;
    coef[0] = max_norm > 0 && c < 1.0 ? (float)c : 1.0f;
}

void cuda_clip_coefficient(const double *sq, double max_norm, double *norm, float *coef) {
    clip_coefficient_kernel<<<1, 1>>>(sq, max_norm, norm, coef);
    CUDA_CHECK_LAUNCH("clip_coefficient_kernel");
}

__global__ void scale_by_device_scalar_kernel(float *x, const float *coef, int64_t n) {
    float c = coef[0];
    if (c == 1.0f) return;  // no clipping this step: leave the gradients as they are
    DOD_GRID_STRIDE(i, n) x[i] *= c;
}

void cuda_scale_by_device_scalar(float *x, const float *coef, int64_t n) {
    if (n == 0) return;
    scale_by_device_scalar_kernel<<<dod_grid(n, 256), 256>>>(x, coef, n);
    CUDA_CHECK_LAUNCH("scale_by_device_scalar_kernel");
}

__global__ void scalar_add_f64_kernel(double *dst, const float *src) { dst[0] += (double)src[0]; }

void cuda_scalar_add_f64(double *dst, const float *src) {
    scalar_add_f64_kernel<<<1, 1>>>(dst, src);
    CUDA_CHECK_LAUNCH("scalar_add_f64_kernel");
}

__global__ void fill_grad_scalar_kernel(const float *g, float scale, float *gx, int64_t n) {
    float v = g[0] * scale;
    DOD_GRID_STRIDE(i, n) gx[i] += v;
}

void cuda_fill_grad_scalar(const float *g, float scale, float *gx, int64_t n) {
    if (n == 0) return;
    fill_grad_scalar_kernel<<<dod_grid(n, 256), 256>>>(g, scale, gx, n);
    CUDA_CHECK_LAUNCH("fill_grad_scalar_kernel");
}

__global__ void point_loss_backward_kernel(bool l1, const float *p, const float *t, const float *g, float *gp,
                                           float *gt, int64_t n) {
    float k = g[0] / (float)n;
    DOD_GRID_STRIDE(i, n) {
        float v = point_loss_grad(l1, p[i] - t[i], k);
        if (gp) gp[i] += v;
        if (gt) gt[i] -= v;
    }
}

void cuda_point_loss_backward(bool l1, const float *p, const float *t, const float *g, float *gp, float *gt, int64_t n) {
    if (n == 0) return;
    point_loss_backward_kernel<<<dod_grid(n, 256), 256>>>(l1, p, t, g, gp, gt, n);
    CUDA_CHECK_LAUNCH("point_loss_backward_kernel");
}
