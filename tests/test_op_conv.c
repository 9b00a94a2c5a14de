// op_conv2d: forward against a double-precision direct convolution, finite-difference gradients of
// x, weight and bias over kernel sizes 1/2/3/5, non-square kernels and inputs, stride 1/2/3,
// padding 0/1/2, batch > 1 (including batches split over several GEMM chunks), bias NULL;
// half-precision weights; frozen weights (no gradient, no dW GEMM); shape errors.
// op_group_norm_silu_conv2d, op_concat_conv2d and op_upsample_nearest2x_conv2d against the ops they
// fuse: bitwise, frozen and trainable conv weights, and that the fused forms keep less arena memory.
// Tiled im2col (dense_tuning.h knobs force small tiles and each threading schedule): tiles of one
// output row, tiles that do not divide the rows, stride 2/3, padding, kernel 1/3/5, by finite
// differences and against a double-precision forward/dX/dW/db on larger inputs (seams inside).
//
// Gradcheck tolerances: conv is linear in each input, so central differences (eps 1e-2) are exact
// up to f32 rounding of the forward: rtol 1e-3, atol 1e-4.
#include "autograd/dense_tuning.h"
#include "autograd/gemm.h"
#include "tests/dense_test_util.h"

#define EPS 1e-2
#define RTOL 1e-3
#define ATOL 1e-4

typedef struct {
    const char *name;
    int64_t N, Cin, H, W, Cout, kh, kw;
    int stride, pad;
    bool bias;
} ConvCase;

static double *ref_conv(const Tensor *x, const Tensor *w, const Tensor *b, int stride, int pad, int64_t *ho_out,
                        int64_t *wo_out) {
    int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    int64_t O = w->shape[0], kh = w->shape[2], kw = w->shape[3];
    int64_t Ho = (H + 2 * pad - kh) / stride + 1, Wo = (W + 2 * pad - kw) / stride + 1;
    const float *X = tensor_f32(x), *Wt = tensor_f32(w), *B = b ? tensor_f32(b) : NULL;
    double *y = malloc(sizeof(double) * N * O * Ho * Wo);
    for (int64_t n = 0; n < N; n++)
        for (int64_t o = 0; o < O; o++)
            for (int64_t i = 0; i < Ho; i++)
                for (int64_t j = 0; j < Wo; j++) {
                    double s = B ? B[o] : 0.0;
                    for (int64_t c = 0; c < C; c++)
                        for (int64_t a = 0; a < kh; a++)
                            for (int64_t e = 0; e < kw; e++) {
                                int64_t ih = i * stride - pad + a, iw = j * stride - pad + e;
                                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                                s += (double)X[((n * C + c) * H + ih) * W + iw] * Wt[((o * C + c) * kh + a) * kw + e];
                            }
                    y[((n * O + o) * Ho + i) * Wo + j] = s;
                }
    *ho_out = Ho;
    *wo_out = Wo;
    return y;
}

typedef struct { int stride, pad, has_bias; } ConvArgs;
static Tensor *fn_conv(void *ctx, Tensor *const *in) {
    ConvArgs *a = ctx;
    return op_conv2d(in[0], in[1], a->has_bias ? in[2] : NULL, a->stride, a->pad);
}

static void conv_case(const ConvCase *k, uint64_t seed, long max_elems) {
    int64_t xs[4] = {k->N, k->Cin, k->H, k->W}, ws[4] = {k->Cout, k->Cin, k->kh, k->kw}, bs[1] = {k->Cout};
    Tensor *x = test_input("x", 4, xs, seed, 1.0f, true);
    Tensor *w = test_input("w", 4, ws, seed + 1, 0.3f, true);
    Tensor *b = k->bias ? test_input("bias", 1, bs, seed + 2, 1.0f, true) : NULL;
    ag_step_reset();
    Tensor *y = op_conv2d(x, w, b, k->stride, k->pad);
    int64_t Ho, Wo;
    double *ref = ref_conv(x, w, b, k->stride, k->pad, &Ho, &Wo);
    CHECK(y->ndim == 4 && y->shape[0] == k->N && y->shape[1] == k->Cout && y->shape[2] == Ho && y->shape[3] == Wo,
          "%s: output shape %s, expected [%ld, %ld, %ld, %ld]", k->name, shape_str(y), (long)k->N, (long)k->Cout,
          (long)Ho, (long)Wo);
    char what[160];
    snprintf(what, sizeof what, "conv forward %s", k->name);
    check_close_ref(what, y->data, ref, y->numel, 1e-6, 1e-6);
    free(ref);
    ConvArgs args = {k->stride, k->pad, k->bias};
    Tensor *in[3] = {x, w, b};
    gradcheck(k->name, fn_conv, &args, k->bias ? 3 : 2, in, EPS, RTOL, ATOL, max_elems);
    tensor_free(x);
    tensor_free(w);
    if (b) tensor_free(b);
}

// Double-precision dX [N, C, H, W], dW [O, C, kh, kw], db [O] of sum(y * dy).
static void ref_conv_backward(const Tensor *x, const Tensor *w, const float *dy, int stride, int pad, double *dx,
                              double *dw, double *db) {
    int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    int64_t O = w->shape[0], kh = w->shape[2], kw = w->shape[3];
    int64_t Ho = (H + 2 * pad - kh) / stride + 1, Wo = (W + 2 * pad - kw) / stride + 1;
    const float *X = tensor_f32(x), *Wt = tensor_f32(w);
    memset(dx, 0, sizeof(double) * x->numel);
    memset(dw, 0, sizeof(double) * w->numel);
    memset(db, 0, sizeof(double) * O);
    for (int64_t n = 0; n < N; n++)
        for (int64_t o = 0; o < O; o++)
            for (int64_t i = 0; i < Ho; i++)
                for (int64_t j = 0; j < Wo; j++) {
                    double g = dy[((n * O + o) * Ho + i) * Wo + j];
                    db[o] += g;
                    for (int64_t c = 0; c < C; c++)
                        for (int64_t a = 0; a < kh; a++)
                            for (int64_t e = 0; e < kw; e++) {
                                int64_t ih = i * stride - pad + a, iw = j * stride - pad + e;
                                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                                int64_t xi = ((n * C + c) * H + ih) * W + iw, wi = ((o * C + c) * kh + a) * kw + e;
                                dx[xi] += g * Wt[wi];
                                dw[wi] += g * X[xi];
                            }
                }
}

// One conv through tiles of `rows` output rows (forced through the tile budget) on `schedule`:
// forward, dX, dW and db against the double reference.
static void tiled_reference_case(const ConvCase *k, const char *schedule, int64_t rows, uint64_t seed) {
    int64_t Wo = (k->W + 2 * k->pad - k->kw) / k->stride + 1, Kc = k->Cin * k->kh * k->kw;
    conv_set_tile_floats(rows * Kc * Wo);
    CHECK(conv_set_schedule(schedule), "conv_set_schedule(%s) refused", schedule);
    int64_t xs[4] = {k->N, k->Cin, k->H, k->W}, ws[4] = {k->Cout, k->Cin, k->kh, k->kw}, bs[1] = {k->Cout};
    Tensor *x = test_input("x", 4, xs, seed, 1.0f, true);
    Tensor *w = test_input("w", 4, ws, seed + 1, 0.3f, true);
    Tensor *b = test_input("bias", 1, bs, seed + 2, 1.0f, true);
    ag_step_reset();
    Tensor *y = op_conv2d(x, w, b, k->stride, k->pad);
    int64_t Ho, Wo2;
    double *ref = ref_conv(x, w, b, k->stride, k->pad, &Ho, &Wo2);
    char what[200];
    snprintf(what, sizeof what, "tiled %s %s rows %ld: forward", k->name, schedule, (long)rows);
    check_close_ref(what, y->data, ref, y->numel, 1e-6, 1e-6);
    float *seed_dy = malloc(sizeof(float) * y->numel);
    for (int64_t i = 0; i < y->numel; i++) seed_dy[i] = (float)((i * 7919 % 23) - 11) / 11.0f;
    ag_backward_from(y, seed_dy);
    double *dx = malloc(sizeof(double) * x->numel), *dw = malloc(sizeof(double) * w->numel);
    double *db = malloc(sizeof(double) * k->Cout);
    ref_conv_backward(x, w, seed_dy, k->stride, k->pad, dx, dw, db);
    snprintf(what, sizeof what, "tiled %s %s rows %ld: dX", k->name, schedule, (long)rows);
    check_close_ref(what, x->grad, dx, x->numel, 1e-5, 1e-6);
    snprintf(what, sizeof what, "tiled %s %s rows %ld: dW", k->name, schedule, (long)rows);
    check_close_ref(what, w->grad, dw, w->numel, 1e-5, 1e-6);
    snprintf(what, sizeof what, "tiled %s %s rows %ld: db", k->name, schedule, (long)rows);
    check_close_ref(what, b->grad, db, k->Cout, 1e-5, 1e-6);
    free(ref); free(seed_dy); free(dx); free(dw); free(db);
    tensor_free(x); tensor_free(w); tensor_free(b);
    ag_step_reset();
    conv_set_tile_floats(0);
    conv_set_schedule("auto");
}

// Tile seams: small forced tiles on both schedules, finite differences on small inputs and the
// double reference on larger ones (several seams per image, batch 3 so "images" splits unevenly).
static void tiled_cases(void) {
    static const ConvCase small[] = {
        {"tiled 3x3 s1 p1", 2, 3, 7, 6, 4, 3, 3, 1, 1, true},
        {"tiled 3x3 s2 p1", 2, 2, 9, 7, 3, 3, 3, 2, 1, true},
        {"tiled 5x5 s1 p2", 1, 2, 8, 7, 3, 5, 5, 1, 2, true},
        {"tiled 5x5 s3 p2 no bias", 2, 2, 11, 10, 2, 5, 5, 3, 2, false},
        {"tiled 1x1 s2", 2, 3, 7, 7, 4, 1, 1, 2, 0, true},
        {"tiled 1x1 p1", 1, 2, 5, 4, 3, 1, 1, 1, 1, true},
    };
    static const char *schedules[] = {"images", "shared"};
    for (int sc = 0; sc < 2; sc++) {
        CHECK(conv_set_schedule(schedules[sc]), "conv_set_schedule(%s) refused", schedules[sc]);
        for (size_t i = 0; i < sizeof small / sizeof small[0]; i++) {
            ConvCase k = small[i];
            char name[96];
            for (int64_t rows = 1; rows <= 2; rows++) {  // one row per tile; 2 rows (odd Ho: a short last tile)
                int64_t Wo = (k.W + 2 * k.pad - k.kw) / k.stride + 1;
                conv_set_tile_floats(rows * k.Cin * k.kh * k.kw * Wo);
                snprintf(name, sizeof name, "%s %s rows %ld", small[i].name, schedules[sc], (long)rows);
                k.name = name;
                conv_case(&k, 900 + 10 * i + rows, 0);
            }
        }
        conv_set_tile_floats(0);
    }
    conv_set_schedule("auto");
    static const ConvCase big[] = {
        {"3x3 s1 p1 20x17", 3, 5, 20, 17, 6, 3, 3, 1, 1, true},
        {"3x3 s2 p1 21x16", 3, 4, 21, 16, 5, 3, 3, 2, 1, true},
        {"5x5 s1 p2 19x12", 3, 3, 19, 12, 4, 5, 5, 1, 2, true},
        {"1x1 s1 p1 13x9", 3, 6, 13, 9, 5, 1, 1, 1, 1, true},
        {"3x3 s1 p0 thin 30x24", 3, 16, 30, 24, 2, 3, 3, 1, 0, true},
    };
    static const int64_t rows_list[] = {1, 3, 7, 1000};  // 1000: whole images (no seams)
    for (size_t i = 0; i < sizeof big / sizeof big[0]; i++)
        for (int sc = 0; sc < 2; sc++)
            for (size_t r = 0; r < sizeof rows_list / sizeof rows_list[0]; r++)
                tiled_reference_case(&big[i], schedules[sc], rows_list[r], 1300 + 10 * i);
    CHECK(!conv_set_schedule("bogus"), "conv_set_schedule accepted an unknown name");
}

// Half-precision weight: output and all gradients equal the f32 op on the widened weight.
static void half_weight(DType dt) {
    int64_t xs[4] = {2, 3, 9, 8}, ws[4] = {4, 3, 3, 3}, bs[1] = {4};
    Tensor *x = test_input("x", 4, xs, 51, 1.0f, true);
    Tensor *w32 = test_input("w", 4, ws, 52, 0.3f, true);
    Tensor *bias = test_input("bias", 1, bs, 53, 1.0f, true);
    Tensor *wh = half_copy(w32, dt, "w_half"), *ww = widened_copy(wh, "w_widened");
    wh->requires_grad = ww->requires_grad = true;
    ag_step_reset();
    Tensor *yh = op_conv2d(x, wh, bias, 2, 1);
    ag_backward_from(yh, NULL);
    int64_t ny = yh->numel;
    float *y_h = malloc(sizeof(float) * ny), *dx_h = malloc(sizeof(float) * x->numel);
    memcpy(y_h, yh->data, sizeof(float) * ny);
    memcpy(dx_h, x->grad, sizeof(float) * x->numel);
    tensor_zero_grad(x);
    tensor_zero_grad(bias);
    ag_step_reset();
    Tensor *yw = op_conv2d(x, ww, bias, 2, 1);
    ag_backward_from(yw, NULL);
    check_half_vs_widened("conv", dt, y_h, dx_h, x, yw, wh, ww);
    free(y_h);
    free(dx_h);
    tensor_free(x); tensor_free(w32); tensor_free(bias); tensor_free(wh); tensor_free(ww);
    ag_step_reset();
}

// Frozen weight and bias: no gradient buffers, and backward issues only the dx GEMMs
// (2 * Cout * Cin*kh*kw * Ho*Wo per image), for a 3x3 and a pointwise conv.
static void frozen_weights(int64_t k, int stride, int pad) {
    int64_t N = 3, C = 5, H = 10, W = 7, O = 6;
    int64_t xs[4] = {N, C, H, W}, ws[4] = {O, C, k, k}, bs[1] = {O};
    Tensor *x = test_input("x", 4, xs, 61, 1.0f, true);
    Tensor *w = test_input("w", 4, ws, 62, 0.3f, false);
    Tensor *b = test_input("bias", 1, bs, 63, 1.0f, false);
    ag_step_reset();
    Tensor *y = op_conv2d(x, w, b, stride, pad);
    uint64_t before = gemm_flop_count();
    ag_backward_from(y, NULL);
    uint64_t flops = gemm_flop_count() - before, expect = 2ull * N * O * C * k * k * y->shape[2] * y->shape[3];
    CHECK(w->grad == NULL && b->grad == NULL, "frozen conv weight/bias (k=%ld) got a gradient buffer", (long)k);
    CHECK(flops == expect, "conv k=%ld backward with frozen W issued %lu flops, expected dx only: %lu", (long)k,
          (unsigned long)flops, (unsigned long)expect);
    // with a trainable weight the dW GEMMs come on top
    w->requires_grad = true;
    ag_step_reset();
    y = op_conv2d(x, w, b, stride, pad);
    before = gemm_flop_count();
    ag_backward_from(y, NULL);
    CHECK(gemm_flop_count() - before == 2 * expect, "conv k=%ld backward with trainable W issued %lu flops, expected %lu",
          (long)k, (unsigned long)(gemm_flop_count() - before), (unsigned long)(2 * expect));
    tensor_free(x); tensor_free(w); tensor_free(b);
    ag_step_reset();
}

// ---- shape errors (forked children) -------------------------------------------------------------------
static void bad_channels(void *ctx) {
    (void)ctx;
    op_conv2d(tensor_new4(2, 3, 8, 8), tensor_new4(4, 5, 3, 3), NULL, 1, 1);
}
static void bad_bias(void *ctx) {
    (void)ctx;
    op_conv2d(tensor_new4(2, 3, 8, 8), tensor_new4(4, 3, 3, 3), tensor_new1(5), 1, 1);
}
static void bad_kernel(void *ctx) {
    (void)ctx;
    op_conv2d(tensor_new4(1, 3, 2, 2), tensor_new4(4, 3, 5, 5), NULL, 1, 1);
}
static void bad_rank(void *ctx) {
    (void)ctx;
    op_conv2d(tensor_new3(3, 8, 8), tensor_new4(4, 3, 3, 3), NULL, 1, 1);
}
static void bad_stride(void *ctx) {
    (void)ctx;
    op_conv2d(tensor_new4(1, 3, 8, 8), tensor_new4(4, 3, 3, 3), NULL, 0, 1);
}
static void cuda_conv(void *ctx) {
    (void)ctx;
    Tensor *w = tensor_new4(4, 3, 3, 3);
    w->device = DEV_CUDA;
    op_conv2d(tensor_new4(1, 3, 8, 8), w, NULL, 1, 1);
}

static Tensor *conv3x3(Tensor *x, Tensor *w) { return op_conv2d(x, w, NULL, 1, 1); }

// A 64 -> 64 3x3 bf16 weight (144 KiB widened) on a 1 x 64 x 4 x 4 input: outputs and grads 4 KiB each.
static void conv_half_weight_scratch(void) {
    int64_t xs[4] = {1, 64, 4, 4}, ws[4] = {64, 64, 3, 3};
    Tensor *x = test_input("x", 4, xs, 61, 1.0f, true), *w32 = test_input("w", 4, ws, 62, 0.05f, false);
    Tensor *wh = half_copy(w32, DT_BF16, "w_half");
    check_half_weight_scratch("conv2d bf16 weight scratch", conv3x3, x, wh, 32 * 1024);
    tensor_free(x); tensor_free(w32); tensor_free(wh);
}

// ---- fused convolutions against the ops they fuse ------------------------------------------------------
// fn(ctx, in, fused) builds y both ways. Each way runs forward and backward of sum(y * wy); the output
// and the gradients of in[0..n) (NULL entries skipped) must be present in both and bitwise equal.
// kept[fused] = the arena bytes that way's forward kept.
typedef Tensor *(*FusedCaseFn)(void *ctx, Tensor *const *in, bool fused);

static void compare_fused(const char *what, FusedCaseFn fn, void *ctx, Tensor *const *in, int n, size_t kept[2]) {
    float *ref[AG_MAX_INPUTS + 1] = {0};
    for (int fused = 0; fused < 2; fused++) {
        for (int i = 0; i < n; i++)
            if (in[i]) tensor_zero_grad(in[i]);
        ag_step_reset();
        size_t before = arena_used();
        Tensor *y = fn(ctx, in, fused);
        kept[fused] = arena_used() - before;
        Tensor *wy = test_input("wy", 4, y->shape, 76, 1.0f, false);
        ag_backward(op_sum(op_mul(y, wy)));
        for (int i = 0; i <= n; i++) {  // 0: the output, then the inputs' gradients
            const Tensor *t = i == 0 ? y : in[i - 1];
            const float *got = i == 0 ? y->data : t ? t->grad : NULL;
            size_t bytes = t ? sizeof(float) * (size_t)t->numel : 0;
            if (fused) CHECK((ref[i] != NULL) == (got != NULL), "%s: output/gradient %d present in one form only", what, i);
            if (!got) continue;
            if (!fused) {
                ref[i] = malloc(bytes);
                memcpy(ref[i], got, bytes);
            } else {
                CHECK(ref[i] && memcmp(ref[i], got, bytes) == 0, "%s: %s %d differs from the composition", what,
                      i == 0 ? "output" : "gradient of input", i - 1);
            }
        }
        tensor_free(wy);
    }
    for (int i = 0; i <= n; i++) free(ref[i]);
    ag_step_reset();
}

typedef struct {
    int stride, pad, n;
} FusedConvArgs;

// y = conv(silu(groupnorm(x))): in = {x, gamma, beta, w, bias}.
static Tensor *gn_silu_conv_fn(void *ctx, Tensor *const *in, bool fused) {
    const FusedConvArgs *a = ctx;
    if (fused) return op_group_norm_silu_conv2d(in[0], 3, in[1], in[2], 1e-5f, in[3], in[4], a->stride, a->pad);
    return op_conv2d(op_group_norm_silu(in[0], 3, in[1], in[2], 1e-5f), in[3], in[4], a->stride, a->pad);
}

// Frozen and trainable conv: the fused forward keeps at least the conv input (x's size) less.
static void gn_silu_conv_case(bool trainable_w, int stride, int pad, int64_t k) {
    int64_t xs[4] = {2, 6, 9, 8}, cs[1] = {6}, ws[4] = {5, 6, k, k}, bs[1] = {5};
    Tensor *in[5] = {test_input("x", 4, xs, 71, 1.5f, true), test_input("gamma", 1, cs, 72, 1.0f, true),
                     test_input("beta", 1, cs, 73, 1.0f, true), test_input("w", 4, ws, 74, 0.3f, trainable_w),
                     test_input("bias", 1, bs, 75, 1.0f, trainable_w)};
    char what[96];
    snprintf(what, sizeof what, "gn_silu_conv k=%ld s=%d p=%d %s", (long)k, stride, pad, trainable_w ? "trainable" : "frozen");
    size_t kept[2], x_bytes = (size_t)in[0]->numel * sizeof(float);
    compare_fused(what, gn_silu_conv_fn, &(FusedConvArgs){stride, pad, 0}, in, 5, kept);
    CHECK(kept[1] + x_bytes <= kept[0], "%s: fused forward kept %zu bytes, composed %zu (the conv input, %zu bytes, "
          "should be gone)", what, kept[1], kept[0], x_bytes);
    for (int i = 0; i < 5; i++) tensor_free(in[i]);
}

// y = conv(cat(in[0..n))): in = {xs..., w, bias}.
static Tensor *concat_conv_fn(void *ctx, Tensor *const *in, bool fused) {
    const FusedConvArgs *a = ctx;
    if (fused) return op_concat_conv2d(in, a->n, in[a->n], in[a->n + 1], a->stride, a->pad);
    return op_conv2d(op_concat(in, a->n, 1), in[a->n], in[a->n + 1], a->stride, a->pad);
}

// n inputs of 2, 4, 3, 1, ... channels; with n > 1 the fused forward keeps less (no concatenation).
static void concat_conv_case(int n, bool trainable_w, int stride, int pad, int64_t k) {
    Tensor *in[7];
    int64_t cin = 0;
    for (int i = 0; i < n; i++) {
        int64_t s[4] = {2, 1 + (i * 2 + 1) % 4, 7, 6};
        in[i] = test_input("x", 4, s, 80 + (uint64_t)i, 1.0f, true);
        cin += s[1];
    }
    int64_t ws[4] = {4, cin, k, k}, bs[1] = {4};
    in[n] = test_input("w", 4, ws, 90, 0.3f, trainable_w);
    in[n + 1] = test_input("bias", 1, bs, 91, 1.0f, trainable_w);
    char what[96];
    snprintf(what, sizeof what, "concat_conv n=%d k=%ld s=%d %s", n, (long)k, stride, trainable_w ? "trainable" : "frozen");
    size_t kept[2];
    compare_fused(what, concat_conv_fn, &(FusedConvArgs){stride, pad, n}, in, n + 2, kept);
    if (n > 1) CHECK(kept[1] < kept[0], "%s: fused forward kept %zu bytes, composed %zu", what, kept[1], kept[0]);
    for (int i = 0; i < n + 2; i++) tensor_free(in[i]);
}

// y = conv(upsample2x(x)): in = {x, w, bias}.
static Tensor *upsample_conv_fn(void *ctx, Tensor *const *in, bool fused) {
    (void)ctx;
    if (fused) return op_upsample_nearest2x_conv2d(in[0], in[1], in[2], 1, 1);
    return op_conv2d(op_upsample_nearest2x(in[0]), in[1], in[2], 1, 1);
}

// The fused forward keeps at least the upsampled tensor (4x the input) less.
static void upsample_conv_case(bool trainable_w) {
    int64_t xs[4] = {2, 3, 5, 4}, ws[4] = {4, 3, 3, 3}, bs[1] = {4};
    Tensor *in[3] = {test_input("x", 4, xs, 95, 1.0f, true), test_input("w", 4, ws, 96, 0.3f, trainable_w),
                     test_input("bias", 1, bs, 97, 1.0f, trainable_w)};
    size_t kept[2], up_bytes = 4 * (size_t)in[0]->numel * sizeof(float);
    compare_fused(trainable_w ? "upsample_conv trainable" : "upsample_conv frozen", upsample_conv_fn, NULL, in, 3, kept);
    CHECK(kept[1] + up_bytes <= kept[0], "upsample_conv: fused forward kept %zu bytes, composed %zu", kept[1], kept[0]);
    for (int i = 0; i < 3; i++) tensor_free(in[i]);
}

int main(void) {
    upsample_conv_case(false);
    upsample_conv_case(true);
    for (int n = 1; n <= 5; n++) concat_conv_case(n, true, 1, 1, 3);
    concat_conv_case(3, false, 1, 1, 3);
    concat_conv_case(2, true, 2, 0, 1);
    gn_silu_conv_case(false, 1, 1, 3);
    gn_silu_conv_case(false, 2, 1, 3);
    gn_silu_conv_case(false, 1, 0, 1);
    gn_silu_conv_case(true, 1, 1, 3);
    static const ConvCase cases[] = {
        {"3x3 s1 p1", 1, 3, 7, 9, 4, 3, 3, 1, 1, true},
        {"3x3 s2 p1 batch2", 2, 3, 8, 8, 5, 3, 3, 2, 1, true},
        {"3x3 s2 p1 odd", 2, 2, 9, 7, 3, 3, 3, 2, 1, true},
        {"3x3 s1 p0 no bias", 1, 2, 5, 8, 3, 3, 3, 1, 0, false},
        {"5x5 s1 p2", 2, 2, 9, 7, 3, 5, 5, 1, 2, true},
        {"5x5 s3 p2", 1, 2, 11, 10, 2, 5, 5, 3, 2, true},
        {"1x1 pointwise batch3", 3, 4, 6, 5, 2, 1, 1, 1, 0, true},
        {"1x1 pointwise no bias", 2, 5, 3, 4, 3, 1, 1, 1, 0, false},
        {"1x1 s2", 2, 3, 7, 7, 4, 1, 1, 2, 0, true},
        {"1x1 p1", 1, 2, 4, 3, 3, 1, 1, 1, 1, true},
        {"3x1 kernel", 2, 2, 6, 5, 3, 3, 1, 1, 1, true},
        {"2x2 s2 p0", 2, 3, 6, 6, 2, 2, 2, 2, 0, true},
        {"3x3 p2 > needed", 1, 2, 4, 4, 2, 3, 3, 1, 2, true},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) conv_case(&cases[i], 100 + 10 * i, 0);
    // Larger: 40x40 images give 1600 pixels, so 3 images are 2 batched GEMM chunks (2 + 1);
    // 8x8 images with batch 5 are one batched chunk. Gradients are spot-checked (strided subset).
    static const ConvCase big[] = {
        {"3x3 40x40 batch3 chunks", 3, 2, 40, 40, 3, 3, 3, 1, 1, true},
        {"3x3 8x8 batch5 one chunk", 5, 6, 8, 8, 7, 3, 3, 1, 1, true},
        {"3x3 s2 8x8 batch5", 5, 4, 8, 8, 3, 3, 3, 2, 1, false},
        {"1x1 16x16 batch2 32ch", 2, 32, 16, 16, 24, 1, 1, 1, 0, true},
    };
    for (size_t i = 0; i < sizeof big / sizeof big[0]; i++) conv_case(&big[i], 500 + 10 * i, 150);
    tiled_cases();
    half_weight(DT_BF16);
    half_weight(DT_F16);
    conv_half_weight_scratch();
    frozen_weights(3, 1, 1);
    frozen_weights(3, 2, 1);
    frozen_weights(1, 1, 0);
    expect_fatal("conv channels", bad_channels, NULL, (const char *[]){"op_conv2d", "[2, 3, 8, 8]", "[4, 5, 3, 3]", NULL});
    expect_fatal("conv bias", bad_bias, NULL, (const char *[]){"op_conv2d", "[5]", "[4, 3, 3, 3]", NULL});
    expect_fatal("conv kernel too big", bad_kernel, NULL, (const char *[]){"op_conv2d", "[1, 3, 2, 2]", "[4, 3, 5, 5]", NULL});
    expect_fatal("conv rank", bad_rank, NULL, (const char *[]){"op_conv2d", "[3, 8, 8]", "[4, 3, 3, 3]", NULL});
    expect_fatal("conv stride", bad_stride, NULL, (const char *[]){"op_conv2d", "stride 0", NULL});
    expect_fatal("conv cuda", cuda_conv, NULL, (const char *[]){"op_conv2d", "CUDA backend", NULL});
    return check_summary();
}
