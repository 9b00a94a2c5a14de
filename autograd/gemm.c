// CPU GEMM: OpenBLAS when available, else a portable cache-blocked kernel (see gemm.h).
//
// The portable kernel follows the usual Goto/BLIS structure:
//   for each chunk of at most M_CHUNK rows of C:
//     for each KC-deep slice of K:       pack op(A) rows into MR-row panels (alpha folded in)
//       for each NC-wide slice of N:     pack op(B) into NR-column panels (zero-padded)
//         for each (MC x TILE_N) tile:   MR x NR register micro-kernels accumulate into C
// Packing makes the inner loop read contiguous memory whatever the transposes and strides are.
// Work is split over OpenMP threads at the packing loops and the tile loop. With OpenBLAS,
// gemm_f32 instead splits each large GEMM into single-threaded cblas_sgemm calls, one per OpenMP
// thread (see "dispatch" below).
#include "autograd/gemm.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#ifdef DOD_HAVE_OPENBLAS
#include <cblas.h>
#endif

#include "autograd/dense_tuning.h"
#include "autograd/parallel.h"
#include "autograd/tensor.h"

static uint64_t flops_issued;
uint64_t gemm_flop_count(void) { return flops_issued; }

const char *gemm_backend_name(void) {
#ifdef DOD_HAVE_OPENBLAS
    return "openblas";
#else
    return "portable";
#endif
}

void gemm_set_threads(int n) {
#ifdef _OPENMP
    if (n >= 1) omp_set_num_threads(n);
#else
    (void)n;
#endif
}

// ---- portable kernel ----------------------------------------------------------------------------
#define MR 6
#define NR 16
#define KC 256
#define MC 96         // rows of C per tile (multiple of MR)
#define NC 2048       // columns of packed B per slice (multiple of NR)
#define TILE_N 256    // columns of C per tile (multiple of NR)
#define M_CHUNK 3072  // rows of A packed at once (bounds the packed-A buffer to M_CHUNK*KC floats)

// 8-float vectors (GCC/Clang vector extensions): one AVX register, or two SSE registers on the
// baseline ISA. The kernels are always inlined into each ISA variant of gemm_tile below.
typedef float v8f __attribute__((vector_size(32)));
#define KERNEL_INLINE static inline __attribute__((always_inline))
// Unaligned 8-float load/store (macros: a v8f argument or return value would change the ABI on the
// baseline ISA, which GCC warns about).
#define LOAD8(dst, p) memcpy(&(dst), (p), sizeof(v8f))
#define STORE8(p, src) memcpy((p), &(src), sizeof(v8f))

// op(A)[i, k] and op(B)[k, j] of the row-major operands.
static inline float elem_a(const float *A, int64_t lda, bool t, int64_t i, int64_t k) {
    return t ? A[k * lda + i] : A[i * lda + k];
}
static inline float elem_b(const float *B, int64_t ldb, bool t, int64_t k, int64_t j) {
    return t ? B[j * ldb + k] : B[k * ldb + j];
}

// Writes (=) panel p of packed A: rows [i0, i0+MR) of op(A), depth [k0, k0+kc), times alpha,
// laid out [kc][MR]; rows past M are zero.
static void pack_a_panel(const float *A, int64_t lda, bool trans, int64_t M, int64_t i0, int64_t k0,
                         int64_t kc, float alpha, float *dst) {
    for (int64_t k = 0; k < kc; k++)
        for (int r = 0; r < MR; r++)
            dst[k * MR + r] = (i0 + r < M) ? alpha * elem_a(A, lda, trans, i0 + r, k0 + k) : 0.0f;
}

// Writes (=) panel of packed B: columns [j0, j0+NR) of op(B), depth [k0, k0+kc), laid out [kc][NR];
// columns past N are zero.
static void pack_b_panel(const float *B, int64_t ldb, bool trans, int64_t N, int64_t j0, int64_t k0,
                         int64_t kc, float *dst) {
    int64_t nr = N - j0 < NR ? N - j0 : NR;
    for (int64_t k = 0; k < kc; k++) {
        float *d = dst + k * NR;
        if (!trans && nr == NR) {
            memcpy(d, B + (k0 + k) * ldb + j0, NR * sizeof(float));
            continue;
        }
        for (int c = 0; c < NR; c++) d[c] = c < nr ? elem_b(B, ldb, trans, k0 + k, j0 + c) : 0.0f;
    }
}

// Accumulates (+=) into the mr x nr corner of C the product of one packed A panel and one packed
// B panel over depth kc.
KERNEL_INLINE void micro_kernel(int64_t kc, const float *restrict a, const float *restrict b, float *c,
                                int64_t ldc, int mr, int nr) {
    v8f acc[MR][2];
    memset(acc, 0, sizeof acc);
    for (int64_t k = 0; k < kc; k++) {
        v8f b0, b1;
        LOAD8(b0, b);
        LOAD8(b1, b + 8);
        for (int r = 0; r < MR; r++) {
            acc[r][0] += a[r] * b0;
            acc[r][1] += a[r] * b1;
        }
        a += MR;
        b += NR;
    }
    if (mr == MR && nr == NR) {
        for (int r = 0; r < MR; r++) {
            v8f c0, c1;
            LOAD8(c0, c + r * ldc);
            LOAD8(c1, c + r * ldc + 8);
            c0 += acc[r][0];
            c1 += acc[r][1];
            STORE8(c + r * ldc, c0);
            STORE8(c + r * ldc + 8, c1);
        }
        return;
    }
    float tmp[MR][NR];
    memcpy(tmp, acc, sizeof tmp);
    for (int r = 0; r < mr; r++)
        for (int j = 0; j < nr; j++) c[r * ldc + j] += tmp[r][j];
}

// One tile of C: rows [i0, i1) x columns [j0, j1) of the current slice, from packed panels
// (accumulates +=). Compiled for AVX2+FMA and for the baseline ISA; gemm_tile picks at run time.
#define DEFINE_GEMM_TILE(name, attr)                                                                \
    attr static void name(int64_t kc, const float *apack, const float *bpack, int64_t i0, int64_t i1, \
                          int64_t jbase, int64_t j0, int64_t j1, int64_t ibase, float *C, int64_t ldc) { \
        for (int64_t i = i0; i < i1; i += MR) {                                                      \
            const float *a = apack + ((i - ibase) / MR) * kc * MR;                                   \
            int mr = (int)(i1 - i < MR ? i1 - i : MR);                                               \
            for (int64_t j = j0; j < j1; j += NR) {                                                  \
                const float *b = bpack + ((j - jbase) / NR) * kc * NR;                               \
                int nr = (int)(j1 - j < NR ? j1 - j : NR);                                           \
                micro_kernel(kc, a, b, C + i * ldc + j, ldc, mr, nr);                                \
            }                                                                                        \
        }                                                                                            \
    }

DEFINE_GEMM_TILE(gemm_tile_base, )
#if defined(__x86_64__) && defined(__GNUC__)
#define GEMM_HAVE_AVX2_VARIANT 1
DEFINE_GEMM_TILE(gemm_tile_avx2, __attribute__((target("avx2,fma"))))
#endif

typedef void (*GemmTileFn)(int64_t, const float *, const float *, int64_t, int64_t, int64_t, int64_t, int64_t,
                           int64_t, float *, int64_t);

static bool cpu_has_avx2_fma(void) {
#ifdef GEMM_HAVE_AVX2_VARIANT
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return false;
#endif
}

static int forced_isa;  // 0: automatic, 1: baseline, 2: AVX2 (dense_tuning.h)

bool gemm_portable_set_isa(const char *isa) {
    int want = !strcmp(isa, "auto") ? 0 : !strcmp(isa, "base") ? 1 : !strcmp(isa, "avx2") ? 2 : -1;
    if (want < 0 || (want == 2 && !cpu_has_avx2_fma())) return false;
    forced_isa = want;
    return true;
}

static GemmTileFn pick_gemm_tile(void) {
#ifdef GEMM_HAVE_AVX2_VARIANT
    if (forced_isa != 1 && cpu_has_avx2_fma()) return gemm_tile_avx2;
#endif
    return gemm_tile_base;
}

// C = beta * C, with beta == 0 writing zeros (old NaNs do not survive).
static void scale_c(int64_t M, int64_t N, float beta, float *C, int64_t ldc) {
    if (beta == 1.0f) return;
#pragma omp parallel for if (M * N > OPS_PARALLEL_MIN)
    for (int64_t i = 0; i < M; i++) {
        float *row = C + i * ldc;
        if (beta == 0.0f) memset(row, 0, (size_t)N * sizeof(float));
        else for (int64_t j = 0; j < N; j++) row[j] *= beta;
    }
}

void gemm_f32_portable(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                       const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                       int64_t ldc) {
    if (M <= 0 || N <= 0) return;
    scale_c(M, N, beta, C, ldc);
    if (K <= 0 || alpha == 0.0f) return;
    int64_t m_chunk = M < M_CHUNK ? M : M_CHUNK;
    int64_t a_panels = (m_chunk + MR - 1) / MR;
    int64_t nc_max = N < NC ? N : NC;
    int64_t b_panels = (nc_max + NR - 1) / NR;
    float *apack = aligned_alloc(64, (size_t)a_panels * KC * MR * sizeof(float));
    float *bpack = aligned_alloc(64, (size_t)b_panels * KC * NR * sizeof(float));
    if (!apack || !bpack) dod_fatal("gemm_f32_portable", "out of memory for packing buffers (M=%ld N=%ld K=%ld)",
                                    (long)M, (long)N, (long)K);
    GemmTileFn gemm_tile = pick_gemm_tile();
    bool parallel = (double)M * N * K > 2e5;  // below this a parallel region costs more than it saves
    (void)parallel;                            // (unused without OpenMP)
#pragma omp parallel if (parallel)
    for (int64_t ic = 0; ic < M; ic += M_CHUNK) {
        int64_t mc = M - ic < M_CHUNK ? M - ic : M_CHUNK;
        int64_t np_a = (mc + MR - 1) / MR;
        for (int64_t pc = 0; pc < K; pc += KC) {
            int64_t kc = K - pc < KC ? K - pc : KC;
#pragma omp for schedule(static)
            for (int64_t p = 0; p < np_a; p++)
                pack_a_panel(A, lda, trans_a, M, ic + p * MR, pc, kc, alpha, apack + p * kc * MR);
            for (int64_t jc = 0; jc < N; jc += NC) {
                int64_t nc = N - jc < NC ? N - jc : NC;
                int64_t np_b = (nc + NR - 1) / NR;
#pragma omp for schedule(static)
                for (int64_t p = 0; p < np_b; p++)
                    pack_b_panel(B, ldb, trans_b, N, jc + p * NR, pc, kc, bpack + p * kc * NR);
                int64_t tiles_m = (mc + MC - 1) / MC, tiles_n = (nc + TILE_N - 1) / TILE_N;
#pragma omp for collapse(2) schedule(dynamic)
                for (int64_t tm = 0; tm < tiles_m; tm++)
                    for (int64_t tn = 0; tn < tiles_n; tn++) {
                        int64_t i0 = ic + tm * MC, i1 = i0 + MC < ic + mc ? i0 + MC : ic + mc;
                        int64_t j0 = jc + tn * TILE_N, j1 = j0 + TILE_N < jc + nc ? j0 + TILE_N : jc + nc;
                        gemm_tile(kc, apack, bpack, i0, i1, jc, j0, j1, ic, C, ldc);
                    }
            }
        }
    }
    free(apack);
    free(bpack);
}

// ---- dispatch -----------------------------------------------------------------------------------
#ifdef DOD_HAVE_OPENBLAS
// Below this many flops a GEMM runs on the calling thread alone (a parallel region costs ~µs).
#define GEMM_PARALLEL_MIN_FLOPS 2e6
// Split boundaries are multiples of this many rows/columns (64-byte lines of C stay with one thread).
#define GEMM_SPLIT_ALIGN 16

static void blas_sgemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                       const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)M, (int)N, (int)K,
                alpha, A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
}

// OpenBLAS single-threaded from the start (its pool is initialised before this constructor runs),
// so even a first call from inside a parallel region does not start OpenBLAS's threads.
__attribute__((constructor)) static void blas_single_threaded(void) { openblas_set_num_threads(1); }

// Threading: one pool for everything. OpenBLAS is kept single-threaded and a large GEMM is split
// into one single-threaded call per OpenMP thread, by rows of C (each thread re-packs all of B) or
// by columns (each re-packs all of A), whichever duplicates the smaller operand. Debian's
// OpenBLAS runs its own pthreads pool; letting it thread while the ops' OpenMP loops run between
// GEMMs puts two busy-waiting pools on the same cores, which measured 2x to 50x slower on SD
// shapes (docs/ops-dense.md). Inside an OpenMP parallel region the call runs on the calling
// thread only.
static void blas_sgemm_parallel(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                                int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    int threads = 1;
#ifdef _OPENMP
    if (!omp_in_parallel()) threads = omp_get_max_threads();
#endif
    if (threads > 1 && openblas_get_num_threads() != 1) openblas_set_num_threads(1);
    bool split_rows = M * K >= K * N;  // A is the larger operand: split it, share (re-pack) B
    if (split_rows && M < 2 * GEMM_SPLIT_ALIGN && N >= 2 * GEMM_SPLIT_ALIGN) split_rows = false;
    if (!split_rows && N < 2 * GEMM_SPLIT_ALIGN && M >= 2 * GEMM_SPLIT_ALIGN) split_rows = true;
    int64_t extent = split_rows ? M : N, chunks = extent / GEMM_SPLIT_ALIGN;
    if (chunks < threads) threads = (int)(chunks > 0 ? chunks : 1);
    if (threads <= 1 || 2.0 * M * N * K < GEMM_PARALLEL_MIN_FLOPS) {
        blas_sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
#pragma omp parallel num_threads(threads)
    {
#ifdef _OPENMP
        int t = omp_get_thread_num(), nt = omp_get_num_threads();
#else
        int t = 0, nt = 1;
#endif
        int64_t lo = chunks * t / nt * GEMM_SPLIT_ALIGN, hi = t == nt - 1 ? extent : chunks * (t + 1) / nt * GEMM_SPLIT_ALIGN;
        if (hi > lo && split_rows)  // rows [lo, hi) of C and op(A)
            blas_sgemm(ta, tb, hi - lo, N, K, alpha, ta ? A + lo : A + lo * lda, lda, B, ldb, beta, C + lo * ldc, ldc);
        else if (hi > lo)  // columns [lo, hi) of C and op(B)
            blas_sgemm(ta, tb, M, hi - lo, K, alpha, A, lda, tb ? B + lo * ldb : B + lo, ldb, beta, C + lo, ldc);
    }
}
#endif

void gemm_f32(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
              int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    DOD_CHECK(M >= 0 && N >= 0 && K >= 0, "gemm_f32", "negative size M=%ld N=%ld K=%ld", (long)M, (long)N, (long)K);
    if (M == 0 || N == 0) return;
    __atomic_fetch_add(&flops_issued, 2ull * (uint64_t)M * (uint64_t)N * (uint64_t)K, __ATOMIC_RELAXED);
#ifdef DOD_HAVE_OPENBLAS
    DOD_CHECK(M <= INT_MAX && N <= INT_MAX && K <= INT_MAX && lda <= INT_MAX && ldb <= INT_MAX && ldc <= INT_MAX,
              "gemm_f32", "size M=%ld N=%ld K=%ld (lda %ld ldb %ld ldc %ld) exceeds the 32-bit BLAS interface",
              (long)M, (long)N, (long)K, (long)lda, (long)ldb, (long)ldc);
    if (K == 0) {  // BLAS implementations differ on K == 0; do it here
        scale_c(M, N, beta, C, ldc);
        return;
    }
    blas_sgemm_parallel(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
#else
    gemm_f32_portable(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
#endif
}
