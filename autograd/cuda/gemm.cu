// Row-major GEMM through cuBLAS (f32, or bf16/f16 inputs with f32 accumulation and f32 output),
// op_linear's forward with the bias fused into one cuBLASLt call (CUBLASLT_EPILOGUE_BIAS), and the
// bias helpers of op_linear. A row-major C = op(A) op(B) is the column-major C^T = op(B)^T op(A)^T,
// so the operands are passed to cuBLAS swapped.
#include "autograd/cuda/device.h"

#include <limits.h>
#include <stdint.h>
#include <string.h>

// f32 operands get exact f32 products unless mixed precision allows TF32 tensor cores; half operands
// are multiplied with f32 accumulation (cuda_gemm and the cuBLASLt linear alike).
static cublasComputeType_t gemm_compute_type(DType ab_type, int precision) {
    return ab_type == DT_F32 && precision == DOD_PREC_MIXED ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
}

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
    cublasComputeType_t compute = gemm_compute_type(ab_type, (int)dod_cuda_precision());
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

// ---- op_linear forward: y = x w^T + bias in one cuBLASLt call ---------------------------------------
// Row-major x [rows, in], w [out, in], y [rows, out] seen column-major (what cuBLASLt reads):
//   w is W' [in, out] (ld in), taken transposed: op(A) = W'^T = w [out, in]   (m = out, k = in)
//   x is X' [in, rows] (ld in), taken as is:     op(B) = X' = x^T [in, rows]   (n = rows)
//   D = op(A) op(B) = w x^T = (x w^T)^T [out, rows] (ld out), which is row-major y.
// CUBLASLT_EPILOGUE_BIAS adds a vector of length m (D's row count, = out) to every column of D, so
// bias[i] lands on D[i, r] = y[r, i]: one bias value per output feature, as op_linear wants. The
// bias has D's type (f32; CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE left at its default).
//
// The descriptors, layouts and the heuristic's algorithm are built once per (rows, in, out, operand
// type, precision, pointer alignments) and cached. The heuristic assumes 256-byte aligned buffers
// unless told otherwise and reads the bias pointer's value for its alignment, so the alignment of
// each pointer (capped at 256) is part of the key and is passed as the preference's minimum: a plan
// never runs an algorithm on a buffer less aligned than it was chosen for.
#define LINEAR_PLAN_MAX 512
#define LINEAR_WORKSPACE_BYTES ((uint64_t)32 << 20)  // the size NVIDIA recommends for Hopper

typedef struct {
    int64_t rows, in, out;
    DType ab_type;     // of x and w: DT_F32, DT_BF16 or DT_F16
    int precision;     // DodPrecision when the plan was made (f32 operands: TF32 or not)
    unsigned align[4];  // byte alignment of x, w, y, bias (powers of two, at most 256)
    bool has_algo;      // false: the heuristic offered nothing, the fallback runs
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t w_layout, x_layout, y_layout;
    cublasLtMatmulAlgo_t algo;
    size_t workspace;  // bytes the algorithm needs (<= LINEAR_WORKSPACE_BYTES)
} LinearPlan;

static LinearPlan linear_plans[LINEAR_PLAN_MAX];
static int n_linear_plans;
static int linear_epilogue_on = -1;  // -1: DOD_LINEAR_EPILOGUE not read yet (default on; "0": off)
static long linear_epilogue_calls, linear_fallback_calls;

void cuda_set_linear_bias_epilogue(bool on) { linear_epilogue_on = on; }
static bool linear_epilogue_enabled(void) {
    if (linear_epilogue_on < 0) linear_epilogue_on = dod_env_flag("DOD_LINEAR_EPILOGUE", true);
    return linear_epilogue_on;
}
long cuda_linear_bias_epilogue_calls(void) { return linear_epilogue_calls; }
long cuda_linear_bias_fallback_calls(void) { return linear_fallback_calls; }

static unsigned ptr_alignment(const void *p) {
    uintptr_t a = (uintptr_t)p;
    unsigned align = 256;
    while (align > 1 && (a & (align - 1))) align >>= 1;
    return align;
}

static LinearPlan *linear_plan(const unsigned *align, int64_t rows, int64_t in, int64_t out, DType ab_type,
                               const float *bias) {
    int prec = (int)dod_cuda_precision();
    for (int i = 0; i < n_linear_plans; i++) {
        LinearPlan *p = &linear_plans[i];
        if (p->rows == rows && p->in == in && p->out == out && p->ab_type == ab_type && p->precision == prec &&
            memcmp(p->align, align, sizeof p->align) == 0)
            return p;
    }
    DOD_CHECK(n_linear_plans < LINEAR_PLAN_MAX, "op_linear", "more than %d distinct linear shapes on CUDA",
              LINEAR_PLAN_MAX);
    LinearPlan *p = &linear_plans[n_linear_plans++];
    p->rows = rows;
    p->in = in;
    p->out = out;
    p->ab_type = ab_type;
    p->precision = prec;
    memcpy(p->align, align, sizeof p->align);
    cublasComputeType_t compute = gemm_compute_type(ab_type, prec);
    CUBLAS_CHECK(cublasLtMatmulDescCreate(&p->desc, compute, CUDA_R_32F));
    cublasOperation_t trans_w = CUBLAS_OP_T, trans_x = CUBLAS_OP_N;
    cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &trans_w, sizeof trans_w));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &trans_x, sizeof trans_x));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof epilogue));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
    cudaDataType_t t = cuda_type(ab_type);
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->w_layout, t, (uint64_t)in, (uint64_t)out, in));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->x_layout, t, (uint64_t)in, (uint64_t)rows, in));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->y_layout, CUDA_R_32F, (uint64_t)out, (uint64_t)rows, out));

    cublasLtMatmulPreference_t pref;
    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    uint64_t max_ws = LINEAR_WORKSPACE_BYTES;
    uint32_t align_x = align[0], align_w = align[1], align_y = align[2];
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &max_ws,
                                                      sizeof max_ws));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align_w,
                                                      sizeof align_w));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align_x,
                                                      sizeof align_x));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align_y,
                                                      sizeof align_y));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align_y,
                                                      sizeof align_y));
    // C is y itself (beta 0: never read), so C and D share one layout.
    cublasLtMatmulHeuristicResult_t result;
    memset(&result, 0, sizeof result);
    int count = 0;
    cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(dod_cublaslt(), p->desc, p->w_layout, p->x_layout, p->y_layout,
                                                       p->y_layout, pref, 1, &result, &count);
    // NOT_SUPPORTED means "no algorithm for this configuration": the fallback's case, not an error.
    if (st != CUBLAS_STATUS_SUCCESS && st != CUBLAS_STATUS_NOT_SUPPORTED)
        dod_cuda_fail(__FILE__, __LINE__, "cublasLtMatmulAlgoGetHeuristic", cublasGetStatusName(st),
                      cublasGetStatusString(st));
    p->has_algo = st == CUBLAS_STATUS_SUCCESS && count > 0 && result.state == CUBLAS_STATUS_SUCCESS &&
                  result.workspaceSize <= LINEAR_WORKSPACE_BYTES;
    if (p->has_algo) {
        p->algo = result.algo;
        p->workspace = result.workspaceSize;
    }
    CUBLAS_CHECK(cublasLtMatmulPreferenceDestroy(pref));
    return p;
}

// The unfused forward: rows set to the bias, then the GEMM adds x w^T (beta 1).
static void linear_bias_unfused(const void *x, const void *w, const float *bias, float *y, int64_t rows, int64_t in,
                                int64_t out, DType ab_type) {
    cuda_rows_set(y, bias, rows, out);
    cuda_gemm(false, true, rows, out, in, 1.0f, x, in, 0, w, in, 0, 1.0f, y, out, 0, 1, ab_type);
}

void cuda_linear_bias_forward(const void *x, const void *w, const float *bias, float *y, int64_t rows, int64_t in,
                              int64_t out, DType ab_type) {
    DOD_CHECK(bias != NULL, "cuda_linear_bias_forward", "needs a bias (use cuda_gemm without one)");
    if (rows == 0 || out == 0) return;
    DOD_CHECK(rows < INT_MAX && in < INT_MAX && out < INT_MAX, "cuda_linear_bias_forward",
              "linear [%ld x %ld] -> %ld exceeds cuBLAS's int sizes", (long)rows, (long)in, (long)out);
    if (!linear_epilogue_enabled() || in == 0) {  // in == 0: y is the bias alone
        linear_bias_unfused(x, w, bias, y, rows, in, out, ab_type);
        return;
    }
    // cuBLASLt's heuristic has answered INVALID_VALUE for GEMMs with a dimension of 1 (PyTorch keeps
    // such shapes off its bias epilogue for that reason): they take the unfused path.
    unsigned align[4] = {ptr_alignment(x), ptr_alignment(w), ptr_alignment(y), ptr_alignment(bias)};
    LinearPlan *p = rows > 1 && in > 1 && out > 1 ? linear_plan(align, rows, in, out, ab_type, bias) : NULL;
    if (!p || !p->has_algo) {
        linear_fallback_calls++;
        linear_bias_unfused(x, w, bias, y, rows, in, out, ab_type);
        return;
    }
    // The bias pointer lives in the cached descriptor: point it at this call's bias (same alignment).
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
    size_t mark = cuda_arena_mark();
    void *ws = p->workspace ? cuda_arena_alloc(p->workspace, "cuBLASLt linear workspace") : NULL;
    const float alpha = 1.0f, beta = 0.0f;
    CUBLAS_CHECK(cublasLtMatmul(dod_cublaslt(), p->desc, &alpha, w, p->w_layout, x, p->x_layout, &beta, y, p->y_layout,
                                y, p->y_layout, &p->algo, ws, p->workspace, 0));
    cuda_arena_release(mark);  // stream order keeps the workspace valid for the matmul
    linear_epilogue_calls++;
}
