// Data movement for the shape ops (concat, split, permute, pad, upsample, gather, pooling, embedding):
// one strided-copy kernel covers the first four and pooling's backward; the rest are small kernels
// (per-element index math from autograd/kernel_math.h where the CPU ops share it).
#include "autograd/cuda/device.h"

typedef struct {
    int ndim;
    int64_t shape[8], ds[8], ss[8];
} CopyPlan;

// dst[sum c_d ds_d] (= or +=) scale * src[sum c_d ss_d] over every coordinate c of shape. With
// accumulate, every coordinate must map to a distinct dst element (true for all callers).
__global__ void strided_copy_kernel(CopyPlan p, float *dst, const float *src, float scale, bool accumulate, int64_t n) {
    DOD_GRID_STRIDE(i, n) {
        int64_t rem = i, od = 0, os = 0;
        for (int d = p.ndim - 1; d >= 0; d--) {
            int64_t c = rem % p.shape[d];
            rem /= p.shape[d];
            od += c * p.ds[d];
            os += c * p.ss[d];
        }
        float v = scale * src[os];
        if (accumulate) dst[od] += v;
        else dst[od] = v;
    }
}

void cuda_strided_copy(int ndim, const int64_t *shape, float *dst, const int64_t *dst_strides, const float *src,
                       const int64_t *src_strides, float scale, bool accumulate) {
    DOD_CHECK(ndim >= 1 && ndim <= 8, "cuda_strided_copy", "%d dims (1..8 supported)", ndim);
    CopyPlan p = {};
    p.ndim = ndim;
    int64_t n = 1;
    for (int d = 0; d < ndim; d++) {
        p.shape[d] = shape[d];
        p.ds[d] = dst_strides[d];
        p.ss[d] = src_strides[d];
        n *= shape[d];
    }
    if (n == 0) return;
    strided_copy_kernel<<<dod_grid(n, 256), 256>>>(p, dst, src, scale, accumulate, n);
    CUDA_CHECK_LAUNCH("strided_copy_kernel");
}

// y[p] = mean of the S floats of plane p: one block per plane, double accumulation.
__global__ void plane_means_kernel(const float *x, float *y, int64_t S) {
    const float *xp = x + blockIdx.x * S;
    double s = 0;
    for (int64_t k = threadIdx.x; k < S; k += blockDim.x) s += xp[k];
    s = dod_block_sum(s);
    if (threadIdx.x == 0) y[blockIdx.x] = (float)(s / S);
}

void cuda_plane_means(const float *x, float *y, int64_t planes, int64_t S) {
    if (planes == 0) return;
    plane_means_kernel<<<(unsigned)planes, 256>>>(x, y, S);
    CUDA_CHECK_LAUNCH("plane_means_kernel");
}

// gx[p, h, w] += the 2x2 block of g it was copied to.
__global__ void upsample2x_backward_kernel(const float *g, float *gx, int64_t H, int64_t W, int64_t n) {
    DOD_GRID_STRIDE(i, n) {
        int64_t w = i % W, h = (i / W) % H, p = i / (W * H), Wo = 2 * W;
        const float *g0 = g + (p * 2 * H + 2 * h) * Wo;
        gx[i] += upsample2x_grad(g0, g0 + Wo, w);
    }
}

void cuda_upsample2x_backward(const float *g, float *gx, int64_t planes, int64_t H, int64_t W) {
    int64_t n = planes * H * W;
    if (n == 0) return;
    upsample2x_backward_kernel<<<dod_grid(n, 256), 256>>>(g, gx, H, W, n);
    CUDA_CHECK_LAUNCH("upsample2x_backward_kernel");
}

// op_gather_hw: y[k] = gather_hw_value(...) per output element (=); gx[k] = gather_hw_grad(gx[k], ...) per
// input element, which sums its outputs in a fixed order: deterministic, no atomics.
__global__ void gather_hw_forward_kernel(const float *x, float *y, int64_t H, int64_t W, const int64_t *src_y,
                                         int64_t Ho, const int64_t *src_x, int64_t Wo, int64_t n) {
    DOD_GRID_STRIDE(k, n) y[k] = gather_hw_value(x, k, H, W, src_y, Ho, src_x, Wo);
}
__global__ void gather_hw_backward_kernel(const float *g, float *gx, int64_t H, int64_t W, int64_t Ho, int64_t Wo,
                                          const int64_t *row_start, const int64_t *rows, const int64_t *col_start,
                                          const int64_t *cols, int64_t n) {
    DOD_GRID_STRIDE(k, n) gx[k] = gather_hw_grad(gx[k], g, k, H, W, Ho, Wo, row_start, rows, col_start, cols);
}

void cuda_gather_hw_forward(const float *x, float *y, int64_t planes, int64_t H, int64_t W, const int64_t *src_y,
                            int64_t Ho, const int64_t *src_x, int64_t Wo) {
    int64_t n = planes * Ho * Wo;
    if (n == 0) return;
    gather_hw_forward_kernel<<<dod_grid(n, 256), 256>>>(x, y, H, W, src_y, Ho, src_x, Wo, n);
    CUDA_CHECK_LAUNCH("gather_hw_forward_kernel");
}
void cuda_gather_hw_backward(const float *g, float *gx, int64_t planes, int64_t H, int64_t W, int64_t Ho, int64_t Wo,
                             const int64_t *row_start, const int64_t *rows, const int64_t *col_start,
                             const int64_t *cols) {
    int64_t n = planes * H * W;
    if (n == 0) return;
    gather_hw_backward_kernel<<<dod_grid(n, 256), 256>>>(g, gx, H, W, Ho, Wo, row_start, rows, col_start, cols, n);
    CUDA_CHECK_LAUNCH("gather_hw_backward_kernel");
}

// Embedding rows: forward y[i] = table[ids[i]] (=); backward grad_table[ids[i]] += g[i] (atomic:
// ids may repeat, so the summation order of repeated ids is not fixed).
__global__ void embedding_forward_kernel(const float *table, const int64_t *ids, float *y, int64_t D, int64_t n) {
    DOD_GRID_STRIDE(i, n) y[i] = table[ids[i / D] * D + i % D];
}
__global__ void embedding_backward_kernel(const float *g, const int64_t *ids, float *gt, int64_t D, int64_t n) {
    DOD_GRID_STRIDE(i, n) atomicAdd(&gt[ids[i / D] * D + i % D], g[i]);
}

void cuda_embedding_forward(const float *table, const int64_t *ids_dev, float *y, int64_t n_ids, int64_t D) {
    if (n_ids * D == 0) return;
    embedding_forward_kernel<<<dod_grid(n_ids * D, 256), 256>>>(table, ids_dev, y, D, n_ids * D);
    CUDA_CHECK_LAUNCH("embedding_forward_kernel");
}
void cuda_embedding_backward(const float *g, const int64_t *ids_dev, float *grad_table, int64_t n_ids, int64_t D) {
    if (n_ids * D == 0) return;
    embedding_backward_kernel<<<dod_grid(n_ids * D, 256), 256>>>(g, ids_dev, grad_table, D, n_ids * D);
    CUDA_CHECK_LAUNCH("embedding_backward_kernel");
}
