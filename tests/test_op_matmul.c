// op_matmul, op_linear and op_add_projection_into: forward against double-precision loops,
// finite-difference gradients of every input (broadcast and batched B, trans_b, bias / no bias;
// linear and 1x1-conv projections), half-precision weights, frozen weights (no gradient and no dW
// GEMM), and shape errors.
//
// Gradcheck tolerances: both ops are linear in each input, so central differences with eps 1e-2
// are exact up to f32 rounding of the forward: rtol 1e-3, atol 1e-4.
#include "autograd/gemm.h"
#include "tests/dense_test_util.h"

#define EPS 1e-2
#define RTOL 1e-3
#define ATOL 1e-4

// ---- references ----------------------------------------------------------------------------------
// a [batch, M, K], b [K, N] (or [N, K] when trans_b) when b_batched is false, else per batch.
static double *ref_matmul(const Tensor *a, const Tensor *b, bool trans_b) {
    int64_t M = a->shape[a->ndim - 2], K = a->shape[a->ndim - 1];
    int64_t N = b->shape[b->ndim - (trans_b ? 2 : 1)], batch = a->numel / (M * K);
    bool batched = b->ndim > 2;
    const float *A = a->data, *B = b->data;
    double *y = malloc(sizeof(double) * batch * M * N);
    for (int64_t t = 0; t < batch; t++) {
        const float *Bt = batched ? B + t * K * N : B;
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++) {
                double s = 0;
                for (int64_t k = 0; k < K; k++)
                    s += (double)A[(t * M + i) * K + k] * (trans_b ? Bt[j * K + k] : Bt[k * N + j]);
                y[(t * M + i) * N + j] = s;
            }
    }
    return y;
}

static double *ref_linear(const Tensor *x, const Tensor *w, const Tensor *bias) {
    int64_t in = w->shape[1], out = w->shape[0], rows = x->numel / in;
    const float *X = x->data, *W = w->data, *Bv = bias ? bias->data : NULL;
    double *y = malloc(sizeof(double) * rows * out);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t o = 0; o < out; o++) {
            double s = Bv ? Bv[o] : 0.0;
            for (int64_t i = 0; i < in; i++) s += (double)X[r * in + i] * W[o * in + i];
            y[r * out + o] = s;
        }
    return y;
}

// ---- gradcheck adaptors ---------------------------------------------------------------------------
static Tensor *fn_matmul(void *ctx, Tensor *const *in) { return op_matmul(in[0], in[1], *(bool *)ctx); }
static Tensor *fn_linear(void *ctx, Tensor *const *in) {
    int has_bias = *(int *)ctx;
    return op_linear(in[0], in[1], has_bias ? in[2] : NULL);
}

static void matmul_case(const char *name, int a_nd, const int64_t *a_shape, int b_nd, const int64_t *b_shape,
                        bool trans_b, uint64_t seed) {
    Tensor *a = test_input("a", a_nd, a_shape, seed, 1.0f, true);
    Tensor *b = test_input("b", b_nd, b_shape, seed + 1, 1.0f, true);
    ag_step_reset();
    Tensor *y = op_matmul(a, b, trans_b);
    double *ref = ref_matmul(a, b, trans_b);
    char what[160];
    snprintf(what, sizeof what, "matmul forward %s", name);
    check_close_ref(what, y->data, ref, y->numel, 1e-6, 1e-6);
    CHECK(y->ndim == a_nd && y->shape[a_nd - 2] == a_shape[a_nd - 2], "%s: output shape %s", name, shape_str(y));
    free(ref);
    Tensor *in[2] = {a, b};
    gradcheck(name, fn_matmul, &trans_b, 2, in, EPS, RTOL, ATOL, 0);
    tensor_free(a);
    tensor_free(b);
}

static void linear_case(const char *name, int x_nd, const int64_t *x_shape, int64_t out, bool with_bias,
                        uint64_t seed) {
    int64_t in_f = x_shape[x_nd - 1], ws[2] = {out, in_f}, bs[1] = {out};
    Tensor *x = test_input("x", x_nd, x_shape, seed, 1.0f, true);
    Tensor *w = test_input("w", 2, ws, seed + 1, 0.5f, true);
    Tensor *b = with_bias ? test_input("bias", 1, bs, seed + 2, 1.0f, true) : NULL;
    ag_step_reset();
    Tensor *y = op_linear(x, w, b);
    double *ref = ref_linear(x, w, b);
    char what[160];
    snprintf(what, sizeof what, "linear forward %s", name);
    check_close_ref(what, y->data, ref, y->numel, 1e-6, 1e-6);
    free(ref);
    int has_bias = with_bias;
    Tensor *in[3] = {x, w, b};
    gradcheck(name, fn_linear, &has_bias, with_bias ? 3 : 2, in, EPS, RTOL, ATOL, 0);
    tensor_free(x);
    tensor_free(w);
    if (b) tensor_free(b);
}

// op_add_projection_into(y0, x, w, s) with y0 = yin * yin (an activation, quadratic in yin: central
// differences stay exact up to rounding): forward against y0 + s * proj(x) in double, the result on
// y0's storage, gradients of yin, x and w.
#define PROJ_S (-0.7f)
static Tensor *fn_projection(void *ctx, Tensor *const *in) {
    (void)ctx;
    return op_add_projection_into(op_mul(in[0], in[0]), in[1], in[2], PROJ_S);
}

static void projection_case(const char *name, int nd, const int64_t *y_shape, const int64_t *x_shape,
                            const int64_t *w_shape, int w_nd, uint64_t seed) {
    Tensor *yin = test_input("yin", nd, y_shape, seed, 1.0f, true), *x = test_input("x", nd, x_shape, seed + 1, 1.0f, true);
    Tensor *w = test_input("w", w_nd, w_shape, seed + 2, 0.5f, true);
    bool channels = w_nd == 4;
    int64_t out = w_shape[0], in = w_shape[1], P = channels ? x_shape[2] * x_shape[3] : 1;
    int64_t rows = channels ? x_shape[0] : x->numel / in;  // channels: batch
    ag_step_reset();
    Tensor *y0 = op_mul(yin, yin);
    double *ref = malloc(sizeof(double) * (size_t)y0->numel);
    const float *Y = y0->data, *X = x->data, *W = w->data;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t o = 0; o < out; o++)
            for (int64_t p = 0; p < P; p++) {
                double s = 0;
                for (int64_t i = 0; i < in; i++)
                    s += (double)W[o * in + i] * (channels ? X[(r * in + i) * P + p] : X[r * in + i]);
                int64_t at = channels ? (r * out + o) * P + p : r * out + o;
                ref[at] = Y[at] + PROJ_S * s;
            }
    Tensor *y = op_add_projection_into(y0, x, w, PROJ_S);
    CHECK(y != y0 && y->data == y0->data && tensor_same_shape(y, y0), "%s: result must be a new tensor on y's storage",
          name);
    char what[160];
    snprintf(what, sizeof what, "projection forward %s", name);
    check_close_ref(what, y->data, ref, y->numel, 1e-6, 1e-6);
    free(ref);
    gradcheck(name, fn_projection, NULL, 3, (Tensor *[]){yin, x, w}, EPS, RTOL, ATOL, 0);
    tensor_free(yin);
    tensor_free(x);
    tensor_free(w);
}

static void bad_projection_persistent(void *ctx) {
    (void)ctx;
    int64_t s[2] = {2, 3};
    Tensor *y = test_input("frozen_out", 2, s, 1, 1, false);
    op_add_projection_into(y, tensor_new2(2, 4), tensor_new2(3, 4), 1.0f);
}
static void bad_projection_shapes(void *ctx) {
    (void)ctx;
    op_add_projection_into(tensor_new4(2, 6, 4, 5), tensor_new4(2, 3, 4, 4), tensor_new4(6, 3, 1, 1), 1.0f);
}

// Half-precision weight: output and dx equal the f32 op on the widened weight; w gets an f32 grad.
static void linear_half_weight(DType dt) {
    int64_t xs[3] = {2, 5, 12}, ws[2] = {7, 12}, bs[1] = {7};
    Tensor *x = test_input("x", 3, xs, 31, 1.0f, true);
    Tensor *w32 = test_input("w", 2, ws, 32, 0.5f, true);
    Tensor *bias = test_input("bias", 1, bs, 33, 1.0f, false);
    Tensor *wh = half_copy(w32, dt, "w_half"), *ww = widened_copy(wh, "w_widened");
    wh->requires_grad = ww->requires_grad = true;
    ag_step_reset();
    Tensor *yh = op_linear(x, wh, bias);
    ag_backward_from(yh, NULL);
    float *dx_h = malloc(sizeof(float) * x->numel), *y_h = malloc(sizeof(float) * yh->numel);
    memcpy(dx_h, x->grad, sizeof(float) * x->numel);
    memcpy(y_h, yh->data, sizeof(float) * yh->numel);
    tensor_zero_grad(x);
    ag_step_reset();  // drop the first tape before the second backward
    Tensor *yw = op_linear(x, ww, bias);
    ag_backward_from(yw, NULL);
    check_half_vs_widened("linear", dt, y_h, dx_h, x, yw, wh, ww);
    free(dx_h);
    free(y_h);
    tensor_free(x); tensor_free(w32); tensor_free(bias); tensor_free(wh); tensor_free(ww);
    ag_step_reset();
}

// Frozen weights: no gradient buffer, and backward issues only the dx GEMM.
static void frozen_weights(void) {
    int64_t xs[2] = {9, 16}, ws[2] = {11, 16}, bs[1] = {11};
    Tensor *x = test_input("x", 2, xs, 41, 1.0f, true);
    Tensor *w = test_input("w", 2, ws, 42, 0.5f, false);
    Tensor *b = test_input("bias", 1, bs, 43, 1.0f, false);
    ag_step_reset();
    Tensor *y = op_linear(x, w, b);
    uint64_t before = gemm_flop_count();
    ag_backward_from(y, NULL);
    uint64_t flops = gemm_flop_count() - before;
    CHECK(w->grad == NULL && b->grad == NULL, "frozen linear weight/bias got a gradient buffer");
    CHECK(x->grad != NULL, "linear x got no gradient");
    CHECK(flops == 2ull * 9 * 16 * 11, "linear backward with frozen W issued %lu flops, expected only dx's %lu",
          (unsigned long)flops, 2ul * 9 * 16 * 11);
    // matmul with a frozen B
    Tensor *bm = test_input("b", 2, (int64_t[]){16, 5}, 44, 1.0f, false);
    ag_step_reset();
    tensor_zero_grad(x);
    Tensor *z = op_matmul(x, bm, false);
    before = gemm_flop_count();
    ag_backward_from(z, NULL);
    CHECK(bm->grad == NULL, "frozen matmul b got a gradient buffer");
    CHECK(gemm_flop_count() - before == 2ull * 9 * 16 * 5, "matmul backward with frozen b issued %lu flops",
          (unsigned long)(gemm_flop_count() - before));
    // nothing requires grad: no node at all
    x->requires_grad = false;
    ag_step_reset();
    op_linear(x, w, b);
    CHECK(ag_tape_size() == 0, "linear with no trainable input recorded %d nodes", ag_tape_size());
    tensor_free(x); tensor_free(w); tensor_free(b); tensor_free(bm);
    ag_step_reset();
}

// ---- shape errors (each runs in a forked child) ------------------------------------------------------
static void bad_matmul_inner(void *ctx) {
    (void)ctx;
    op_matmul(tensor_new2(2, 3), tensor_new2(4, 5), false);
}
static void bad_matmul_batch(void *ctx) {
    (void)ctx;
    op_matmul(tensor_new3(2, 3, 4), tensor_new3(3, 4, 5), false);
}
static void bad_linear_in(void *ctx) {
    (void)ctx;
    op_linear(tensor_new2(6, 8), tensor_new2(3, 7), NULL);
}
static void bad_linear_bias(void *ctx) {
    (void)ctx;
    op_linear(tensor_new2(6, 8), tensor_new2(3, 8), tensor_new1(4));
}
static void cuda_linear(void *ctx) {
    (void)ctx;
    Tensor *x = tensor_new2(6, 8);
    x->device = DEV_CUDA;
    op_linear(x, tensor_new2(3, 8), NULL);
}

static Tensor *linear_no_bias(Tensor *x, Tensor *w) { return op_linear(x, w, NULL); }

// A 256 x 256 bf16 weight (256 KiB widened) against a 2 x 256 input: outputs and grads are 2 KiB each.
static void linear_half_weight_scratch(void) {
    int64_t xs[2] = {2, 256}, ws[2] = {256, 256};
    Tensor *x = test_input("x", 2, xs, 41, 1.0f, true), *w32 = test_input("w", 2, ws, 42, 0.1f, false);
    Tensor *wh = half_copy(w32, DT_BF16, "w_half");
    check_half_weight_scratch("linear bf16 weight scratch", linear_no_bias, x, wh, 32 * 1024);
    tensor_free(x); tensor_free(w32); tensor_free(wh);
}

int main(void) {
    // matmul: broadcast B over leading dims, batched B, trans_b, odd sizes
    matmul_case("matmul 2d", 2, (int64_t[]){5, 7}, 2, (int64_t[]){7, 3}, false, 1);
    matmul_case("matmul broadcast 4d", 4, (int64_t[]){2, 3, 5, 4}, 2, (int64_t[]){4, 6}, false, 2);
    matmul_case("matmul broadcast trans_b", 3, (int64_t[]){2, 5, 4}, 2, (int64_t[]){6, 4}, true, 3);
    matmul_case("matmul batched", 3, (int64_t[]){3, 5, 4}, 3, (int64_t[]){3, 4, 7}, false, 4);
    matmul_case("matmul batched trans_b", 4, (int64_t[]){2, 2, 3, 5}, 4, (int64_t[]){2, 2, 6, 5}, true, 5);
    matmul_case("matmul row vector", 2, (int64_t[]){1, 9}, 2, (int64_t[]){9, 1}, false, 6);
    // linear: bias / no bias, 1-d, 2-d and 3-d inputs
    linear_case("linear 2d bias", 2, (int64_t[]){4, 6}, 5, true, 11);
    linear_case("linear 3d bias", 3, (int64_t[]){2, 3, 7}, 9, true, 12);
    linear_case("linear 3d no bias", 3, (int64_t[]){2, 5, 3}, 4, false, 13);
    linear_case("linear 1d", 1, (int64_t[]){8}, 3, true, 14);
    // a larger forward: exercises the threaded GEMM and the parallel bias fill
    {
        int64_t xs[2] = {300, 320}, ws[2] = {640, 320}, bs[1] = {640};
        Tensor *x = test_input("x", 2, xs, 21, 1.0f, false), *w = test_input("w", 2, ws, 22, 0.05f, false);
        Tensor *b = test_input("bias", 1, bs, 23, 1.0f, false);
        ag_step_reset();
        Tensor *y = op_linear(x, w, b);
        double *ref = ref_linear(x, w, b);
        check_close_ref("linear forward 300x320->640", y->data, ref, y->numel, 1e-6, 1e-6);
        free(ref);
        tensor_free(x); tensor_free(w); tensor_free(b);
    }
    projection_case("projection linear 3d", 3, (int64_t[]){2, 3, 4}, (int64_t[]){2, 3, 5}, (int64_t[]){4, 5}, 2, 31);
    projection_case("projection 1x1 conv", 4, (int64_t[]){2, 6, 4, 5}, (int64_t[]){2, 3, 4, 5}, (int64_t[]){6, 3, 1, 1},
                    4, 32);
    expect_fatal("projection into a persistent y", bad_projection_persistent, NULL,
                 (const char *[]){"op_add_projection_into", "frozen_out", "persistent", NULL});
    expect_fatal("projection shapes", bad_projection_shapes, NULL,
                 (const char *[]){"op_add_projection_into", "[2, 6, 4, 5]", "[2, 3, 4, 4]", "[6, 3, 1, 1]", NULL});
    linear_half_weight(DT_BF16);
    linear_half_weight(DT_F16);
    linear_half_weight_scratch();
    frozen_weights();
    expect_fatal("matmul inner dims", bad_matmul_inner, NULL, (const char *[]){"op_matmul", "[2, 3]", "[4, 5]", NULL});
    expect_fatal("matmul batch dims", bad_matmul_batch, NULL,
                 (const char *[]){"op_matmul", "[2, 3, 4]", "[3, 4, 5]", NULL});
    expect_fatal("linear in features", bad_linear_in, NULL, (const char *[]){"op_linear", "[6, 8]", "[3, 7]", NULL});
    expect_fatal("linear bias", bad_linear_bias, NULL, (const char *[]){"op_linear", "[4]", "[3, 8]", NULL});
    expect_fatal("linear cuda", cuda_linear, NULL, (const char *[]){"op_linear", "CUDA backend", NULL});
    return check_summary();
}
