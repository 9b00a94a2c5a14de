// Device discovery, error reporting, library handles, the device activation arena, the caching
// allocator for persistent tensors, the memory report, copies and the small conversion kernels.
#include "autograd/cuda/device.h"

extern "C" {
#include "autograd/block_cache.h"
}

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// ---- errors ---------------------------------------------------------------------------------------
void dod_cuda_fail(const char *file, int line, const char *call, const char *status, const char *text) {
    dod_fatal("cuda", "%s:%d: %s failed: %s (%s)", file, line, call, status ? status : "?", text ? text : "?");
}

// ---- discovery ------------------------------------------------------------------------------------
static int available = -1;  // -1: not probed yet
static char unavailable_reason[256];
static char device_name[320];

bool dod_cuda_available(void) {
    if (available >= 0) return available == 1;
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) {
        // No driver, no device, or a driver older than the runtime: all are "not available".
        snprintf(unavailable_reason, sizeof unavailable_reason, "cudaGetDeviceCount: %s (%s)", cudaGetErrorName(err),
                 cudaGetErrorString(err));
        cudaGetLastError();  // clear the sticky-free error so later probes start clean
        available = 0;
        return false;
    }
    if (count == 0) {
        snprintf(unavailable_reason, sizeof unavailable_reason, "cudaGetDeviceCount reports 0 devices");
        available = 0;
        return false;
    }
    // The current device: 0, or the one a data-parallel process selected (train/comm_nccl.c).
    int dev = 0;
    cudaGetDevice(&dev);
    cudaDeviceProp prop;
    err = cudaGetDeviceProperties(&prop, dev);
    if (err != cudaSuccess) {
        snprintf(unavailable_reason, sizeof unavailable_reason, "cudaGetDeviceProperties: %s", cudaGetErrorString(err));
        cudaGetLastError();
        available = 0;
        return false;
    }
    snprintf(device_name, sizeof device_name, "%.200s (cuda:%d, sm_%d%d, %.1f GiB)", prop.name, dev, prop.major,
             prop.minor, prop.totalGlobalMem / (1024.0 * 1024.0 * 1024.0));
    unavailable_reason[0] = 0;
    available = 1;
    return true;
}

const char *dod_cuda_unavailable_reason(void) {
    dod_cuda_available();
    return unavailable_reason;
}

void dod_cuda_require(const char *where) {
    if (!dod_cuda_available()) dod_fatal(where, "no usable CUDA device: %s", unavailable_reason);
}

const char *dod_cuda_device_name(void) {
    dod_cuda_require("dod_cuda_device_name");
    return device_name;
}

void dod_cuda_synchronize(const char *where) {
    cudaError_t err = cudaDeviceSynchronize();
    if (err != cudaSuccess)
        dod_fatal(where ? where : "dod_cuda_synchronize", "asynchronous CUDA error: %s (%s)", cudaGetErrorName(err),
                  cudaGetErrorString(err));
}

static DodPrecision precision = DOD_PREC_F32;
void dod_cuda_set_precision(DodPrecision p) { precision = p; }
DodPrecision dod_cuda_precision(void) { return precision; }

// ---- handles --------------------------------------------------------------------------------------
static cublasHandle_t cublas_handle;
static cublasLtHandle_t cublaslt_handle;

cublasHandle_t dod_cublas(void) {
    if (!cublas_handle) {
        dod_cuda_require("dod_cublas");
        CUBLAS_CHECK(cublasCreate(&cublas_handle));
        // Default math: no TF32 unless asked for, so f32 GEMMs match the CPU closely.
        CUBLAS_CHECK(cublasSetMathMode(cublas_handle, CUBLAS_DEFAULT_MATH));
    }
    return cublas_handle;
}

cublasLtHandle_t dod_cublaslt(void) {
    if (!cublaslt_handle) {
        dod_cuda_require("dod_cublaslt");
        CUBLAS_CHECK(cublasLtCreate(&cublaslt_handle));
    }
    return cublaslt_handle;
}

#ifdef DOD_HAVE_CUDNN
static cudnnHandle_t cudnn_handle;
cudnnHandle_t dod_cudnn(void) {
    if (!cudnn_handle) {
        dod_cuda_require("dod_cudnn");
        CUDNN_CHECK(cudnnCreate(&cudnn_handle));
    }
    return cudnn_handle;
}
#endif

// ---- raw allocation with accounting ----------------------------------------------------------------
static DodCudaMemStats stats;

// cudaMalloc, counted in the memory stats; fails naming `what` with the free/reserved picture.
static void *cuda_malloc_counted(size_t bytes, const char *what) {
    dod_cuda_require(what);
    void *p = NULL;
    cudaError_t err = cudaMalloc(&p, bytes ? bytes : 256);
    if (err != cudaSuccess) {
        cudaGetLastError();
        size_t free_b = 0, total_b = 0;
        cudaMemGetInfo(&free_b, &total_b);
        dod_fatal("cuda out of memory", "cudaMalloc of %zu bytes (%.2f GiB) for %s failed: %s; %.2f GiB free of %.2f, "
                  "%.2f GiB reserved by dod", bytes, bytes / 1073741824.0, what, cudaGetErrorString(err),
                  free_b / 1073741824.0, total_b / 1073741824.0, stats.reserved_bytes / 1073741824.0);
    }
    stats.n_cuda_malloc++;
    stats.reserved_bytes += bytes;
    if (stats.reserved_bytes > stats.peak_reserved_bytes) stats.peak_reserved_bytes = stats.reserved_bytes;
    return p;
}

// ---- device arena ---------------------------------------------------------------------------------
// Blocks in a fixed order; a mark is (bytes in all earlier blocks) + used, so marks grow monotonically
// within a step. A request that fits no later block gets a new block appended at the end, as big as
// all blocks so far (256 MiB to 2 GiB, or the request if bigger): a request that does not fit the
// current block's tail leaves that tail unused until the reset, and fixed 256 MiB blocks ran out
// (256 of them) on a batch of 7 256x256 crops whose VAE activations are 224 MiB each.
#define DEV_ARENA_BLOCK_MIN ((size_t)256 << 20)
#define DEV_ARENA_BLOCK_MAX ((size_t)2 << 30)
#define DEV_ARENA_MAX_BLOCKS 256
typedef struct {
    char *mem;
    size_t size;
} DevBlock;
static DevBlock dev_blocks[DEV_ARENA_MAX_BLOCKS];
static int dev_n_blocks, dev_cur;
static size_t dev_used;  // bytes used in dev_blocks[dev_cur]

static size_t dev_block_base(int i) {
    size_t base = 0;
    for (int j = 0; j < i; j++) base += dev_blocks[j].size;
    return base;
}

void *cuda_arena_alloc(size_t bytes, const char *what) {
    bytes = (bytes + 255) & ~(size_t)255;
    if (dev_n_blocks == 0 || dev_used + bytes > dev_blocks[dev_cur].size) {
        int next = dev_n_blocks == 0 ? -1 : dev_cur + 1;
        while (next >= 0 && next < dev_n_blocks && dev_blocks[next].size < bytes) next++;
        if (next < 0 || next >= dev_n_blocks) {
            DOD_CHECK(dev_n_blocks < DEV_ARENA_MAX_BLOCKS, "cuda_arena_alloc", "more than %d device arena blocks (%s)",
                      DEV_ARENA_MAX_BLOCKS, what);
            size_t size = arena_grow_size(dev_block_base(dev_n_blocks), bytes, DEV_ARENA_BLOCK_MIN, DEV_ARENA_BLOCK_MAX);
            dev_blocks[dev_n_blocks].mem = (char *)cuda_malloc_counted(size, what);
            dev_blocks[dev_n_blocks].size = size;
            next = dev_n_blocks++;
        }
        dev_cur = next;
        dev_used = 0;
    }
    void *p = dev_blocks[dev_cur].mem + dev_used;
    dev_used += bytes;
    size_t in_use = dev_block_base(dev_cur) + dev_used;
    if (in_use > stats.arena_peak_bytes) stats.arena_peak_bytes = in_use;
    return p;
}

void *cuda_arena_calloc(size_t bytes, const char *what) {
    void *p = cuda_arena_alloc(bytes, what);
    CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, 0));
    return p;
}

size_t cuda_arena_mark(void) { return dev_n_blocks ? dev_block_base(dev_cur) + dev_used : 0; }

void cuda_arena_release(size_t mark) {
    size_t base = 0;
    for (int i = 0; i < dev_n_blocks; i++) {
        if (mark <= base + dev_blocks[i].size) {
            dev_cur = i;
            dev_used = mark - base;
            return;
        }
        base += dev_blocks[i].size;
    }
}

void cuda_arena_reset(void) {
    dev_cur = 0;
    dev_used = 0;
}

// ---- caching allocator ----------------------------------------------------------------------------
// Persistent tensors, parked block outputs and activation gradients (tensor_grad; freed during
// backward) through the generic block cache over cudaMalloc (autograd/block_cache.c).
static void *cuda_malloc_raw(size_t bytes, const char *what) {
    return cuda_malloc_counted(bytes, what ? what : "persistent device tensor");
}
static BlockCache device_cache_new(void) {
    BlockCache c;
    memset(&c, 0, sizeof c);
    c.raw_alloc = cuda_malloc_raw;
    c.align = 512;
    return c;
}
static BlockCache device_cache = device_cache_new();

void *cuda_malloc_cached(size_t bytes, const char *what) {
    void *p = block_cache_alloc(&device_cache, bytes, what);
    stats.cached_in_use_bytes = device_cache.in_use_bytes;
    stats.cached_peak_bytes = device_cache.peak_bytes;
    return p;
}

void cuda_free_cached(void *ptr) {
    block_cache_free(&device_cache, ptr, "cuda_free_cached");
    stats.cached_in_use_bytes = device_cache.in_use_bytes;
}

DodCudaMemStats dod_cuda_mem_stats(void) { return stats; }

void dod_cuda_print_mem_report(const char *label) {
    const double gib = 1073741824.0;
    printf("%s: cuda memory peak reserved %.3f GiB (arena peak %.3f GiB, cache peak %.3f GiB), "
           "%ld cudaMalloc calls\n", label ? label : "dod", stats.peak_reserved_bytes / gib,
           stats.arena_peak_bytes / gib, stats.cached_peak_bytes / gib, stats.n_cuda_malloc);
}

// ---- copies ---------------------------------------------------------------------------------------
// cuda_copy_h2d and the upload stream: upload.cu.
void cuda_copy_d2h(void *dst, const void *src, size_t bytes) {
    if (bytes) CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
}
void cuda_copy_d2d(void *dst, const void *src, size_t bytes) {
    if (bytes) CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, 0));
}
void cuda_memset_zero(void *dst, size_t bytes) {
    if (bytes) CUDA_CHECK(cudaMemsetAsync(dst, 0, bytes, 0));
}

// ---- conversion kernels -----------------------------------------------------------------------------
__device__ __forceinline__ float bf16_bits_to_f32(uint16_t h) { return __uint_as_float((uint32_t)h << 16); }

// dst = (accumulate ? dst : 0) + widened src.
__global__ void widen_kernel(const uint16_t *src, int is_bf16, float *dst, int64_t n, int accumulate) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        float v = is_bf16 ? bf16_bits_to_f32(src[i]) : __half2float(__ushort_as_half(src[i]));
        dst[i] = accumulate ? dst[i] + v : v;
    }
}

__global__ void narrow_kernel(const float *src, int is_bf16, uint16_t *dst, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        dst[i] = is_bf16 ? __bfloat16_as_ushort(__float2bfloat16_rn(src[i])) : __half_as_ushort(__float2half_rn(src[i]));
}

__global__ void axpy_kernel(float *dst, const float *src, float scale, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        dst[i] += scale * (src ? src[i] : 1.0f);
}

void cuda_widen_f32(const void *src, DType dtype, float *dst, int64_t n) {
    if (n == 0) return;
    if (dtype == DT_F32) {
        cuda_copy_d2d(dst, src, (size_t)n * 4);
        return;
    }
    DOD_CHECK(dtype == DT_BF16 || dtype == DT_F16, "cuda_widen_f32", "dtype %s has no float view", dtype_name(dtype));
    widen_kernel<<<dod_grid(n, 256), 256>>>((const uint16_t *)src, dtype == DT_BF16, dst, n, 0);
    CUDA_CHECK_LAUNCH("widen_kernel");
}

void cuda_widen_add_f32(const void *src, DType dtype, float *dst, int64_t n) {
    DOD_CHECK(dtype == DT_BF16 || dtype == DT_F16, "cuda_widen_add_f32", "dtype %s is not a half type",
              dtype_name(dtype));
    if (n == 0) return;
    widen_kernel<<<dod_grid(n, 256), 256>>>((const uint16_t *)src, dtype == DT_BF16, dst, n, 1);
    CUDA_CHECK_LAUNCH("widen_kernel (accumulate)");
}

void cuda_narrow_f32(const float *src, DType dtype, void *dst, int64_t n) {
    DOD_CHECK(dtype == DT_BF16 || dtype == DT_F16, "cuda_narrow_f32", "dtype %s is not a half type", dtype_name(dtype));
    if (n == 0) return;
    narrow_kernel<<<dod_grid(n, 256), 256>>>(src, dtype == DT_BF16, (uint16_t *)dst, n);
    CUDA_CHECK_LAUNCH("narrow_kernel");
}

void cuda_axpy(float *dst, const float *src, float scale, int64_t n) {
    if (n == 0) return;
    axpy_kernel<<<dod_grid(n, 256), 256>>>(dst, src, scale, n);
    CUDA_CHECK_LAUNCH("axpy_kernel");
}
