// The CUDA backend's C-callable surface: device discovery, device memory (a per-step arena and a
// caching allocator for persistent tensors), host<->device copies, the precision switch, and the
// kernel entry points the ops in autograd/op_*.c dispatch to for DEV_CUDA tensors.
//
// Plain C. When the library is built without nvcc (DOD_HAVE_CUDA undefined) every function here is
// a static inline stub: dod_cuda_available() returns false with a reason, and anything that would
// touch device memory fails with "built without CUDA" naming the call. Nothing can put a tensor on
// DEV_CUDA in such a build, so the op kernels below are unreachable there.
#pragma once
#include "autograd/tensor.h"

// Precision of the CUDA compute paths. DOD_PREC_F32: every GEMM/convolution in f32 with TF32
// disabled (parity tests). DOD_PREC_MIXED: half-precision (bf16/f16) weights are read as-is by
// cuBLAS/cuDNN with the activations cast to the same type, f32 accumulation and f32 outputs.
typedef enum { DOD_PREC_F32 = 0, DOD_PREC_MIXED = 1 } DodPrecision;

// Every header of CUDA entry points (this one, cuda_ops.h, cuda_optim.h) declares them
// with DOD_CUDA_API between DOD_CUDA_API_BEGIN and DOD_CUDA_API_END: C linkage, and without CUDA
// each entry becomes a stub that fails naming the call (its parameters unused, hence the pragma).
#ifdef __cplusplus
#define DOD_EXTERN_C_BEGIN extern "C" {
#define DOD_EXTERN_C_END }
#else
#define DOD_EXTERN_C_BEGIN
#define DOD_EXTERN_C_END
#endif
#ifdef DOD_HAVE_CUDA
#define DOD_CUDA_API(ret, name, args) ret name args;
#define DOD_CUDA_API_BEGIN DOD_EXTERN_C_BEGIN
#define DOD_CUDA_API_END DOD_EXTERN_C_END
#else
static inline __attribute__((noreturn)) void dod_cuda_missing(const char *call) {
    dod_fatal(call, "this build has no CUDA backend (nvcc was not found at configure time)");
}
#define DOD_CUDA_API(ret, name, args) \
    static inline ret name args { dod_cuda_missing(#name); }
#define DOD_CUDA_API_BEGIN \
    _Pragma("GCC diagnostic push") _Pragma("GCC diagnostic ignored \"-Wunused-parameter\"") DOD_EXTERN_C_BEGIN
#define DOD_CUDA_API_END DOD_EXTERN_C_END _Pragma("GCC diagnostic pop")
#endif

DOD_CUDA_API_BEGIN

#ifdef DOD_HAVE_CUDA
// True when a CUDA device can be used. Never aborts: no driver, no device or a broken runtime all
// give false, with the reason in dod_cuda_unavailable_reason(). The result is cached.
bool dod_cuda_available(void);
const char *dod_cuda_unavailable_reason(void);  // "" when available
#else
static inline bool dod_cuda_available(void) { return false; }
static inline const char *dod_cuda_unavailable_reason(void) { return "this build has no CUDA (nvcc was not found)"; }
#endif

// Name of the current device (0 unless cudaSetDevice chose another before the first probe) (after
// dod_cuda_available() said true).
DOD_CUDA_API(const char *, dod_cuda_device_name, (void))
DOD_CUDA_API(void, dod_cuda_synchronize, (const char *where))
DOD_CUDA_API(void, dod_cuda_set_precision, (DodPrecision p))
DOD_CUDA_API(DodPrecision, dod_cuda_precision, (void))

// ---- device arena: activations, reset once per step (ag_step_reset -> arena_reset) ------------
// 256-byte aligned, uninitialised / zeroed. Blocks are cudaMalloc'ed once and reused across steps.
DOD_CUDA_API(void *, cuda_arena_alloc, (size_t bytes, const char *what))
DOD_CUDA_API(void *, cuda_arena_calloc, (size_t bytes, const char *what))
DOD_CUDA_API(size_t, cuda_arena_mark, (void))
DOD_CUDA_API(void, cuda_arena_release, (size_t mark))
DOD_CUDA_API(void, cuda_arena_reset, (void))

// ---- caching allocator: persistent tensors and their gradients ----------------------------------
// A freed block is kept and handed out again for a request of at most its size and at least half
// of it, so steady-state training performs no cudaMalloc.
DOD_CUDA_API(void *, cuda_malloc_cached, (size_t bytes, const char *what))
DOD_CUDA_API(void, cuda_free_cached, (void *ptr))

// ---- memory report -------------------------------------------------------------------------------
typedef struct {
    size_t reserved_bytes;       // held from cudaMalloc now (arena blocks + cache, used or free)
    size_t peak_reserved_bytes;  // high-water mark of reserved_bytes
    size_t arena_peak_bytes;     // most arena bytes in use at once
    size_t cached_in_use_bytes;  // caching-allocator blocks live now (persistent tensors, activation gradients)
    size_t cached_peak_bytes;    // high-water mark of cached_in_use_bytes
    long n_cuda_malloc;          // cudaMalloc calls so far (constant in steady state)
} DodCudaMemStats;
DOD_CUDA_API(DodCudaMemStats, dod_cuda_mem_stats, (void))
// One line: "<label>: cuda memory peak reserved X GiB (arena peak A GiB, cache peak C GiB), N cudaMalloc calls".
DOD_CUDA_API(void, dod_cuda_print_mem_report, (const char *label))

// ---- copies and small kernels (all on the default stream, the compute stream) -------------------
// Host to device (=), without making the host wait: src is copied into pinned staging memory first
// (upload.cu, autograd/staging_ring.h), so it may be reused at once, and the device copies from there
// in stream order. Copies of 16 MiB and more (weights at load time) go directly and wait.
DOD_CUDA_API(void, cuda_copy_h2d, (void *dst, const void *src, size_t bytes))
DOD_CUDA_API(void, cuda_copy_d2h, (void *dst, const void *src, size_t bytes))
DOD_CUDA_API(void, cuda_copy_d2d, (void *dst, const void *src, size_t bytes))
DOD_CUDA_API(void, cuda_memset_zero, (void *dst, size_t bytes))
// dst[i] = (float)src[i] for f16/bf16/f32 src (writes =).
DOD_CUDA_API(void, cuda_widen_f32, (const void *src, DType dtype, float *dst, int64_t n))
// dst[i] += (float)src[i] for f16/bf16 src (accumulates).
DOD_CUDA_API(void, cuda_widen_add_f32, (const void *src, DType dtype, float *dst, int64_t n))
// dst[i] = half(src[i]) rounded to nearest even, dtype f16 or bf16 (writes =).
DOD_CUDA_API(void, cuda_narrow_f32, (const float *src, DType dtype, void *dst, int64_t n))
// dst[i] += scale * src[i] (accumulates); src may be NULL meaning all ones.
DOD_CUDA_API(void, cuda_axpy, (float *dst, const float *src, float scale, int64_t n))
// dst[0] += (double)src[0]: a device scalar into a device double (autograd/device_scalars.h; reduce.cu).
DOD_CUDA_API(void, cuda_scalar_add_f64, (double *dst, const float *src))

// ---- the upload stream: host-to-device copies beside the compute stream (train/batch_feed.c) ----
// dst = src (bytes) on the upload stream, a non-blocking side stream: queued after the work on the
// compute stream so far (which may still read dst), staged like cuda_copy_h2d, so src may be reused at
// once and the host does not wait.
DOD_CUDA_API(void, cuda_upload_async, (void *dst, const void *src, size_t bytes))
// The compute stream waits (on the device, an event; the host does not) for the uploads started so far.
DOD_CUDA_API(void, cuda_wait_uploads, (void))

DOD_CUDA_API_END
