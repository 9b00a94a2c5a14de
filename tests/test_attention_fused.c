// The fused CUDA attention's row math (autograd/flash_attention_rows.h, the functions the kernels of
// autograd/cuda/attention_fused.cu call) run on the CPU in the kernels' order: the same tiles of
// keys (forward, dQ) and of queries (dK, dV), one "thread" per row. Checked against op_attention's
// CPU path (GEMM blocks, itself checked against double precision and finite differences in
// test_op_attention.c): the output, the log-sum-exp (against double precision) and the gradients of
// q, k and v for a random output gradient.
// Geometries: every instantiated head width (8, 16, 32, 40, 64, 80), self and cross attention, key
// and query counts that are not multiples of a tile, a single key, batch > 1, and logits of a few
// hundred (exp overflows in f32 without the running max).
// Tolerance: max |fused - op| <= 5e-6 * max |op| + 1e-6 (measured <= 1.3e-6 relative), 2e-5 for the
// large-logit case (measured 4.7e-6: a logit of ~300 carries an absolute rounding error of ~1e-5
// into exp). Both sides are f32 with different summation orders and exp implementations.
// A single key gets probability 1 whatever q and k are: its dQ and dK are zero, exactly so in the
// fused math (O = v, so dO . v - delta is 0), up to rounding noise (~1e-6) in the op's.
// What this cannot check: the kernels' shared-memory staging, barriers and launch shapes. The GPU
// suite (tests/test_cuda_ops.c) runs the kernels themselves against the CPU op.
#include "autograd/flash_attention_rows.h"
#include "tests/check.h"

typedef struct {
    const char *name;
    int64_t B, Lq, Lk, H, D;
    float input_std;  // q and k: larger values, larger logits
    double rtol;
    bool one_key;  // dq, dk must be exactly zero (the op's: below 1e-5)
} Geometry;

// Tile rows of the kernels (attention_fused.cu's flash_tile_rows).
static int tile_rows(int64_t D) { return D <= 64 ? 64 : 32; }

// out [B, Lq, H*D] (=), lse [B, H, Lq] (=), as flash_forward_kernel computes them.
static void fused_forward(const Geometry *g, const float *q, const float *k, const float *v, float scale, float *out,
                          float *lse) {
    int64_t HD = g->H * g->D, T = tile_rows(g->D);
    float *acc = malloc(sizeof(float) * (size_t)g->D);
    for (int64_t b = 0; b < g->B; b++)
        for (int64_t h = 0; h < g->H; h++)
            for (int64_t i = 0; i < g->Lq; i++) {
                int64_t row = (b * g->Lq + i) * HD + h * g->D, kv = b * g->Lk * HD + h * g->D;
                float m = -INFINITY, l = 0.0f;
                memset(acc, 0, sizeof(float) * (size_t)g->D);
                for (int64_t j0 = 0; j0 < g->Lk; j0 += T) {
                    int n = (int)(g->Lk - j0 < T ? g->Lk - j0 : T);
                    flash_forward_tile(q + row, k + kv + j0 * HD, v + kv + j0 * HD, HD, n, (int)g->D, scale, &m, &l,
                                       acc);
                }
                flash_forward_finish(acc, m, l, (int)g->D, out + row, lse + (b * g->H + h) * g->Lq + i);
            }
    free(acc);
}

// dq, dk, dv (+=), as flash_delta_kernel, flash_dq_kernel and flash_dkdv_kernel compute them.
static void fused_backward(const Geometry *g, const float *q, const float *k, const float *v, const float *out,
                           const float *lse, const float *dout, float scale, float *dq, float *dk, float *dv) {
    int64_t HD = g->H * g->D, T = tile_rows(g->D), D = g->D;
    float *delta = malloc(sizeof(float) * (size_t)(g->B * g->H * g->Lq));
    float *a = malloc(sizeof(float) * (size_t)D), *a2 = malloc(sizeof(float) * (size_t)D);
    for (int64_t b = 0; b < g->B; b++)
        for (int64_t h = 0; h < g->H; h++) {
            int64_t bh = b * g->H + h, qb = b * g->Lq * HD + h * D, kb = b * g->Lk * HD + h * D;
            for (int64_t i = 0; i < g->Lq; i++)
                delta[bh * g->Lq + i] = flash_dot(dout + qb + i * HD, out + qb + i * HD, (int)D);
            for (int64_t i = 0; i < g->Lq; i++) {  // dQ: a thread per query row, over tiles of keys
                memset(a, 0, sizeof(float) * (size_t)D);
                for (int64_t j0 = 0; j0 < g->Lk; j0 += T) {
                    int n = (int)(g->Lk - j0 < T ? g->Lk - j0 : T);
                    flash_dq_tile(q + qb + i * HD, dout + qb + i * HD, lse[bh * g->Lq + i], delta[bh * g->Lq + i],
                                  k + kb + j0 * HD, v + kb + j0 * HD, HD, n, (int)D, scale, a);
                }
                flash_axpy(scale, a, (int)D, dq + qb + i * HD);
            }
            for (int64_t j = 0; j < g->Lk; j++) {  // dK, dV: a thread per key row, over tiles of queries
                memset(a, 0, sizeof(float) * (size_t)D);
                memset(a2, 0, sizeof(float) * (size_t)D);
                for (int64_t i0 = 0; i0 < g->Lq; i0 += T) {
                    int n = (int)(g->Lq - i0 < T ? g->Lq - i0 : T);
                    flash_dkdv_tile(k + kb + j * HD, v + kb + j * HD, q + qb + i0 * HD, dout + qb + i0 * HD, HD,
                                    lse + bh * g->Lq + i0, delta + bh * g->Lq + i0, n, (int)D, scale, a, a2);
                }
                flash_axpy(scale, a, (int)D, dk + kb + j * HD);
                flash_axpy(1.0f, a2, (int)D, dv + kb + j * HD);
            }
        }
    free(delta);
    free(a);
    free(a2);
}

// Row log-sum-exp of the scaled logits in double precision, [B, H, Lq].
static double *lse_double(const Geometry *g, const float *q, const float *k, double scale) {
    int64_t HD = g->H * g->D;
    double *lse = malloc(sizeof(double) * (size_t)(g->B * g->H * g->Lq)), *s = malloc(sizeof(double) * (size_t)g->Lk);
    for (int64_t b = 0; b < g->B; b++)
        for (int64_t h = 0; h < g->H; h++)
            for (int64_t i = 0; i < g->Lq; i++) {
                double m = -INFINITY, sum = 0;
                for (int64_t j = 0; j < g->Lk; j++) {
                    double d = 0;
                    for (int64_t e = 0; e < g->D; e++)
                        d += (double)q[(b * g->Lq + i) * HD + h * g->D + e] * k[(b * g->Lk + j) * HD + h * g->D + e];
                    s[j] = d * scale;
                    m = s[j] > m ? s[j] : m;
                }
                for (int64_t j = 0; j < g->Lk; j++) sum += exp(s[j] - m);
                lse[(b * g->H + h) * g->Lq + i] = m + log(sum);
            }
    free(s);
    return lse;
}

static void compare(const Geometry *g, const char *what, const float *got, const float *ref, int64_t n, double rtol) {
    double scale = 0, err = max_abs_diff(got, ref, (long)n, &scale);
    CHECK(err <= rtol * scale, "%s %s: max |fused - op_attention| %.3g, max |op_attention| %.3g, rtol %.1g", g->name,
          what, err, scale, rtol);
    printf("  %-34s %-6s max err / scale %.2g\n", g->name, what, scale > 0 ? err / scale : err);
}

static void check_geometry(const Geometry *g, uint64_t seed) {
    int64_t qs[3] = {g->B, g->Lq, g->H * g->D}, ks[3] = {g->B, g->Lk, g->H * g->D};
    Tensor *q = test_input("q", 3, qs, seed, g->input_std, true), *k = test_input("k", 3, ks, seed + 1, g->input_std, true);
    Tensor *v = test_input("v", 3, ks, seed + 2, 1.0f, true);
    float scale = 1.0f / sqrtf((float)g->D);
    Tensor *out = op_attention(q, k, v, (int)g->H, 0.0f);  // scale 0: 1 / sqrt(D), as above
    float *seed_grad = malloc(sizeof(float) * (size_t)out->numel);
    for (int64_t i = 0; i < out->numel; i++) seed_grad[i] = (float)sin(0.37 * (double)i + 0.1);
    ag_backward_from(out, seed_grad);

    int64_t nq = q->numel, nk = k->numel, nlse = g->B * g->H * g->Lq;
    float *fo = malloc(sizeof(float) * (size_t)nq), *flse = malloc(sizeof(float) * (size_t)nlse);
    float *fdq = calloc((size_t)nq, sizeof(float)), *fdk = calloc((size_t)nk, sizeof(float));
    float *fdv = calloc((size_t)nk, sizeof(float));
    fused_forward(g, q->data, k->data, v->data, scale, fo, flse);
    fused_backward(g, q->data, k->data, v->data, fo, flse, seed_grad, scale, fdq, fdk, fdv);

    compare(g, "out", fo, tensor_f32(out), nq, g->rtol);
    double *ref_lse = lse_double(g, q->data, k->data, scale), lse_err = 0, lse_scale = 0;
    for (int64_t i = 0; i < nlse; i++) {
        double e = fabs(flse[i] - ref_lse[i]), a = fabs(ref_lse[i]);
        lse_err = e > lse_err ? e : lse_err;
        lse_scale = a > lse_scale ? a : lse_scale;
    }
    CHECK(lse_err <= g->rtol * (lse_scale + 1.0), "%s lse: max |fused - double| %.3g (max |lse| %.3g)", g->name, lse_err,
          lse_scale);
    if (g->one_key) {
        double op_max = 0, fused_max = 0;
        for (int64_t i = 0; i < nq; i++) op_max = fmax(op_max, fabs(q->grad[i])), fused_max = fmax(fused_max, fabs(fdq[i]));
        for (int64_t i = 0; i < nk; i++) op_max = fmax(op_max, fabs(k->grad[i])), fused_max = fmax(fused_max, fabs(fdk[i]));
        CHECK(fused_max == 0 && op_max < 1e-5, "%s: dq, dk must vanish: max |fused| %.3g, max |op_attention| %.3g",
              g->name, fused_max, op_max);
    } else {
        compare(g, "dq", fdq, q->grad, nq, g->rtol);
        compare(g, "dk", fdk, k->grad, nk, g->rtol);
    }
    compare(g, "dv", fdv, v->grad, nk, g->rtol);

    ag_step_reset();
    tensor_free(q);
    tensor_free(k);
    tensor_free(v);
    free(ref_lse);
    free(seed_grad);
    free(fo);
    free(flse);
    free(fdq);
    free(fdk);
    free(fdv);
}

int main(void) {
    const Geometry cases[] = {
        {"self B2 L37 H4 D8", 2, 37, 37, 4, 8, 1.0f, 5e-6, false},
        {"cross B2 L19x77 H4 D8", 2, 19, 77, 4, 8, 1.0f, 5e-6, false},
        {"self L150 H3 D16 (3 tiles)", 1, 150, 150, 3, 16, 1.0f, 5e-6, false},
        {"cross L70x77 H2 D32", 1, 70, 77, 2, 32, 1.0f, 5e-6, false},
        {"SD1.x cross B2 L64x77 H8 D40", 2, 64, 77, 8, 40, 1.0f, 5e-6, false},
        {"SD2.x self L256 H5 D64", 1, 256, 256, 5, 64, 1.0f, 5e-6, false},
        {"SD1.x self L100 H2 D80 (tile 32)", 1, 100, 100, 2, 80, 1.0f, 5e-6, false},
        {"one key L33x1 H2 D80", 1, 33, 1, 2, 80, 1.0f, 5e-6, true},
        {"large logits L90 H2 D16", 2, 90, 90, 2, 16, 8.0f, 2e-5, false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_geometry(&cases[i], 100 + 10 * i);

    // The large-logit case really has logits far past exp's f32 range (max ~88).
    const Geometry *g = &cases[sizeof cases / sizeof cases[0] - 1];
    Tensor *q = test_input("q", 3, (int64_t[]){g->B, g->Lq, g->H * g->D}, 100 + 10 * 8, g->input_std, false);
    Tensor *k = test_input("k", 3, (int64_t[]){g->B, g->Lk, g->H * g->D}, 101 + 10 * 8, g->input_std, false);
    double *lse = lse_double(g, q->data, k->data, 1.0 / sqrt((double)g->D)), max_lse = 0;
    for (int64_t i = 0; i < g->B * g->H * g->Lq; i++) max_lse = lse[i] > max_lse ? lse[i] : max_lse;
    CHECK(max_lse > 200, "large-logit case: max lse %.1f, expected logits of a few hundred", max_lse);
    free(lse);
    tensor_free(q);
    tensor_free(k);
    return check_summary();
}
