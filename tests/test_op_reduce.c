// op_sum and op_mean: forward against double sums (including a large parallel case and bf16
// storage), finite-difference gradients, and errors.
#include "tests/check.h"
#include "tests/op_test_util.h"

static Tensor *sum_fn(void *ctx, Tensor *const *in) { (void)ctx; return op_sum(in[0]); }
static Tensor *mean_fn(void *ctx, Tensor *const *in) { (void)ctx; return op_mean(in[0]); }
static Tensor *mean_sq_fn(void *ctx, Tensor *const *in) { (void)ctx; return op_mean(op_mul(in[0], in[0])); }

static void empty_mean(void *ctx) {
    (void)ctx;
    int64_t s[] = {0, 3};
    op_mean(test_input("x", 2, s, 1, 1, false));
}
static void cuda_sum(void *ctx) {
    (void)ctx;
    Tensor g = fake_cuda_tensor(5);
    op_sum(&g);
}

int main(void) {
    int64_t sizes[][3] = {{1, 1, 1}, {2, 3, 5}, {7, 129, 131}};  // the last one runs the parallel reduction
    for (int c = 0; c < 3; c++) {
        Tensor *x = test_input("x", 3, sizes[c], 60 + c, 1.0f, false);
        double s = 0;
        for (int64_t i = 0; i < x->numel; i++) s += tensor_data_f32(x)[i];
        Tensor *ys = op_sum(x), *ym = op_mean(x);
        char what[64];
        snprintf(what, sizeof what, "sum %s", shape_str(x));
        CHECK(ys->ndim == 1 && ys->shape[0] == 1, "sum shape %s", shape_str(ys));
        CHECK_NEAR(tensor_data_f32(ys)[0], s, 1e-6 * fmax(1, fabs(s)) + 1e-5, what);
        snprintf(what, sizeof what, "mean %s", shape_str(x));
        CHECK_NEAR(tensor_data_f32(ym)[0], s / x->numel, 1e-7 + 1e-6 * fabs(s / x->numel), what);
        tensor_free(x);
        ag_step_reset();
    }
    {
        int64_t s[] = {4};
        Tensor *h = tensor_new_persistent("h", 1, s, DT_BF16);
        float v[] = {1.0f, 2.5f, -0.5f, 8.0f};
        for (int i = 0; i < 4; i++) ((uint16_t *)h->data)[i] = f32_to_bf16(v[i]);
        CHECK_NEAR(tensor_data_f32(op_sum(h))[0], 11.0, 0, "sum of bf16 input");
        CHECK_NEAR(tensor_data_f32(op_mean(h))[0], 2.75, 0, "mean of bf16 input");
        tensor_free(h);
        ag_step_reset();
    }
    int64_t s1[] = {1}, s2[] = {3, 5}, s3[] = {2, 3, 7};
    Tensor *xs[] = {test_input("x1", 1, s1, 70, 1, true), test_input("x2", 2, s2, 71, 1, true),
                    test_input("x3", 3, s3, 72, 1, true)};
    for (int i = 0; i < 3; i++) {
        char name[64];
        snprintf(name, sizeof name, "sum %s", shape_str(xs[i]));
        gradcheck(name, sum_fn, NULL, 1, &xs[i], 1e-2, 1e-3, 1e-5, 0);
        snprintf(name, sizeof name, "mean %s", shape_str(xs[i]));
        gradcheck(name, mean_fn, NULL, 1, &xs[i], 1e-2, 1e-3, 1e-5, 0);
        snprintf(name, sizeof name, "mean(x*x) %s", shape_str(xs[i]));
        gradcheck(name, mean_sq_fn, NULL, 1, &xs[i], 1e-2, 1e-3, 1e-5, 0);
        tensor_free(xs[i]);
    }
    // Gradient accumulates across two backward passes (+=, never =).
    {
        Tensor *x = test_input("x", 2, s2, 73, 1, true);
        ag_backward(op_sum(x));
        ag_step_reset();
        ag_backward(op_mean(x));
        CHECK_NEAR(x->grad[7], 1.0 + 1.0 / 15, 1e-7, "grad accumulates over two backward passes");
        tensor_free(x);
        ag_step_reset();
    }
    expect_fatal("mean of [0, 3]", empty_mean, NULL, (const char *[]){"op_mean", "[0, 3]", NULL});
    expect_fatal("sum on CUDA", cuda_sum, NULL, (const char *[]){"op_sum", "CUDA", NULL});
    return check_summary();
}
