// op_add / op_sub / op_mul / op_div with broadcasting, op_scale, op_add_scalar: forward against an
// index-by-index double reference, finite-difference gradients, and shape/device errors; op_add_into
// against op_add (bitwise, on y's storage). op_posterior_sample against its formula in double, its
// gradients by finite differences.
#include "tests/check.h"
#include "tests/op_test_util.h"

typedef enum { K_ADD, K_SUB, K_MUL, K_DIV, N_KINDS } Kind;
static const char *kind_name[] = {"add", "sub", "mul", "div"};

static Tensor *apply(Kind k, Tensor *a, Tensor *b) {
    return k == K_ADD ? op_add(a, b) : k == K_SUB ? op_sub(a, b) : k == K_MUL ? op_mul(a, b) : op_div(a, b);
}

// The second operand of kind k (seeded N(0, 1)); for division moved to |b| in [0.5, ...) so that the
// quotient and its finite differences stay well conditioned.
static Tensor *operand_b(Kind k, int nb, const int64_t *sb, uint64_t seed, bool requires_grad) {
    Tensor *b = test_input("b", nb, sb, seed, 1.0f, requires_grad);
    float *d = tensor_data_f32(b);
    for (int64_t i = 0; k == K_DIV && i < b->numel; i++) d[i] = d[i] >= 0 ? 0.5f + d[i] : -0.5f + d[i];
    return b;
}

// Reference broadcast: out coordinate -> input offset (size-1 axes pinned to 0).
static int64_t ref_offset(const Tensor *t, int out_ndim, const int64_t *coord) {
    int64_t off = 0;
    for (int i = 0; i < t->ndim; i++) {
        int oi = i + out_ndim - t->ndim;
        off = off * t->shape[i] + (t->shape[i] == 1 ? 0 : coord[oi]);
    }
    return off;
}

static void check_forward(Kind k, int na, const int64_t *sa, int nb, const int64_t *sb, int nout,
                          const int64_t *sout) {
    Tensor *a = test_input("a", na, sa, 11, 1.0f, false), *b = operand_b(k, nb, sb, 12, false);
    Tensor *y = apply(k, a, b);
    char what[96];
    snprintf(what, sizeof what, "%s %s %s shape", kind_name[k], shape_str(a), shape_str(b));
    bool shape_ok = y->ndim == nout;
    for (int i = 0; shape_ok && i < nout; i++) shape_ok = y->shape[i] == sout[i];
    CHECK(shape_ok, "%s: got %s", what, shape_str(y));
    if (shape_ok) {
        const float *ad = tensor_data_f32(a), *bd = tensor_data_f32(b), *yd = tensor_data_f32(y);
        double worst = 0;
        for (int64_t i = 0; i < y->numel; i++) {
            int64_t coord[TENSOR_MAX_DIMS], rem = i;
            for (int d = nout - 1; d >= 0; d--) { coord[d] = rem % sout[d]; rem /= sout[d]; }
            double x1 = ad[ref_offset(a, nout, coord)], x2 = bd[ref_offset(b, nout, coord)];
            double ref = k == K_ADD ? x1 + x2 : k == K_SUB ? x1 - x2 : k == K_MUL ? x1 * x2 : x1 / x2;
            double e = fabs(ref - yd[i]);
            if (e > worst) worst = e;
        }
        CHECK_NEAR(worst, 0.0, 1e-6, what);
    }
    tensor_free(a);
    tensor_free(b);
    ag_step_reset();
}

typedef struct { Kind k; } BinCtx;
static Tensor *bin_fn(void *ctx, Tensor *const *in) { return apply(((BinCtx *)ctx)->k, in[0], in[1]); }
static Tensor *scale_fn(void *ctx, Tensor *const *in) { (void)ctx; return op_scale(in[0], -1.75f); }
static Tensor *add_scalar_fn(void *ctx, Tensor *const *in) { (void)ctx; return op_mul(op_add_scalar(in[0], 0.5f), in[0]); }
static Tensor *self_mul_fn(void *ctx, Tensor *const *in) { (void)ctx; return op_mul(in[0], in[0]); }

// y0 = a * a (an activation) plus b, by op_add and by op_add_into: same values and gradients, bitwise.
static void add_into_case(int na, const int64_t *sa, int nb, const int64_t *sb) {
    Tensor *a = test_input("a", na, sa, 51, 1.0f, true), *b = test_input("b", nb, sb, 52, 1.0f, true);
    float *ref[3] = {NULL, NULL, NULL};
    for (int into = 0; into < 2; into++) {
        tensor_zero_grad(a);
        tensor_zero_grad(b);
        ag_step_reset();
        Tensor *y0 = op_mul(a, a), *y = into ? op_add_into(y0, b) : op_add(y0, b);
        Tensor *w = test_input("w", na, sa, 53, 1.0f, false);
        ag_backward(op_sum(op_mul(y, w)));
        const float *got[3] = {y->data, a->grad, b->grad};
        int64_t n[3] = {y->numel, a->numel, b->numel};
        if (into) CHECK(y != y0 && y->data == y0->data, "add_into %s: result must be a new tensor on y's storage", shape_str(a));
        for (int i = 0; i < 3; i++) {
            if (!into) {
                ref[i] = malloc(sizeof(float) * (size_t)n[i]);
                memcpy(ref[i], got[i], sizeof(float) * (size_t)n[i]);
            } else {
                CHECK(memcmp(ref[i], got[i], sizeof(float) * (size_t)n[i]) == 0, "add_into %s + %s: %s differs from op_add",
                      shape_str(a), shape_str(b), i == 0 ? "output" : i == 1 ? "grad y" : "grad b");
                free(ref[i]);
            }
        }
        tensor_free(w);
    }
    ag_step_reset();
    tensor_free(a);
    tensor_free(b);
}
// s * y0 + b: op_scale_add_into against op_add(op_scale(y0, s), b), bitwise.
static void scale_add_into_case(void) {
    int64_t sa[] = {3, 4, 5}, sb[] = {4, 1};
    Tensor *a = test_input("a", 3, sa, 61, 1.0f, true), *b = test_input("b", 2, sb, 62, 1.0f, true);
    float *ref[3] = {NULL, NULL, NULL};
    for (int into = 0; into < 2; into++) {
        tensor_zero_grad(a);
        tensor_zero_grad(b);
        ag_step_reset();
        Tensor *y0 = op_mul(a, a), *y = into ? op_scale_add_into(y0, 0.2f, b) : op_add(op_scale(y0, 0.2f), b);
        Tensor *w = test_input("w", 3, sa, 63, 1.0f, false);
        ag_backward(op_sum(op_mul(y, w)));
        const float *got[3] = {y->data, a->grad, b->grad};
        int64_t n[3] = {y->numel, a->numel, b->numel};
        for (int i = 0; i < 3; i++) {
            if (!into) {
                ref[i] = malloc(sizeof(float) * (size_t)n[i]);
                memcpy(ref[i], got[i], sizeof(float) * (size_t)n[i]);
            } else {
                CHECK(memcmp(ref[i], got[i], sizeof(float) * (size_t)n[i]) == 0, "scale_add_into: %s differs from "
                      "op_add(op_scale(...))", i == 0 ? "output" : i == 1 ? "grad y" : "grad b");
                free(ref[i]);
            }
        }
        tensor_free(w);
    }
    ag_step_reset();
    tensor_free(a);
    tensor_free(b);
}
static void add_into_grows(void *ctx) {
    (void)ctx;
    int64_t sa[] = {3, 1}, sb[] = {1, 4};
    op_add_into(op_scale(test_input("y", 2, sa, 1, 1, false), 1.0f), test_input("b", 2, sb, 2, 1, false));
}
static void add_into_then_read_y(void *ctx) {
    (void)ctx;
    int64_t s[] = {3};
    Tensor *y = op_scale(test_input("x", 1, s, 1, 1, false), 2.0f);
    op_add_into(y, test_input("b", 1, s, 2, 1, false));
    op_mul(y, y);  // y's storage now holds the sum: refused
}
static void add_into_persistent(void *ctx) {
    (void)ctx;
    int64_t s[] = {3};
    op_add_into(test_input("weight", 1, s, 1, 1, false), test_input("b", 1, s, 2, 1, false));
}

// A reshape view shares its source's storage: writing into the view overwrites the source.
static void add_into_reshaped_persistent(void *ctx) {
    (void)ctx;
    int64_t s[] = {2, 3}, flat[] = {6};
    op_add_into(op_reshape(test_input("weight", 2, s, 1, 1, false), 1, flat), test_input("b", 1, flat, 2, 1, false));
}
static void add_into_view_then_read_source(void *ctx) {
    (void)ctx;
    int64_t s[] = {2, 3}, flat[] = {6};
    Tensor *y = op_scale(test_input("x", 2, s, 1, 1, false), 2.0f);
    op_add_into(op_reshape(y, 1, flat), test_input("b", 1, flat, 2, 1, false));
    op_mul(y, y);  // y's storage holds the sum: refused like y itself
}
static void reshape_overwritten(void *ctx) {
    (void)ctx;
    int64_t s[] = {3}, s2[] = {1, 3};
    Tensor *y = op_scale(test_input("x", 1, s, 1, 1, false), 2.0f);
    op_add_into(y, test_input("b", 1, s, 2, 1, false));
    op_reshape(y, 2, s2);
}

static void grad_case(Kind k, int na, const int64_t *sa, int nb, const int64_t *sb, bool grad_b) {
    Tensor *a = test_input("a", na, sa, 21, 1.0f, true), *b = operand_b(k, nb, sb, 22, grad_b);
    Tensor *in[2] = {a, b};
    BinCtx c = {k};
    char name[96];
    snprintf(name, sizeof name, "%s %s %s", kind_name[k], shape_str(a), shape_str(b));
    // f32 forwards in double-accumulated L: eps 1e-2 gives ~1e-5 relative rounding noise.
    gradcheck(name, bin_fn, &c, 2, in, 1e-2, 5e-3, 1e-4, 0);
    tensor_free(a);
    tensor_free(b);
}

// ---- op_posterior_sample ----
static Tensor *posterior_fn(void *ctx, Tensor *const *in) { (void)ctx; return op_posterior_sample(in[0], in[1], in[2]); }

// mean + exp(0.5 logvar) eps against double, element by element; n above OPS_PARALLEL_MIN runs the
// parallel loop. logvar spans [-6, 6] (std 3): the exp matters.
static void posterior_forward(int64_t n) {
    int64_t s[] = {n};
    Tensor *m = test_input("mean", 1, s, 61, 1.0f, false), *lv = test_input("logvar", 1, s, 62, 3.0f, false);
    Tensor *e = test_input("eps", 1, s, 63, 1.0f, false);
    Tensor *z = op_posterior_sample(m, lv, e);
    double worst = 0;
    for (int64_t i = 0; i < n; i++) {
        double ref = tensor_data_f32(m)[i] + exp(0.5 * tensor_data_f32(lv)[i]) * tensor_data_f32(e)[i];
        worst = fmax(worst, fabs(ref - tensor_data_f32(z)[i]) / fmax(1.0, fabs(ref)));
    }
    char what[64];
    snprintf(what, sizeof what, "posterior sample (n %ld) vs double, relative", (long)n);
    CHECK_NEAR(worst, 0.0, 1e-6, what);
    CHECK(z->dtype == DT_F32 && !z->requires_grad, "posterior sample: dtype %s, records %d", dtype_name(z->dtype),
          (int)z->requires_grad);
    tensor_free(m);
    tensor_free(lv);
    tensor_free(e);
    ag_step_reset();
}

// Gradients to mean, logvar and (when it requires one) eps, by finite differences.
static void posterior_grad(bool grad_eps) {
    int64_t s[] = {2, 3, 5};
    Tensor *in[3] = {test_input("mean", 3, s, 71, 1.0f, true), test_input("logvar", 3, s, 72, 1.0f, true),
                     test_input("eps", 3, s, 73, 1.0f, grad_eps)};
    gradcheck(grad_eps ? "posterior sample (mean, logvar, eps)" : "posterior sample (mean, logvar)", posterior_fn,
              NULL, 3, in, 1e-2, 5e-3, 1e-4, 0);
    for (int i = 0; i < 3; i++) tensor_free(in[i]);
}

static void posterior_bad_shape(void *ctx) {
    (void)ctx;
    int64_t a[] = {2, 4}, b[] = {2, 5};
    op_posterior_sample(test_input("m", 2, a, 1, 1, false), test_input("lv", 2, a, 2, 1, false),
                        test_input("e", 2, b, 3, 1, false));
}

static void bad_broadcast(void *ctx) {
    (void)ctx;
    int64_t sa[] = {2, 3}, sb[] = {4};
    op_add(test_input("a", 2, sa, 1, 1, false), test_input("b", 1, sb, 2, 1, false));
}
static void bad_mul(void *ctx) {
    (void)ctx;
    int64_t sa[] = {2, 3, 4, 5}, sb[] = {2, 4, 1};
    op_mul(test_input("a", 4, sa, 1, 1, false), test_input("b", 3, sb, 2, 1, false));
}
static void cuda_input(void *ctx) {
    (void)ctx;
    Tensor g = fake_cuda_tensor(4);
    int64_t s[] = {4};
    op_sub(test_input("a", 1, s, 1, 1, false), &g);
}

int main(void) {
    int64_t s2345[] = {2, 3, 4, 5}, s311[] = {3, 1, 1}, s41[] = {4, 1}, s15[] = {1, 5}, s45[] = {4, 5};
    int64_t s1[] = {1}, s23[] = {2, 3}, s131[] = {1, 3, 1}, s214[] = {2, 1, 4}, s234[] = {2, 3, 4};
    int64_t s5[] = {5}, s1c11[] = {1, 3, 1, 1}, s7[] = {7};
    for (int k = 0; k < N_KINDS; k++) {
        check_forward(k, 4, s2345, 3, s311, 4, s2345);
        check_forward(k, 3, s311, 4, s2345, 4, s2345);   // broadcast on the left operand
        check_forward(k, 2, s41, 2, s15, 2, s45);
        check_forward(k, 2, s23, 1, s1, 2, s23);
        check_forward(k, 3, s131, 3, s214, 3, s234);     // both operands broadcast
        check_forward(k, 4, s2345, 1, s5, 4, s2345);
        check_forward(k, 1, s7, 1, s7, 1, s7);
    }
    // Larger than OPS_PARALLEL_MIN so the parallel paths run too: [4, 64, 16, 16] + [1, 64, 1, 1].
    {
        int64_t big[] = {4, 64, 16, 16}, bias[] = {1, 64, 1, 1};
        check_forward(K_MUL, 4, big, 4, bias, 4, big);
        check_forward(K_DIV, 4, big, 4, bias, 4, big);
        Tensor *a = test_input("a", 4, big, 5, 1, true), *b = test_input("b", 4, bias, 6, 1, true);
        Tensor *y = op_mul(a, b);
        ag_backward(op_mean(y));
        // d mean(a * b) / d b[c] = mean over (n, h, w) of a / 64 channels ... = sum_{n,h,w} a / numel
        double worst = 0;
        for (int c = 0; c < 64; c++) {
            double s = 0;
            for (int n = 0; n < 4; n++)
                for (int i = 0; i < 256; i++) s += tensor_data_f32(a)[(n * 64 + c) * 256 + i];
            double e = fabs(s / (double)y->numel - b->grad[c]);
            if (e > worst) worst = e;
        }
        CHECK_NEAR(worst, 0.0, 1e-7, "parallel broadcast reduction grad");
        tensor_free(a);
        tensor_free(b);
        ag_step_reset();
    }
    // bf16 storage is widened on read.
    {
        int64_t s3[] = {3};
        Tensor *h = tensor_new_persistent("h", 1, s3, DT_BF16);
        uint16_t *hd = h->data;
        hd[0] = f32_to_bf16(1.5f); hd[1] = f32_to_bf16(-2.0f); hd[2] = f32_to_bf16(0.25f);
        Tensor *f = test_input("f", 1, s3, 3, 1, false);
        Tensor *y = op_mul(h, f);
        CHECK(y->dtype == DT_F32, "bf16 * f32 output dtype %s", dtype_name(y->dtype));
        CHECK_NEAR(tensor_data_f32(y)[1], -2.0 * tensor_data_f32(f)[1], 1e-6, "bf16 * f32");
        tensor_free(h);
        tensor_free(f);
        ag_step_reset();
    }
    for (int k = 0; k < N_KINDS; k++) {
        grad_case(k, 4, s2345, 3, s311, true);
        grad_case(k, 3, s311, 4, s2345, true);
        grad_case(k, 2, s41, 2, s15, true);
        grad_case(k, 2, s23, 1, s1, true);
        grad_case(k, 3, s131, 3, s214, true);
        grad_case(k, 4, s2345, 4, s1c11, true);
        grad_case(k, 1, s7, 1, s7, false);  // only a requires grad
    }
    {
        Tensor *x = test_input("x", 2, s23, 31, 1, true);
        gradcheck("scale", scale_fn, NULL, 1, &x, 1e-2, 5e-3, 1e-4, 0);
        gradcheck("add_scalar (x + 0.5) * x", add_scalar_fn, NULL, 1, &x, 1e-2, 5e-3, 1e-4, 0);
        gradcheck("x * x (same input twice)", self_mul_fn, NULL, 1, &x, 1e-2, 5e-3, 1e-4, 0);
        ag_step_reset();
        Tensor *y = op_add_scalar(op_scale(x, 3.0f), -1.0f);
        CHECK_NEAR(tensor_data_f32(y)[4], 3.0 * tensor_data_f32(x)[4] - 1.0, 1e-6, "scale then add_scalar");
        tensor_free(x);
        ag_step_reset();
    }
    posterior_forward(37);
    posterior_forward(40000);
    posterior_grad(true);
    posterior_grad(false);
    add_into_case(4, s2345, 3, s311);
    add_into_case(1, s7, 1, s7);
    scale_add_into_case();
    expect_fatal("add_into growing y", add_into_grows, NULL, (const char *[]){"op_add_into", "[3, 1]", "[1, 4]", NULL});
    expect_fatal("reading y after op_add_into", add_into_then_read_y, NULL,
                 (const char *[]){"op_mul", "input 0 [3]", "overwritten", NULL});
    expect_fatal("add_into a persistent y", add_into_persistent, NULL,
                 (const char *[]){"op_add_into", "weight", "persistent", NULL});
    expect_fatal("add_into a reshaped persistent y", add_into_reshaped_persistent, NULL,
                 (const char *[]){"op_add_into", "persistent", "reshape of a parameter", NULL});
    expect_fatal("reading the source of an overwritten reshape view", add_into_view_then_read_source, NULL,
                 (const char *[]){"op_mul", "input 0 [2, 3]", "overwritten", NULL});
    expect_fatal("reshaping an overwritten tensor", reshape_overwritten, NULL,
                 (const char *[]){"op_reshape", "[3]", "overwritten", NULL});
    expect_fatal("add [2,3]+[4]", bad_broadcast, NULL, (const char *[]){"op_add", "[2, 3]", "[4]", NULL});
    expect_fatal("mul [2,3,4,5]*[2,4,1]", bad_mul, NULL, (const char *[]){"op_mul", "[2, 3, 4, 5]", "[2, 4, 1]", NULL});
    expect_fatal("sub with a CUDA tensor", cuda_input, NULL, (const char *[]){"op_sub", "CUDA", NULL});
    expect_fatal("posterior sample, eps of another shape", posterior_bad_shape, NULL,
                 (const char *[]){"op_posterior_sample", "[2, 4]", "[2, 5]", NULL});
    return check_summary();
}
