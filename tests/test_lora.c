// LoRA adapters (layers/lora.h): target selection on SD 2.1's full tensor table against what PEFT picks
// (tests/fixtures/dod_modules/sd21_lora_targets.txt, made by scripts/make_dod_modules_fixture.py
// --targets), the block index rule, init statistics, conv geometry recovery, merge equivalence, hook
// behaviour and errors, and finite-difference gradient checks of conditional LoRA (linear and conv)
// w.r.t. A, B, gamma, beta and x.
#include "tests/check.h"

#include "layers/lora.h"
#include "layers/sd_blocks.h"
#include "layers/sd_weights.h"

#ifndef DOD_SOURCE_DIR
#define DOD_SOURCE_DIR "."
#endif
#define FIXTURES DOD_SOURCE_DIR "/tests/fixtures/dod_modules/"

// ---- a full-size store of names and shapes (no data: target selection only reads shapes) ----------
static ParamStore *shape_only_store(const SdTensorTable *table, const char *prefix) {
    ParamStore *ps = params_new();
    for (int i = 0; i < table->n; i++) {
        char name[256];
        snprintf(name, sizeof name, "%s%s", prefix, table->items[i].name);
        params_add(ps, name, tensor_wrap_persistent(name, table->items[i].ndim, table->items[i].shape, DT_F32, NULL));
    }
    return ps;
}

typedef struct {
    char layer[200], kind[16];
    int block;
    long in, out, k;
} TargetLine;

static int read_targets(TargetLine *lines, int cap) {
    FILE *f = fopen(FIXTURES "sd21_lora_targets.txt", "r");
    if (!f) {
        fprintf(stderr, "cannot open %s\n", FIXTURES "sd21_lora_targets.txt");
        return -1;
    }
    int n = 0;
    while (n < cap && fscanf(f, "%199s %d %15s %ld %ld %ld", lines[n].layer, &lines[n].block, lines[n].kind,
                             &lines[n].in, &lines[n].out, &lines[n].k) == 6)
        n++;
    fclose(f);
    return n;
}

static void check_against_peft(LoraSet *set, ParamStore *adapters, const char *name_prefix, const TargetLine *lines,
                               int n, bool vae) {
    int expected = 0, matched = 0;
    for (int i = 0; i < n; i++) {
        if ((strncmp(lines[i].layer, "encoder.", 8) == 0) != vae) continue;
        expected++;
        const TargetLine *t = &lines[i];
        LoraAdapter *ad = lora_set_find(set, t->layer);
        CHECK(ad != NULL, "PEFT target %s has no adapter", t->layer);
        if (!ad) continue;
        bool ok = (ad->kind == LORA_CONV) == (strcmp(t->kind, "conv") == 0) && ad->in == t->in && ad->out == t->out &&
                  ad->kh == t->k && ad->conditional == !vae && (vae || ad->block == t->block);
        CHECK(ok, "%s: kind %d in %ld out %ld k %ld block %d, PEFT says %s %ld %ld %ld block %d", t->layer, ad->kind,
              (long)ad->in, (long)ad->out, (long)ad->kh, ad->block, t->kind, t->in, t->out, t->k, t->block);
        char name[300];
        snprintf(name, sizeof name, "%.60s%.199s.lora_A.weight", name_prefix, t->layer);
        Tensor *A = params_get(adapters, name);
        snprintf(name, sizeof name, "%.60s%.199s.lora_B.weight", name_prefix, t->layer);
        Tensor *B = params_get(adapters, name);
        bool shapes = A == ad->A && B == ad->B && A->requires_grad && B->requires_grad && A->dtype == DT_F32 &&
                      (ad->kind == LORA_LINEAR
                           ? (A->ndim == 2 && A->shape[0] == 8 && A->shape[1] == t->in && B->ndim == 2 &&
                              B->shape[0] == t->out && B->shape[1] == 8)
                           : (A->ndim == 4 && A->shape[0] == 8 && A->shape[1] == t->in && A->shape[2] == t->k &&
                              B->ndim == 4 && B->shape[0] == t->out && B->shape[1] == 8 && B->shape[2] == 1));
        CHECK(shapes, "%s: adapter tensors missing or misshapen in the store", t->layer);
        matched += ok && shapes;
    }
    CHECK(lora_set_count(set) == expected, "%s: %d adapters, PEFT picks %d", vae ? "vae" : "unet",
          lora_set_count(set), expected);
    CHECK(params_count(adapters) == 2 * expected, "%d adapter tensors for %d targets", params_count(adapters), expected);
    printf("%s targets: %d of %d match PEFT\n", vae ? "vae encoder" : "unet", matched, expected);
}

static void init_statistics(LoraSet *set) {
    double sum = 0, sq = 0, bmax = 0;
    long n = 0;
    for (int i = 0; i < lora_set_count(set); i++) {
        LoraAdapter *ad = lora_set_at(set, i);
        const float *a = tensor_data_f32(ad->A), *b = tensor_data_f32(ad->B);
        for (int64_t j = 0; j < ad->A->numel; j++) sum += a[j], sq += (double)a[j] * a[j];
        n += (long)ad->A->numel;
        for (int64_t j = 0; j < ad->B->numel; j++) bmax = fmax(bmax, fabs(b[j]));
        CHECK_NEAR(ad->scale, 1.0, 1e-7, "scale alpha / r with alpha = r");
    }
    double mean = sum / n, std = sqrt(sq / n - mean * mean);
    printf("A init over %ld values: mean %.3g std %.6f (want 0, 1/8)\n", n, mean, std);
    CHECK(fabs(mean) < 1e-3, "A mean %g", mean);
    CHECK(fabs(std - 0.125) < 0.125 * 0.01, "A std %g, PEFT gaussian init wants 1/r = 0.125", std);
    CHECK(bmax == 0.0, "B must start at zero, max |B| = %g", bmax);
    // Different layers get different draws.
    LoraAdapter *a0 = lora_set_at(set, 0), *a1 = lora_set_at(set, 1);
    CHECK(tensor_data_f32(a0->A)[0] != tensor_data_f32(a1->A)[0], "two layers share their init");
}

static void test_targets(void) {
    static TargetLine lines[400];
    int n = read_targets(lines, 400);
    CHECK(n > 250, "read %d PEFT target lines", n);
    if (n <= 0) return;
    char err[SD_CONFIG_ERR_LEN];
    SdUNetConfig ucfg;
    SdVaeConfig vcfg;
    CHECK(sd_unet_config_load(FIXTURES "sd21_unet_config.json", &ucfg, err) == 0, "%s", err);
    CHECK(sd_vae_config_load(FIXTURES "sd21_vae_config.json", &vcfg, err) == 0, "%s", err);
    SdTensorTable table = {0};

    sd_unet_tensor_table(&ucfg, &table);
    ParamStore *unet = shape_only_store(&table, "");
    ParamStore *adapters = params_new();
    LoraSet *set = lora_set_new();
    int added = lora_add_targets(set, unet, "", LORA_TARGETS_UNET, adapters, "unet.", 8, 8.0f, 123);
    CHECK(added == lora_set_count(set), "lora_add_targets returned %d for %d adapters", added, lora_set_count(set));
    check_against_peft(set, adapters, "unet.", lines, n, false);
    const char *excluded[] = {"conv_in", "time_embedding.linear_1", "time_embedding.linear_2",
                              "down_blocks.0.resnets.0.time_emb_proj", "conv_norm_out", "down_blocks.0.attentions.0.norm"};
    for (int i = 0; i < 6; i++) {
        CHECK(!lora_is_target(LORA_TARGETS_UNET, excluded[i]), "%s must not get a UNet adapter", excluded[i]);
        CHECK(lora_set_find(set, excluded[i]) == NULL, "%s got an adapter", excluded[i]);
    }
    init_statistics(set);
    // Same seed and layer, same init.
    ParamStore *again = params_new();
    LoraSet *set2 = lora_set_new();
    LoraAdapter *first = lora_set_at(set, 5);
    char wname[300];
    snprintf(wname, sizeof wname, "%s.weight", first->layer);
    LoraAdapter *re = lora_add(set2, again, "unet.", first->layer, params_require(unet, wname, "test"), 8, 8.0f, true, 123);
    CHECK(re->A->numel == first->A->numel &&
              memcmp(re->A->data, first->A->data, sizeof(float) * (size_t)re->A->numel) == 0,
          "re-created adapter %s differs with the same seed", first->layer);
    lora_set_free(set2);
    params_free(again);
    lora_set_free(set);
    params_free(adapters);
    params_free(unet);

    sd_vae_tensor_table(&vcfg, &table);
    ParamStore *vae = shape_only_store(&table, "vae.");
    adapters = params_new();
    set = lora_set_new();
    lora_add_targets(set, vae, "vae.", LORA_TARGETS_VAE_ENCODER, adapters, "vae.", 8, 8.0f, 7);
    check_against_peft(set, adapters, "vae.", lines, n, true);
    const char *vae_excluded[] = {"quant_conv", "post_quant_conv", "decoder.conv_in", "decoder.up_blocks.0.resnets.0.conv1",
                                  "decoder.mid_block.attentions.0.to_q", "encoder.conv_norm_out"};
    for (int i = 0; i < 6; i++)
        CHECK(!lora_is_target(LORA_TARGETS_VAE_ENCODER, vae_excluded[i]) && !lora_set_find(set, vae_excluded[i]),
              "%s must not get a VAE adapter", vae_excluded[i]);
    lora_set_free(set);
    params_free(adapters);
    params_free(vae);
    sd_table_free(&table);
}

static void fatal_block_index(void *ctx) { lora_block_index((const char *)ctx); }

static void test_block_index(void) {
    struct { const char *layer; int block; } cases[] = {
        {"down_blocks.0.resnets.0.conv1", 0}, {"down_blocks.3.downsamplers.0.conv", 3},
        {"mid_block.attentions.0.proj_in", 4}, {"mid_block.resnets.1.conv2", 4},
        {"up_blocks.0.resnets.2.conv_shortcut", 5}, {"up_blocks.3.attentions.2.transformer_blocks.0.ff.net.2", 8},
        {"conv_out", 9}, {"conv_in", 9}, {"time_embedding.linear_1", 9}, {"down_blocks_extra.0.conv", 9},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        CHECK(lora_block_index(cases[i].layer) == cases[i].block, "%s -> %d, want %d", cases[i].layer,
              lora_block_index(cases[i].layer), cases[i].block);
    char msg[512];
    int rc = run_expect_fail(fatal_block_index, (void *)"down_blocks.4.resnets.0.conv1", msg, sizeof msg);
    CHECK(rc != 0 && strstr(msg, "down_blocks.4.resnets.0.conv1"), "block 4 of a down path: rc %d, message %s", rc, msg);
}

static void test_geometry(void) {
    int s, p;
    CHECK(lora_conv_geometry(3, 8, 6, 8, 6, &s, &p) && s == 1 && p == 1, "same 3x3: %d %d", s, p);
    CHECK(lora_conv_geometry(3, 8, 7, 4, 4, &s, &p) && s == 2 && p == 1, "UNet downsampler: %d %d", s, p);
    CHECK(lora_conv_geometry(3, 9, 9, 4, 4, &s, &p) && s == 2 && p == 0, "VAE downsampler after pad: %d %d", s, p);
    CHECK(lora_conv_geometry(1, 5, 5, 5, 5, &s, &p) && s == 1 && p == 0, "1x1: %d %d", s, p);
    CHECK(!lora_conv_geometry(3, 8, 8, 5, 5, &s, &p), "8 -> 5 with a 3x3 kernel has no geometry");
}

// ---- merge equivalence ---------------------------------------------------------------------------------
typedef struct {
    const char *layer;
    int64_t wshape[4];
    int wdim;
    int64_t xshape[4];
    int xdim;
    int stride, pad, pre_pad;  // pre_pad: the VAE downsampler's explicit (0, 1, 0, 1)
    bool conditional;
} MergeCase;

static Tensor *base_forward(const MergeCase *c, Tensor *x, Tensor *w, Tensor *b) {
    if (c->wdim == 4 && c->xdim == 4) return op_conv2d(x, w, b, c->stride, c->pad);
    if (w->ndim == 4) {
        int64_t s2[2] = {w->shape[0], w->shape[1]};
        w = op_reshape(w, 2, s2);
    }
    return op_linear(x, w, b);
}

static void test_merge(void) {
    const int r = 4;
    MergeCase cases[] = {
        {"down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q", {10, 12}, 2, {2, 5, 12}, 3, 0, 0, 0, true},
        {"mid_block.attentions.0.proj_in", {10, 12}, 2, {2, 12}, 2, 0, 0, 0, true},
        {"up_blocks.2.resnets.0.conv1", {5, 6, 3, 3}, 4, {2, 6, 7, 6}, 4, 1, 1, 0, true},
        {"down_blocks.0.downsamplers.0.conv", {5, 6, 3, 3}, 4, {2, 6, 8, 8}, 4, 2, 1, 0, true},
        {"encoder.down_blocks.0.downsamplers.0.conv", {5, 6, 3, 3}, 4, {2, 6, 8, 8}, 4, 2, 0, 1, false},
        {"encoder.mid_block.attentions.0.to_k", {6, 6, 1, 1}, 4, {2, 9, 6}, 3, 0, 0, 0, false},
    };
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const MergeCase *c = &cases[ci];
        ag_step_reset();
        ParamStore *store = params_new(), *merged = params_new(), *base = params_new();
        Tensor *w0 = params_add(base, "w.weight", test_input("w.weight", c->wdim, c->wshape, 11 + ci, 0.3f, false));
        Tensor *b0 = params_add(base, "w.bias", test_input("w.bias", 1, c->wshape, 12 + ci, 0.1f, false));
        LoraSet *set = lora_set_new();
        LoraAdapter *ad = lora_add(set, store, "", c->layer, w0, r, 6.0f, c->conditional, 5);
        tensor_randn(ad->B, 99 + ci, 0.3f);  // B = 0 would make the check vacuous
        Tensor *gamma[LORA_N_BLOCKS], *beta[LORA_N_BLOCKS];
        int64_t gs[2] = {c->xshape[0], r};
        for (int k = 0; k < LORA_N_BLOCKS; k++) {
            gamma[k] = test_input("gamma", 2, gs, 200 + k, 0.5f, false);
            beta[k] = test_input("beta", 2, gs, 300 + k, 0.5f, false);
        }
        lora_set_modulation(set, gamma, beta);
        Tensor *x = test_input("x", c->xdim, c->xshape, 21 + ci, 1.0f, false);
        Tensor *xin = c->pre_pad ? op_pad2d(x, 0, 1, 0, 1) : x;
        Tensor *y = lora_hook(set, c->layer, xin, base_forward(c, xin, w0, b0));
        double worst = 0, scale = 0;
        for (int n = 0; n < c->xshape[0]; n++) {
            // the adapter output for sample n vs the merged layer on sample n alone
            char wname[300], bname[300];
            snprintf(wname, sizeof wname, "pre.%s.weight", c->layer);
            snprintf(bname, sizeof bname, "pre.%s.bias", c->layer);
            ParamStore *pre = params_new();  // the base under its real layer name, as lora_merge_all wants
            params_add(pre, wname, tensor_wrap_persistent(wname, w0->ndim, w0->shape, DT_F32, w0->data));
            params_add(pre, bname, tensor_wrap_persistent(bname, 1, b0->shape, DT_F32, b0->data));
            ParamStore *out = params_new();
            CHECK(lora_merge_all(set, pre, "pre.", n, out) == 1, "merge_all count");
            Tensor *wm = params_require(out, wname, "test"), *bm = params_require(out, bname, "test");
            int64_t xs1[4];
            memcpy(xs1, xin->shape, sizeof xs1);
            xs1[0] = 1;
            int64_t per = xin->numel / xin->shape[0];
            Tensor *xn = tensor_new(xin->ndim, xs1, DT_F32);
            memcpy(xn->data, tensor_f32(xin) + n * per, sizeof(float) * (size_t)per);
            Tensor *ym = base_forward(c, xn, wm, bm);
            int64_t yper = y->numel / y->shape[0];
            CHECK(ym->numel == yper, "merged output size %ld vs %ld", (long)ym->numel, (long)yper);
            double s;
            double d = max_abs_diff(tensor_f32(ym), tensor_f32(y) + n * yper, yper, &s);
            worst = fmax(worst, d), scale = fmax(scale, s);
            params_free(out);
            params_free(pre);
        }
        CHECK(worst <= 1e-5 * fmax(1.0, scale), "%s: merged vs adapter max diff %g (scale %g)", c->layer, worst, scale);
        printf("merge %-45s max diff %.3g\n", c->layer, worst);
        // Frozen W0 untouched.
        Tensor *w0_copy = test_input("w.weight", c->wdim, c->wshape, 11 + ci, 0.3f, false);
        CHECK(memcmp(w0->data, w0_copy->data, sizeof(float) * (size_t)w0->numel) == 0, "W0 was written");
        tensor_free(w0_copy);
        for (int k = 0; k < LORA_N_BLOCKS; k++) tensor_free(gamma[k]), tensor_free(beta[k]);
        tensor_free(x);
        lora_set_free(set);
        params_free(store);
        params_free(merged);
        params_free(base);
    }
    ag_step_reset();
}

// ---- hook behaviour and errors ------------------------------------------------------------------------
typedef struct {
    LoraSet *set;
    Tensor *x, *y;
    const char *layer;
} HookCall;

static void call_hook(void *ctx) {
    HookCall *h = ctx;
    lora_hook(h->set, h->layer, h->x, h->y);
}

static void test_hook(void) {
    ag_step_reset();
    ParamStore *store = params_new();
    int64_t ws[2] = {4, 3}, xs[3] = {2, 5, 3}, gs[2] = {3, 2};
    Tensor *w0 = test_input("w0", 2, ws, 1, 0.5f, false);
    LoraSet *set = lora_set_new();
    LoraAdapter *ad = lora_add(set, store, "u.", "up_blocks.1.attentions.0.proj_out", w0, 2, 2.0f, true, 1);
    CHECK(params_get(store, "u.up_blocks.1.attentions.0.proj_out.lora_A.weight") == ad->A, "PEFT name of A");
    CHECK(params_get(store, "u.up_blocks.1.attentions.0.proj_out.lora_B.weight") == ad->B, "PEFT name of B");
    Tensor *x = test_input("x", 3, xs, 2, 1.0f, false);
    Tensor *y = op_linear(x, w0, NULL);
    CHECK(lora_hook(set, "up_blocks.1.attentions.0.proj_in", x, y) == y, "a layer without adapter passes y through");
    lora_set_enabled(set, false);
    CHECK(lora_hook(set, "up_blocks.1.attentions.0.proj_out", x, y) == y, "a disabled set passes y through");
    lora_set_enabled(set, true);
    char msg[1024];
    HookCall call = {set, x, y, "up_blocks.1.attentions.0.proj_out"};
    int rc = run_expect_fail(call_hook, &call, msg, sizeof msg);
    CHECK(rc != 0 && strstr(msg, "proj_out") && strstr(msg, "gamma"), "no modulation: rc %d, %s", rc, msg);
    Tensor *g[LORA_N_BLOCKS], *b[LORA_N_BLOCKS];
    Tensor *bad = test_input("bad", 2, gs, 3, 1.0f, false);
    for (int k = 0; k < LORA_N_BLOCKS; k++) g[k] = b[k] = bad;
    lora_set_modulation(set, g, b);
    rc = run_expect_fail(call_hook, &call, msg, sizeof msg);
    CHECK(rc != 0 && strstr(msg, "proj_out") && strstr(msg, "[3, 2]"), "batch 3 gamma on batch 2: rc %d, %s", rc, msg);
    tensor_free(bad);
    tensor_free(x);
    tensor_free(w0);
    lora_set_free(set);
    params_free(store);
    ag_step_reset();
}

// ---- finite-difference gradient checks -------------------------------------------------------------------
typedef struct {
    LoraSet *set;
    const char *layer;
    Tensor *w0, *b0;
    int stride, pad;
} GradCtx;

// inputs: x, A, B, gamma, beta (A and B are the adapter's own tensors)
static Tensor *lora_fn(void *vctx, Tensor *const *in) {
    GradCtx *c = vctx;
    Tensor *gamma[LORA_N_BLOCKS], *beta[LORA_N_BLOCKS];
    for (int k = 0; k < LORA_N_BLOCKS; k++) gamma[k] = in[3], beta[k] = in[4];
    lora_set_modulation(c->set, gamma, beta);
    Tensor *y = in[0]->ndim == 4 ? op_conv2d(in[0], c->w0, c->b0, c->stride, c->pad) : op_linear(in[0], c->w0, c->b0);
    return lora_hook(c->set, c->layer, in[0], y);
}

static void gradcheck_case(const char *what, const char *layer, int wdim, const int64_t *wshape, int xdim,
                           const int64_t *xshape, int stride, int pad) {
    ParamStore *store = params_new();
    const int r = 3;
    Tensor *w0 = test_input("w0", wdim, wshape, 31, 0.4f, false);
    Tensor *b0 = test_input("b0", 1, wshape, 32, 0.1f, false);
    LoraSet *set = lora_set_new();
    LoraAdapter *ad = lora_add(set, store, "", layer, w0, r, 4.5f, true, 9);
    tensor_randn(ad->B, 33, 0.4f);
    int64_t gs[2] = {xshape[0], r};
    Tensor *in[5] = {test_input("x", xdim, xshape, 34, 1.0f, true), ad->A, ad->B,
                     test_input("gamma", 2, gs, 35, 0.5f, true), test_input("beta", 2, gs, 36, 0.5f, true)};
    GradCtx ctx = {set, layer, w0, b0, stride, pad};
    gradcheck(what, lora_fn, &ctx, 5, in, 1e-2, 2e-2, 1e-3, 200);
    tensor_free(in[0]), tensor_free(in[3]), tensor_free(in[4]), tensor_free(w0), tensor_free(b0);
    lora_set_free(set);
    params_free(store);
}

static void test_gradcheck(void) {
    int64_t lw[2] = {5, 4}, lx[3] = {2, 3, 4};
    gradcheck_case("conditional LoRA linear", "down_blocks.2.attentions.1.transformer_blocks.0.ff.net.2", 2, lw, 3, lx,
                   0, 0);
    int64_t cw[4] = {4, 3, 3, 3}, cx[4] = {2, 3, 5, 4};
    gradcheck_case("conditional LoRA conv 3x3", "up_blocks.0.resnets.1.conv2", 4, cw, 4, cx, 1, 1);
    int64_t dx[4] = {2, 3, 6, 6};
    gradcheck_case("conditional LoRA conv stride 2", "down_blocks.1.downsamplers.0.conv", 4, cw, 4, dx, 2, 1);
}

// ---- through the SD blocks' hook ------------------------------------------------------------------------
// A resnet with a channel change (conv1, conv2, conv_shortcut) and a VAE-style downsampler (explicit pad,
// stride 2, padding 0) under the prefix "vae.", with adapters on every conv: the hooked network must equal
// the same network on merged weights without the hook. Checks layer naming (hook names carry no SdNet
// prefix) and the stride/padding the adapter recovers inside real blocks.
static void add_param(ParamStore *ps, const char *name, int ndim, const int64_t *shape, uint64_t seed, float std) {
    params_add(ps, name, test_input(name, ndim, shape, seed, std, false));
}

static void test_sd_blocks_hook(void) {
    ag_step_reset();
    ParamStore *base = params_new();
    const char *res = "vae.encoder.down_blocks.1.resnets.0", *down = "vae.encoder.down_blocks.1.downsamplers.0.conv";
    int64_t c4[1] = {4}, c6[1] = {6}, w1[4] = {6, 4, 3, 3}, w2[4] = {6, 6, 3, 3}, ws[4] = {6, 4, 1, 1};
    char name[256];
    uint64_t seed = 400;
#define P(suffix, nd, shp, std) (snprintf(name, sizeof name, "%s.%s", res, suffix), add_param(base, name, nd, shp, seed++, std))
    P("norm1.weight", 1, c4, 0.2f), P("norm1.bias", 1, c4, 0.2f), P("conv1.weight", 4, w1, 0.2f), P("conv1.bias", 1, c6, 0.1f);
    P("norm2.weight", 1, c6, 0.2f), P("norm2.bias", 1, c6, 0.2f), P("conv2.weight", 4, w2, 0.2f), P("conv2.bias", 1, c6, 0.1f);
    P("conv_shortcut.weight", 4, ws, 0.3f), P("conv_shortcut.bias", 1, c6, 0.1f);
#undef P
    snprintf(name, sizeof name, "%s.weight", down), add_param(base, name, 4, w2, seed++, 0.2f);
    snprintf(name, sizeof name, "%s.bias", down), add_param(base, name, 1, c6, seed++, 0.1f);
    ParamStore *adapters = params_new();
    LoraSet *set = lora_set_new();
    int added = lora_add_targets(set, base, "vae.", LORA_TARGETS_VAE_ENCODER, adapters, "vae.", 2, 3.0f, 77);
    CHECK(added == 4, "resnet conv1/conv2/conv_shortcut + downsampler conv: %d adapters", added);
    for (int i = 0; i < lora_set_count(set); i++) tensor_randn(lora_set_at(set, i)->B, 500 + i, 0.3f);
    int64_t xs[4] = {2, 4, 6, 6};
    Tensor *x = test_input("x", 4, xs, 600, 1.0f, false);
    SdNet net = {.ps = base, .prefix = "vae.", .hook = lora_hook, .hook_ctx = set, .hook_needs_input = lora_hook_needs_input};
    // The norm -> conv layers through lora_hook_norm (A's conv fused with the norm) give the same output,
    // bitwise, and the same adapter gradients as through lora_hook on the made input: to 1e-5 of their
    // scale, since the norm's input now gets its gradient from two backward passes (base conv, A) added
    // rather than from one pass over the summed gradient (measured: last-bit differences).
    float *ref_out = NULL, *ref_grads[8] = {0};
    int n_ad = lora_set_count(set);
    for (int pass = 0; pass < 2; pass++) {
        net.hook_norm = pass ? lora_hook_norm : NULL;
        for (int i = 0; i < n_ad; i++) {
            tensor_zero_grad(lora_set_at(set, i)->A);
            tensor_zero_grad(lora_set_at(set, i)->B);
        }
        ag_step_reset();
        Tensor *yp = sd_downsample(&net, "encoder.down_blocks.1.downsamplers.0",
                                   sd_resnet(&net, "encoder.down_blocks.1.resnets.0", x, NULL, 2, 1e-6f, 1.0f), 0);
        Tensor *wy = test_input("wy", 4, yp->shape, 601, 1.0f, false);
        ag_backward(op_sum(op_mul(yp, wy)));
        size_t out_bytes = sizeof(float) * (size_t)yp->numel;
        if (!pass) {
            ref_out = malloc(out_bytes);
            memcpy(ref_out, yp->data, out_bytes);
        } else {
            CHECK(memcmp(ref_out, yp->data, out_bytes) == 0, "lora_hook_norm: output differs from lora_hook's");
        }
        for (int i = 0; i < n_ad && i < 4; i++)
            for (int ab = 0; ab < 2; ab++) {
                Tensor *t = ab ? lora_set_at(set, i)->B : lora_set_at(set, i)->A;
                size_t bytes = sizeof(float) * (size_t)t->numel;
                CHECK(t->grad != NULL, "adapter %d %s: no gradient", i, ab ? "B" : "A");
                if (!t->grad) continue;
                if (!pass) {
                    ref_grads[2 * i + ab] = malloc(bytes);
                    memcpy(ref_grads[2 * i + ab], t->grad, bytes);
                } else {
                    double scale, d = max_abs_diff(t->grad, ref_grads[2 * i + ab], (long)t->numel, &scale);
                    CHECK(d <= 1e-5 * fmax(scale, 1e-6), "lora_hook_norm: adapter %d %s gradient differs by %.3g (scale %.3g)",
                          i, ab ? "B" : "A", d, scale);
                    if (ab == 0 && i == 0) printf("lora_hook_norm vs lora_hook, adapter 0 dA: max diff %.3g (scale %.3g)\n", d, scale);
                }
            }
        tensor_free(wy);
    }
    free(ref_out);
    for (int i = 0; i < 8; i++) free(ref_grads[i]);
    net.hook_norm = NULL;
    ag_step_reset();
    Tensor *h = sd_resnet(&net, "encoder.down_blocks.1.resnets.0", x, NULL, 2, 1e-6f, 1.0f);
    Tensor *y = sd_downsample(&net, "encoder.down_blocks.1.downsamplers.0", h, 0);
    // merged weights: overlay of the merged layers on the base store, per sample
    for (int n = 0; n < 2; n++) {
        ParamStore *merged = params_new(), *view = params_new();
        CHECK(lora_merge_all(set, base, "vae.", n, merged) == 4, "merge_all");
        for (int i = 0; i < params_count(base); i++) {
            Tensor *t = params_at(base, i), *m = params_get(merged, t->name);
            Tensor *src = m ? m : t;
            params_add(view, t->name, tensor_wrap_persistent(t->name, src->ndim, src->shape, DT_F32, src->data));
        }
        SdNet plain = {.ps = view, .prefix = "vae."};
        int64_t per = x->numel / 2;
        Tensor *xn = tensor_new4(1, 4, 6, 6);
        memcpy(xn->data, tensor_f32(x) + n * per, sizeof(float) * (size_t)per);
        Tensor *yn = sd_downsample(&plain, "encoder.down_blocks.1.downsamplers.0",
                                   sd_resnet(&plain, "encoder.down_blocks.1.resnets.0", xn, NULL, 2, 1e-6f, 1.0f), 0);
        int64_t yper = y->numel / 2;
        double scale, d = max_abs_diff(tensor_f32(yn), tensor_f32(y) + n * yper, yper, &scale);
        CHECK(yn->numel == yper && d <= 1e-5 * fmax(1.0, scale), "sample %d: hooked vs merged blocks differ by %g", n, d);
        printf("sd blocks with LoRA hook vs merged weights, sample %d: max diff %.3g\n", n, d);
        params_free(view);
        params_free(merged);
    }
    tensor_free(x);
    lora_set_free(set);
    params_free(adapters);
    params_free(base);
    ag_step_reset();
}

// ---- under activation recomputation ---------------------------------------------------------------------
// gamma/beta are outputs of the modulation (arena tensors recorded earlier on the tape), not inputs of the
// checkpointed block; their gradients must still arrive, equal to the direct run's.
typedef struct {
    LoraSet *set;
    Tensor *w0;
} RecomputeCtx;

static Tensor *hooked_block(void *vctx, Tensor *const *in) {
    RecomputeCtx *c = vctx;
    Tensor *y = op_conv2d(in[0], c->w0, NULL, 1, 1);
    return lora_hook(c->set, "mid_block.resnets.0.conv1", in[0], y);
}

// Another checkpointed block whose backward runs after the hooked block's and reuses the arena it released
// (so a gradient buffer allocated inside the hooked block's recomputation would be overwritten).
static Tensor *other_block(void *vctx, Tensor *const *in) {
    (void)vctx;
    return op_silu(op_mul(in[0], in[0]));
}

static void test_recompute(void) {
    ParamStore *store = params_new();
    int64_t ws[4] = {4, 3, 3, 3}, xs[4] = {2, 3, 5, 5}, gs[2] = {2, 2};
    Tensor *w0 = test_input("w0", 4, ws, 70, 0.3f, false);
    Tensor *x = test_input("x", 4, xs, 71, 1.0f, true);
    Tensor *gp = test_input("gamma_src", 2, gs, 72, 0.5f, true), *bp = test_input("beta_src", 2, gs, 73, 0.5f, true);
    int64_t big[1] = {1 << 14};
    Tensor *x2 = test_input("x2", 1, big, 75, 1.0f, true);
    LoraSet *set = lora_set_new();
    LoraAdapter *ad = lora_add(set, store, "", "mid_block.resnets.0.conv1", w0, 2, 2.0f, true, 3);
    tensor_randn(ad->B, 74, 0.3f);
    RecomputeCtx ctx = {set, w0};
    float *grads[2][5];
    Tensor *leaves[5] = {x, gp, bp, ad->A, ad->B};
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < 5; i++) tensor_zero_grad(leaves[i]);
        ag_step_reset();
        Tensor *gamma[LORA_N_BLOCKS], *beta[LORA_N_BLOCKS];
        for (int k = 0; k < LORA_N_BLOCKS; k++) gamma[k] = op_scale(gp, 1.5f), beta[k] = op_scale(bp, -0.5f);
        lora_set_modulation(set, gamma, beta);
        Tensor *other = pass == 0 ? other_block(NULL, &x2) : ag_checkpoint(other_block, NULL, 1, &x2);
        Tensor *out = pass == 0 ? hooked_block(&ctx, &x) : ag_checkpoint(hooked_block, &ctx, 1, &x);
        ag_backward(op_add(op_sum(op_mul(out, out)), op_sum(other)));
        for (int i = 0; i < 5; i++) {
            grads[pass][i] = malloc(sizeof(float) * (size_t)leaves[i]->numel);
            memcpy(grads[pass][i], tensor_grad(leaves[i]), sizeof(float) * (size_t)leaves[i]->numel);
        }
    }
    const char *names[5] = {"x", "gamma source", "beta source", "A", "B"};
    for (int i = 0; i < 5; i++) {
        double scale, d = max_abs_diff(grads[1][i], grads[0][i], leaves[i]->numel, &scale);
        CHECK(scale > 0 && d <= 1e-5 * fmax(1.0, scale), "recomputed grad of %s differs by %g (scale %g)", names[i], d,
              scale);
        free(grads[0][i]), free(grads[1][i]);
    }
    ag_step_reset();
    tensor_free(w0), tensor_free(x), tensor_free(x2), tensor_free(gp), tensor_free(bp);
    lora_set_free(set);
    params_free(store);
}

int main(void) {
    test_block_index();
    test_geometry();
    test_targets();
    test_merge();
    test_hook();
    test_sd_blocks_hook();
    test_recompute();
    test_gradcheck();
    return check_summary();
}
