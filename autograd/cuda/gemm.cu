// Row-major GEMM through cuBLAS (f32, or bf16/f16 inputs with f32 accumulation and f32 output),
// plus the bias helpers of op_linear. A row-major C = op(A) op(B) is the column-major
// C^T = op(B)^T op(A)^T, so the operands are passed to cuBLAS swapped.
#include "autograd/cuda/device.h"

#include <limits.h>

static cudaDataType_t cuda_type(DType t) {
    switch (t) {
    case DT_F32: return CUDA_R_32F;
    case DT_BF16: return CUDA_R_16BF;
    case DT_F16: return CUDA_R_16F;
    default: dod_fatal("cuda_gemm", "dtype %s cannot be a GEMM operand", dtype_name(t));
    }
}

void cuda_gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const void *A, int64_t lda,
               int64_t sa, const void *B, int64_t ldb, int64_t sb, float beta, float *C, int64_t ldc, int64_t sc,
               int64_t batch, DType ab_type) {
    if (M == 0 || N == 0 || batch == 0) return;
    DOD_CHECK(M < INT_MAX && N < INT_MAX && K < INT_MAX && lda < INT_MAX && ldb < INT_MAX && ldc < INT_MAX &&
                  batch < INT_MAX, "cuda_gemm", "GEMM [%ld x %ld x %ld] (batch %ld) exceeds cuBLAS's int sizes",
              (long)M, (long)N, (long)K, (long)batch);
    cudaDataType_t t = cuda_type(ab_type);
    // f32 operands: exact f32 products unless mixed precision allows TF32 tensor cores.
    cublasComputeType_t compute = (ab_type == DT_F32 && dod_cuda_precision() == DOD_PREC_MIXED)
                                      ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    CUBLAS_CHECK(cublasGemmStridedBatchedEx(dod_cublas(), trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                                            trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, (int)N, (int)M, (int)K, &alpha, B, t,
                                            (int)ldb, sb, A, t, (int)lda, sa, &beta, C, CUDA_R_32F, (int)ldc, sc,
                                            (int)batch, compute, CUBLAS_GEMM_DEFAULT));
}

__global__ void rows_set_kernel(float *y, const float *bias, int64_t rows, int64_t n) {
    DOD_GRID_STRIDE(i, rows * n) y[i] = bias[i % n];
}

void cuda_rows_set(float *y, const float *bias, int64_t rows, int64_t n) {
    if (rows * n == 0) return;
    rows_set_kernel<<<dod_grid(rows * n, 256), 256>>>(y, bias, rows, n);
    CUDA_CHECK_LAUNCH("rows_set_kernel");
}

// One thread per column: reads of a row are coalesced across the threads of a warp.
__global__ void column_sums_kernel(const float *g, int64_t rows, int64_t n, float *db) {
    DOD_GRID_STRIDE(j, n) {
        double acc = 0;
        for (int64_t r = 0; r < rows; r++) acc += g[r * n + j];
        db[j] += (float)acc;
    }
}

void cuda_column_sums(const float *g, int64_t rows, int64_t n, float *db) {
    if (n == 0) return;
    column_sums_kernel<<<dod_grid(n, 128), 128>>>(g, rows, n, db);
    CUDA_CHECK_LAUNCH("column_sums_kernel");
}
