// The `vae` degradation extractor (layers/dod_extract_vae.c) and its wiring into the DOD model:
// pooled features against diffusers (tests/fixtures/dod/extract_vae.safetensors, made by
// scripts/make_dod_extract_vae_fixture.py), the encoder's LoRA is bypassed, nothing is recorded on the
// tape for the frozen VAE, the modulation MLPs get the gradient the features imply, and the model
// trains, evaluates and fails clearly with extractor = vae.
#include "tests/check.h"

#include "layers/dod_extract_vae.h"
#include "layers/dod_model.h"
#include "layers/safetensors.h"

#ifndef DOD_SOURCE_DIR
#define DOD_SOURCE_DIR "."
#endif
#define BASE_MODEL DOD_SOURCE_DIR "/tests/fixtures/sd/sd2_tiny/model"
#define FIXTURES DOD_SOURCE_DIR "/tests/fixtures/dod/"
#define EXTRACT_FILE FIXTURES "extract_vae.safetensors"
#define PROMPT_FILE FIXTURES "prompt.safetensors"
#define TINY_VAE_DIM 16  // the tiny VAE's last block_out_channels

// One f32 tensor of a safetensors file (= new persistent tensor).
static Tensor *load_tensor(const char *path, const char *name) {
    char err[ST_ERR_LEN];
    SafeTensors *st;
    if (safetensors_open(path, &st, err) != ST_OK) dod_fatal("test_dod_extract_vae", "%s", err);
    const StEntry *e = safetensors_find(st, name);
    if (!e) dod_fatal("test_dod_extract_vae", "%s: tensor %s is missing", path, name);
    Tensor *view;
    if (safetensors_tensor(st, e, DT_F32, NULL, &view, err) != ST_OK) dod_fatal("test_dod_extract_vae", "%s", err);
    Tensor *t = tensor_new_persistent(name, e->ndim, e->shape, DT_F32);
    memcpy(t->data, view->data, sizeof(float) * (size_t)t->numel);
    tensor_free(view);
    safetensors_close(st);
    return t;
}

// The parity fixture's small sizes (as tests/test_dod_model.c), with the vae extractor.
static DodModelConfig vae_config(int stage) {
    DodModelConfig c = dod_model_default_config(stage);
    c.base_model_dir = BASE_MODEL;
    c.prompt_path = PROMPT_FILE;
    c.lora_rank = 4;
    c.lora_alpha = 6.0f;
    c.modulation = dod_modulation_default_config(4);
    c.modulation.de_dim = 12;
    c.modulation.block_dim = 6;
    c.detail_growth = 2;
    c.extractor = DOD_EXTRACTOR_VAE;
    return c;
}

// Random non-zero values into every LoRA B (prefix "unet." / "vae.") so the adapters contribute.
static void randomize_lora_b(DodModel *m, const char *prefix, uint64_t seed) {
    for (int i = 0; i < params_count(m->params); i++) {
        Tensor *t = params_at(m->params, i);
        if (!strncmp(t->name, prefix, strlen(prefix)) && strstr(t->name, ".lora_B.weight"))
            tensor_randn(t, seed + (uint64_t)i, 0.3f);
    }
}

static bool bitwise_equal(const Tensor *a, const Tensor *b) {
    return tensor_same_shape(a, b) && memcmp(a->data, b->data, sizeof(float) * (size_t)a->numel) == 0;
}

// Features against diffusers (float64 reference): 1e-5 relative, the f32 rounding of a few convs,
// GroupNorms and one attention.
static void test_values(void) {
    DodModelConfig c = vae_config(1);
    DodModel *m = dod_model_create(&c);
    Tensor *y = load_tensor(EXTRACT_FILE, "y"), *ref = load_tensor(EXTRACT_FILE, "d");
    CHECK(dod_extract_vae_dim(m->vae) == TINY_VAE_DIM && ref->shape[1] == TINY_VAE_DIM,
          "feature width %d, fixture %ld", dod_extract_vae_dim(m->vae), (long)ref->shape[1]);
    Tensor *d = dod_extract_vae(m->vae, y);
    CHECK(d->ndim == 2 && d->shape[0] == 2 && d->shape[1] == TINY_VAE_DIM, "features %s", shape_str(d));
    if (tensor_same_shape(d, ref)) {
        double scale, diff = max_abs_diff(tensor_f32(d), tensor_f32(ref), d->numel, &scale);
        CHECK(diff <= 1e-5 * fmax(1.0, scale), "features vs diffusers: max |diff| %.3g (scale %.3g)", diff, scale);
        printf("features vs diffusers: max |diff| %.3g, max |ref| %.3g\n", diff, scale);
    }
    // The model routes its modulation through the extractor.
    Tensor *via_model = dod_modulation_features(&m->mod, y);
    CHECK(bitwise_equal(via_model, d), "dod_modulation_features differs from dod_extract_vae");
    CHECK(m->mod.cfg.feature_dim == TINY_VAE_DIM && m->mod.de_w->shape[1] == TINY_VAE_DIM,
          "modulation feature_dim %d, de_mlp.weight %s", m->mod.cfg.feature_dim, shape_str(m->mod.de_w));
    ag_step_reset();
    tensor_free(y);
    tensor_free(ref);
    dod_model_free(m);
}

// The encoder's LoRA changes the latent path but not the features; the extractor records nothing on
// the tape even in grad mode with an input that requires grad, and leaves the LoRA hook in place.
static void test_frozen_path(void) {
    DodModelConfig c = vae_config(1);
    DodModel *m = dod_model_create(&c);
    Tensor *y = load_tensor(EXTRACT_FILE, "y");
    bool prev = ag_set_grad_enabled(false);
    Tensor *d0 = dod_extract_vae(m->vae, y);
    VaeEncoded e0, e1;
    vae_encode(m->vae, y, false, NULL, &e0);
    randomize_lora_b(m, "vae.", 99);
    Tensor *d1 = dod_extract_vae(m->vae, y);
    vae_encode(m->vae, y, false, NULL, &e1);
    ag_set_grad_enabled(prev);
    CHECK(bitwise_equal(d0, d1), "the VAE encoder's LoRA changed the extractor's features");
    double scale, moved = max_abs_diff(tensor_f32(e0.mean), tensor_f32(e1.mean), e0.mean->numel, &scale);
    CHECK(moved > 1e-3, "the LoRA did not change the latent path (max |diff| %.3g): the bypass test is void", moved);
    CHECK(m->vae->net.hook != NULL && m->vae->net.hook_ctx == m->vae_lora, "the model's VAE hook was changed");

    y->requires_grad = true;
    int before = ag_tape_size();
    Tensor *d = dod_extract_vae(m->vae, y);
    CHECK(ag_grad_enabled(), "grad mode not restored");
    CHECK(ag_tape_size() == before && !d->requires_grad, "extractor recorded %d tape nodes, requires_grad %d",
          ag_tape_size() - before, (int)d->requires_grad);
    ag_step_reset();
    tensor_free(y);
    dod_model_free(m);
}

// A train step with one image: the modulation MLPs get gradients, and with a batch of one
// grad(de_mlp.weight) = grad(de_mlp.bias) (outer) d, d the extractor's features, exactly as
// e = ReLU(W d + b) implies. No cnn parameters exist; every other trainable is as with the cnn.
static void test_train_step(void) {
    DodModelConfig c = vae_config(1);
    DodModel *m = dod_model_create(&c);
    randomize_lora_b(m, "unet.", 7);  // B = 0 would make gamma and beta (and so the MLPs) irrelevant
    for (int i = 0; i < params_count(m->params); i++) {
        Tensor *t = params_at(m->params, i);
        CHECK(strncmp(t->name, "mod.cnn.", 8) != 0, "cnn parameter %s exists with extractor = vae", t->name);
        if (!strncmp(t->name, "mod.", 4) && strstr(t->name, "_mlp.weight"))
            tensor_randn(t, 500 + (uint64_t)i, 0.3f);  // leave the 1e-5 init: gradients well above rounding
    }
    DodModelConfig cc = c;
    cc.extractor = DOD_EXTRACTOR_CNN;
    cc.modulation.feature_dim = 8;
    cc.modulation.cnn_channels[0] = cc.modulation.cnn_channels[1] = 4;
    cc.modulation.cnn_channels[2] = cc.modulation.cnn_channels[3] = 8;
    DodModel *with_cnn = dod_model_create(&cc);
    int n = dod_model_trainable(m, NULL, 0), n_cnn = dod_model_trainable(with_cnn, NULL, 0);
    CHECK(n == n_cnn - 2 * DOD_CNN_LAYERS, "%d trainables with vae, %d with cnn (%d cnn tensors)", n, n_cnn,
          2 * DOD_CNN_LAYERS);
    dod_model_free(with_cnn);

    Tensor *y = load_tensor(EXTRACT_FILE, "y");  // [2, 3, 24, 16]: take image 0 as lq, image 1 as hq
    int64_t one[4] = {1, 3, 24, 16};  // persistent: they outlive the ag_step_reset()s below
    Tensor *lq = tensor_new_persistent("lq", 4, one, DT_F32), *hq = tensor_new_persistent("hq", 4, one, DT_F32);
    memcpy(lq->data, tensor_f32(y), sizeof(float) * (size_t)lq->numel);
    memcpy(hq->data, tensor_f32(y) + lq->numel, sizeof(float) * (size_t)hq->numel);
    Tensor *d = dod_extract_vae(m->vae, lq);
    float dv[TINY_VAE_DIM];
    memcpy(dv, tensor_f32(d), sizeof dv);

    DodLoss l = dod_model_forward_loss(m, lq, hq, 11);
    CHECK(isfinite(tensor_f32(l.total)[0]), "loss %g", tensor_f32(l.total)[0]);
    ag_backward(l.total);
    const char *mlps[] = {"mod.de_mlp.weight", "mod.de_mlp.bias", "mod.block_mlp.weight", "mod.fuse_mlp.weight",
                          "mod.block_embeddings.weight"};
    for (int i = 0; i < 5; i++) {
        Tensor *t = params_get(m->params, mlps[i]);
        double mx = 0;
        for (int64_t j = 0; t && t->grad && j < t->numel; j++) mx = fmax(mx, fabs(t->grad[j]));
        CHECK(t && t->grad && mx > 0 && isfinite(mx), "%s: gradient max %g", mlps[i], mx);
    }
    Tensor *w = m->mod.de_w, *b = m->mod.de_b;
    if (w->grad && b->grad) {
        double worst = 0, scale = 0;
        for (int64_t i = 0; i < w->shape[0]; i++)
            for (int64_t j = 0; j < w->shape[1]; j++) {
                double want = (double)b->grad[i] * dv[j];
                worst = fmax(worst, fabs(w->grad[i * w->shape[1] + j] - want));
                scale = fmax(scale, fabs(want));
            }
        CHECK(scale > 0 && worst <= 1e-5 * scale, "grad(de_mlp.weight) vs grad(bias) x d: max |diff| %.3g, scale %.3g",
              worst, scale);
    }
    // Frozen VAE weights never get a gradient.
    int with_grad = 0;
    for (int i = 0; i < params_count(m->vae->net.ps); i++) with_grad += params_at(m->vae->net.ps, i)->grad != NULL;
    CHECK(with_grad == 0, "%d frozen VAE tensors got a gradient", with_grad);
    ag_step_reset();

    // Recomputation does not change the loss (the extractor runs outside the recomputed units).
    float loss = tensor_f32(dod_model_forward_loss(m, lq, hq, 11).total)[0];
    ag_step_reset();
    m->cfg.recompute = true;
    float loss_rc = tensor_f32(dod_model_forward_loss(m, lq, hq, 11).total)[0];
    CHECK(loss_rc == loss, "recompute: loss %.9g vs %.9g", loss_rc, loss);
    ag_step_reset();
    // Eval on an odd size (padded before the extractor sees it).
    int64_t s[4] = {1, 3, 27, 21};
    Tensor *odd = tensor_zeros(4, s);
    tensor_randn(odd, 3, 0.5f);
    Tensor *out = dod_model_restore(m, odd);
    CHECK(out->shape[2] == 27 && out->shape[3] == 21 && ag_tape_size() == 0, "eval output %s, tape %d",
          shape_str(out), ag_tape_size());
    ag_step_reset();
    tensor_free(y);
    tensor_free(lq);
    tensor_free(hq);
    dod_model_free(m);
}

// Stage 2 with the vae extractor: the modulation is frozen with the rest of stage 1.
static void test_stage2(void) {
    DodModelConfig c = vae_config(2);
    DodModel *m = dod_model_create(&c);
    Tensor *t = params_get(m->params, "mod.de_mlp.weight");
    CHECK(t && !t->requires_grad && t->shape[1] == TINY_VAE_DIM, "stage 2: mod.de_mlp.weight %s, requires_grad %d",
          t ? shape_str(t) : "missing", t ? (int)t->requires_grad : -1);
    dod_model_free(m);
}

static void extract_wrong_channels(void *ctx) {
    int64_t s[4] = {1, 4, 16, 16};
    dod_extract_vae(ctx, tensor_zeros(4, s));
}

static void create_bad_kind(void *ctx) {
    (void)ctx;
    DodModelConfig c = vae_config(1);
    c.extractor = (DodExtractorKind)7;
    dod_model_free(dod_model_create(&c));
}

static void test_errors(void) {
    DodModelConfig c = vae_config(1);
    DodModel *m = dod_model_create(&c);
    expect_fatal("4-channel image", extract_wrong_channels, m->vae,
                 (const char *const[]){"dod_extract_vae", "[1, 4, 16, 16]", "[N, 3, H, W]", NULL});
    expect_fatal("unknown extractor kind", create_bad_kind, NULL,
                 (const char *const[]){"dod_model_create", "unknown extractor kind 7", NULL});
    dod_model_free(m);
}

int main(void) {
    test_values();
    test_frozen_path();
    test_train_step();
    test_stage2();
    test_errors();
    return check_summary();
}
