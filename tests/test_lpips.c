// LPIPS against the lpips package (tests/fixtures/lpips, scripts/make_lpips_fixture.py): per-image
// distances and the gradients w.r.t. both images, with the package's real linear heads (its vgg.pth as
// shipped, legacy torch format, and re-saved in the zip format) and random VGG16 weights that
// lpips_random_vgg rebuilds bit for bit; loading from a torchvision-named file; frozen bf16 weights;
// the errors for missing and misshapen tensors; the LPIPS term of dod_loss.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "autograd/ops.h"
#include "layers/dod_loss.h"
#include "layers/lpips.h"
#include "layers/safetensors.h"
#include "tests/check.h"

#define FIX DOD_SOURCE_DIR "/tests/fixtures/lpips/"
#define SEED 18   // scripts/make_lpips_fixture.py

static char dir[64];

static ParamStore *ref;

static Tensor *ref_tensor(const char *name, bool requires_grad) {
    Tensor *src = params_require(ref, name, "lpips fixture");
    Tensor *t = tensor_new_persistent(name, src->ndim, src->shape, DT_F32);
    memcpy(t->data, src->data, sizeof(float) * (size_t)t->numel);
    t->requires_grad = requires_grad;
    return t;
}

// max |a - b| / max |b| over n floats.
static double rel_err(const float *a, const float *b, int64_t n) {
    double scale;
    double d = max_abs_diff(a, b, n, &scale);
    return scale > 0 ? d / scale : d;
}

// Distances and input gradients of one fixture case; returns the worst relative errors.
// y_grad false: y is a constant (a loss's target), which takes lpips_distance's no-grad path for it.
static void check_case(Lpips *m, const char *c, bool y_grad, const char *what, double *worst_val, double *worst_grad) {
    char name[64];
    snprintf(name, sizeof name, "%s.x", c);
    Tensor *x = ref_tensor(name, true);
    snprintf(name, sizeof name, "%s.y", c);
    Tensor *y = ref_tensor(name, y_grad);
    snprintf(name, sizeof name, "%s.coef", c);
    Tensor *coef = ref_tensor(name, false);
    Tensor *d = lpips_distance(m, x, y);
    CHECK(d->ndim == 2 && d->shape[0] == x->shape[0] && d->shape[1] == 1, "%s: distance shape %s", what, shape_str(d));
    snprintf(name, sizeof name, "%s.dist", c);
    const float *want = tensor_data_f32(params_require(ref, name, "fixture"));
    double ev = 0;
    for (int64_t i = 0; i < x->shape[0]; i++) ev = fmax(ev, fabs(tensor_data_f32(d)[i] - want[i]) / fabs(want[i]));
    ag_backward_from(d, tensor_data_f32(coef));
    snprintf(name, sizeof name, "%s.grad_x", c);
    double gx = rel_err(x->grad, tensor_data_f32(params_require(ref, name, "fixture")), x->numel);
    snprintf(name, sizeof name, "%s.grad_y", c);
    double gy = y_grad ? rel_err(y->grad, tensor_data_f32(params_require(ref, name, "fixture")), y->numel) : 0;
    printf("  %s case %s%s: distance rel err %.2e, grad_x %.2e, grad_y %.2e (relative to max |ref|)\n", what, c,
           y_grad ? "" : " (y constant)", ev, gx, gy);
    *worst_val = fmax(*worst_val, ev);
    *worst_grad = fmax(*worst_grad, fmax(gx, gy));
    ag_step_reset();
    tensor_free(x);
    tensor_free(y);
    tensor_free(coef);
}

static void check_model(Lpips *m, const char *what, double tol_val, double tol_grad) {
    double v = 0, g = 0;
    check_case(m, "a", true, what, &v, &g);
    check_case(m, "b", true, what, &v, &g);
    check_case(m, "a", false, what, &v, &g);
    CHECK(v <= tol_val, "%s: distances off by %.3g relative (tol %.1g)", what, v, tol_val);
    CHECK(g <= tol_grad, "%s: gradients off by %.3g of their max (tol %.1g)", what, g, tol_grad);
}

// A torchvision-named VGG16 file of lpips_random_vgg(SEED), minus `drop` and with `reshape` changed.
static const char *write_vgg(const char *file, const char *drop, const char *reshape) {
    static char paths[4][256];
    static int slot;
    char *path = paths[slot++ & 3];
    snprintf(path, 256, "%s/%s", dir, file);
    ParamStore *ps = lpips_random_vgg(SEED);
    Tensor *list[32];
    int n = 0;
    for (int i = 0; i < params_count(ps); i++) {
        Tensor *t = params_at(ps, i);
        if (drop && !strcmp(t->name, drop)) continue;
        if (reshape && !strcmp(t->name, reshape)) t->shape[0] -= 1, t->numel = t->numel / (t->shape[0] + 1) * t->shape[0];
        list[n++] = t;
    }
    char err[ST_ERR_LEN];
    CHECK(safetensors_save(path, list, n, NULL, 0, err) == ST_OK, "%s", err);
    params_free(ps);
    return path;
}

static void expect_load_error(const char *vgg, const char *lin, const char *frag1, const char *frag2) {
    char err[1024] = "";
    Lpips *m = lpips_load(vgg, lin, DT_F32, err, sizeof err);
    CHECK(m == NULL && strstr(err, frag1) && (!frag2 || strstr(err, frag2)), "want an error with '%s' '%s', got: %s",
          frag1, frag2 ? frag2 : "", err);
    lpips_free(m);
    printf("ok refuses: %s\n", err);
}

// dod_loss's LPIPS term (layers/dod_loss.h): its value is the mean of the package's distances, the
// total adds it with its weight, and its gradient is that of the mean distance; weight 0 leaves the
// loss as it was (no LPIPS built, .lpips NaN).
static void check_dod_loss(Lpips *m) {
    Tensor *x = ref_tensor("a.x", true), *y = ref_tensor("a.y", false);
    const float *want = tensor_data_f32(params_require(ref, "a.dist", "fixture"));
    double mean_ref = 0.5 * ((double)want[0] + want[1]);
    DodLoss l = dod_loss(x, y, (DodLossWeights){.mse = 2, .lpips = 5, .lpips_net = m});
    double ev = fabs(l.lpips - mean_ref) / mean_ref, total = tensor_item(l.total);
    CHECK(ev <= 1e-5, "dod_loss lpips %.9g, the package's mean distance %.9g", l.lpips, mean_ref);
    CHECK(fabs(total - (2.0 * l.mse + 5.0 * l.lpips)) <= 1e-6 * total && isnan(l.ssim) && l.ssim_loss == 0,
          "dod_loss total %.9g = 2 mse %.9g + 5 lpips %.9g", total, l.mse, l.lpips);
    ag_step_reset();
    l = dod_loss(x, y, (DodLossWeights){.lpips = 1, .lpips_net = m});   // the LPIPS term alone
    ag_backward(l.total);
    float *g_loss = malloc(sizeof(float) * (size_t)x->numel);
    memcpy(g_loss, x->grad, sizeof(float) * (size_t)x->numel);
    ag_step_reset();
    tensor_zero_grad(x);
    ag_backward_from(lpips_distance(m, x, y), (const float[]){0.5f, 0.5f});   // d mean / d dist_i = 1/2
    double eg = rel_err(g_loss, x->grad, x->numel);
    CHECK(eg <= 1e-6, "dod_loss LPIPS gradient off by %.3g of its max", eg);
    ag_step_reset();
    l = dod_loss(x, y, (DodLossWeights){.mse = 2, .lpips = 0, .lpips_net = m});
    Tensor *mse = op_scale(op_mse_loss(x, y), 2.0f);
    CHECK(isnan(l.lpips) && tensor_item(l.total) == tensor_item(mse), "weight 0: the MSE loss alone, bit for bit");
    printf("ok dod_loss LPIPS term: value rel err %.2e vs the package, gradient %.2e vs lpips_distance's\n", ev, eg);
    ag_step_reset();
    free(g_loss);
    tensor_free(x);
    tensor_free(y);
}

static void too_small(void *ctx) {
    Lpips *m = ctx;
    lpips_distance(m, tensor_new4(1, 3, 15, 32), tensor_new4(1, 3, 15, 32));
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/dod_test_lpips_XXXXXX");
    if (!mkdtemp(dir)) dod_fatal("test_lpips", "mkdtemp failed");
    char err[1024];
    if (!(ref = safetensors_load_store(FIX "lpips_ref.safetensors", DT_F32, err))) dod_fatal("test_lpips", "%s", err);

    // From files: a torchvision-named VGG (safetensors) + the package's vgg.pth as shipped (legacy pickle).
    const char *vgg = write_vgg("vgg16.safetensors", NULL, NULL);
    Lpips *m = lpips_load(vgg, FIX "vgg_lin_v0.1.pth", DT_F32, err, sizeof err);
    CHECK(m != NULL, "%s", err);
    if (m) check_model(m, "files, legacy heads", 1e-5, 1e-5);
    if (m) check_dod_loss(m);
    lpips_free(m);
    // The VGG store directly + the heads re-saved in the zip format.
    m = lpips_from_vgg(lpips_random_vgg(SEED), FIX "vgg_lin_v0.1_zip.pth", DT_F32, err, sizeof err);
    CHECK(m != NULL, "%s", err);
    if (m) check_model(m, "store, zip heads", 1e-5, 1e-5);
    if (m) {
        const char *needles[] = {"lpips_distance", "[1, 3, 15, 32]", "16 x 16", NULL};
        expect_fatal("input below 16 x 16", too_small, m, needles);
    }
    lpips_free(m);
    // Frozen weights stored in bf16 (compute in f32): exactly the f32 model with bf16-rounded weights.
    Lpips *bf = lpips_load(vgg, FIX "vgg_lin_v0.1.pth", DT_BF16, err, sizeof err);
    ParamStore *rounded = lpips_random_vgg(SEED);
    for (int i = 0; i < params_count(rounded); i++) {
        Tensor *t = params_at(rounded, i);
        for (int64_t j = 0; j < t->numel; j++) tensor_data_f32(t)[j] = bf16_to_f32(f32_to_bf16(tensor_data_f32(t)[j]));
    }
    m = lpips_from_vgg(rounded, FIX "vgg_lin_v0.1.pth", DT_F32, err, sizeof err);
    CHECK(bf && m && bf->w[12]->dtype == DT_BF16 && bf->lin[0]->dtype == DT_BF16, "bf16 load: %s", err);
    if (bf && m) {
        for (int l = 0; l < LPIPS_N_LAYERS; l++)
            for (int64_t j = 0; j < m->lin[l]->numel; j++)
                tensor_data_f32(m->lin[l])[j] = bf16_to_f32(f32_to_bf16(tensor_data_f32(m->lin[l])[j]));
        Tensor *x = ref_tensor("a.x", true), *y = ref_tensor("a.y", false);
        Tensor *d1 = lpips_distance(bf, x, y);
        ag_backward(op_sum(d1));
        float *g1 = malloc(sizeof(float) * (size_t)x->numel);
        memcpy(g1, x->grad, sizeof(float) * (size_t)x->numel);
        float v1[2] = {tensor_data_f32(d1)[0], tensor_data_f32(d1)[1]};
        ag_step_reset();
        tensor_zero_grad(x);
        Tensor *d2 = lpips_distance(m, x, y);
        ag_backward(op_sum(d2));
        CHECK(v1[0] == tensor_data_f32(d2)[0] && v1[1] == tensor_data_f32(d2)[1] &&
              !memcmp(g1, x->grad, sizeof(float) * (size_t)x->numel),
              "bf16-stored weights must give the f32 model of bf16-rounded weights exactly");
        printf("ok bf16 frozen weights: distances %.7g %.7g (f32 weights: %.7g %.7g)\n", v1[0], v1[1],
               tensor_data_f32(params_get(ref, "a.dist"))[0], tensor_data_f32(params_get(ref, "a.dist"))[1]);
        ag_step_reset();
        free(g1);
        tensor_free(x);
        tensor_free(y);
    }
    lpips_free(bf);
    lpips_free(m);

    expect_load_error(write_vgg("no_bias.safetensors", "features.28.bias", NULL), FIX "vgg_lin_v0.1.pth",
                      "no_bias.safetensors: no tensor features.28.bias", "vgg16-397923af.pth");
    expect_load_error(write_vgg("bad_shape.safetensors", NULL, "features.5.weight"), FIX "vgg_lin_v0.1.pth",
                      "bad_shape.safetensors: tensor features.5.weight is [127, 64, 3, 3]", "needs [128, 64, 3, 3]");
    expect_load_error(vgg, vgg, "vgg16.safetensors: no tensor lin0.model.1.weight", "weights/v0.1/vgg.pth");
    expect_load_error("/nonexistent/vgg.pth", FIX "vgg_lin_v0.1.pth", "/nonexistent/vgg.pth: cannot open", NULL);

    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    params_free(ref);
    return check_summary();
}
