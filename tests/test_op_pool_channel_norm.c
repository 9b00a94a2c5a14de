// op_max_pool2d and op_channel_normalize (the two ops LPIPS adds): forward against direct double
// computations and known values, finite-difference gradients, bf16 activation storage, shape errors.
// The end-to-end PyTorch comparison of both is tests/test_lpips.c.
#include "tests/check.h"
#include "tests/op_test_util.h"

static Tensor *pool_fn(void *ctx, Tensor *const *in) {
    const int *ks = ctx;
    return op_max_pool2d(in[0], ks[0], ks[1]);
}
static Tensor *norm_fn(void *ctx, Tensor *const *in) { return op_channel_normalize(in[0], *(float *)ctx); }

static void test_pool_values(void) {
    // 1 x 1 x 3 x 5, kernel 2, stride 2 -> 1 x 2 (floor sizes). Ties: the first maximum.
    float v[15] = {1, 5, 2, 2, 9, 3, 0, 7, 2, 9, -1, -1, -1, -1, -1};
    Tensor *x = tensor_new_persistent("x", 4, (int64_t[]){1, 1, 3, 5}, DT_F32);
    memcpy(x->data, v, sizeof v);
    x->requires_grad = true;
    Tensor *y = op_max_pool2d(x, 2, 2);
    CHECK(y->shape[2] == 1 && y->shape[3] == 2, "pooled shape %s", shape_str(y));
    CHECK(tensor_data_f32(y)[0] == 5 && tensor_data_f32(y)[1] == 7, "maxima %g %g", tensor_data_f32(y)[0], tensor_data_f32(y)[1]);
    ag_backward_from(y, (float[]){10, 20});
    float want[15] = {0, 10, 0, 0, 0, 0, 0, 20, 0, 0, 0, 0, 0, 0, 0};
    CHECK(!memcmp(x->grad, want, sizeof want), "gradient goes to the argmax only");
    ag_step_reset();
    // Tie: 2 and 2 at (0,2) and (0,3) of window (0,1) with stride 1, kernel 2 over row 0..1: first wins.
    Tensor *t = tensor_new_persistent("t", 4, (int64_t[]){1, 1, 2, 2}, DT_F32);
    memcpy(t->data, (float[]){4, 4, 4, 4}, 16);
    t->requires_grad = true;
    ag_backward_from(op_max_pool2d(t, 2, 2), (float[]){1});
    CHECK(t->grad[0] == 1 && t->grad[1] == 0 && t->grad[3] == 0, "a tie goes to the first element");
    ag_step_reset();
    tensor_free(x);
    tensor_free(t);
}

static void test_norm_values(void) {
    int64_t shape[] = {2, 5, 3, 4};
    Tensor *x = test_input("x", 4, shape, 11, 1.0f, false);
    float eps = 1e-10f;
    Tensor *y = op_channel_normalize(x, eps);
    const float *xf = tensor_data_f32(x), *yf = tensor_data_f32(y);
    double worst = 0;
    for (int n = 0; n < 2; n++)
        for (int s = 0; s < 12; s++) {
            double ss = 0;
            for (int c = 0; c < 5; c++) ss += (double)xf[(n * 5 + c) * 12 + s] * xf[(n * 5 + c) * 12 + s];
            for (int c = 0; c < 5; c++) {
                double e = fabs(xf[(n * 5 + c) * 12 + s] / (sqrt(ss) + eps) - yf[(n * 5 + c) * 12 + s]);
                if (e > worst) worst = e;
            }
        }
    CHECK_NEAR(worst, 0.0, 3e-7, "channel normalize vs double");
    ag_step_reset();
    // An all-zero channel vector: output 0, finite gradient (PyTorch would give NaN).
    Tensor *z = tensor_new_persistent("z", 4, (int64_t[]){1, 3, 1, 1}, DT_F32);
    z->requires_grad = true;
    ag_backward_from(op_channel_normalize(z, eps), (float[]){1, 2, 3});
    CHECK(isfinite(z->grad[0]) && z->grad[1] == 2.0f / eps, "zero vector: grad g / eps, got %g", z->grad[1]);
    ag_step_reset();
    tensor_free(x);
    tensor_free(z);
}

static void test_grads(void) {
    int ks[][2] = {{2, 2}, {3, 2}, {2, 1}};   // VGG's, overlapping windows, stride 1
    for (int i = 0; i < 3; i++) {
        Tensor *x = test_input("x", 4, (int64_t[]){2, 3, 7, 6}, 20 + i, 1.0f, true);
        char name[64];
        snprintf(name, sizeof name, "max_pool2d k%d s%d", ks[i][0], ks[i][1]);
        gradcheck(name, pool_fn, ks[i], 1, &x, 1e-3, 1e-2, 1e-4, 0);
        tensor_free(x);
    }
    float eps = 1e-10f;
    Tensor *x = test_input("x", 4, (int64_t[]){2, 6, 3, 5}, 31, 1.0f, true);
    gradcheck("channel_normalize", norm_fn, &eps, 1, &x, 1e-3, 1e-2, 1e-4, 0);
    tensor_free(x);
    float big_eps = 0.5f;   // the eps term of the gradient matters here
    x = test_input("x", 3, (int64_t[]){3, 4, 7}, 32, 0.3f, true);
    gradcheck("channel_normalize eps 0.5", norm_fn, &big_eps, 1, &x, 1e-3, 1e-2, 1e-4, 0);
    tensor_free(x);
}

// bf16 activation storage: outputs are the f32-mode outputs rounded once.
static void test_bf16(void) {
    Tensor *x = test_input("x", 4, (int64_t[]){1, 4, 6, 6}, 40, 1.0f, false);
    Tensor *a = tensor_new4(1, 4, 6, 6);
    for (int64_t i = 0; i < a->numel; i++) tensor_data_f32(a)[i] = bf16_to_f32(f32_to_bf16(tensor_data_f32(x)[i]));
    Tensor *p32 = op_max_pool2d(a, 2, 2), *n32 = op_channel_normalize(a, 1e-10f);
    Tensor *h = tensor_new_on(DEV_CPU, 4, a->shape, DT_BF16);   // a bf16 activation holding a's values
    for (int64_t i = 0; i < a->numel; i++) ((uint16_t *)h->data)[i] = f32_to_bf16(tensor_data_f32(a)[i]);
    ag_set_activation_dtype(DT_BF16);
    Tensor *pb = op_max_pool2d(h, 2, 2), *nb = op_channel_normalize(h, 1e-10f);
    ag_set_activation_dtype(DT_F32);
    CHECK(pb->dtype == DT_BF16 && nb->dtype == DT_BF16, "bf16 in, bf16 out");
    bool ok = true;
    for (int64_t i = 0; i < pb->numel; i++) ok = ok && ((uint16_t *)pb->data)[i] == f32_to_bf16(tensor_data_f32(p32)[i]);
    for (int64_t i = 0; i < nb->numel; i++) ok = ok && ((uint16_t *)nb->data)[i] == f32_to_bf16(tensor_data_f32(n32)[i]);
    CHECK(ok, "bf16 outputs = f32 outputs rounded");
    ag_step_reset();
    tensor_free(x);
}

static void pool_too_small(void *ctx) {
    (void)ctx;
    op_max_pool2d(tensor_new4(1, 1, 1, 4), 2, 2);
}
static void norm_1d(void *ctx) {
    (void)ctx;
    op_channel_normalize(tensor_new1(4), 1e-10f);
}

int main(void) {
    test_pool_values();
    test_norm_values();
    test_grads();
    test_bf16();
    expect_fatal("pool on 1x4", pool_too_small, NULL, (const char *[]){"op_max_pool2d", "[1, 1, 1, 4]", NULL});
    expect_fatal("normalize 1-d", norm_1d, NULL, (const char *[]){"op_channel_normalize", "[4]", NULL});
    return check_summary();
}
