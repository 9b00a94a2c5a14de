// The DOD model with the paper's `adm` degradation extractor (layers/adm_encoder.h on the small
// guided-diffusion fixture of tests/fixtures/adm), the eval-time latent option and the init option:
//  - the modulation reads the encoder's pooled features (bitwise), de_mlp follows its width, no cnn
//    tensors exist, and stage 2 freezes the modulation;
//  - a train step: the MLPs get gradients, grad(de_mlp.weight) = grad(de_mlp.bias) x d (d a constant),
//    no frozen encoder tensor gets a gradient, and the loss is the same with recomputation;
//  - eval on an odd size runs without recording anything;
//  - eval with latent = sample equals the train-mode forward given the same noise (bitwise), differs
//    from the mean, is repeatable per seed and changes with it;
//  - public_init reaches the modulation and the detail module;
//  - an adm extractor without weights, or with a missing file, is refused naming it.
#include "tests/check.h"

#include "autograd/tape.h"
#include "layers/dod_model.h"

#include "tests/dod_fixture_config.h"

#define ADM_DIM 32   // the fixture's middle-block width

// The parity fixture's small sizes (tests/dod_fixture_config.h) with the adm extractor on the ADM fixture.
static DodModelConfig adm_config(int stage) {
    DodModelConfig c = dod_fixture_config(stage);
    dod_fixture_use_adm(&c);
    return c;
}

static bool bitwise_equal(const Tensor *a, const Tensor *b) {
    return tensor_same_shape(a, b) && memcmp(tensor_f32(a), tensor_f32(b), sizeof(float) * (size_t)a->numel) == 0;
}

// A persistent [n, 3, h, w] image in [-1, 1].
static Tensor *image(const char *name, int64_t n, int64_t h, int64_t w, uint64_t seed) {
    int64_t s[4] = {n, 3, h, w};
    Tensor *t = tensor_new_persistent(name, 4, s, DT_F32);
    tensor_rand_uniform(t, seed, -1.0f, 1.0f);
    return t;
}

static void randomize(DodModel *m) {
    for (int i = 0; i < params_count(m->params); i++) {
        Tensor *t = params_at(m->params, i);
        if (strstr(t->name, ".lora_B.weight") && !strncmp(t->name, "unet.", 5)) tensor_randn(t, 7 + (uint64_t)i, 0.3f);
        if (!strncmp(t->name, "mod.", 4) && strstr(t->name, "_mlp.weight")) tensor_randn(t, 500 + (uint64_t)i, 0.3f);
    }
}

static void test_wiring(void) {
    DodModelConfig c = adm_config(1);
    DodModel *m = dod_model_create(&c);
    CHECK(m->adm && m->mod.cfg.feature_dim == ADM_DIM && m->mod.de_w->shape[1] == ADM_DIM,
          "feature_dim %d, de_mlp %s", m->mod.cfg.feature_dim, shape_str(m->mod.de_w));
    for (int i = 0; i < params_count(m->params); i++)
        CHECK(strncmp(params_at(m->params, i)->name, "mod.cnn.", 8), "cnn tensor %s with extractor = adm",
              params_at(m->params, i)->name);
    Tensor *y = image("y", 2, 64, 48, 1);
    bool prev = ag_set_grad_enabled(false);
    CHECK(bitwise_equal(dod_modulation_features(&m->mod, y), adm_encoder_features(m->adm, y)),
          "the modulation's features are not the encoder's");
    ag_set_grad_enabled(prev);
    ag_step_reset();
    tensor_free(y);
    dod_model_free(m);

    c = adm_config(2);
    m = dod_model_create(&c);
    Tensor *t = params_get(m->params, "mod.de_mlp.weight");
    CHECK(t && !t->requires_grad && t->shape[1] == ADM_DIM, "stage 2: de_mlp frozen");
    dod_model_free(m);
}

static void test_train_step(void) {
    DodModelConfig c = adm_config(1);
    DodModel *m = dod_model_create(&c);
    randomize(m);
    Tensor *lq = image("lq", 1, 32, 40, 2), *hq = image("hq", 1, 32, 40, 3);
    float dv[ADM_DIM];
    memcpy(dv, tensor_f32(adm_encoder_features(m->adm, lq)), sizeof dv);
    ag_step_reset();
    DodLoss l = dod_model_forward_loss(m, lq, hq, 11);
    float loss = tensor_f32(l.total)[0];
    CHECK(isfinite(loss), "loss %g", loss);
    ag_backward(l.total);
    Tensor *w = m->mod.de_w, *b = m->mod.de_b;
    double worst = 0, scale = 0;
    for (int64_t i = 0; w->grad && b->grad && i < w->shape[0]; i++)
        for (int64_t j = 0; j < w->shape[1]; j++) {
            double want = (double)b->grad[i] * dv[j];
            worst = fmax(worst, fabs(w->grad[i * w->shape[1] + j] - want));
            scale = fmax(scale, fabs(want));
        }
    CHECK(w->grad && scale > 0 && worst <= 1e-5 * scale, "grad(de_mlp.weight) vs grad(bias) x d: %.3g of %.3g", worst,
          scale);
    int with_grad = 0;
    for (int i = 0; i < params_count(m->adm->ps); i++) with_grad += params_at(m->adm->ps, i)->grad != NULL;
    CHECK(with_grad == 0, "%d frozen encoder tensors got a gradient", with_grad);
    ag_step_reset();
    m->cfg.recompute = true;
    float loss_rc = tensor_f32(dod_model_forward_loss(m, lq, hq, 11).total)[0];
    CHECK(loss_rc == loss, "recompute: loss %.9g vs %.9g", loss_rc, loss);
    ag_step_reset();
    m->cfg.recompute = false;

    Tensor *odd = image("odd", 1, 45, 37, 4);   // padded to 48 x 40 before the extractor
    Tensor *out = dod_model_restore(m, odd);
    CHECK(out->shape[2] == 45 && out->shape[3] == 37 && ag_tape_size() == 0, "eval %s, tape %d", shape_str(out),
          ag_tape_size());
    ag_step_reset();
    tensor_free(odd);
    tensor_free(lq);
    tensor_free(hq);
    dod_model_free(m);
}

// [eval] latent = sample: the posterior noise N(0, 1) keyed by eval_seed (tensor_randn over the
// latent's shape), so eval equals the train-mode forward given that noise.
static void test_eval_latent(void) {
    DodModelConfig c = adm_config(1);
    DodModel *m = dod_model_create(&c);
    randomize(m);
    Tensor *lq = image("lq", 2, 32, 32, 5);
    Tensor *mean = tensor_to_device(dod_model_restore(m, lq), DEV_CPU);
    Tensor *keep_mean = tensor_new_persistent("mean", 4, mean->shape, DT_F32);
    memcpy(keep_mean->data, mean->data, sizeof(float) * (size_t)mean->numel);
    ag_step_reset();
    m->cfg.eval_sample = true;
    m->cfg.eval_seed = 77;
    Tensor *s1 = dod_model_restore(m, lq);
    Tensor *k1 = tensor_new_persistent("s1", 4, s1->shape, DT_F32);
    memcpy(k1->data, s1->data, sizeof(float) * (size_t)s1->numel);
    ag_step_reset();
    CHECK(bitwise_equal(dod_model_restore(m, lq), k1), "the same seed must give the same sample");
    ag_step_reset();
    double sc, d = max_abs_diff(tensor_f32(k1), tensor_f32(keep_mean), (long)k1->numel, &sc);
    CHECK(d > 1e-4, "the sample equals the mean (max |diff| %.3g)", d);
    int64_t lat[4] = {2, 4, 8, 8};   // the tiny VAE: 4 latent channels, 4x downsampling
    Tensor *eps = tensor_new(4, lat, DT_F32);
    tensor_randn(eps, 77, 1.0f);
    bool prev = ag_set_grad_enabled(false);
    Tensor *train = dod_model_forward_eps(m, lq, eps);
    ag_set_grad_enabled(prev);
    CHECK(bitwise_equal(train, k1), "eval with latent = sample differs from the train forward with its noise");
    ag_step_reset();
    m->cfg.eval_seed = 78;
    d = max_abs_diff(tensor_f32(dod_model_restore(m, lq)), tensor_f32(k1), (long)k1->numel, &sc);
    CHECK(d > 1e-4, "another seed gives the same sample (max |diff| %.3g)", d);
    ag_step_reset();
    tensor_free(k1);
    tensor_free(keep_mean);
    tensor_free(lq);
    dod_model_free(m);
}

static void test_init(void) {
    for (int pub = 0; pub < 2; pub++) {
        DodModelConfig c = adm_config(2);
        c.public_init = pub;
        c.modulation.public_init = !pub;   // overridden by the model's public_init
        DodModel *m = dod_model_create(&c);
        Tensor *rb = params_get(m->params, "detail.fuse.0.rrdb.rdb1.conv1.bias");
        double mx = 0;
        for (int64_t i = 0; i < rb->numel; i++) mx = fmax(mx, fabs(tensor_data_f32(rb)[i]));
        CHECK(m->mod.cfg.public_init == pub && m->detail.cfg.public_init == pub && (mx == 0) == pub,
              "public_init %d: modulation %d, detail %d, RRDB bias max %g", pub, m->mod.cfg.public_init,
              m->detail.cfg.public_init, mx);
        dod_model_free(m);
    }
}

static void create_no_weights(void *ctx) {
    (void)ctx;
    DodModelConfig c = adm_config(1);
    c.adm_weights = NULL;
    dod_model_free(dod_model_create(&c));
}

static void create_missing_file(void *ctx) {
    (void)ctx;
    DodModelConfig c = adm_config(1);
    c.adm_weights = DOD_SOURCE_DIR "/tests/fixtures/adm/none.pt";   // a file that is not there
    dod_model_free(dod_model_create(&c));
}

static void test_errors(void) {
    expect_fatal("no adm_weights", create_no_weights, NULL,
                 (const char *const[]){"dod_model_create", "adm extractor needs adm_weights", NULL});
    expect_fatal("missing adm_weights file", create_missing_file, NULL,
                 (const char *const[]){"dod_model_create", "adm extractor", "none.pt", NULL});
}

int main(void) {
    test_wiring();
    test_train_step();
    test_eval_latent();
    test_init();
    test_errors();
    return check_summary();
}
