// DOD trainable modules against PyTorch (tests/fixtures/dod_modules/*.safetensors, made by
// scripts/make_dod_modules_fixture.py): conditional / plain LoRA through the layer hook, the
// degradation modulation with its cnn extractor, and the detail module (skip conv, ResBlock, RRDB,
// w_i), forward outputs and every gradient of L = sum(out * wts), each within
// 1e-5 * max(1, max|ref|). Also: the init rules, the SD channel mapping of the detail module, the
// decoder callback (with and without activation recomputation), and binding errors.
#include "tests/check.h"

#include "layers/dod_detail.h"
#include "layers/dod_modulation.h"
#include "layers/lora.h"
#include "layers/safetensors.h"

#ifndef DOD_SOURCE_DIR
#define DOD_SOURCE_DIR "."
#endif
#define FIXTURES DOD_SOURCE_DIR "/tests/fixtures/dod_modules/"

// Every tensor of a fixture file as an owned f32 persistent tensor (grads off).
static ParamStore *load_fixture(const char *file) {
    char path[512], err[ST_ERR_LEN];
    snprintf(path, sizeof path, "%s%s", FIXTURES, file);
    ParamStore *ps = safetensors_load_store(path, DT_F32, err);
    if (!ps) dod_fatal("test_dod_modules", "%s", err);
    return ps;
}

static Tensor *fx(ParamStore *ps, const char *name) { return params_require(ps, name, "dod_modules fixture"); }

// got vs the fixture's `ref` values (n floats), tolerance 1e-5 * max(1, max|ref|).
static void match(const char *what, const float *got, const float *ref, int64_t n) {
    double scale, d = max_abs_diff(got, ref, n, &scale);
    double tol = 1e-5 * fmax(1.0, scale);
    CHECK(d <= tol, "%s: max |diff| %.3g > tol %.3g (ref scale %.3g)", what, d, tol, scale);
}

static void match_tensor(const char *what, Tensor *got, ParamStore *ps, const char *ref_name) {
    Tensor *ref = fx(ps, ref_name);
    CHECK(got->numel == ref->numel, "%s: %s vs reference %s", what, shape_str(got), shape_str(ref));
    if (got->numel == ref->numel) match(what, tensor_f32(got), tensor_f32(ref), ref->numel);
}

// Every "grad.<name>" in the fixture against the gradient accumulated on tensor <name>.
static void match_grads(ParamStore *ps, const char *prefix) {
    int checked = 0;
    for (int i = 0; i < params_count(ps); i++) {
        Tensor *g = params_at(ps, i);
        if (strncmp(g->name, "grad.", 5) != 0 || strncmp(g->name + 5, prefix, strlen(prefix)) != 0) continue;
        Tensor *t = fx(ps, g->name + 5);
        CHECK(t->grad != NULL, "no gradient reached %s", t->name);
        if (t->grad) match(g->name, t->grad, tensor_f32(g), g->numel);
        checked++;
    }
    CHECK(checked > 0, "no gradients with prefix %s in the fixture", prefix);
    printf("%s: %d gradients compared\n", prefix, checked);
}

static void set_trainable(ParamStore *ps, const char *prefix) {
    char pat[128];
    snprintf(pat, sizeof pat, "%s*", prefix);
    params_set_trainable(ps, pat, true);
    snprintf(pat, sizeof pat, "grad.*");
    params_set_trainable(ps, pat, false);
    for (int i = 0; i < params_count(ps); i++) {  // outputs and loss weights are not leaves
        const char *n = params_at(ps, i)->name;
        size_t l = strlen(n);
        if ((l > 4 && strcmp(n + l - 4, ".wts") == 0)) params_at(ps, i)->requires_grad = false;
    }
}

// sum(out * w) for n floats w (copied into an arena tensor shaped like out). One scalar loss per test:
// ag_backward runs the whole tape, so it is called once.
static Tensor *weighted_sum(Tensor *out, const float *w) {
    Tensor *wt = tensor_new(out->ndim, out->shape, DT_F32);
    memcpy(wt->data, w, sizeof(float) * (size_t)out->numel);
    return op_sum(op_mul(out, wt));
}

// ---- LoRA ----------------------------------------------------------------------------------------------
static void test_lora_fixture(void) {
    ParamStore *ps = load_fixture("lora.safetensors");
    set_trainable(ps, "");
    const int r = 4;
    struct {
        const char *key, *layer;
        bool conditional, vae_pad;
    } cases[] = {
        {"lin", "up_blocks.1.attentions.0.transformer_blocks.0.attn2.to_v", true, false},
        {"conv", "down_blocks.2.resnets.0.conv1", true, false},
        {"down", "down_blocks.0.downsamplers.0.conv", true, false},
        {"vaedown", "encoder.down_blocks.1.downsamplers.0.conv", false, true},
    };
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        char name[64];
#define F(s) (snprintf(name, sizeof name, "%s.%s", cases[ci].key, s), fx(ps, name))
        ag_step_reset();
        ParamStore *adapters = params_new();
        LoraSet *set = lora_set_new();
        Tensor *w0 = F("W0"), *b0 = F("b0"), *x = F("x");
        w0->requires_grad = b0->requires_grad = false;  // frozen base
        LoraAdapter *ad = lora_add(set, adapters, "", cases[ci].layer, w0, r, 6.0f, cases[ci].conditional, 1);
        // the fixture's A and B replace the init; the fixture's leaves receive the gradients
        Tensor *A = F("A"), *B = F("B");
        ad->A = A;
        ad->B = B;
        if (cases[ci].conditional) {
            Tensor *gamma[LORA_N_BLOCKS] = {0}, *beta[LORA_N_BLOCKS] = {0};
            gamma[ad->block] = F("gamma");
            beta[ad->block] = F("beta");
            lora_set_modulation(set, gamma, beta);
        }
        Tensor *xin = cases[ci].vae_pad ? op_pad2d(x, 0, 1, 0, 1) : x;
        Tensor *base = w0->ndim == 4 ? op_conv2d(xin, w0, b0, strcmp(cases[ci].key, "conv") ? 2 : 1,
                                                 cases[ci].vae_pad ? 0 : 1)
                                     : op_linear(xin, w0, b0);
        Tensor *y = lora_hook(set, cases[ci].layer, xin, base);
        snprintf(name, sizeof name, "%s.y", cases[ci].key);
        match_tensor(name, y, ps, name);
        Tensor *wts = F("y.wts");
        if (y->numel == wts->numel) ag_backward_from(y, tensor_f32(wts));
        // W0/b0 are frozen here, so their fixture grads are not compared; everything else is.
        const char *leaves[] = {"x", "A", "B", "gamma", "beta"};
        for (int j = 0; j < (cases[ci].conditional ? 5 : 3); j++) {
            char gname[64];
            Tensor *t = F(leaves[j]);
            snprintf(gname, sizeof gname, "grad.%s.%s", cases[ci].key, leaves[j]);
            CHECK(t->grad != NULL, "no gradient reached %s", t->name);
            if (t->grad) match(gname, t->grad, tensor_f32(fx(ps, gname)), t->numel);
        }
        CHECK(w0->grad == NULL, "frozen W0 of %s received a gradient", cases[ci].key);
        printf("lora %-8s (%s) compared\n", cases[ci].key, cases[ci].layer);
#undef F
        lora_set_free(set);
        params_free(adapters);
    }
    params_free(ps);
    ag_step_reset();
}

// ---- modulation ------------------------------------------------------------------------------------------
static DodModulationConfig fixture_mod_config(void) {
    DodModulationConfig c = dod_modulation_default_config(4);
    int widths[DOD_CNN_LAYERS] = {4, 6, 8, 8};
    memcpy(c.cnn_channels, widths, sizeof widths);
    c.feature_dim = 8;
    c.de_dim = 12;
    c.block_dim = 6;
    return c;
}

static void test_modulation_fixture(void) {
    ParamStore *ps = load_fixture("modulation.safetensors");
    set_trainable(ps, "mod.");
    DodModulationConfig cfg = fixture_mod_config();
    DodModulation m;
    dod_modulation_bind(&m, &cfg, DOD_EXTRACTOR_CNN, ps, "mod.");
    ag_step_reset();
    Tensor *d = dod_modulation_features(&m, fx(ps, "mod.y"));
    Tensor *gamma[LORA_N_BLOCKS], *beta[LORA_N_BLOCKS];
    dod_modulation_from_features(&m, d, gamma, beta);
    match_tensor("mod.d", d, ps, "mod.d");
    Tensor *rg = fx(ps, "mod.gamma"), *rb = fx(ps, "mod.beta");  // [10, N, r]
    int64_t per = rg->numel / LORA_N_BLOCKS;
    for (int k = 0; k < LORA_N_BLOCKS; k++) {
        char what[64];
        CHECK(gamma[k]->ndim == 2 && gamma[k]->shape[0] == 2 && gamma[k]->shape[1] == 4, "gamma[%d] %s", k,
              shape_str(gamma[k]));
        snprintf(what, sizeof what, "gamma[%d]", k);
        match(what, tensor_f32(gamma[k]), tensor_f32(rg) + k * per, per);
        snprintf(what, sizeof what, "beta[%d]", k);
        match(what, tensor_f32(beta[k]), tensor_f32(rb) + k * per, per);
    }
    // L = sum(d * wd) + sum_k sum(gamma_k * wg_k) + sum(beta_k * wb_k)
    Tensor *loss = weighted_sum(d, tensor_f32(fx(ps, "mod.d.wts")));
    const float *wg = tensor_f32(fx(ps, "mod.gamma.wts")), *wb = tensor_f32(fx(ps, "mod.beta.wts"));
    for (int k = 0; k < LORA_N_BLOCKS; k++) {
        loss = op_add(loss, weighted_sum(gamma[k], wg + k * per));
        loss = op_add(loss, weighted_sum(beta[k], wb + k * per));
    }
    ag_backward(loss);
    match_grads(ps, "mod.");
    params_free(ps);
    ag_step_reset();
}

static double max_abs(const Tensor *t) {
    double m = 0;
    const float *d = tensor_f32(t);
    for (int64_t i = 0; i < t->numel; i++) m = fmax(m, fabs(d[i]));
    return m;
}

// Sample standard deviation of a tensor's elements.
static double sample_std(const Tensor *t) {
    double s = 0, sq = 0;
    const float *v = tensor_data_f32(t);
    for (int64_t i = 0; i < t->numel; i++) s += v[i], sq += (double)v[i] * v[i];
    double mean = s / (double)t->numel;
    return sqrt(sq / (double)t->numel - mean * mean);
}

// The public code's init (the default): Kaiming-normal MLP weights x 1e-5 (std sqrt(2 / in) 1e-5),
// biases 0; the cnn keeps PyTorch's default init.
static void test_modulation_public_init(void) {
    ParamStore *ps = params_new();
    DodModulationConfig cfg = dod_modulation_default_config(8);
    CHECK(cfg.public_init, "the public init is the default");
    DodModulation m;
    dod_modulation_init(&m, &cfg, DOD_EXTRACTOR_CNN, ps, "deg.", 123);
    double want_de = 1e-5 * sqrt(2.0 / 256), want_fuse = 1e-5 * sqrt(2.0 / 320), want_blk = 1e-5 * sqrt(2.0 / 64);
    CHECK(fabs(sample_std(m.de_w) / want_de - 1) < 0.02, "de_mlp std %g, want %g", sample_std(m.de_w), want_de);
    CHECK(fabs(sample_std(m.fuse_w) / want_fuse - 1) < 0.1, "fuse std %g, want %g", sample_std(m.fuse_w), want_fuse);
    CHECK(fabs(sample_std(m.blk_w) / want_blk - 1) < 0.1, "block_mlp std %g, want %g", sample_std(m.blk_w), want_blk);
    CHECK(max_abs(m.de_w) > 1e-5 / 16.0, "normal, not bounded by the uniform init's 1/sqrt(in): max %g", max_abs(m.de_w));
    CHECK(max_abs(m.de_b) == 0 && max_abs(m.blk_b) == 0 && max_abs(m.fuse_b) == 0, "MLP biases must start at 0");
    CHECK(max_abs(m.cnn_w[0]) <= 1.0 / sqrt(27.0) + 1e-7, "cnn.0 keeps the default init: max |w| %g", max_abs(m.cnn_w[0]));
    params_free(ps);
}

static void test_modulation_init(void) {
    ParamStore *ps = params_new();
    DodModulationConfig cfg = dod_modulation_default_config(8);
    cfg.public_init = false;   // ours: PyTorch's default Linear init x 1e-5
    DodModulation m;
    dod_modulation_init(&m, &cfg, DOD_EXTRACTOR_CNN, ps, "deg.", 123);
    CHECK(params_get(ps, "deg.fuse_mlp.weight") == m.fuse_w && m.fuse_w->shape[0] == 16 && m.fuse_w->shape[1] == 320,
          "fuse_mlp.weight %s", shape_str(m.fuse_w));
    CHECK(m.de_w->shape[0] == 256 && m.de_w->shape[1] == 256 && m.block_emb->shape[0] == 10 &&
              m.block_emb->shape[1] == 64,
          "de %s, E %s", shape_str(m.de_w), shape_str(m.block_emb));
    // default Linear bound 1/sqrt(fan_in), times 1e-5; biases 0
    CHECK(max_abs(m.de_w) <= 1e-5 / 16.0 + 1e-12 && max_abs(m.de_w) > 0.5e-5 / 16.0, "de_mlp max |w| %g", max_abs(m.de_w));
    CHECK(max_abs(m.fuse_w) <= 1e-5 / sqrt(320.0) + 1e-12, "fuse max |w| %g", max_abs(m.fuse_w));
    CHECK(max_abs(m.de_b) == 0 && max_abs(m.blk_b) == 0 && max_abs(m.fuse_b) == 0, "MLP biases must start at 0");
    CHECK(max_abs(m.cnn_w[0]) <= 1.0 / sqrt(27.0) + 1e-7 && max_abs(m.cnn_w[0]) > 0.9 / sqrt(27.0), "cnn.0 max |w| %g",
          max_abs(m.cnn_w[0]));
    double s = 0, sq = 0;
    const float *e = tensor_data_f32(m.block_emb);
    for (int64_t i = 0; i < m.block_emb->numel; i++) s += e[i], sq += (double)e[i] * e[i];
    double sd = sqrt(sq / m.block_emb->numel - (s / m.block_emb->numel) * (s / m.block_emb->numel));
    CHECK(fabs(sd - 1.0) < 0.15, "block embeddings std %g, want N(0, 1)", sd);
    int64_t ys[4] = {2, 3, 32, 32};
    Tensor *y = test_input("y", 4, ys, 5, 0.5f, false);
    Tensor *gamma[LORA_N_BLOCKS], *beta[LORA_N_BLOCKS];
    dod_modulation_forward(&m, y, gamma, beta);
    double gmax = 0;
    for (int k = 0; k < LORA_N_BLOCKS; k++) gmax = fmax(gmax, fmax(max_abs(gamma[k]), max_abs(beta[k])));
    CHECK(gmax > 0 && gmax < 1e-4, "initial modulation max |gamma, beta| %g should be tiny but nonzero", gmax);
    printf("initial modulation max |gamma, beta| = %.3g\n", gmax);
    // binding the same store again finds every tensor; a wrong config is rejected naming the tensor
    DodModulation m2;
    dod_modulation_bind(&m2, &cfg, DOD_EXTRACTOR_CNN, ps, "deg.");
    CHECK(m2.fuse_w == m.fuse_w && m2.cnn_w[3] == m.cnn_w[3], "bind found other tensors");
    tensor_free(y);
    params_free(ps);
    ag_step_reset();
}

typedef struct {
    ParamStore *ps;
    DodModulationConfig cfg;
} BindCall;

static void bind_modulation(void *ctx) {
    BindCall *b = ctx;
    DodModulation m;
    dod_modulation_bind(&m, &b->cfg, DOD_EXTRACTOR_CNN, b->ps, "deg.");
}

static void test_modulation_errors(void) {
    ParamStore *ps = params_new();
    DodModulationConfig cfg = fixture_mod_config();
    DodModulation m;
    dod_modulation_init(&m, &cfg, DOD_EXTRACTOR_CNN, ps, "deg.", 1);
    BindCall call = {ps, cfg};
    call.cfg.rank = 5;  // fuse_mlp now needs 10 outputs
    char msg[1024];
    int rc = run_expect_fail(bind_modulation, &call, msg, sizeof msg);
    CHECK(rc != 0 && strstr(msg, "deg.fuse_mlp.weight"), "rank mismatch: rc %d, %s", rc, msg);
    params_free(ps);
}

// ---- detail module ----------------------------------------------------------------------------------------
static DodDetailConfig fixture_detail_config(void) {
    DodDetailConfig c = {0};
    c.n_levels = 2;
    c.block_out_channels[0] = 4;
    c.block_out_channels[1] = 6;
    c.groups = 2;
    c.eps = 1e-6f;
    c.growth = 4;
    c.skip_init = 1e-5f;
    c.weight_init = 1.0f;
    return c;
}

static void detail_pass(ParamStore *ps, const DodDetail *m, bool via_callback, bool recompute) {
    for (int i = 0; i < params_count(ps); i++) tensor_zero_grad(params_at(ps, i));
    ag_step_reset();
    DodDetailCtx ctx = {m, 2, {fx(ps, "det.skip.1"), fx(ps, "det.skip.0")}, recompute};  // skips[L-1-i] feeds block i
    Tensor *loss = NULL;
    for (int i = 0; i < 2; i++) {
        char name[64];
        snprintf(name, sizeof name, "det.dec.%d", i);
        Tensor *dec = fx(ps, name);
        snprintf(name, sizeof name, "det.skip.%d", i);
        Tensor *out = via_callback ? dod_detail_before_up(&ctx, i, dec) : dod_detail_apply(m, i, fx(ps, name), dec);
        snprintf(name, sizeof name, "det.out.%d", i);
        match_tensor(name, out, ps, name);
        snprintf(name, sizeof name, "det.out.%d.wts", i);
        if (out->numel != fx(ps, name)->numel) return;
        Tensor *part = weighted_sum(out, tensor_f32(fx(ps, name)));
        loss = loss ? op_add(loss, part) : part;
    }
    ag_backward(loss);
    match_grads(ps, "det.");
}

static void test_detail_fixture(void) {
    ParamStore *ps = load_fixture("detail.safetensors");
    set_trainable(ps, "det.");
    DodDetailConfig cfg = fixture_detail_config();
    DodDetail m;
    dod_detail_bind(&m, &cfg, ps, "det.");
    detail_pass(ps, &m, false, false);
    printf("detail: direct calls compared\n");
    detail_pass(ps, &m, true, false);
    printf("detail: decoder callback compared\n");
    detail_pass(ps, &m, true, true);
    printf("detail: decoder callback under recomputation compared\n");
    params_free(ps);
    ag_step_reset();
}

static void test_detail_sd_sizes(void) {
    SdVaeConfig vae = {0};
    char err[SD_CONFIG_ERR_LEN];
    CHECK(sd_vae_config_load(FIXTURES "sd21_vae_config.json", &vae, err) == 0, "%s", err);
    DodDetailConfig cfg = dod_detail_config_from_vae(&vae);
    int dec[4] = {512, 512, 512, 256}, skip[4] = {128, 128, 256, 512};
    for (int i = 0; i < 4; i++) {
        CHECK(dod_detail_dec_channels(&cfg, i) == dec[i], "up block %d: %d channels, SD has %d", i,
              dod_detail_dec_channels(&cfg, i), dec[i]);
        CHECK(dod_detail_skip_channels(&cfg, i) == skip[i], "skip %d: %d channels, SD has %d", i,
              dod_detail_skip_channels(&cfg, i), skip[i]);
    }
    CHECK(cfg.groups == 32 && cfg.growth == 32 && cfg.eps == 1e-6f, "SD detail config groups %d growth %d eps %g",
          cfg.groups, cfg.growth, cfg.eps);
}

static void test_detail_init(void) {
    ParamStore *ps = params_new();
    DodDetailConfig cfg = fixture_detail_config();
    DodDetail m;
    dod_detail_init(&m, &cfg, ps, "detail.", 42);
    Tensor *skip = fx(ps, "detail.skip_convs.1.weight");
    CHECK(skip->shape[0] == 6 && skip->shape[1] == 4, "skip_convs.1 %s", shape_str(skip));
    const float *sd = tensor_data_f32(skip);
    bool all = true;
    for (int64_t i = 0; i < skip->numel; i++) all &= sd[i] == 1e-5f;
    CHECK(all, "skip conv weights must all be 1e-5");
    CHECK(tensor_data_f32(fx(ps, "detail.fuse_weights.0"))[0] == 1.0f, "w_0 must start at 1");
    CHECK(max_abs(fx(ps, "detail.fuse.0.res_in.norm1.bias")) == 0 &&
              tensor_data_f32(fx(ps, "detail.fuse.0.res_in.norm1.weight"))[3] == 1.0f,
          "GroupNorm init 1 / 0");
    Tensor *c5 = fx(ps, "detail.fuse.1.rrdb.rdb3.conv5.weight"), *b5 = fx(ps, "detail.fuse.1.rrdb.rdb3.conv5.bias");
    double bound = 1.0 / sqrt((6.0 + 4 * 4) * 9.0);  // conv5 sees C + 4 * growth channels, 3x3
    CHECK(!cfg.public_init, "the fixture config uses our (PyTorch default) init");
    CHECK(c5->shape[0] == 6 && c5->shape[1] == 22, "rdb conv5 %s", shape_str(c5));
    CHECK(max_abs(c5) <= bound + 1e-7 && max_abs(c5) > 0.8 * bound, "conv5 max |w| %g vs bound %g", max_abs(c5), bound);
    CHECK(max_abs(b5) <= bound + 1e-7 && max_abs(b5) > 0, "conv5 bias max %g vs bound %g", max_abs(b5), bound);
    CHECK(params_get(ps, "detail.fuse.0.res_in.conv_shortcut.weight") != NULL &&
              params_get(ps, "detail.fuse.0.res_out.conv_shortcut.weight") == NULL,
          "shortcut only where channels change");
    DodDetail again;
    dod_detail_bind(&again, &cfg, ps, "detail.");
    CHECK(again.ps == ps, "bind");
    params_free(ps);

    // The public code's init (the default of dod_detail_config_from_vae): RRDB convs Kaiming normal x 0.1
    // with zero biases; the ResBlocks' convs keep the default init.
    ps = params_new();
    cfg.public_init = true;
    cfg.growth = 32;
    dod_detail_init(&m, &cfg, ps, "detail.", 42);
    double sq = 0;
    int64_t n = 0;
    bool zero_bias = true;
    for (int r = 1; r <= 3; r++)
        for (int j = 1; j <= 5; j++) {
            char name[96];
            snprintf(name, sizeof name, "detail.fuse.0.rrdb.rdb%d.conv%d.weight", r, j);
            Tensor *w = fx(ps, name);
            double fan_in = (double)(w->numel / w->shape[0]), want = 0.1 * sqrt(2.0 / fan_in);
            const float *v = tensor_data_f32(w);
            for (int64_t i = 0; i < w->numel; i++) sq += (double)v[i] * v[i] / (want * want);
            n += w->numel;
            snprintf(name, sizeof name, "detail.fuse.0.rrdb.rdb%d.conv%d.bias", r, j);
            zero_bias &= max_abs(fx(ps, name)) == 0;
        }
    CHECK(fabs(sqrt(sq / (double)n) - 1) < 0.03, "RRDB weights / (0.1 sqrt(2 / fan_in)): rms %g over %ld",
          sqrt(sq / (double)n), (long)n);
    CHECK(zero_bias, "RRDB biases must start at 0");
    Tensor *r1 = fx(ps, "detail.fuse.0.res_in.conv1.bias");
    CHECK(max_abs(r1) > 0 && max_abs(r1) <= 1.0 / sqrt(12.0 * 9.0) + 1e-7, "ResBlock conv bias keeps the default init");
    params_free(ps);
}

int main(void) {
    test_lora_fixture();
    test_modulation_fixture();
    test_modulation_init();
    test_modulation_public_init();
    test_modulation_errors();
    test_detail_fixture();
    test_detail_sd_sizes();
    test_detail_init();
    return check_summary();
}
