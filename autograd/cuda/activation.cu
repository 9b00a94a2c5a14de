// Activations, GEGLU and row softmax (f32 throughout). The per-element formulas are
// autograd/kernel_math.h's, the ones op_activation.c's CPU loops run.
#include "autograd/cuda/device.h"

__global__ void act_forward_kernel(ActKind kind, float p0, float p1, const float *x, float *y, int64_t n) {
    DOD_GRID_STRIDE(i, n) y[i] = act_value(kind, p0, p1, x[i]);
}
__global__ void act_backward_kernel(ActKind kind, float p0, float p1, const float *x, const float *g, float *gx,
                                    int64_t n) {
    DOD_GRID_STRIDE(i, n) gx[i] += act_grad(kind, p0, p1, x[i], g[i]);
}

void cuda_act_forward(ActKind kind, float p0, float p1, const float *x, float *y, int64_t n) {
    if (n == 0) return;
    act_forward_kernel<<<dod_grid(n, 256), 256>>>(kind, p0, p1, x, y, n);
    CUDA_CHECK_LAUNCH("act_forward_kernel");
}
void cuda_act_backward(ActKind kind, float p0, float p1, const float *x, const float *g, float *gx, int64_t n) {
    if (n == 0) return;
    act_backward_kernel<<<dod_grid(n, 256), 256>>>(kind, p0, p1, x, g, gx, n);
    CUDA_CHECK_LAUNCH("act_backward_kernel");
}

// ---- GEGLU: x [rows, 2*half] -> y [rows, half] = hidden * gelu_erf(gate) ----------------------------
__global__ void geglu_forward_kernel(const float *x, float *y, int64_t rows, int64_t half) {
    DOD_GRID_STRIDE(i, rows * half) {
        int64_t r = i / half, k = i % half;
        const float *h = x + r * 2 * half;
        y[i] = geglu_value(h[k], h[half + k]);
    }
}
__global__ void geglu_backward_kernel(const float *x, const float *g, float *gx, int64_t rows, int64_t half) {
    DOD_GRID_STRIDE(i, rows * half) {
        int64_t r = i / half, k = i % half;
        const float *h = x + r * 2 * half;
        float *gh = gx + r * 2 * half;
        gh[k] += geglu_grad_hidden(g[i], h[half + k]);
        gh[half + k] += geglu_grad_gate(g[i], h[k], h[half + k]);
    }
}
void cuda_geglu_forward(const float *x, float *y, int64_t rows, int64_t half) {
    if (rows * half == 0) return;
    geglu_forward_kernel<<<dod_grid(rows * half, 256), 256>>>(x, y, rows, half);
    CUDA_CHECK_LAUNCH("geglu_forward_kernel");
}
void cuda_geglu_backward(const float *x, const float *g, float *gx, int64_t rows, int64_t half) {
    if (rows * half == 0) return;
    geglu_backward_kernel<<<dod_grid(rows * half, 256), 256>>>(x, g, gx, rows, half);
    CUDA_CHECK_LAUNCH("geglu_backward_kernel");
}

// ---- softmax over rows: one block per row, f32 max and sum ---------------------------------------------
__global__ void softmax_forward_kernel(const float *x, float *y, int64_t rows, int64_t cols) {
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const float *xr = x + r * cols;
        float *yr = y + r * cols;
        float m = -INFINITY;
        for (int64_t k = threadIdx.x; k < cols; k += blockDim.x) m = fmaxf(m, xr[k]);
        m = dod_block_max(m);
        float s = 0.0f;
        for (int64_t k = threadIdx.x; k < cols; k += blockDim.x) {
            float e = expf(xr[k] - m);
            yr[k] = e;
            s += e;
        }
        float inv = 1.0f / dod_block_sum(s);
        for (int64_t k = threadIdx.x; k < cols; k += blockDim.x) yr[k] *= inv;
    }
}

__global__ void softmax_backward_kernel(const float *y, const float *g, float *gx, int64_t rows, int64_t cols) {
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const float *yr = y + r * cols, *gr = g + r * cols;
        float dot = 0.0f;
        for (int64_t k = threadIdx.x; k < cols; k += blockDim.x) dot += gr[k] * yr[k];
        dot = dod_block_sum(dot);
        for (int64_t k = threadIdx.x; k < cols; k += blockDim.x) gx[r * cols + k] += yr[k] * (gr[k] - dot);
    }
}

static unsigned row_blocks(int64_t rows) { return (unsigned)(rows < 65535 * 16 ? (rows > 0 ? rows : 1) : 65535 * 16); }

void cuda_softmax_forward(const float *x, float *y, int64_t rows, int64_t cols) {
    if (rows * cols == 0) return;
    softmax_forward_kernel<<<row_blocks(rows), 256>>>(x, y, rows, cols);
    CUDA_CHECK_LAUNCH("softmax_forward_kernel");
}
void cuda_softmax_backward(const float *y, const float *g, float *gx, int64_t rows, int64_t cols) {
    if (rows * cols == 0) return;
    softmax_backward_kernel<<<row_blocks(rows), 256>>>(y, g, gx, rows, cols);
    CUDA_CHECK_LAUNCH("softmax_backward_kernel");
}
