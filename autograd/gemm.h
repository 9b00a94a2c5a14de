// The one CPU GEMM entry point used by every dense op.
//
//     C = alpha * op(A) @ op(B) + beta * C        (row-major; op(X) = X or X^T)
//
// op(A) is [M, K], op(B) is [K, N], C is [M, N]. lda/ldb/ldc are row strides in elements, so a
// head of an interleaved [L, H*D] tensor is addressed as (ptr + h*D, ld = H*D) without a copy.
// beta == 0 writes C (= , old contents ignored, even NaN); beta == 1 accumulates (+=).
//
// gemm_f32 calls OpenBLAS cblas_sgemm when the build found it (DOD_HAVE_OPENBLAS), else the
// portable cache-blocked OpenMP kernel gemm_f32_portable, which is always compiled so tests can
// check both paths.
// Threading: OpenMP is the only thread pool. OpenBLAS is switched to one thread and a large GEMM
// is split into one OpenBLAS call per OpenMP thread (see gemm.c for why). Called from inside an
// OpenMP parallel region, gemm_f32 runs on the calling thread only, so it is safe there.
#pragma once
#include <stdbool.h>
#include <stdint.h>

void gemm_f32(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
              int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc);

// The fallback used when OpenBLAS is absent (same contract as gemm_f32).
void gemm_f32_portable(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                       const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                       int64_t ldc);

// "openblas" or "portable": which kernel gemm_f32 uses in this build.
const char *gemm_backend_name(void);
// OpenMP threads used by the GEMMs and the ops (benchmarks only; tests and tools keep the default,
// OMP_NUM_THREADS or one per core).
void gemm_set_threads(int n);
// Floating-point operations (2*M*N*K per call) issued through gemm_f32 since start (atomic
// counter): lets tests check that a frozen weight's gradient GEMMs were skipped.
uint64_t gemm_flop_count(void);
