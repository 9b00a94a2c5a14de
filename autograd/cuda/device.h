// Internal header of the CUDA backend (C++/nvcc only): error macros naming the failing call, file
// and line with the library's status text, the shared library handles, and launch helpers.
#pragma once
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#ifdef DOD_HAVE_CUDNN
#include <cudnn.h>
#endif

extern "C" {
#include "autograd/cuda/cuda_backend.h"
}

// Each macro evaluates the call once and, on failure, exits via dod_fatal with
// "<file>:<line>: <call> failed: <status name> (<status text>)".
void dod_cuda_fail(const char *file, int line, const char *call, const char *status, const char *text)
    __attribute__((noreturn));

#define CUDA_CHECK(call)                                                                        \
    do {                                                                                        \
        cudaError_t err_ = (call);                                                              \
        if (err_ != cudaSuccess)                                                                \
            dod_cuda_fail(__FILE__, __LINE__, #call, cudaGetErrorName(err_), cudaGetErrorString(err_)); \
    } while (0)
#define CUBLAS_CHECK(call)                                                                      \
    do {                                                                                        \
        cublasStatus_t st_ = (call);                                                            \
        if (st_ != CUBLAS_STATUS_SUCCESS)                                                       \
            dod_cuda_fail(__FILE__, __LINE__, #call, cublasGetStatusName(st_), cublasGetStatusString(st_)); \
    } while (0)
#ifdef DOD_HAVE_CUDNN
#define CUDNN_CHECK(call)                                                                       \
    do {                                                                                        \
        cudnnStatus_t st_ = (call);                                                             \
        if (st_ != CUDNN_STATUS_SUCCESS)                                                        \
            dod_cuda_fail(__FILE__, __LINE__, #call, "cudnnStatus", cudnnGetErrorString(st_));  \
    } while (0)
#endif
// After a kernel launch: launch-configuration errors surface here, naming the kernel.
#define CUDA_CHECK_LAUNCH(kernel_name)                                                          \
    do {                                                                                        \
        cudaError_t err_ = cudaGetLastError();                                                  \
        if (err_ != cudaSuccess)                                                                \
            dod_cuda_fail(__FILE__, __LINE__, kernel_name, cudaGetErrorName(err_), cudaGetErrorString(err_)); \
    } while (0)

// Library handles, created on first use (after dod_cuda_available()).
cublasHandle_t dod_cublas(void);
cublasLtHandle_t dod_cublaslt(void);
#ifdef DOD_HAVE_CUDNN
cudnnHandle_t dod_cudnn(void);
#endif
// Fatal unless a device is usable: every entry point that touches the device calls this first.
void dod_cuda_require(const char *where);

// Grid size for n elements at `threads` per block, capped so grid-stride loops cover the rest.
static inline unsigned dod_grid(int64_t n, int threads) {
    int64_t b = (n + threads - 1) / threads;
    if (b < 1) b = 1;
    if (b > 65535LL * 16) b = 65535LL * 16;
    return (unsigned)b;
}

#include "autograd/kernel_math.h"  // host/device code: outside the extern "C" block (cuda_ops.h includes it too)
extern "C" {
#include "autograd/cuda/cuda_ops.h"
}

// Sum of v over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the total.
template <typename T> __device__ __forceinline__ T dod_block_sum(T v) {
    __shared__ T warp_sums[32];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    __syncthreads();  // warp_sums may still be read by a previous call
    if (lane == 0) warp_sums[warp] = v;
    __syncthreads();
    T total = 0;
    for (int i = 0; i < n_warps; i++) total += warp_sums[i];
    return total;
}
template <typename T> __device__ __forceinline__ T dod_block_max(T v) {
    __shared__ T warp_max[32];
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    __syncthreads();
    if (lane == 0) warp_max[warp] = v;
    __syncthreads();
    T m = warp_max[0];
    for (int i = 1; i < n_warps; i++) m = fmaxf(m, warp_max[i]);
    return m;
}

#define DOD_GRID_STRIDE(i, n) \
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (n); i += (int64_t)gridDim.x * blockDim.x)
