// op_attention: forward against double-precision softmax attention, finite-difference gradients of
// q, k and v (single/multi-head, self and cross attention with Lq != Lk, batch > 1, explicit scale,
// several query blocks, one tensor used as q, k and v), the causal variant (op_attention_causal:
// query i sees keys 0..i; one or several query blocks), half-precision inputs, frozen inputs, the
// O(block * Lk) memory bound, and shape errors.
//
// Gradcheck tolerances: attention is smooth but nonlinear; central differences with eps 5e-3 have
// truncation error ~eps^2 relative: rtol 1e-2, atol 2e-4.
#include "autograd/dense_tuning.h"
#include "tests/dense_test_util.h"

#define EPS 5e-3
#define RTOL 1e-2
#define ATOL 2e-4

// Double-precision reference: out [B, Lq, H*D]. Only query rows [0, rows) are computed. causal: row i
// attends to keys 0..i.
static double *ref_attention_mask(const Tensor *q, const Tensor *k, const Tensor *v, int H, float scale, int64_t rows,
                                  bool causal) {
    int64_t B = q->shape[0], Lq = q->shape[1], Lk = k->shape[1], HD = q->shape[2], D = HD / H;
    double sc = scale > 0 ? scale : 1.0 / sqrt((double)D);
    const float *Q = tensor_f32(q), *K = tensor_f32(k), *V = tensor_f32(v);
    double *out = calloc((size_t)(B * Lq * HD), sizeof(double)), *s = malloc(sizeof(double) * Lk);
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t i = 0; i < rows; i++) {
                double m = -INFINITY, sum = 0;
                int64_t seen = causal && i + 1 < Lk ? i + 1 : Lk;
                for (int64_t j = 0; j < seen; j++) {
                    double d = 0;
                    for (int64_t e = 0; e < D; e++)
                        d += (double)Q[(b * Lq + i) * HD + h * D + e] * K[(b * Lk + j) * HD + h * D + e];
                    s[j] = d * sc;
                    if (s[j] > m) m = s[j];
                }
                for (int64_t j = 0; j < seen; j++) sum += (s[j] = exp(s[j] - m));
                for (int64_t e = 0; e < D; e++) {
                    double o = 0;
                    for (int64_t j = 0; j < seen; j++) o += s[j] / sum * V[(b * Lk + j) * HD + h * D + e];
                    out[(b * Lq + i) * HD + h * D + e] = o;
                }
            }
    free(s);
    return out;
}

static double *ref_attention(const Tensor *q, const Tensor *k, const Tensor *v, int H, float scale, int64_t rows) {
    return ref_attention_mask(q, k, v, H, scale, rows, false);
}

typedef struct { int heads; float scale; bool causal; } AttnArgs;
static Tensor *fn_attention(void *ctx, Tensor *const *in) {
    AttnArgs *a = ctx;
    return a->causal ? op_attention_causal(in[0], in[1], in[2], a->heads, a->scale)
                     : op_attention(in[0], in[1], in[2], a->heads, a->scale);
}
static Tensor *fn_self(void *ctx, Tensor *const *in) {
    AttnArgs *a = ctx;
    return op_attention(in[0], in[0], in[0], a->heads, a->scale);
}

static void attention_case_mask(const char *name, int64_t B, int64_t Lq, int64_t Lk, int H, int64_t D, float scale,
                                int64_t block_rows, uint64_t seed, bool causal) {
    int64_t qs[3] = {B, Lq, H * D}, ks[3] = {B, Lk, H * D};
    Tensor *q = test_input("q", 3, qs, seed, 1.0f, true);
    Tensor *k = test_input("k", 3, ks, seed + 1, 1.0f, true);
    Tensor *v = test_input("v", 3, ks, seed + 2, 1.0f, true);
    attention_set_block_rows(block_rows);
    ag_step_reset();
    Tensor *out = causal ? op_attention_causal(q, k, v, H, scale) : op_attention(q, k, v, H, scale);
    double *ref = ref_attention_mask(q, k, v, H, scale, Lq, causal);
    char what[160];
    snprintf(what, sizeof what, "attention forward %s", name);
    CHECK(tensor_same_shape(out, q), "%s: output shape %s", name, shape_str(out));
    check_close_ref(what, out->data, ref, out->numel, 2e-6, 1e-6);
    free(ref);
    AttnArgs args = {H, scale, causal};
    Tensor *in[3] = {q, k, v};
    gradcheck(name, fn_attention, &args, 3, in, EPS, RTOL, ATOL, 0);
    attention_set_block_rows(0);
    tensor_free(q); tensor_free(k); tensor_free(v);
}

static void attention_case(const char *name, int64_t B, int64_t Lq, int64_t Lk, int H, int64_t D, float scale,
                           int64_t block_rows, uint64_t seed) {
    attention_case_mask(name, B, Lq, Lk, H, D, scale, block_rows, seed, false);
}

// Causal: the last key's value changes no output row but the last (no leak from the future).
static void causal_no_future(void) {
    int64_t s[3] = {1, 6, 4};
    Tensor *q = test_input("q", 3, s, 91, 1.0f, false), *k = test_input("k", 3, s, 92, 1.0f, false);
    Tensor *v = test_input("v", 3, s, 93, 1.0f, false);
    Tensor *a = op_attention_causal(q, k, v, 2, 0.0f);
    float *vd = tensor_data_f32(v);
    for (int e = 0; e < 4; e++) vd[5 * 4 + e] += 10.0f;
    Tensor *b = op_attention_causal(q, k, v, 2, 0.0f);
    const float *ad = tensor_f32(a), *bd = tensor_f32(b);
    bool same = true, last_moved = false;
    for (int i = 0; i < 5 * 4; i++) same = same && ad[i] == bd[i];
    for (int i = 5 * 4; i < 6 * 4; i++) last_moved = last_moved || ad[i] != bd[i];
    CHECK(same && last_moved, "causal: rows 0..4 unchanged %d, row 5 changed %d", same, last_moved);
    tensor_free(q); tensor_free(k); tensor_free(v);
    ag_step_reset();
}

static void causal_lq_ne_lk(void *ctx) {
    (void)ctx;
    op_attention_causal(tensor_new3(1, 4, 8), tensor_new3(1, 5, 8), tensor_new3(1, 5, 8), 2, 0.0f);
}

// One tensor as q, k and v: its gradient is the sum of the three contributions.
static void self_same_tensor(void) {
    int64_t xs[3] = {2, 5, 6};
    Tensor *x = test_input("x", 3, xs, 71, 1.0f, true);
    AttnArgs args = {2, 0.0f, false};
    Tensor *in[1] = {x};
    gradcheck("attention x as q, k and v", fn_self, &args, 1, in, EPS, RTOL, ATOL, 0);
    tensor_free(x);
}

// Half-precision inputs: same result as f32 on the widened values; gradients flow (f32).
static void half_inputs(DType dt) {
    int64_t qs[3] = {1, 6, 8}, ks[3] = {1, 4, 8};
    Tensor *q = test_input("q", 3, qs, 81, 1.0f, true);
    Tensor *k32 = test_input("k", 3, ks, 82, 1.0f, false), *v32 = test_input("v", 3, ks, 83, 1.0f, false);
    Tensor *kh = half_copy(k32, dt, "k_half"), *vh = half_copy(v32, dt, "v_half");
    Tensor *kw = widened_copy(kh, "k_widened"), *vw = widened_copy(vh, "v_widened");
    kh->requires_grad = vh->requires_grad = kw->requires_grad = vw->requires_grad = true;
    ag_step_reset();
    Tensor *oh = op_attention(q, kh, vh, 2, 0.0f);
    ag_backward_from(oh, NULL);
    float *o_h = malloc(sizeof(float) * oh->numel), *dq_h = malloc(sizeof(float) * q->numel);
    memcpy(o_h, oh->data, sizeof(float) * oh->numel);
    memcpy(dq_h, q->grad, sizeof(float) * q->numel);
    tensor_zero_grad(q);
    ag_step_reset();
    Tensor *ow = op_attention(q, kw, vw, 2, 0.0f);
    ag_backward_from(ow, NULL);
    char what[64];
    snprintf(what, sizeof what, "attention %s k/v forward", dtype_name(dt));
    check_same(what, o_h, ow->data, ow->numel, 1e-6);
    snprintf(what, sizeof what, "attention %s k/v dq", dtype_name(dt));
    check_same(what, dq_h, q->grad, q->numel, 1e-6);
    CHECK(kh->grad && vh->grad, "attention %s: half k/v got no gradient", dtype_name(dt));
    if (kh->grad && vh->grad) {
        snprintf(what, sizeof what, "attention %s dk", dtype_name(dt));
        check_same(what, kh->grad, kw->grad, kh->numel, 1e-6);
        snprintf(what, sizeof what, "attention %s dv", dtype_name(dt));
        check_same(what, vh->grad, vw->grad, vh->numel, 1e-6);
    }
    free(o_h);
    free(dq_h);
    tensor_free(q); tensor_free(k32); tensor_free(v32); tensor_free(kh); tensor_free(vh);
    tensor_free(kw); tensor_free(vw);
    ag_step_reset();
}

// Only q trainable (cross-attention onto a frozen context): k and v get no gradient buffers.
static void frozen_kv(void) {
    int64_t qs[3] = {2, 5, 8}, ks[3] = {2, 3, 8};
    Tensor *q = test_input("q", 3, qs, 91, 1.0f, true);
    Tensor *k = test_input("k", 3, ks, 92, 1.0f, false), *v = test_input("v", 3, ks, 93, 1.0f, false);
    ag_step_reset();
    Tensor *o = op_attention(q, k, v, 2, 0.0f);
    ag_backward_from(o, NULL);
    CHECK(q->grad != NULL && k->grad == NULL && v->grad == NULL, "frozen k/v: q grad %p, k grad %p, v grad %p",
          (void *)q->grad, (void *)k->grad, (void *)v->grad);
    // gradient of q alone still matches finite differences
    AttnArgs args = {2, 0.0f, false};
    Tensor *in[3] = {q, k, v};
    gradcheck("attention frozen k/v", fn_attention, &args, 3, in, EPS, RTOL, ATOL, 0);
    tensor_free(q); tensor_free(k); tensor_free(v);
}

// Scratch memory stays O(block * Lk): 4 heads of 2048 x 2048 scores would be 64 MiB at once; the
// blocked forward + backward must peak well below that (inputs are heap, not arena).
static void memory_bound(void) {
    int64_t L = 2048, H = 4, D = 8, s[3] = {1, L, H * D};
    Tensor *q = test_input("q", 3, s, 95, 1.0f, true), *k = test_input("k", 3, s, 96, 1.0f, true);
    Tensor *v = test_input("v", 3, s, 97, 1.0f, true);
    ag_step_reset();
    size_t base = arena_used();
    Tensor *o = op_attention(q, k, v, (int)H, 0.0f);
    ag_backward_from(o, NULL);
    double peak_mib = (arena_peak() - base) / 1048576.0, full_mib = H * L * L * 4 / 1048576.0;
    printf("attention L=%ld H=%ld forward+backward: arena peak %.1f MiB (full scores: %.0f MiB)\n", (long)L, (long)H,
           peak_mib, full_mib);
    CHECK(peak_mib < 24.0, "attention L=%ld H=%ld used %.1f MiB of arena; the full score tensor is %.0f MiB",
          (long)L, (long)H, peak_mib, full_mib);
    // spot-check the first rows of the output against the reference
    double *ref = ref_attention(q, k, v, (int)H, 0.0f, 4);
    check_close_ref("attention L=2048 forward (first 4 rows)", o->data, ref, 4 * H * D, 2e-6, 1e-6);
    free(ref);
    tensor_free(q); tensor_free(k); tensor_free(v);
    ag_step_reset();
}

// ---- shape errors (forked children) -------------------------------------------------------------------
static void bad_width(void *ctx) {
    (void)ctx;
    op_attention(tensor_new3(1, 4, 8), tensor_new3(1, 5, 6), tensor_new3(1, 5, 6), 2, 0.0f);
}
static void bad_kv(void *ctx) {
    (void)ctx;
    op_attention(tensor_new3(1, 4, 8), tensor_new3(1, 5, 8), tensor_new3(1, 6, 8), 2, 0.0f);
}
static void bad_heads(void *ctx) {
    (void)ctx;
    op_attention(tensor_new3(1, 4, 10), tensor_new3(1, 5, 10), tensor_new3(1, 5, 10), 3, 0.0f);
}
static void bad_batch(void *ctx) {
    (void)ctx;
    op_attention(tensor_new3(2, 4, 8), tensor_new3(3, 5, 8), tensor_new3(3, 5, 8), 2, 0.0f);
}
static void cuda_attention(void *ctx) {
    (void)ctx;
    Tensor *q = tensor_new3(1, 4, 8);
    q->device = DEV_CUDA;
    op_attention(q, tensor_new3(1, 5, 8), tensor_new3(1, 5, 8), 2, 0.0f);
}

int main(void) {
    memory_bound();  // first, while the arena's peak is still ours
    // every row-kernel variant the CPU can run (vector bodies and scalar tails: Lk 1..37)
    static const char *isas[] = {"base", "avx2", "avx512"};
    for (int v = 0; v < 3; v++) {
        if (!attention_set_isa(isas[v])) {
            printf("skipping attention row kernels [%s]: CPU lacks it\n", isas[v]);
            continue;
        }
        char name[96];
#define CASE(label, ...) (snprintf(name, sizeof name, "%s [%s]", label, isas[v]), attention_case(name, __VA_ARGS__))
        CASE("1 head self", 1, 5, 5, 1, 4, 0.0f, 0, 1);
        CASE("2 heads cross Lq>Lk batch2", 2, 7, 3, 2, 4, 0.0f, 0, 11);
        CASE("3 heads cross Lq<Lk", 1, 4, 9, 3, 2, 0.0f, 0, 21);
        CASE("2 heads explicit scale", 2, 5, 6, 2, 3, 0.7f, 0, 31);
        CASE("2 heads blocks of 3 rows", 2, 7, 5, 2, 4, 0.0f, 3, 41);
        CASE("4 heads blocks of 2 rows cross", 1, 5, 4, 4, 2, 0.0f, 2, 51);
        CASE("1 key", 1, 3, 1, 2, 2, 0.0f, 0, 61);
        CASE("Lk 37 (vector body + tail)", 1, 6, 37, 2, 4, 0.0f, 0, 71);
        CASE("Lk 16", 1, 3, 16, 1, 4, 0.0f, 0, 81);
#undef CASE
#define CAUSAL(label, ...) \
    (snprintf(name, sizeof name, "%s [%s]", label, isas[v]), attention_case_mask(name, __VA_ARGS__, true))
        CAUSAL("causal 2 heads batch 2", 2, 7, 7, 2, 4, 0.0f, 0, 101);
        CAUSAL("causal blocks of 3 rows", 1, 8, 8, 2, 3, 0.0f, 3, 111);
        CAUSAL("causal blocks of 1 row, scale", 1, 5, 5, 1, 4, 0.6f, 1, 121);
        CAUSAL("causal L 37 (vector body + tail)", 1, 37, 37, 2, 2, 0.0f, 16, 131);
#undef CAUSAL
    }
    CHECK(!attention_set_isa("sse9"), "unknown ISA name accepted");
    attention_set_isa("auto");
    self_same_tensor();
    half_inputs(DT_BF16);
    half_inputs(DT_F16);
    frozen_kv();
    causal_no_future();
    expect_fatal("causal Lq != Lk", causal_lq_ne_lk, NULL,
                 (const char *[]){"op_attention_causal", "as many queries as keys", NULL});
    expect_fatal("attention width", bad_width, NULL, (const char *[]){"op_attention", "[1, 4, 8]", "[1, 5, 6]", NULL});
    expect_fatal("attention k vs v", bad_kv, NULL, (const char *[]){"op_attention", "[1, 5, 8]", "[1, 6, 8]", NULL});
    expect_fatal("attention heads", bad_heads, NULL, (const char *[]){"op_attention", "[1, 4, 10]", "3 heads", NULL});
    expect_fatal("attention batch", bad_batch, NULL, (const char *[]){"op_attention", "[2, 4, 8]", "[3, 5, 8]", NULL});
    expect_fatal("attention cuda", cuda_attention, NULL, (const char *[]){"op_attention", "CUDA backend", NULL});
    return check_summary();
}
