// Activations, GEGLU and row softmax (f32 throughout). Formulas match op_activation.c.
#include "autograd/cuda/device.h"

enum { K_SILU, K_GELU_ERF, K_GELU_TANH, K_RELU, K_LEAKY, K_CLAMP, K_QUICK_GELU };  // = ActKind in op_activation.c

#define SQRT_2_OVER_PI 0.7978845608028654f
#define INV_SQRT_2 0.7071067811865476f
#define INV_SQRT_2PI 0.3989422804014327f
#define GELU_TANH_C 0.044715f
#define QUICK_GELU_C 1.702f

__device__ __forceinline__ float d_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }
__device__ __forceinline__ float d_gelu_erf(float x) { return 0.5f * x * (1.0f + erff(x * INV_SQRT_2)); }
__device__ __forceinline__ float d_gelu_erf_grad(float x) {
    return 0.5f * (1.0f + erff(x * INV_SQRT_2)) + x * INV_SQRT_2PI * expf(-0.5f * x * x);
}

__device__ __forceinline__ float act_value(int kind, float p0, float p1, float x) {
    switch (kind) {
    case K_SILU: return x * d_sigmoid(x);
    case K_GELU_ERF: return d_gelu_erf(x);
    case K_GELU_TANH: return 0.5f * x * (1.0f + tanhf(SQRT_2_OVER_PI * (x + GELU_TANH_C * x * x * x)));
    case K_RELU: return x > 0.0f ? x : 0.0f;
    case K_LEAKY: return x > 0.0f ? x : p0 * x;
    case K_QUICK_GELU: return x * d_sigmoid(QUICK_GELU_C * x);
    default: return x < p0 ? p0 : (x > p1 ? p1 : x);
    }
}

__device__ __forceinline__ float act_grad(int kind, float p0, float p1, float x, float g) {
    switch (kind) {
    case K_SILU: {
        float s = d_sigmoid(x);
        return g * s * (1.0f + x * (1.0f - s));
    }
    case K_GELU_ERF: return g * d_gelu_erf_grad(x);
    case K_GELU_TANH: {
        float t = tanhf(SQRT_2_OVER_PI * (x + GELU_TANH_C * x * x * x));
        return g * (0.5f * (1.0f + t) +
                    0.5f * x * (1.0f - t * t) * SQRT_2_OVER_PI * (1.0f + 3.0f * GELU_TANH_C * x * x));
    }
    case K_RELU: return x > 0.0f ? g : 0.0f;
    case K_LEAKY: return x > 0.0f ? g : p0 * g;
    case K_QUICK_GELU: {
        float s = d_sigmoid(QUICK_GELU_C * x);
        return g * (s + QUICK_GELU_C * x * s * (1.0f - s));
    }
    default: return (x >= p0 && x <= p1) ? g : 0.0f;
    }
}

__global__ void act_forward_kernel(int kind, float p0, float p1, const float *x, float *y, int64_t n) {
    DOD_GRID_STRIDE(i, n) y[i] = act_value(kind, p0, p1, x[i]);
}
__global__ void act_backward_kernel(int kind, float p0, float p1, const float *x, const float *g, float *gx, int64_t n) {
    DOD_GRID_STRIDE(i, n) gx[i] += act_grad(kind, p0, p1, x[i], g[i]);
}

void cuda_act_forward(int kind, float p0, float p1, const float *x, float *y, int64_t n) {
    if (n == 0) return;
    act_forward_kernel<<<dod_grid(n, 256), 256>>>(kind, p0, p1, x, y, n);
    CUDA_CHECK_LAUNCH("act_forward_kernel");
}
void cuda_act_backward(int kind, float p0, float p1, const float *x, const float *g, float *gx, int64_t n) {
    if (n == 0) return;
    act_backward_kernel<<<dod_grid(n, 256), 256>>>(kind, p0, p1, x, g, gx, n);
    CUDA_CHECK_LAUNCH("act_backward_kernel");
}

// ---- GEGLU: x [rows, 2*half] -> y [rows, half] = hidden * gelu_erf(gate) ----------------------------
__global__ void geglu_forward_kernel(const float *x, float *y, int64_t rows, int64_t half) {
    DOD_GRID_STRIDE(i, rows * half) {
        int64_t r = i / half, k = i % half;
        const float *h = x + r * 2 * half;
        y[i] = h[k] * d_gelu_erf(h[half + k]);
    }
}
__global__ void geglu_backward_kernel(const float *x, const float *g, float *gx, int64_t rows, int64_t half) {
    DOD_GRID_STRIDE(i, rows * half) {
        int64_t r = i / half, k = i % half;
        const float *h = x + r * 2 * half;
        float *gh = gx + r * 2 * half;
        gh[k] += g[i] * d_gelu_erf(h[half + k]);
        gh[half + k] += g[i] * h[k] * d_gelu_erf_grad(h[half + k]);
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
