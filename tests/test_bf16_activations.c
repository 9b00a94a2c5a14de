// bf16 activation storage (ag_set_activation_dtype(DT_BF16), autograd/tensor.h) on the CPU.
//
//  1. Every op against itself in f32 mode, on the same bf16-exact inputs (activations stored f32 in
//     one run, bf16 in the other; f32 parameters shared): the bf16 run widens its inputs exactly and
//     computes the same f32 values, so its output must be the f32 run's output rounded to bf16, bit
//     for bit, and every input gradient must be bitwise the f32 run's. The exception is op_attention,
//     whose backward reads its own (now rounded) output: gradients within 1e-2 of their scale. Output
//     dtypes: bf16 for the products and for ops given a bf16 activation, f32 for softmax; all f32 in
//     f32 mode.
//  2. Dtype rules: products of f32 inputs give bf16, other ops on f32 inputs stay f32 (so f32 chains
//     like losses combined with op_scale / op_add stay f32), losses and reductions are f32, op_reshape
//     keeps the dtype, in-place ops keep y's.
//  3. The DOD fixture model (stages 1 and 2), one training step's loss and trainable gradient vector
//     against the f32 run: loss within 1%, gradient within 30% relative L2 and within twice (+ 2%) what
//     bf16 frozen weights alone do to it. This tiny random model is that sensitive to bf16 rounding
//     anywhere: rounding only the frozen weights (f32 activations) moves its gradient by 11% (stage
//     1) and 4.9% (stage 2); bf16 activations move it by 9.5% and 6.9%; PyTorch's own recipe
//     (torch.autocast bf16 on the CPU, norms in f32, on scripts/make_dod_fixture.py's twin) by more
//     than 100%. The per-op checks above are where exactness is tested. Also: a lower arena peak, and
//     activation recomputation in bf16 mode bitwise equal to the plain bf16 run.
//  4. Errors: tensor_data_f32 on a bf16 tensor and ag_set_activation_dtype(DT_F16) fail naming them.
#include <math.h>
#include <string.h>

#include "layers/dod_model.h"
#include "tests/check.h"
#include "tests/dod_fixture_config.h"

// ---- inputs --------------------------------------------------------------------------------------
#define MAX_IN 8

typedef struct {
    Tensor *in[MAX_IN];  // the tensors whose gradients are compared
    int n;
    Tensor *params[MAX_IN];  // persistent, freed after the run
    int n_params;
    Tensor *out;
} Built;

// Values N(0, std^2) from seed, rounded to bf16 (so both storages hold them exactly), written (=) into v.
static void bf16_exact_values(float *v, int64_t n, uint64_t seed, float std) {
    int64_t shape[1] = {n};
    Tensor *tmp = tensor_new(1, shape, DT_F32);
    tensor_randn(tmp, seed, std);
    for (int64_t i = 0; i < n; i++) v[i] = bf16_to_f32(f32_to_bf16(tensor_data_f32(tmp)[i]));
}

// An activation leaf in the current activation dtype, requiring grad.
static Tensor *act_in(Built *b, int ndim, const int64_t *shape, uint64_t seed) {
    Tensor *t = tensor_new_on(DEV_CPU, ndim, shape, ag_activation_dtype());
    ScratchScope s = scratch_begin(DEV_CPU);
    float *v = tensor_out_f32(t);
    bf16_exact_values(v, t->numel, seed, 1.0f);
    tensor_store_f32(t, v);
    scratch_end(s);
    t->requires_grad = true;
    b->in[b->n++] = t;
    return t;
}

// An f32 parameter (persistent, requiring grad), the same in both runs.
static Tensor *param_in(Built *b, int ndim, const int64_t *shape, uint64_t seed) {
    Tensor *t = tensor_new_persistent("param", ndim, shape, DT_F32);
    tensor_randn(t, seed, 0.3f);
    t->requires_grad = true;
    b->in[b->n++] = t;
    b->params[b->n_params++] = t;
    return t;
}

#define SH(...) ((const int64_t[]){__VA_ARGS__})
#define NDIM(...) ((int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)))
#define ACT(b, seed, ...) act_in(b, NDIM(__VA_ARGS__), SH(__VA_ARGS__), seed)
#define PAR(b, seed, ...) param_in(b, NDIM(__VA_ARGS__), SH(__VA_ARGS__), seed)

// ---- the op cases ----------------------------------------------------------------------------------
static void c_conv(Built *b) { b->out = op_conv2d(ACT(b, 1, 2, 3, 7, 6), PAR(b, 2, 5, 3, 3, 3), PAR(b, 3, 5), 1, 1); }
static void c_conv_s2(Built *b) { b->out = op_conv2d(ACT(b, 1, 1, 4, 8, 8), PAR(b, 2, 6, 4, 3, 3), NULL, 2, 1); }
static void c_gn_silu_conv(Built *b) {
    Tensor *x = ACT(b, 1, 2, 8, 5, 5);
    b->out = op_group_norm_silu_conv2d(x, 4, PAR(b, 2, 8), PAR(b, 3, 8), 1e-5f, PAR(b, 4, 6, 8, 3, 3), PAR(b, 5, 6), 1, 1);
}
static void c_concat_conv(Built *b) {
    Tensor *xs[2] = {ACT(b, 1, 2, 3, 5, 5), ACT(b, 2, 2, 2, 5, 5)};
    b->out = op_concat_conv2d(xs, 2, PAR(b, 3, 4, 5, 3, 3), PAR(b, 4, 4), 1, 1);
}
static void c_up_conv(Built *b) { b->out = op_upsample_nearest2x_conv2d(ACT(b, 1, 1, 3, 4, 4), PAR(b, 2, 4, 3, 3, 3), NULL, 1, 1); }
static void c_linear(Built *b) { b->out = op_linear(ACT(b, 1, 2, 5, 12), PAR(b, 2, 7, 12), PAR(b, 3, 7)); }
static void c_matmul(Built *b) { b->out = op_matmul(ACT(b, 1, 2, 5, 6), ACT(b, 2, 2, 4, 6), true); }
static void c_attention(Built *b) {
    b->out = op_attention(ACT(b, 1, 2, 9, 8), ACT(b, 2, 2, 7, 8), ACT(b, 3, 2, 7, 8), 2, 0);
}
static void c_group_norm(Built *b) { b->out = op_group_norm(ACT(b, 1, 2, 6, 3, 4), 3, PAR(b, 2, 6), PAR(b, 3, 6), 1e-5f); }
static void c_gn_silu(Built *b) { b->out = op_group_norm_silu(ACT(b, 1, 2, 6, 3, 4), 2, PAR(b, 2, 6), NULL, 1e-5f); }
static void c_layer_norm(Built *b) { b->out = op_layer_norm(ACT(b, 1, 3, 4, 10), PAR(b, 2, 10), PAR(b, 3, 10), 1e-5f); }
static void c_silu(Built *b) { b->out = op_silu(ACT(b, 1, 3, 50)); }
static void c_gelu(Built *b) { b->out = op_gelu(ACT(b, 1, 3, 50), false); }
static void c_clamp(Built *b) { b->out = op_clamp(ACT(b, 1, 3, 50), -0.5f, 0.7f); }
static void c_exp(Built *b) { b->out = op_exp(ACT(b, 1, 3, 50)); }
static void c_posterior(Built *b) { b->out = op_posterior_sample(ACT(b, 1, 2, 4, 3, 3), ACT(b, 2, 2, 4, 3, 3), ACT(b, 3, 2, 4, 3, 3)); }
static void c_geglu(Built *b) { b->out = op_geglu(ACT(b, 1, 3, 5, 8)); }
static void c_softmax(Built *b) { b->out = op_softmax(ACT(b, 1, 3, 5, 9)); }
static void c_add(Built *b) { b->out = op_add(ACT(b, 1, 2, 3, 4), PAR(b, 2, 4)); }
static void c_mul(Built *b) { b->out = op_mul(ACT(b, 1, 2, 3, 4), ACT(b, 2, 2, 1, 4)); }
static void c_sub(Built *b) { b->out = op_sub(ACT(b, 1, 2, 3, 4), ACT(b, 2, 3, 4)); }
static void c_scale(Built *b) { b->out = op_scale(ACT(b, 1, 40), 0.37f); }
static void c_add_scalar(Built *b) { b->out = op_add_scalar(ACT(b, 1, 40), 0.37f); }
static void c_add_into(Built *b) { b->out = op_add_into(ACT(b, 1, 2, 3, 4, 4), ACT(b, 2, 2, 3, 4, 4)); }
static void c_scale_add_into(Built *b) { b->out = op_scale_add_into(ACT(b, 1, 2, 3, 4), 0.2f, PAR(b, 2, 4)); }
static void c_proj_linear(Built *b) {
    b->out = op_add_projection_into(ACT(b, 1, 2, 5, 7), ACT(b, 2, 2, 5, 3), PAR(b, 3, 7, 3), 0.75f);
}
static void c_proj_conv(Built *b) {
    b->out = op_add_projection_into(ACT(b, 1, 2, 6, 3, 3), ACT(b, 2, 2, 4, 3, 3), PAR(b, 3, 6, 4, 1, 1), 1.5f);
}
static void c_concat(Built *b) {
    Tensor *xs[3] = {ACT(b, 1, 2, 3, 4), ACT(b, 2, 2, 1, 4), ACT(b, 3, 2, 2, 4)};
    b->out = op_concat(xs, 3, 1);
}
static void c_split(Built *b) {
    Tensor *pieces[3];
    op_split(ACT(b, 1, 2, 6, 3), 1, 3, SH(1, 3, 2), pieces);
    b->out = pieces[1];
}
static void c_permute(Built *b) { b->out = op_permute(ACT(b, 1, 2, 3, 4, 5), (const int[]){0, 2, 3, 1}); }
static void c_pad(Built *b) { b->out = op_pad2d(ACT(b, 1, 1, 2, 3, 4), 1, 2, 0, 1); }
static void c_upsample(Built *b) { b->out = op_upsample_nearest2x(ACT(b, 1, 1, 2, 3, 4)); }
static void c_gather(Built *b) { b->out = op_gather_hw(ACT(b, 1, 1, 2, 3, 4), SH(2, 0, 0, 1), 4, SH(3, 1, 1), 3); }
static void c_reshape(Built *b) { b->out = op_reshape(ACT(b, 1, 2, 3, 4), 2, SH(6, 4)); }

typedef struct {
    const char *name;
    void (*build)(Built *b);
    bool reads_output;  // backward reads the (rounded) output: gradients only close
    DType bf16_mode_out;
} OpCase;

static const OpCase cases[] = {
    {"op_conv2d", c_conv, false, DT_BF16},
    {"op_conv2d stride 2", c_conv_s2, false, DT_BF16},
    {"op_group_norm_silu_conv2d", c_gn_silu_conv, false, DT_BF16},
    {"op_concat_conv2d", c_concat_conv, false, DT_BF16},
    {"op_upsample_nearest2x_conv2d", c_up_conv, false, DT_BF16},
    {"op_linear", c_linear, false, DT_BF16},
    {"op_matmul", c_matmul, false, DT_BF16},
    {"op_attention", c_attention, true, DT_BF16},
    {"op_group_norm", c_group_norm, false, DT_BF16},
    {"op_group_norm_silu", c_gn_silu, false, DT_BF16},
    {"op_layer_norm", c_layer_norm, false, DT_BF16},
    {"op_silu", c_silu, false, DT_BF16},
    {"op_gelu", c_gelu, false, DT_BF16},
    {"op_clamp", c_clamp, false, DT_BF16},
    {"op_exp", c_exp, false, DT_BF16},
    {"op_posterior_sample", c_posterior, false, DT_BF16},
    {"op_geglu", c_geglu, false, DT_BF16},
    {"op_softmax", c_softmax, false, DT_F32},
    {"op_add (f32 parameter)", c_add, false, DT_BF16},
    {"op_mul (broadcast)", c_mul, false, DT_BF16},
    {"op_sub (broadcast)", c_sub, false, DT_BF16},
    {"op_scale", c_scale, false, DT_BF16},
    {"op_add_scalar", c_add_scalar, false, DT_BF16},
    {"op_add_into", c_add_into, false, DT_BF16},
    {"op_scale_add_into", c_scale_add_into, false, DT_BF16},
    {"op_add_projection_into linear", c_proj_linear, false, DT_BF16},
    {"op_add_projection_into 1x1 conv", c_proj_conv, false, DT_BF16},
    {"op_concat", c_concat, false, DT_BF16},
    {"op_split", c_split, false, DT_BF16},
    {"op_permute", c_permute, false, DT_BF16},
    {"op_pad2d", c_pad, false, DT_BF16},
    {"op_upsample_nearest2x", c_upsample, false, DT_BF16},
    {"op_gather_hw", c_gather, false, DT_BF16},
    {"op_reshape", c_reshape, false, DT_BF16},
};

// One run of c in the activation dtype `mode`: output values (widened) and dtype, every input gradient.
typedef struct {
    float *out;
    int64_t out_n;
    DType out_dtype;
    float *grad[MAX_IN];
    int64_t grad_n[MAX_IN];
    int n;
} RunResult;

static RunResult run_op(const OpCase *c, DType mode) {
    ag_step_reset();
    ag_set_activation_dtype(mode);
    Built b = {0};
    c->build(&b);
    RunResult r = {.out_n = b.out->numel, .out_dtype = b.out->dtype, .n = b.n};
    r.out = malloc(sizeof(float) * (size_t)r.out_n);
    memcpy(r.out, tensor_f32(b.out), sizeof(float) * (size_t)r.out_n);
    float *seed = malloc(sizeof(float) * (size_t)r.out_n);
    bf16_exact_values(seed, r.out_n, 99, 1.0f);
    ag_backward_from(b.out, seed);
    free(seed);
    for (int i = 0; i < b.n; i++) {
        r.grad_n[i] = b.in[i]->numel;
        r.grad[i] = calloc((size_t)r.grad_n[i], sizeof(float));
        if (b.in[i]->grad) memcpy(r.grad[i], b.in[i]->grad, sizeof(float) * (size_t)r.grad_n[i]);
    }
    for (int i = 0; i < b.n_params; i++) tensor_free(b.params[i]);
    ag_step_reset();
    ag_set_activation_dtype(DT_F32);
    return r;
}

static void free_result(RunResult *r) {
    free(r->out);
    for (int i = 0; i < r->n; i++) free(r->grad[i]);
}

static void check_op(const OpCase *c) {
    RunResult f = run_op(c, DT_F32), h = run_op(c, DT_BF16);
    CHECK(f.out_dtype == DT_F32, "%s: f32 mode output is %s", c->name, dtype_name(f.out_dtype));
    CHECK(h.out_dtype == c->bf16_mode_out, "%s: bf16 mode output is %s, want %s", c->name, dtype_name(h.out_dtype),
          dtype_name(c->bf16_mode_out));
    long bad = 0;
    for (int64_t i = 0; i < f.out_n; i++) {
        float want = c->bf16_mode_out == DT_BF16 ? bf16_to_f32(f32_to_bf16(f.out[i])) : f.out[i];
        if (memcmp(&want, &h.out[i], sizeof want)) bad++;
    }
    CHECK(bad == 0, "%s: %ld of %ld outputs differ from the f32 mode's rounded to %s", c->name, bad, (long)f.out_n,
          dtype_name(c->bf16_mode_out));
    for (int i = 0; i < f.n; i++) {
        double scale, diff = max_abs_diff(h.grad[i], f.grad[i], (long)f.grad_n[i], &scale);
        CHECK(scale > 0, "%s: input %d has no gradient", c->name, i);
        if (c->reads_output)
            CHECK(diff <= 1e-2 * scale, "%s: input %d gradient differs by %.3g (scale %.3g)", c->name, i, diff, scale);
        else
            CHECK(memcmp(h.grad[i], f.grad[i], sizeof(float) * (size_t)f.grad_n[i]) == 0,
                  "%s: input %d gradient differs from the f32 mode's (max %.3g, scale %.3g)", c->name, i, diff, scale);
    }
    free_result(&f);
    free_result(&h);
}

// ---- dtype rules ------------------------------------------------------------------------------------
static void check_rules(void) {
    ag_step_reset();
    ag_set_activation_dtype(DT_BF16);
    Built b = {0};
    Tensor *img = tensor_new_on(DEV_CPU, 4, SH(1, 2, 4, 4), DT_F32);  // an f32 input (an image)
    tensor_fill(img, 0.5f);
    Tensor *w = PAR(&b, 1, 3, 2, 3, 3);
    CHECK(op_silu(img)->dtype == DT_F32, "an f32 chain stays f32");
    CHECK(op_add(img, img)->dtype == DT_F32, "f32 + f32 stays f32");
    Tensor *y = op_conv2d(img, w, NULL, 1, 1);
    CHECK(y->dtype == DT_BF16, "a product of f32 inputs is stored bf16, got %s", dtype_name(y->dtype));
    Tensor *loss = op_mse_loss(y, op_conv2d(img, w, NULL, 1, 1));
    CHECK(loss->dtype == DT_F32, "a loss is f32");
    CHECK(op_scale(loss, 2.0f)->dtype == DT_F32, "a scaled loss is f32");
    CHECK(op_add(op_scale(loss, 2.0f), op_mean(y))->dtype == DT_F32, "losses combined with op_add stay f32");
    CHECK(op_reshape(y, 2, SH(3, 16))->dtype == DT_BF16, "op_reshape keeps bf16");
    CHECK(op_add(y, loss)->dtype == DT_BF16, "bf16 activation + f32 is bf16");
    Tensor *z = op_add_into(op_conv2d(img, w, NULL, 1, 1), loss);
    CHECK(z->dtype == DT_BF16, "in place into a bf16 y stays bf16");
    tensor_free(w);
    ag_step_reset();
    ag_set_activation_dtype(DT_F32);
}

// ---- the DOD fixture model --------------------------------------------------------------------------
typedef struct {
    double loss;
    size_t peak;
    double *grad;  // all trainable gradients, concatenated
    long n;
} StepResult;

static StepResult dod_step(int stage, DType mode, bool recompute, DType frozen) {
    DodModelConfig cfg = dod_fixture_config(stage);
    cfg.recompute = recompute;
    cfg.frozen_dtype = frozen;
    DodModel *m = dod_model_create(&cfg);
    int n = dod_model_trainable(m, NULL, 0);
    Tensor **tr = malloc(sizeof(Tensor *) * (size_t)n);
    dod_model_trainable(m, tr, n);
    ag_set_activation_dtype(mode);
    Tensor *lq, *hq;
    dod_synthetic_pair(2, 32, &lq, &hq);
    ag_step_reset();
    arena_peak_reset();
    DodLoss l = dod_model_forward_loss(m, lq, hq, 7);
    StepResult r = {.loss = tensor_item(l.total)};
    ag_backward(l.total);
    r.peak = arena_peak();
    for (int i = 0; i < n; i++) r.n += (long)tr[i]->numel;
    r.grad = calloc((size_t)r.n, sizeof(double));
    long k = 0;
    for (int i = 0; i < n; i++)
        for (int64_t j = 0; j < tr[i]->numel; j++, k++) r.grad[k] = tr[i]->grad ? tr[i]->grad[j] : 0.0;
    ag_step_reset();
    ag_set_activation_dtype(DT_F32);
    tensor_free(lq);
    tensor_free(hq);
    free(tr);
    dod_model_free(m);
    return r;
}

// Relative L2 distance of b's gradient vector from a's.
static double grad_rel(const StepResult *a, const StepResult *b) {
    double num = 0, den = 0;
    for (long i = 0; i < a->n; i++) {
        num += (b->grad[i] - a->grad[i]) * (b->grad[i] - a->grad[i]);
        den += a->grad[i] * a->grad[i];
    }
    return sqrt(num / den);
}

static void check_dod(int stage) {
    StepResult f = dod_step(stage, DT_F32, false, DT_F32), h = dod_step(stage, DT_BF16, false, DT_F32),
               hr = dod_step(stage, DT_BF16, true, DT_F32), w = dod_step(stage, DT_F32, false, DT_BF16);
    double rel = grad_rel(&f, &h), rel_w = grad_rel(&f, &w), loss_rel = fabs(h.loss - f.loss) / fabs(f.loss);
    printf("DOD stage %d: loss f32 %.6f bf16 %.6f (rel %.2e); gradient rel L2 %.2e (bf16 frozen weights alone: "
           "%.2e); arena peak f32 %.2f MiB, bf16 %.2f MiB (%.2fx)\n",
           stage, f.loss, h.loss, loss_rel, rel, rel_w, f.peak / 1048576.0, h.peak / 1048576.0,
           (double)h.peak / (double)f.peak);
    CHECK(loss_rel < 1e-2, "stage %d: bf16 loss %.6f vs f32 %.6f", stage, h.loss, f.loss);
    CHECK(rel > 0 && rel < 0.3 && rel < 2 * rel_w + 0.02,
          "stage %d: gradient relative L2 %.3g (want in (0, 0.3) and below 2 x %.3g + 0.02)", stage, rel, rel_w);
    CHECK(h.peak < f.peak, "stage %d: bf16 arena peak %zu not below f32's %zu", stage, h.peak, f.peak);
    CHECK(hr.loss == h.loss && memcmp(hr.grad, h.grad, sizeof(double) * (size_t)h.n) == 0,
          "stage %d: bf16 recompute differs from the plain bf16 run", stage);
    free(f.grad);
    free(h.grad);
    free(hr.grad);
    free(w.grad);
}

// ---- errors ---------------------------------------------------------------------------------------------
static void read_bf16_as_f32(void *ctx) {
    (void)ctx;
    Tensor *t = tensor_new_on(DEV_CPU, 2, SH(2, 3), DT_BF16);
    (void)tensor_data_f32(t);
}
static void set_f16(void *ctx) {
    (void)ctx;
    ag_set_activation_dtype(DT_F16);
}

int main(void) {
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_op(&cases[i]);
    check_rules();
    check_dod(1);
    check_dod(2);
    expect_fatal("tensor_data_f32 of a bf16 tensor", read_bf16_as_f32, NULL,
                 (const char *const[]){"tensor_data_f32", "[2, 3]", "bf16", "tensor_f32", NULL});
    expect_fatal("f16 activations", set_f16, NULL, (const char *const[]){"ag_set_activation_dtype", "f16", NULL});
    return check_summary();
}
