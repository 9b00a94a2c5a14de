// The VSD regulariser (layers/dod_vsd.c) against PyTorch (tests/fixtures/dod/vsd.safetensors, made by
// scripts/make_vsd_fixture.py on the DOD parity fixture's model, inputs and posterior noise), with the
// noise and timesteps given as inputs: on the tiny SD 2.x base (v-prediction) and on the same weights
// with an epsilon-prediction scheduler (a temporary base folder): the one-step latent, the VSD loss, its
// gradient with respect to the latent and to every stage-1 trainable, the regulariser's diffusion loss
// and its gradients; on the v base one full stage-1 step with all three terms, 2 MSE + 5 LPIPS + VSD,
// through dod_loss_terms (the training loss train/loop.c back-propagates; LPIPS with the lpips package's
// real heads and the random VGG16 trunk of tests/fixtures/lpips): its terms, the generator's gradient,
// the clipped gradient norms and every tensor after both AdamW steps. Also: activation recomputation
// gives the same gradients, the keyed draws are a pure function of the key, the adapter switching
// leaves the UNet where the backward needs it, and the creation errors.
#include "tests/check.h"
#include "tests/adamw_check.h"

#include <sys/stat.h>

#include "autograd/optim.h"
#include "layers/dod_loss.h"
#include "layers/dod_model_util.h"
#include "layers/dod_vsd.h"
#include "layers/lpips.h"
#include "layers/safetensors.h"

#ifndef DOD_SOURCE_DIR
#define DOD_SOURCE_DIR "."
#endif
#include "tests/dod_fixture_config.h"
#define STEP_FILE DOD_SOURCE_DIR "/tests/fixtures/dod/step.safetensors"
#define VSD_FILE DOD_SOURCE_DIR "/tests/fixtures/dod/vsd.safetensors"
#define LPIPS_LIN DOD_SOURCE_DIR "/tests/fixtures/lpips/vgg_lin_v0.1.pth"
#define LPIPS_SEED 18   // the random VGG16 trunk of scripts/make_lpips_fixture.py

// The fixture's regulariser and step settings (scripts/make_vsd_fixture.py: RV, AV, CFG, LR, LR_REG,
// MSE_WEIGHT, LPIPS_WEIGHT, VSD_WEIGHT).
#define FX_RANK 2
#define FX_ALPHA 3.0f
#define FX_CFG 7.5f
#define FX_LR 5e-5f
#define FX_LR_REG 7e-5f
#define FX_MSE 2.0f
#define FX_LPIPS 5.0f
#define FX_VSD 1.0f
#define FX_N_STAGE1 199
#define FX_N_REG 146   // 72 UNet targets + conv_in, A and B each
// Relative tolerance of gradients and losses (of the tensor's largest reference value): the reference
// is float64, ours f32 through the generator, two more UNet calls and the guidance (x 7.5), whose x0
// estimate divides by sqrt(alpha-bar) (x 12 at t = 953 for epsilon).
#define REL 1e-4

static ParamStore *vsd_fx, *step_fx;   // vsd.safetensors and step.safetensors, f32

// The fixture tensor fmt % a (vsd.safetensors first, then step.safetensors).
static Tensor *fx(const char *fmt, const char *a) {
    char name[512];
    snprintf(name, sizeof name, fmt, a);
    Tensor *t = params_get(vsd_fx, name);
    return t ? t : params_require(step_fx, name, "dod fixtures");
}

static bool match(const char *what, const float *got, const float *ref, int64_t n, double rel) {
    double scale, d = max_abs_diff(got, ref, n, &scale);
    double tol = rel * fmax(scale, 1e-30);
    CHECK(d <= tol, "%s: max |diff| %.3g > tol %.3g (ref scale %.3g)", what, d, tol, scale);
    return d <= tol;
}

// A base folder that is the fixture's with prediction_type epsilon (symlinks + an edited scheduler config).
static char eps_base[256];
static void make_eps_base(void) {
    snprintf(eps_base, sizeof eps_base, "/tmp/dod_vsd_eps_%d", (int)getpid());
    char path[512], cmd[1024];
    snprintf(cmd, sizeof cmd, "rm -rf %s && mkdir -p %s/scheduler", eps_base, eps_base);
    DOD_CHECK(system(cmd) == 0, "test_dod_vsd", "%s failed", cmd);
    const char *parts[] = {"unet", "vae", "text_encoder", "tokenizer"};
    for (int i = 0; i < 4; i++) {
        char src[512];
        snprintf(src, sizeof src, "%s/%s", DOD_FIXTURE_BASE, parts[i]);
        snprintf(path, sizeof path, "%s/%s", eps_base, parts[i]);
        DOD_CHECK(symlink(src, path) == 0, path, "symlink failed");
    }
    snprintf(cmd, sizeof cmd, "sed 's/\"v_prediction\"/\"epsilon\"/' %s/scheduler/scheduler_config.json > %s/scheduler/"
             "scheduler_config.json", DOD_FIXTURE_BASE, eps_base);
    DOD_CHECK(system(cmd) == 0, "test_dod_vsd", "%s failed", cmd);
}

typedef struct {
    DodModel *m;
    DodVsd *v;
} Fixture;

// The stage-1 fixture model on `base` with the fixture's trainables, negative prompt and regulariser.
static Fixture fixture_model(const char *base, bool recompute) {
    DodModelConfig c = dod_fixture_config(1);
    c.base_model_dir = base;
    c.recompute = recompute;
    Fixture f;
    f.m = dod_model_create(&c);
    int n = dod_model_load_tensors(f.m, STEP_FILE, "s1.param.", true);
    CHECK(n == FX_N_STAGE1, "%d stage-1 tensors loaded", n);
    DOD_CHECK(!f.m->negative_prompt, "test_dod_vsd", "a prompt file and no negative prompt: expected none");
    Tensor *neg = fx("negative_prompt", "");
    f.m->negative_prompt = tensor_new_persistent("negative_prompt", neg->ndim, neg->shape, DT_F32);
    memcpy(f.m->negative_prompt->data, neg->data, sizeof(float) * (size_t)neg->numel);
    DodVsdConfig vc = {.cfg = FX_CFG, .t_min = 20, .t_max = 980, .lora_rank = FX_RANK, .lora_alpha = FX_ALPHA, .seed = 9};
    char err[1024];
    f.v = dod_vsd_create(f.m, &vc, err, sizeof err);
    DOD_CHECK(f.v, "test_dod_vsd", "%s", err);
    int nr = dod_load_into(dod_vsd_params(f.v), VSD_FILE, "param.", true);
    CHECK(nr == FX_N_REG && params_count(dod_vsd_params(f.v)) == FX_N_REG, "%d regulariser tensors loaded, %d exist",
          nr, params_count(dod_vsd_params(f.v)));
    return f;
}

static void fixture_free(Fixture f) {
    dod_vsd_free(f.v);
    dod_model_free(f.m);
}

static int trainable(ParamStore *ps, Tensor ***list) {
    int n = params_trainable(ps, NULL, 0);
    *list = dod_malloc(sizeof(Tensor *) * (size_t)n, "trainable list");
    params_trainable(ps, *list, n);
    return n;
}

// Fixture timesteps (stored as floats) as ints.
static void fixture_t(const char *name, int *t) {
    Tensor *ft = fx("%s", name);
    for (int i = 0; i < 2; i++) t[i] = (int)lrintf(tensor_f32(ft)[i]);
}

// Every gradient of list against <prefix><name>; returns the worst relative difference.
static double match_grads(const char *what, Tensor **list, int n, const char *prefix) {
    double worst = 0;
    for (int i = 0; i < n; i++) {
        Tensor *t = list[i];
        char name[512];
        snprintf(name, sizeof name, "%s%s", prefix, t->name);
        Tensor *t_ref = fx("%s", name);
        CHECK(t->grad != NULL, "%s: no gradient reached %s", what, t->name);
        if (!t->grad) continue;
        double scale, d = max_abs_diff(t->grad, tensor_f32(t_ref), t->numel, &scale);
        worst = fmax(worst, d / fmax(scale, 1e-30));
        CHECK(d <= REL * scale, "%s: grad %s: max |diff| %.3g > %.0e * ref scale %.3g", what, t->name, d, REL, scale);
    }
    printf("%s: %d gradients, worst max|diff| / max|ref| = %.3g\n", what, n, worst);
    return worst;
}

// The generator's forward with the fixture's posterior noise: m->train_latent.
static Tensor *forward(DodModel *m) { return dod_model_forward_eps(m, fx("lq", ""), fx("s1.eps", "")); }

static void parity(const char *b, const char *base) {
    printf("-- %s base\n", b);
    Fixture f = fixture_model(base, false);
    int vt[2], dt[2];
    fixture_t("vsd.t", vt);
    fixture_t("diff.t", dt);
    forward(f.m);
    Tensor *x = f.m->train_latent;
    match("latent", tensor_f32(x), tensor_f32(fx("%s.latent", b)), x->numel, 1e-5);

    // The VSD term: value, gradient into the generator's trainables.
    Tensor *vsd = dod_vsd_loss(f.v, x, fx("vsd.noise", ""), vt);
    CHECK(f.m->unet_adapters == DOD_UNET_GENERATOR, "after the VSD loss the UNet is on adapters %d", f.m->unet_adapters);
    match("VSD loss", tensor_f32(vsd), tensor_f32(fx("%s.vsd.loss", b)), 1, REL);
    ag_backward(vsd);
    Tensor **gen;
    int n = trainable(f.m->params, &gen);
    CHECK(n == FX_N_STAGE1, "%d generator trainables", n);
    char what[64];
    snprintf(what, sizeof what, "%s: VSD gradients", b);
    char prefix[32];
    snprintf(prefix, sizeof prefix, "%s.vsd.grad.", b);
    match_grads(what, gen, n, prefix);
    // ... and with respect to the latent itself (a leaf copy)
    Tensor *leaf = tensor_new_persistent("latent", x->ndim, x->shape, DT_F32);
    memcpy(leaf->data, x->data, sizeof(float) * (size_t)x->numel);
    leaf->requires_grad = true;
    ag_backward(dod_vsd_loss(f.v, leaf, fx("vsd.noise", ""), vt));
    match("VSD latent gradient", leaf->grad, tensor_f32(fx("%s.vsd.latent_grad", b)), leaf->numel, REL);

    // The regulariser's diffusion loss and its gradients (none reach the generator).
    params_zero_grad(f.m->params);
    Tensor *d = dod_vsd_diffusion_loss(f.v, x, fx("diff.noise", ""), dt);
    CHECK(f.m->unet_adapters == DOD_UNET_REGULARISER, "after the diffusion loss the UNet is on adapters %d",
          f.m->unet_adapters);
    match("diffusion loss", tensor_f32(d), tensor_f32(fx("%s.diff.loss", b)), 1, REL);
    ag_backward(d);
    Tensor **reg;
    int nr = trainable(dod_vsd_params(f.v), &reg);
    snprintf(what, sizeof what, "%s: diffusion-loss gradients", b);
    snprintf(prefix, sizeof prefix, "%s.diff.grad.", b);
    match_grads(what, reg, nr, prefix);
    int leaked = 0;
    for (int i = 0; i < n; i++)
        for (int64_t j = 0; gen[i]->grad && j < gen[i]->numel; j++) leaked += gen[i]->grad[j] != 0;
    CHECK(leaked == 0, "the diffusion loss sent %d gradient values into the generator", leaked);
    free(gen);
    free(reg);
    tensor_free(leaf);
    ag_step_reset();
    fixture_free(f);
}

// One full stage-1 step on the v base as train/loop.c runs it: dod_loss_terms with 2 MSE + 5 LPIPS + 1 VSD
// into the generator, clip 1.0, AdamW lr 5e-5; the diffusion loss into the regulariser, clip 1.0, AdamW
// lr 7e-5.
static void full_step(void) {
    printf("-- full stage-1 step (v base): 2 MSE + 5 LPIPS + VSD\n");
    Fixture f = fixture_model(DOD_FIXTURE_BASE, false);
    char err[1024];
    Lpips *lpips = lpips_from_vgg(lpips_random_vgg(LPIPS_SEED), LPIPS_LIN, DT_F32, err, sizeof err);
    DOD_CHECK(lpips, "test_dod_vsd", "%s", err);
    int vt[2], dt[2];
    fixture_t("vsd.t", vt);
    fixture_t("diff.t", dt);
    Tensor *out = forward(f.m);
    DodLossWeights w = {.mse = FX_MSE, .lpips = FX_LPIPS, .vsd = FX_VSD, .lpips_net = lpips, .vsd_reg = f.v};
    DodVsdSample sample = {f.m->train_latent, fx("vsd.noise", ""), vt};
    DodLossTerms l = dod_loss_terms(out, fx("hq", ""), w, &sample);
    CHECK(!l.ssim && l.lpips && l.vsd, "the terms built: ssim %p, lpips %p, vsd %p", (void *)l.ssim, (void *)l.lpips,
          (void *)l.vsd);
    match("step MSE", tensor_f32(l.mse), tensor_f32(fx("v.step.mse", "")), 1, REL);
    match("step LPIPS", tensor_f32(l.lpips), tensor_f32(fx("v.step.lpips", "")), 1, REL);
    match("step VSD", tensor_f32(l.vsd), tensor_f32(fx("v.vsd.loss", "")), 1, REL);
    match("step loss", tensor_f32(l.total), tensor_f32(fx("v.step.loss", "")), 1, REL);
    ag_backward(l.total);
    Tensor **gen, **reg;
    int n = trainable(f.m->params, &gen), nr = trainable(dod_vsd_params(f.v), &reg);
    match_grads("full step: generator gradients", gen, n, "v.step.grad.");
    float norm = (float)clip_grad_norm(gen, n, 1.0);
    match("generator grad norm", &norm, tensor_f32(fx("v.step.grad_norm", "")), 1, REL);
    // The reference's step starts from the same values as the parity fixtures: keep them for the check.
    float **before = dod_malloc(sizeof(float *) * (size_t)(n + nr), "values before");
    for (int i = 0; i < n + nr; i++) {
        Tensor *t = i < n ? gen[i] : reg[i - n];
        before[i] = dod_malloc(sizeof(float) * (size_t)t->numel, "values before");
        memcpy(before[i], t->data, sizeof(float) * (size_t)t->numel);
    }
    AdamW *opt = adamw_new(gen, n, adamw_defaults());
    adamw_step(opt, FX_LR);
    Tensor *d = dod_vsd_diffusion_loss(f.v, f.m->train_latent, fx("diff.noise", ""), dt);
    ag_backward(d);
    float reg_norm = (float)clip_grad_norm(reg, nr, 1.0);
    match("regulariser grad norm", &reg_norm, tensor_f32(fx("v.step.reg_grad_norm", "")), 1, REL);
    AdamW *reg_opt = adamw_new(reg, nr, adamw_defaults());
    adamw_step(reg_opt, FX_LR_REG);
    // The reference gradients: the step's own for the generator, the diffusion one for the regulariser.
    int bad = 0, floor_elems = 0;
    double clip = fmin(1.0, 1.0 / (tensor_f32(fx("v.step.grad_norm", ""))[0] + 1e-6));
    double reg_clip = fmin(1.0, 1.0 / (tensor_f32(fx("v.step.reg_grad_norm", ""))[0] + 1e-6));
    for (int i = 0; i < n + nr; i++) {
        Tensor *t = i < n ? gen[i] : reg[i - n];
        const float *ref_grad = tensor_f32(i < n ? fx("v.step.grad.%s", t->name) : fx("v.diff.grad.%s", t->name));
        Tensor *after = i < n ? fx("v.step.after.%s", t->name) : fx("v.step.reg_after.%s", t->name);
        bad += adamw_after_mismatches(t->name, tensor_f32(t), tensor_f32(after), before[i], ref_grad, t->grad,
                                      t->numel, REL, i < n ? clip : reg_clip, i < n ? FX_LR : FX_LR_REG, &floor_elems);
        free(before[i]);
    }
    printf("full step: %d parameter values needed the gradient-noise-floor allowance\n", floor_elems);
    CHECK(bad == 0, "%d parameter values differ from the reference after the step", bad);
    free(before);
    adamw_free(opt);
    adamw_free(reg_opt);
    free(gen);
    free(reg);
    ag_step_reset();
    lpips_free(lpips);
    fixture_free(f);
}

// The VSD and diffusion gradients (generator, then regulariser) of one step, as a heap copy.
static float *step_grads(bool recompute, float *loss, int64_t *total) {
    Fixture f = fixture_model(DOD_FIXTURE_BASE, recompute);
    int vt[2], dt[2];
    fixture_t("vsd.t", vt);
    fixture_t("diff.t", dt);
    forward(f.m);
    Tensor *vsd = dod_vsd_loss(f.v, f.m->train_latent, fx("vsd.noise", ""), vt);
    ag_backward(vsd);
    Tensor *d = dod_vsd_diffusion_loss(f.v, f.m->train_latent, fx("diff.noise", ""), dt);
    ag_backward(d);
    loss[0] = tensor_f32(vsd)[0];
    loss[1] = tensor_f32(d)[0];
    Tensor **gen, **reg;
    int n = trainable(f.m->params, &gen), nr = trainable(dod_vsd_params(f.v), &reg);
    int64_t numel = 0;
    for (int i = 0; i < n + nr; i++) numel += (i < n ? gen[i] : reg[i - n])->numel;
    float *g = dod_malloc(sizeof(float) * (size_t)numel, "gradient copy"), *p = g;
    for (int i = 0; i < n + nr; i++) {
        Tensor *t = i < n ? gen[i] : reg[i - n];
        memcpy(p, t->grad, sizeof(float) * (size_t)t->numel);
        p += t->numel;
    }
    *total = numel;
    free(gen);
    free(reg);
    ag_step_reset();
    fixture_free(f);
    return g;
}

// Recomputation re-runs the UNet's blocks in backward: the adapters must still be those of the forward.
static void test_recompute(void) {
    float la[2], lb[2];
    int64_t na, nb;
    float *a = step_grads(false, la, &na), *b = step_grads(true, lb, &nb);
    CHECK(na == nb && la[0] == lb[0] && la[1] == lb[1], "recompute: losses %.9g %.9g vs %.9g %.9g", lb[0], lb[1], la[0],
          la[1]);
    if (na == nb) match("VSD and diffusion gradients with recompute", b, a, na, 1e-6);
    free(a);
    free(b);
}

// The keyed terms: a pure function of the key (bitwise), another key draws otherwise.
static void test_keyed(void) {
    Fixture f = fixture_model(DOD_FIXTURE_BASE, false);
    float v[3], d[3];
    for (int k = 0; k < 3; k++) {
        bool prev = ag_set_grad_enabled(false);
        forward(f.m);
        DodVsdSample gs = dod_vsd_generator_sample(f.v, k == 2 ? 12 : 11);
        CHECK(gs.latent == f.m->train_latent, "the generator term's sample is the forward's latent");
        v[k] = tensor_item(dod_vsd_loss(f.v, gs.latent, gs.noise, gs.t));
        DodVsdSample rs = dod_vsd_regulariser_sample(f.v, k == 2 ? 12 : 11);
        d[k] = tensor_item(dod_vsd_diffusion_loss(f.v, rs.latent, rs.noise, rs.t));
        ag_set_grad_enabled(prev);
        ag_step_reset();
    }
    CHECK(v[0] == v[1] && d[0] == d[1], "same key: VSD %.9g vs %.9g, diffusion %.9g vs %.9g", v[0], v[1], d[0], d[1]);
    CHECK(v[2] != v[0] && d[2] != d[0] && isfinite(v[2]) && isfinite(d[2]), "another key: VSD %.9g, diffusion %.9g",
          v[2], d[2]);
    // A model forward puts the generator's adapters back.
    forward(f.m);
    CHECK(f.m->unet_adapters == DOD_UNET_GENERATOR, "after a forward the UNet is on adapters %d", f.m->unet_adapters);
    ag_step_reset();
    fixture_free(f);
}

static void test_errors(void) {
    char err[1024];
    DodVsdConfig vc = {.cfg = FX_CFG, .t_min = 20, .t_max = 980, .lora_rank = 2, .lora_alpha = 4, .seed = 1};
    DodModelConfig c = dod_fixture_config(1);
    DodModel *m = dod_model_create(&c);   // a prompt file and no negative prompt
    CHECK(!dod_vsd_create(m, &vc, err, sizeof err) && strstr(err, "negative_prompt"), "no negative prompt: %s", err);
    c.prompt_path = NULL;   // the prompt and the negative prompt encoded by the base's text encoder
    DodModel *m2 = dod_model_create(&c);
    DodVsdConfig bad = vc;
    bad.t_max = 1001;
    CHECK(!dod_vsd_create(m2, &bad, err, sizeof err) && strstr(err, "vsd_t_max <= 1000"), "t_max 1001: %s", err);
    bad = vc;
    bad.t_min = 980;
    CHECK(!dod_vsd_create(m2, &bad, err, sizeof err) && strstr(err, "[980, 980)"), "empty range: %s", err);
    DodVsd *v = dod_vsd_create(m2, &vc, err, sizeof err);
    CHECK(v && params_count(dod_vsd_params(v)) == FX_N_REG && m2->regulariser_lora,
          "created: %s; %d tensors", v ? "" : err, v ? params_count(dod_vsd_params(v)) : 0);
    bool named = true;
    for (int i = 0; v && i < params_count(dod_vsd_params(v)); i++) {
        Tensor *t = params_at(dod_vsd_params(v), i);
        named = named && !strncmp(t->name, "vsd_reg.", 8) && t->requires_grad;
        if (strstr(t->name, "lora_B")) {   // PEFT init: B = 0, the regulariser starts as the frozen UNet
            float mx = 0;
            for (int64_t j = 0; j < t->numel; j++) mx = fmaxf(mx, fabsf(tensor_f32(t)[j]));
            CHECK(mx == 0, "%s starts at %g", t->name, mx);
        }
    }
    CHECK(named && params_get(dod_vsd_params(v), "vsd_reg.conv_in.lora_A.weight"), "regulariser tensor names");
    CHECK(!dod_vsd_create(m2, &vc, err, sizeof err) && strstr(err, "already"), "second regulariser: %s", err);
    dod_vsd_free(v);
    CHECK(!m2->regulariser_lora, "the regulariser is detached");
    dod_model_free(m2);
    dod_model_free(m);
    // A prompt file with negative_prompt_embeds (dod-encode-prompt --negative-prompt) gives the negative.
    char path[256];
    snprintf(path, sizeof path, "/tmp/dod_vsd_prompts_%d.safetensors", (int)getpid());
    int64_t shape[2] = {77, 16};
    Tensor *pos = tensor_new_persistent("prompt_embeds", 2, shape, DT_F32);
    Tensor *neg = tensor_new_persistent("negative_prompt_embeds", 2, shape, DT_F32);
    tensor_randn(pos, 5, 1.0f);
    memcpy(neg->data, fx("negative_prompt", "")->data, sizeof(float) * 77 * 16);
    Tensor *both[2] = {pos, neg};
    char st_err[ST_ERR_LEN];
    CHECK(safetensors_save(path, both, 2, NULL, 0, st_err) == ST_OK, "%s", st_err);
    c = dod_fixture_config(1);
    c.prompt_path = path;
    m = dod_model_create(&c);
    CHECK(m->negative_prompt && !memcmp(m->negative_prompt->data, neg->data, sizeof(float) * 77 * 16) &&
              !memcmp(m->prompt->data, pos->data, sizeof(float) * 77 * 16),
          "the prompt file's negative_prompt_embeds is the negative prompt");
    v = dod_vsd_create(m, &vc, err, sizeof err);
    CHECK(v != NULL, "a prompt file with a negative: %s", v ? "" : err);
    dod_vsd_free(v);
    dod_model_free(m);
    tensor_free(pos);
    tensor_free(neg);
    unlink(path);
    DodModelConfig c2 = dod_fixture_config(2);
    c2.prompt_path = NULL;
    m = dod_model_create(&c2);
    CHECK(!dod_vsd_create(m, &vc, err, sizeof err) && strstr(err, "stage-1 term"), "stage 2: %s", err);
    dod_model_free(m);
    ModelOptions o = {.kind = MODEL_TOY, .stage = 1, .toy_width = 4, .seed = 1};
    Model *toy = model_create(&o, err, sizeof err);
    CHECK(toy && !dod_vsd_for_model(toy, &vc, err, sizeof err) && strstr(err, "kind = dod"), "toy model: %s", err);
    model_free(toy);
}

int main(void) {
    char err[ST_ERR_LEN];
    vsd_fx = safetensors_load_store(VSD_FILE, DT_F32, err);
    step_fx = vsd_fx ? safetensors_load_store(STEP_FILE, DT_F32, err) : NULL;
    if (!step_fx) dod_fatal("test_dod_vsd", "%s", err);
    make_eps_base();
    parity("v", DOD_FIXTURE_BASE);
    parity("eps", eps_base);
    full_step();
    test_recompute();
    test_keyed();
    test_errors();
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf %s", eps_base);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", eps_base);
    params_free(vsd_fx);
    params_free(step_fx);
    return check_summary();
}
