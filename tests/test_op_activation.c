// Activations: forward against double-precision formulas and known values, finite-difference
// gradients (inputs kept away from kinks), and shape errors.
#include "tests/check.h"
#include "tests/op_test_util.h"

static double ref_gelu(double x) { return 0.5 * x * (1 + erf(x / sqrt(2.0))); }
static double ref_gelu_tanh(double x) { return 0.5 * x * (1 + tanh(sqrt(2 / M_PI) * (x + 0.044715 * x * x * x))); }
static double ref_silu(double x) { return x / (1 + exp(-x)); }
static double ref_quick_gelu(double x) { return x / (1 + exp(-1.702 * x)); }

typedef enum { A_SILU, A_GELU, A_GELU_TANH, A_QUICK_GELU, A_RELU, A_LEAKY, A_CLAMP, A_SOFTMAX, A_GEGLU, A_EXP } Act;
static const char *act_name[] = {"silu", "gelu", "gelu_tanh", "quick_gelu", "relu", "leaky_relu", "clamp", "softmax",
                                 "geglu", "exp"};

static Tensor *apply(Act a, Tensor *x) {
    switch (a) {
    case A_SILU: return op_silu(x);
    case A_GELU: return op_gelu(x, false);
    case A_GELU_TANH: return op_gelu(x, true);
    case A_QUICK_GELU: return op_quick_gelu(x);
    case A_RELU: return op_relu(x);
    case A_LEAKY: return op_leaky_relu(x, 0.2f);
    case A_CLAMP: return op_clamp(x, -0.5f, 0.7f);
    case A_SOFTMAX: return op_softmax(x);
    case A_GEGLU: return op_geglu(x);
    case A_EXP: return op_exp(x);
    }
    return NULL;
}

static double ref_pointwise(Act a, double x) {
    switch (a) {
    case A_SILU: return ref_silu(x);
    case A_GELU: return ref_gelu(x);
    case A_GELU_TANH: return ref_gelu_tanh(x);
    case A_QUICK_GELU: return ref_quick_gelu(x);
    case A_RELU: return x > 0 ? x : 0;
    case A_LEAKY: return x > 0 ? x : 0.2 * x;
    case A_CLAMP: return x < -0.5 ? -0.5 : x > 0.7 ? 0.7 : x;
    case A_EXP: return exp(x);
    default: return NAN;
    }
}

static Tensor *act_fn(void *ctx, Tensor *const *in) { return apply(*(Act *)ctx, in[0]); }

static void pointwise_forward(Act a, int64_t n) {
    int64_t s[] = {n};
    Tensor *x = test_input("x", 1, s, 40 + a, 2.0f, false);
    Tensor *y = apply(a, x);
    double worst = 0;
    for (int64_t i = 0; i < n; i++) {
        double ref = ref_pointwise(a, tensor_data_f32(x)[i]), e = fabs(ref - tensor_data_f32(y)[i]);
        if (a == A_EXP) e /= fmax(1.0, ref);  // exp reaches e^8 here: relative error (expf: an ulp or two)
        if (e > worst) worst = e;
    }
    char what[64];
    snprintf(what, sizeof what, "%s forward (n %ld) vs double%s", act_name[a], (long)n, a == A_EXP ? " (relative)" : "");
    CHECK_NEAR(worst, 0.0, 2e-6, what);
    tensor_free(x);
    ag_step_reset();
}

static void grad_case(Act a, int ndim, const int64_t *shape) {
    Tensor *x = test_input("x", ndim, shape, 50 + a, 1.5f, true);
    // Keep finite differences (step 1e-3) off the kinks.
    if (a == A_RELU || a == A_LEAKY) push_away(x, 0.0f, 0.02f);
    if (a == A_CLAMP) { push_away(x, -0.5f, 0.02f); push_away(x, 0.7f, 0.02f); }
    char name[64];
    snprintf(name, sizeof name, "%s %s", act_name[a], shape_str(x));
    // Smooth ops: eps 1e-2 (truncation error ~eps^2 f''' ~1e-4 relative at worst, hence rtol 5e-3).
    gradcheck(name, act_fn, &a, 1, &x, a <= A_QUICK_GELU || a >= A_SOFTMAX ? 1e-2 : 1e-3, 5e-3, 1e-4, 0);
    tensor_free(x);
}

static void odd_geglu(void *ctx) {
    (void)ctx;
    int64_t s[] = {3, 5};
    op_geglu(test_input("x", 2, s, 1, 1, false));
}
static void bad_clamp(void *ctx) {
    (void)ctx;
    int64_t s[] = {2, 2};
    op_clamp(test_input("x", 2, s, 1, 1, false), 1.0f, -1.0f);
}
static void cuda_silu(void *ctx) {
    (void)ctx;
    Tensor g = fake_cuda_tensor(3);
    op_silu(&g);
}

int main(void) {
    // Known values (torch.nn.functional on float64).
    {
        int64_t s[] = {3};
        Tensor *x = test_input("x", 1, s, 1, 1, false);
        float *d = tensor_data_f32(x);
        d[0] = 1.0f; d[1] = -1.0f; d[2] = 3.0f;
        Tensor *g = op_gelu(x, false), *gt = op_gelu(x, true), *si = op_silu(x), *qg = op_quick_gelu(x);
        CHECK_NEAR(tensor_data_f32(g)[0], 0.8413447460685429, 1e-6, "gelu(1)");
        CHECK_NEAR(tensor_data_f32(g)[1], -0.15865525393145702, 1e-6, "gelu(-1)");
        CHECK_NEAR(tensor_data_f32(gt)[0], 0.8411919906082768, 1e-6, "gelu_tanh(1)");
        CHECK_NEAR(tensor_data_f32(gt)[2], 2.996362607918227, 1e-6, "gelu_tanh(3)");
        CHECK_NEAR(tensor_data_f32(si)[0], 0.7310585786300049, 1e-6, "silu(1)");
        CHECK_NEAR(tensor_data_f32(qg)[0], 0.8457957659, 1e-6, "quick_gelu(1)");  // transformers QuickGELUActivation, f64
        CHECK_NEAR(tensor_data_f32(qg)[1], -0.1542042341, 1e-6, "quick_gelu(-1)");
        tensor_free(x);
        ag_step_reset();
    }
    for (Act a = A_SILU; a <= A_EXP; a++) {
        if (a == A_SOFTMAX || a == A_GEGLU) continue;  // not pointwise: checked below
        pointwise_forward(a, 37);
        pointwise_forward(a, 40000);  // parallel path
    }
    // Softmax: rows sum to 1, large logits do not overflow, matches a double reference.
    {
        int64_t s[] = {3, 7};
        Tensor *x = test_input("x", 2, s, 2, 3, false);
        float *d = tensor_data_f32(x);
        for (int k = 0; k < 7; k++) d[14 + k] = 1000.0f + k;  // row 2: would overflow exp without max subtraction
        Tensor *y = op_softmax(x);
        double worst = 0;
        for (int r = 0; r < 3; r++) {
            double m = -INFINITY, z = 0;
            for (int k = 0; k < 7; k++) m = fmax(m, d[r * 7 + k]);
            for (int k = 0; k < 7; k++) z += exp(d[r * 7 + k] - m);
            for (int k = 0; k < 7; k++) worst = fmax(worst, fabs(exp(d[r * 7 + k] - m) / z - tensor_data_f32(y)[r * 7 + k]));
        }
        CHECK_NEAR(worst, 0.0, 1e-7, "softmax vs double (incl. logits ~1000)");
        tensor_free(x);
        ag_step_reset();
    }
    // GEGLU: y = x[..., :C] * gelu(x[..., C:]).
    {
        int64_t s[] = {2, 3, 10};
        Tensor *x = test_input("x", 3, s, 3, 1, false);
        Tensor *y = op_geglu(x);
        CHECK(y->ndim == 3 && y->shape[2] == 5 && y->shape[1] == 3, "geglu shape %s", shape_str(y));
        const float *d = tensor_data_f32(x);
        double worst = 0;
        for (int r = 0; r < 6; r++)
            for (int k = 0; k < 5; k++)
                worst = fmax(worst, fabs(d[r * 10 + k] * ref_gelu(d[r * 10 + 5 + k]) - tensor_data_f32(y)[r * 5 + k]));
        CHECK_NEAR(worst, 0.0, 1e-6, "geglu vs double");
        tensor_free(x);
        ag_step_reset();
    }
    // f16 storage.
    {
        int64_t s[] = {2};
        Tensor *h = tensor_new_persistent("h", 1, s, DT_F16);
        ((uint16_t *)h->data)[0] = f32_to_f16(-1.0f);
        ((uint16_t *)h->data)[1] = f32_to_f16(2.0f);
        Tensor *y = op_relu(h);
        CHECK(tensor_data_f32(y)[0] == 0.0f && tensor_data_f32(y)[1] == 2.0f, "relu of f16 input");
        tensor_free(h);
        ag_step_reset();
    }
    int64_t s1[] = {13}, s2[] = {3, 7}, s3[] = {2, 3, 5}, sg[] = {2, 3, 8}, sg2[] = {5, 2};
    for (Act a = A_SILU; a <= A_SOFTMAX; a++) {
        grad_case(a, 1, s1);
        grad_case(a, 2, s2);
        grad_case(a, 3, s3);
    }
    grad_case(A_GEGLU, 3, sg);
    grad_case(A_GEGLU, 2, sg2);
    grad_case(A_EXP, 1, s1);
    grad_case(A_EXP, 3, s3);
    expect_fatal("geglu odd last dim", odd_geglu, NULL, (const char *[]){"op_geglu", "[3, 5]", NULL});
    expect_fatal("clamp lo > hi", bad_clamp, NULL, (const char *[]){"op_clamp", "[2, 2]", NULL});
    expect_fatal("silu on CUDA", cuda_silu, NULL, (const char *[]){"op_silu", "CUDA", NULL});
    return check_summary();
}
