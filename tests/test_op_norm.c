// op_group_norm and op_layer_norm: forward against a double-precision reference (including a large
// common offset that would cancel a one-pass E[x^2] - E[x]^2 variance in f32), finite-difference
// gradients for x, gamma and beta over several group counts, and shape errors.
#include "tests/check.h"
#include "tests/op_test_util.h"

// Reference group norm in double: x [N, C, S], groups G, biased variance, eps inside the sqrt.
static void ref_group_norm(const float *x, int64_t N, int64_t C, int64_t S, int64_t G, const float *gamma,
                           const float *beta, double eps, double *y) {
    int64_t cpg = C / G;
    for (int64_t n = 0; n < N; n++)
        for (int64_t g = 0; g < G; g++) {
            const float *xg = x + (n * C + g * cpg) * S;
            int64_t m = cpg * S;
            double mean = 0, var = 0;
            for (int64_t i = 0; i < m; i++) mean += xg[i];
            mean /= m;
            for (int64_t i = 0; i < m; i++) var += (xg[i] - mean) * (xg[i] - mean);
            var /= m;
            for (int64_t i = 0; i < m; i++) {
                int64_t c = g * cpg + i / S;
                double v = (xg[i] - mean) / sqrt(var + eps);
                y[(n * C + g * cpg) * S + i] = v * (gamma ? gamma[c] : 1) + (beta ? beta[c] : 0);
            }
        }
}

static void gn_forward_case(int ndim, const int64_t *shape, int G, bool affine, float offset, double tol) {
    Tensor *x = test_input("x", ndim, shape, 100 + G, 1.0f, false);
    float *xd = tensor_data_f32(x);
    for (int64_t i = 0; i < x->numel; i++) xd[i] += offset;
    int64_t C = shape[1], S = x->numel / (shape[0] * C);
    Tensor *gamma = affine ? test_input("gamma", 1, &C, 7, 1.0f, false) : NULL;
    Tensor *beta = affine ? test_input("beta", 1, &C, 8, 1.0f, false) : NULL;
    Tensor *y = op_group_norm(x, G, gamma, beta, 1e-5f);
    double *ref = malloc(sizeof(double) * x->numel);
    ref_group_norm(xd, shape[0], C, S, G, gamma ? tensor_data_f32(gamma) : NULL, beta ? tensor_data_f32(beta) : NULL,
                   1e-5, ref);
    double worst = 0;
    for (int64_t i = 0; i < x->numel; i++) worst = fmax(worst, fabs(ref[i] - tensor_data_f32(y)[i]));
    char what[96];
    snprintf(what, sizeof what, "group_norm %s G=%d affine=%d offset=%g vs double", shape_str(x), G, affine, offset);
    CHECK_NEAR(worst, 0.0, tol, what);
    free(ref);
    tensor_free(x);
    if (gamma) { tensor_free(gamma); tensor_free(beta); }
    ag_step_reset();
}

typedef struct { int G; bool affine; } GnCtx;
static Tensor *gn_fn(void *ctx, Tensor *const *in) {
    GnCtx *c = ctx;
    return op_group_norm(in[0], c->G, c->affine ? in[1] : NULL, c->affine ? in[2] : NULL, 1e-5f);
}
static Tensor *ln_fn(void *ctx, Tensor *const *in) {
    bool affine = *(bool *)ctx;
    return op_layer_norm(in[0], affine ? in[1] : NULL, affine ? in[2] : NULL, 1e-5f);
}

static void gn_grad_case(int ndim, const int64_t *shape, int G, bool affine, long max_elems) {
    int64_t C = shape[1];
    Tensor *in[3] = {test_input("x", ndim, shape, 200 + G, 1.0f, true), test_input("gamma", 1, &C, 9, 1.0f, affine),
                     test_input("beta", 1, &C, 10, 1.0f, affine)};
    GnCtx c = {G, affine};
    char name[96];
    snprintf(name, sizeof name, "group_norm %s G=%d affine=%d", shape_str(in[0]), G, affine);
    // Normalisation couples every element of a group; eps 1e-2 keeps truncation error ~1e-4.
    gradcheck(name, gn_fn, &c, 3, in, 1e-2, 5e-3, 2e-4, max_elems);
    for (int i = 0; i < 3; i++) tensor_free(in[i]);
}

static void ln_grad_case(int ndim, const int64_t *shape, bool affine, long max_elems) {
    int64_t C = shape[ndim - 1];
    Tensor *in[3] = {test_input("x", ndim, shape, 300, 1.0f, true), test_input("gamma", 1, &C, 11, 1.0f, affine),
                     test_input("beta", 1, &C, 12, 1.0f, affine)};
    char name[96];
    snprintf(name, sizeof name, "layer_norm %s affine=%d", shape_str(in[0]), affine);
    gradcheck(name, ln_fn, &affine, 3, in, 1e-2, 5e-3, 2e-4, max_elems);
    for (int i = 0; i < 3; i++) tensor_free(in[i]);
}

// op_group_norm_silu against the two ops it fuses: forward and every gradient bitwise equal (same
// kernels, the normalised tensor recomputed in backward), and a finite-difference check of its own.
static Tensor *gn_silu_fn(void *ctx, Tensor *const *in) {
    GnCtx *c = ctx;
    return op_group_norm_silu(in[0], c->G, c->affine ? in[1] : NULL, c->affine ? in[2] : NULL, 1e-5f);
}

static void gn_silu_case(int ndim, const int64_t *shape, int G, bool affine) {
    int64_t C = shape[1];
    Tensor *in[3] = {test_input("x", ndim, shape, 400 + G, 1.5f, true), test_input("gamma", 1, &C, 13, 1.0f, affine),
                     test_input("beta", 1, &C, 14, 1.0f, affine)};
    GnCtx c = {G, affine};
    float *ref[3] = {NULL, NULL, NULL}, *ref_y = NULL;
    for (int fused = 0; fused < 2; fused++) {
        for (int i = 0; i < 3; i++) tensor_zero_grad(in[i]);
        ag_step_reset();
        Tensor *y = fused ? gn_silu_fn(&c, in) : op_silu(gn_fn(&c, in));
        Tensor *w = test_input("w", ndim, shape, 15, 1.0f, false);  // L = sum w * y
        ag_backward(op_sum(op_mul(y, w)));
        if (!fused) {
            ref_y = malloc(sizeof(float) * (size_t)y->numel);
            memcpy(ref_y, y->data, sizeof(float) * (size_t)y->numel);
            for (int i = 0; i < 3; i++) {
                if (!in[i]->requires_grad) continue;
                ref[i] = malloc(sizeof(float) * (size_t)in[i]->numel);
                memcpy(ref[i], in[i]->grad, sizeof(float) * (size_t)in[i]->numel);
            }
        } else {
            CHECK(memcmp(ref_y, y->data, sizeof(float) * (size_t)y->numel) == 0,
                  "group_norm_silu %s G=%d: forward differs from silu(group_norm)", shape_str(in[0]), G);
            for (int i = 0; i < 3; i++)
                if (ref[i])
                    CHECK(memcmp(ref[i], in[i]->grad, sizeof(float) * (size_t)in[i]->numel) == 0,
                          "group_norm_silu %s G=%d: gradient of input %d differs from silu(group_norm)", shape_str(in[0]),
                          G, i);
        }
        tensor_free(w);
    }
    char name[96];
    snprintf(name, sizeof name, "group_norm_silu %s G=%d affine=%d", shape_str(in[0]), G, affine);
    gradcheck(name, gn_silu_fn, &c, 3, in, 1e-2, 5e-3, 2e-4, 0);
    free(ref_y);
    for (int i = 0; i < 3; i++) {
        free(ref[i]);
        tensor_free(in[i]);
    }
    ag_step_reset();
}

static void gn_bad_groups(void *ctx) {
    (void)ctx;
    int64_t s[] = {2, 6, 4, 4};
    op_group_norm(test_input("x", 4, s, 1, 1, false), 4, NULL, NULL, 1e-5f);
}
static void ln_bad_gamma(void *ctx) {
    (void)ctx;
    int64_t s[] = {3, 8}, c[] = {7};
    op_layer_norm(test_input("x", 2, s, 1, 1, false), test_input("g", 1, c, 2, 1, false), NULL, 1e-5f);
}

int main(void) {
    int64_t s4[] = {2, 6, 3, 5}, s3[] = {2, 4, 7}, big[] = {2, 64, 16, 16};
    gn_forward_case(4, s4, 1, true, 0.0f, 2e-6);
    gn_forward_case(4, s4, 3, false, 0.0f, 2e-6);
    gn_forward_case(4, s4, 6, true, 0.0f, 2e-6);
    gn_forward_case(3, s3, 2, true, 0.0f, 2e-6);
    gn_forward_case(4, big, 32, true, 0.0f, 5e-6);  // parallel path, SD's 32 groups
    // Offset 1000 with unit spread: f32 one-pass variance would lose ~all digits; two-pass keeps ~1e-4.
    gn_forward_case(4, s4, 2, false, 1000.0f, 2e-4);
    // Layer norm vs the same reference (one row = one group of a [rows, 1, C] tensor).
    {
        int64_t s[] = {5, 1, 9}, C = 9;
        Tensor *x = test_input("x", 3, s, 5, 2.0f, false);
        Tensor *g = test_input("g", 1, &C, 6, 1, false), *b = test_input("b", 1, &C, 7, 1, false);
        int64_t s2[] = {5, 9};
        Tensor *x2 = op_reshape(x, 2, s2);
        Tensor *y = op_layer_norm(x2, g, b, 1e-5f);
        double ref[45];
        // group norm with one channel per group and gamma per position: do it by hand.
        for (int r = 0; r < 5; r++) {
            double m = 0, v = 0;
            for (int k = 0; k < 9; k++) m += tensor_data_f32(x)[r * 9 + k];
            m /= 9;
            for (int k = 0; k < 9; k++) v += pow(tensor_data_f32(x)[r * 9 + k] - m, 2);
            v /= 9;
            for (int k = 0; k < 9; k++)
                ref[r * 9 + k] = (tensor_data_f32(x)[r * 9 + k] - m) / sqrt(v + 1e-5) * tensor_data_f32(g)[k] +
                                 tensor_data_f32(b)[k];
        }
        double worst = 0;
        for (int i = 0; i < 45; i++) worst = fmax(worst, fabs(ref[i] - tensor_data_f32(y)[i]));
        CHECK_NEAR(worst, 0.0, 2e-6, "layer_norm [5, 9] vs double");
        tensor_free(x); tensor_free(g); tensor_free(b);
        ag_step_reset();
    }
    int64_t sg[] = {2, 6, 3, 5}, sg3[] = {3, 4, 5};
    gn_grad_case(4, sg, 1, true, 0);
    gn_grad_case(4, sg, 2, true, 0);
    gn_grad_case(4, sg, 6, true, 0);
    gn_grad_case(4, sg, 3, false, 0);
    gn_grad_case(3, sg3, 2, true, 0);
    gn_grad_case(4, big, 32, true, 60);  // parallel path; a strided subset of elements
    gn_silu_case(4, sg, 2, true);
    gn_silu_case(3, sg3, 4, false);
    gn_silu_case(4, big, 32, true);  // parallel path
    int64_t l2[] = {3, 7}, l3[] = {2, 3, 5}, l1[] = {1, 11}, lbig[] = {40, 1000};
    ln_grad_case(2, l2, true, 0);
    ln_grad_case(3, l3, true, 0);
    ln_grad_case(2, l2, false, 0);
    ln_grad_case(2, l1, false, 0);
    ln_grad_case(2, lbig, true, 60);  // parallel path with per-thread dgamma/dbeta partials
    expect_fatal("group_norm 4 groups of 6 channels", gn_bad_groups, NULL,
                 (const char *[]){"op_group_norm", "[2, 6, 4, 4]", "4 groups", NULL});
    expect_fatal("layer_norm gamma [7] for C=8", ln_bad_gamma, NULL, (const char *[]){"op_layer_norm", "[7]", "[3, 8]", NULL});
    return check_summary();
}
