// The CPU-checkable half of the model code's CUDA path (docs/cuda.md, "Model code on CUDA"). No GPU
// here, so the model code is exercised where it is built from engine ops that run on any device:
//  - the odd-size nearest resize, reflect padding and cropping (op_gather_hw) give exactly the values
//    of plain loops written here, and the resize's gradient is the loop's scatter-add, bit for bit;
//  - dod_repeat_constant / tensor_item (the device-neutral prompt repeat and loss read-back);
//  - dod_model_to_device(DEV_CPU) keeps the forward bitwise unchanged (the move is in place);
//  - random-weight bases (layers/sd_random.h) have the loader's table of names, shapes and dtypes,
//    are deterministic in the seed, and a DOD forward on one is finite;
//  - mixed devices fail naming the op (op_posterior_sample), checked before any device access.
#include <math.h>
#include <string.h>

#include "layers/dod_model.h"
#include "tests/dod_fixture_config.h"
#include "layers/dod_model_util.h"
#include "layers/sd_random.h"
#include "tests/check.h"

#define SD2_TINY DOD_FIXTURE_BASE

static Tensor *random_input(const char *name, int64_t n, int64_t c, int64_t h, int64_t w, uint64_t seed) {
    int64_t shape[4] = {n, c, h, w};
    Tensor *t = tensor_new_persistent(name, 4, shape, DT_F32);
    tensor_randn(t, seed, 1.0f);
    return t;
}

static bool bitwise_equal(const Tensor *a, const Tensor *b) {
    return tensor_same_shape(a, b) && memcmp(a->data, b->data, sizeof(float) * (size_t)a->numel) == 0;
}

// torch's nearest source index (the rule of layers/sd_blocks.c, written again here).
static void nearest_src(int64_t in, int64_t out, int64_t *idx) {
    for (int64_t i = 0; i < out; i++) {
        int64_t s = in == out ? i : (int64_t)floorf((float)i * ((float)in / (float)out));
        idx[i] = s < in - 1 ? s : in - 1;
    }
}

// y[p, i, j] = x[p, sy[i], sx[j]]: the plain loop every gather here is checked against (= new persistent).
static Tensor *gather_loop(const Tensor *x, const int64_t *sy, int64_t oh, const int64_t *sx, int64_t ow) {
    int64_t planes = x->shape[0] * x->shape[1], ih = x->shape[2], iw = x->shape[3];
    int64_t shape[4] = {x->shape[0], x->shape[1], oh, ow};
    Tensor *y = tensor_new_persistent("y_loop", 4, shape, DT_F32);
    const float *xd = tensor_data_f32(x);
    float *yd = tensor_data_f32(y);
    for (int64_t p = 0; p < planes; p++)
        for (int64_t i = 0; i < oh; i++)
            for (int64_t j = 0; j < ow; j++) yd[(p * oh + i) * ow + j] = xd[(p * ih + sy[i]) * iw + sx[j]];
    return y;
}

// The resize (op_gather_hw) against the loop, forward and gradient (d sum(y * w) / dx: the scatter-add
// of w, in the loop's order, so bit for bit), down and up, odd sizes.
static void test_resize_gather(int64_t ih, int64_t iw, int64_t oh, int64_t ow) {
    char what[96];
    snprintf(what, sizeof what, "resize %ldx%ld -> %ldx%ld", (long)ih, (long)iw, (long)oh, (long)ow);
    Tensor *x = random_input("x", 2, 3, ih, iw, 7);
    x->requires_grad = true;
    int64_t sy[64], sx[64];
    nearest_src(ih, oh, sy);
    nearest_src(iw, ow, sx);
    Tensor *y_loop = gather_loop(x, sy, oh, sx, ow);
    Tensor *y = sd_resize_nearest(x, oh, ow);
    CHECK(bitwise_equal(y, y_loop), "%s: forward differs from the loop (%s vs %s)", what, shape_str(y),
          shape_str(y_loop));
    Tensor *w = tensor_new(y->ndim, y->shape, DT_F32);
    tensor_randn(w, 11, 1.0f);
    ag_backward(op_sum(op_mul(y, w)));
    float *g_loop = dod_calloc(sizeof(float) * (size_t)x->numel, "loop gradient");
    const float *wd = tensor_data_f32(w);
    for (int64_t p = 0; p < x->shape[0] * x->shape[1]; p++)
        for (int64_t i = 0; i < oh; i++)
            for (int64_t j = 0; j < ow; j++) g_loop[(p * ih + sy[i]) * iw + sx[j]] += wd[(p * oh + i) * ow + j];
    double scale, err = max_abs_diff(x->grad, g_loop, (long)x->numel, &scale);
    CHECK(scale > 0 && err <= 1e-6 * scale, "%s: gradient max error %g (max|ref| %g)", what, err, scale);
    CHECK(memcmp(x->grad, g_loop, sizeof(float) * (size_t)x->numel) == 0, "%s: gradient not bitwise the loop's", what);
    free(g_loop);
    ag_step_reset();
    tensor_free(y_loop);
    tensor_free(x);
}

// torch's reflect index (F.pad mode='reflect'), written again here.
static int64_t reflect_src(int64_t i, int64_t n) { return i < n ? i : 2 * (n - 1) - i; }

static void test_pad_crop_gather(void) {
    bool prev = ag_set_grad_enabled(false);
    Tensor *x = random_input("x", 2, 3, 13, 11, 3);
    int64_t sy[32], sx[32];
    const int pads[2][2] = {{3, 5}, {0, 7}};
    for (int k = 0; k < 2; k++) {
        int ph = pads[k][0], pw = pads[k][1];
        for (int64_t i = 0; i < 13 + ph; i++) sy[i] = reflect_src(i, 13);
        for (int64_t j = 0; j < 11 + pw; j++) sx[j] = reflect_src(j, 11);
        Tensor *want = gather_loop(x, sy, 13 + ph, sx, 11 + pw);
        CHECK(bitwise_equal(dod_pad_reflect(x, ph, pw), want), "reflect pad (%d, %d): op != loop", ph, pw);
        tensor_free(want);
    }
    const int64_t crops[2][2] = {{9, 4}, {13, 11}};
    for (int k = 0; k < 2; k++) {
        for (int64_t i = 0; i < crops[k][0]; i++) sy[i] = i;
        for (int64_t j = 0; j < crops[k][1]; j++) sx[j] = j;
        Tensor *want = gather_loop(x, sy, crops[k][0], sx, crops[k][1]);
        CHECK(bitwise_equal(dod_crop(x, crops[k][0], crops[k][1]), want), "crop %ldx%ld: op != loop",
              (long)crops[k][0], (long)crops[k][1]);
        tensor_free(want);
    }
    ag_step_reset();
    tensor_free(x);
    ag_set_grad_enabled(prev);
}

static void test_repeat_and_scalar(void) {
    int64_t shape[2] = {5, 4};
    Tensor *p = tensor_new_persistent("p", 2, shape, DT_F32);
    tensor_randn(p, 5, 1.0f);
    Tensor *r = dod_repeat_constant(p, 3);
    CHECK(r->ndim == 3 && r->shape[0] == 3 && r->shape[1] == 5 && r->shape[2] == 4, "repeat shape %s", shape_str(r));
    bool same = true;
    for (int k = 0; k < 3; k++) same &= memcmp(tensor_data_f32(r) + k * 20, p->data, 20 * sizeof(float)) == 0;
    CHECK(same && !r->requires_grad, "repeat: copies differ from the source or require grad");
    Tensor *s = op_sum(p);
    CHECK(tensor_item(s) == tensor_data_f32(s)[0], "scalar read-back %g vs %g", tensor_item(s), tensor_data_f32(s)[0]);
    ag_step_reset();
    tensor_free(p);
}

static DodModelConfig small_config(void) { return dod_fixture_config(1); }

// Train-mode forward of a fixed batch (= a persistent host copy of the output).
static Tensor *forward_copy(DodModel *m, uint64_t seed) {
    Tensor *lq = random_input("lq", 2, 3, 16, 16, 21);
    for (int64_t i = 0; i < lq->numel; i++) tensor_data_f32(lq)[i] = tanhf(tensor_data_f32(lq)[i]);
    Tensor *out = dod_model_forward(m, lq, DOD_MODE_TRAIN, seed);
    Tensor *copy = tensor_to_device(out, DEV_CPU);
    Tensor *kept = tensor_new_persistent("out", copy->ndim, copy->shape, DT_F32);
    memcpy(kept->data, copy->data, sizeof(float) * (size_t)kept->numel);
    ag_step_reset();
    tensor_free(lq);
    return kept;
}

static void test_model_to_cpu_is_identity(void) {
    DodModelConfig c = small_config();
    DodModel *m = dod_model_create(&c);
    Tensor *before = forward_copy(m, 9);
    dod_model_to_device(m, DEV_CPU);
    CHECK(m->device == DEV_CPU, "model device %d after moving to the CPU", (int)m->device);
    Tensor *after = forward_copy(m, 9);
    CHECK(bitwise_equal(before, after), "forward changed after dod_model_to_device(DEV_CPU)");
    tensor_free(before);
    tensor_free(after);
    dod_model_free(m);
}

static void test_random_base(void) {
    Unet *loaded = unet_load(SD2_TINY, DT_F32, NULL);
    Unet *r1 = unet_create_random(SD2_TINY, DT_BF16, 5), *r2 = unet_create_random(SD2_TINY, DT_BF16, 5);
    Unet *r3 = unet_create_random(SD2_TINY, DT_BF16, 6);
    ParamStore *a = loaded->net.ps, *b = r1->net.ps;
    CHECK(params_count(a) == params_count(b), "random unet has %d tensors, the loaded one %d", params_count(b),
          params_count(a));
    int shape_ok = 0, same_seed_equal = 0, other_seed_differs = 0;
    for (int i = 0; i < params_count(a) && i < params_count(b); i++) {
        Tensor *t = params_at(a, i), *u = params_get(b, t->name);
        if (u && tensor_same_shape(t, u) && u->dtype == DT_BF16) shape_ok++;
        Tensor *u2 = params_get(r2->net.ps, t->name), *u3 = params_get(r3->net.ps, t->name);
        size_t bytes = (size_t)t->numel * 2;
        if (u && u2 && memcmp(u->data, u2->data, bytes) == 0) same_seed_equal++;
        if (u && u3 && t->ndim >= 2 && memcmp(u->data, u3->data, bytes) != 0) other_seed_differs++;
    }
    int n_matrices = 0;
    for (int i = 0; i < params_count(a); i++) n_matrices += params_at(a, i)->ndim >= 2;
    CHECK(shape_ok == params_count(a), "%d of %d random tensors have the loaded name, shape and bf16", shape_ok,
          params_count(a));
    CHECK(same_seed_equal == params_count(a), "same seed: %d of %d tensors equal", same_seed_equal, params_count(a));
    CHECK(other_seed_differs == n_matrices, "other seed: %d of %d matrices differ", other_seed_differs, n_matrices);
    Tensor *norm = params_require(b, "conv_norm_out.weight", "test"), *bias = params_require(b, "conv_norm_out.bias", "test");
    CHECK(tensor_f32(norm)[0] == 1.0f && tensor_f32(bias)[0] == 0.0f, "norm scale %g / bias %g, expected 1 / 0",
          tensor_f32(norm)[0], tensor_f32(bias)[0]);
    Tensor *w = params_require(b, "conv_in.weight", "test");
    float bound = 1.0f / sqrtf((float)(w->numel / w->shape[0])), mx = 0;
    const float *wd = tensor_f32(w);
    for (int64_t i = 0; i < w->numel; i++) mx = fmaxf(mx, fabsf(wd[i]));
    CHECK(mx > 0.5f * bound && mx <= bound * 1.01f, "conv_in max |w| %g, bound %g", mx, bound);
    ag_step_reset();
    unet_free(loaded);
    unet_free(r1);
    unet_free(r2);
    unet_free(r3);

    DodModelConfig c = small_config();
    c.random_base_weights = true;
    DodModel *m = dod_model_create(&c);
    Tensor *out = forward_copy(m, 3);
    bool finite = true;
    for (int64_t i = 0; i < out->numel; i++) finite &= isfinite(tensor_data_f32(out)[i]) != 0;
    CHECK(finite && out->shape[1] == 3, "forward on a random base: finite %d, shape %s", finite, shape_str(out));
    tensor_free(out);
    dod_model_free(m);
}

// A header claiming CUDA, without memory: the device check must fire before anything touches it.
static void posterior_mixed(void *ctx) {
    (void)ctx;
    Tensor *mean = tensor_new4(1, 4, 2, 2), *logvar = tensor_new4(1, 4, 2, 2);
    Tensor fake = *mean;
    fake.device = DEV_CUDA;
    fake.data = NULL;
    op_posterior_sample(mean, logvar, &fake);
}

static void missing_config(void *ctx) { unet_create_random(ctx, DT_F32, 1); }

int main(void) {
    test_resize_gather(5, 4, 9, 7);
    test_resize_gather(9, 7, 5, 4);
    test_resize_gather(3, 5, 3, 11);
    test_pad_crop_gather();
    test_repeat_and_scalar();
    test_model_to_cpu_is_identity();
    test_random_base();
    expect_fatal("posterior on mixed devices", posterior_mixed, NULL,
                 (const char *const[]){"op_posterior_sample", "one device", NULL});
    expect_fatal("random unet without a config", missing_config, "/nonexistent/base",
                 (const char *const[]){"unet_create_random", "/nonexistent/base/unet/config.json", NULL});
    return check_summary();
}
