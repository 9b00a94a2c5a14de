// gemm_f32 (OpenBLAS or portable, whichever this build uses) and gemm_f32_portable (always) against
// a double-precision reference: all four transpose combinations, odd sizes and sizes that cross
// the portable kernel's blocking (KC 256, MC 96, NC 2048, M chunk 3072), GEMMs that gemm_f32 splits
// over threads by rows and by columns, strided sub-matrices, alpha/beta, beta == 0 over NaN,
// K == 0, and the flop counter.
#include "autograd/dense_tuning.h"
#include "autograd/gemm.h"
#include "tests/check.h"

typedef void (*GemmFn)(bool, bool, int64_t, int64_t, int64_t, float, const float *, int64_t, const float *,
                       int64_t, float, float *, int64_t);

static uint64_t rng_state = 0x1234567887654321ull;
static float rand_pm1(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((rng_state >> 40) / 16777216.0 * 2.0 - 1.0);
}

// One case: C (M x N, ld ldc >= N) = alpha op(A) op(B) + beta C0 with A and B stored with padded
// leading dimensions (pad extra columns of garbage the kernel must not read into the result).
static void check_case(const char *impl, GemmFn fn, bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                       float beta, int64_t pad, bool nan_c) {
    int64_t arows = ta ? K : M, acols = ta ? M : K, brows = tb ? N : K, bcols = tb ? K : N;
    int64_t lda = acols + pad, ldb = bcols + pad, ldc = N + pad;
    float *A = malloc(sizeof(float) * (arows * lda + 1)), *B = malloc(sizeof(float) * (brows * ldb + 1));
    float *C = malloc(sizeof(float) * (M * ldc + 1));
    double *ref = malloc(sizeof(double) * (M * N + 1)), *mag = malloc(sizeof(double) * (M * N + 1));
    for (int64_t i = 0; i < arows * lda; i++) A[i] = rand_pm1();
    for (int64_t i = 0; i < brows * ldb; i++) B[i] = rand_pm1();
    for (int64_t i = 0; i < M * ldc; i++) C[i] = nan_c ? NAN : rand_pm1();
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double s = 0, m = 0;
            for (int64_t k = 0; k < K; k++) {
                double a = ta ? A[k * lda + i] : A[i * lda + k], b = tb ? B[j * ldb + k] : B[k * ldb + j];
                s += a * b;
                m += fabs(a * b);
            }
            double c0 = beta == 0.0f ? 0.0 : (double)beta * C[i * ldc + j];
            ref[i * N + j] = alpha * s + c0;
            mag[i * N + j] = fabs(alpha) * m + fabs(c0);
        }
    float pad_sentinel = C[ldc - 1];
    fn(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    double worst = 0;
    int64_t bad = 0;
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double d = fabs(C[i * ldc + j] - ref[i * N + j]), tol = 1e-5 * mag[i * N + j] + 1e-6;
            if (!(d <= tol)) bad++;
            if (!(d <= worst)) worst = d;
        }
    CHECK(bad == 0, "%s ta=%d tb=%d M=%ld N=%ld K=%ld alpha=%g beta=%g pad=%ld nanC=%d: %ld bad, worst %.3g", impl, ta,
          tb, (long)M, (long)N, (long)K, alpha, beta, (long)pad, nan_c, (long)bad, worst);
    if (pad > 0 && !nan_c)  // the padding column of C's first row is outside the matrix: untouched
        CHECK(C[ldc - 1] == pad_sentinel, "%s: wrote outside C (ldc padding)", impl);
    free(A); free(B); free(C); free(ref); free(mag);
}

static void check_impl(const char *impl, GemmFn fn) {
    static const int64_t sizes[][3] = {
        {1, 1, 1}, {1, 17, 5}, {13, 1, 7}, {7, 9, 1}, {37, 53, 29}, {6, 16, 256}, {97, 33, 257},
        {200, 300, 600}, {5, 2100, 40}, {3100, 9, 20},
        {700, 50, 300}, {1000, 20, 100}, {33, 1000, 70},  // big enough to be split over threads
    };
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++)
        for (int t = 0; t < 4; t++) {
            bool ta = t & 1, tb = t & 2;
            check_case(impl, fn, ta, tb, sizes[s][0], sizes[s][1], sizes[s][2], 1.0f, 0.0f, 0, false);
        }
    // alpha/beta, strides and NaN handling on one odd size, all transposes
    for (int t = 0; t < 4; t++) {
        bool ta = t & 1, tb = t & 2;
        check_case(impl, fn, ta, tb, 23, 41, 19, 0.5f, 1.0f, 3, false);
        check_case(impl, fn, ta, tb, 23, 41, 19, -2.0f, -0.5f, 5, false);
        check_case(impl, fn, ta, tb, 23, 41, 19, 1.0f, 0.0f, 2, true);
    }
    // K == 0: C = beta * C
    float C[6] = {1, 2, 3, 4, 5, 6}, dummy = 0;
    fn(false, false, 2, 3, 0, 1.0f, &dummy, 1, &dummy, 3, 0.5f, C, 3);
    CHECK(C[0] == 0.5f && C[5] == 3.0f, "%s K=0 should scale C by beta, got %g %g", impl, C[0], C[5]);
    fn(false, false, 2, 3, 0, 1.0f, &dummy, 1, &dummy, 3, 0.0f, C, 3);
    CHECK(C[0] == 0.0f && C[5] == 0.0f, "%s K=0 beta=0 should zero C, got %g %g", impl, C[0], C[5]);
}

int main(void) {
    printf("gemm backend: %s\n", gemm_backend_name());
    check_impl("gemm_f32", gemm_f32);
    // the portable kernel in each ISA variant this CPU can run
    CHECK(gemm_portable_set_isa("base"), "the baseline variant must always be available");
    check_impl("gemm_f32_portable[base]", gemm_f32_portable);
    if (gemm_portable_set_isa("avx2")) check_impl("gemm_f32_portable[avx2]", gemm_f32_portable);
    else printf("skipping the AVX2 variant: CPU lacks AVX2/FMA\n");
    CHECK(!gemm_portable_set_isa("sse9"), "unknown ISA name accepted");
    gemm_portable_set_isa("auto");
    // the flop counter counts gemm_f32 calls only (2*M*N*K each)
    float a[6] = {1, 2, 3, 4, 5, 6}, b[6] = {1, 0, 0, 1, 1, 1}, c[4];
    uint64_t before = gemm_flop_count();
    gemm_f32(false, false, 2, 2, 3, 1.0f, a, 3, b, 2, 0.0f, c, 2);
    CHECK(gemm_flop_count() - before == 24, "flop count grew by %lu, expected 24",
          (unsigned long)(gemm_flop_count() - before));
    CHECK(c[0] == 4 && c[1] == 5 && c[2] == 10 && c[3] == 11, "2x3 @ 3x2 gave %g %g %g %g", c[0], c[1], c[2], c[3]);
    return check_summary();
}
