// Degradation-aware modulation; see dod_modulation.h.
#include "layers/dod_modulation.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

DodModulationConfig dod_modulation_default_config(int rank) {
    DodModulationConfig c = {0};
    c.rank = rank;
    c.feature_dim = 256;
    c.de_dim = 256;
    c.block_dim = 64;
    c.in_channels = 3;
    c.cnn_channels[0] = 32;
    c.cnn_channels[1] = 64;
    c.cnn_channels[2] = 128;
    c.cnn_channels[3] = 256;
    c.mlp_init_scale = 1e-5f;
    c.public_init = true;
    return c;
}

static void check_config(const DodModulationConfig *c, DodExtractorKind extractor) {
    DOD_CHECK(c->rank > 0 && c->feature_dim > 0 && c->de_dim > 0 && c->block_dim > 0 && c->in_channels > 0,
              "dod_modulation", "config: rank %d, feature_dim %d, de_dim %d, block_dim %d, in_channels %d must be > 0",
              c->rank, c->feature_dim, c->de_dim, c->block_dim, c->in_channels);
    if (extractor == DOD_EXTRACTOR_CNN)
        DOD_CHECK(c->cnn_channels[DOD_CNN_LAYERS - 1] == c->feature_dim, "dod_modulation",
                  "config: the cnn's last width %d must equal feature_dim %d", c->cnn_channels[DOD_CNN_LAYERS - 1],
                  c->feature_dim);
}

// One parameter slot: created (init) or looked up and shape-checked (bind).
typedef struct {
    ParamStore *store;
    const char *prefix;
    bool create;
} Binder;

static Tensor *slot(const Binder *b, const char *name, int ndim, const int64_t *shape) {
    char full[512];
    int len = snprintf(full, sizeof full, "%s%s", b->prefix ? b->prefix : "", name);
    DOD_CHECK(len > 0 && len < (int)sizeof full, name, "parameter name too long");
    Tensor want = {.ndim = ndim};  // a header only, for the shape check and messages
    for (int d = 0; d < ndim; d++) want.shape[d] = shape[d];
    Tensor *t;
    if (b->create) {
        t = params_add(b->store, full, tensor_new_persistent(full, ndim, shape, DT_F32));
    } else {
        t = params_require(b->store, full, "dod_modulation");
        DOD_CHECK(tensor_same_shape(t, &want), full, "has shape %s, the modulation config needs %s", shape_str(t),
                  shape_str(&want));
        DOD_CHECK(t->dtype == DT_F32, full, "is %s, trainable parameters must be f32", dtype_name(t->dtype));
    }
    t->requires_grad = true;
    return t;
}

static Tensor *slot2(const Binder *b, const char *name, int64_t d0, int64_t d1) {
    int64_t s[2] = {d0, d1};
    return slot(b, name, 2, s);
}
static Tensor *slot1(const Binder *b, const char *name, int64_t d0) { return slot(b, name, 1, &d0); }

static void bind_all(DodModulation *m, const DodModulationConfig *cfg, DodExtractorKind extractor, const Binder *b) {
    check_config(cfg, extractor);
    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    m->extractor = extractor;
    if (extractor == DOD_EXTRACTOR_CNN) {
        int cin = cfg->in_channels;
        for (int i = 0; i < DOD_CNN_LAYERS; i++) {
            char name[64];
            int64_t s[4] = {cfg->cnn_channels[i], cin, 3, 3};
            snprintf(name, sizeof name, "cnn.%d.weight", i);
            m->cnn_w[i] = slot(b, name, 4, s);
            snprintf(name, sizeof name, "cnn.%d.bias", i);
            m->cnn_b[i] = slot1(b, name, cfg->cnn_channels[i]);
            cin = cfg->cnn_channels[i];
        }
    }
    m->de_w = slot2(b, "de_mlp.weight", cfg->de_dim, cfg->feature_dim);
    m->de_b = slot1(b, "de_mlp.bias", cfg->de_dim);
    m->block_emb = slot2(b, "block_embeddings.weight", LORA_N_BLOCKS, cfg->block_dim);
    m->blk_w = slot2(b, "block_mlp.weight", cfg->block_dim, cfg->block_dim);
    m->blk_b = slot1(b, "block_mlp.bias", cfg->block_dim);
    m->fuse_w = slot2(b, "fuse_mlp.weight", 2 * cfg->rank, cfg->de_dim + cfg->block_dim);
    m->fuse_b = slot1(b, "fuse_mlp.bias", 2 * cfg->rank);
}

// PyTorch's default Linear/Conv2d init: kaiming_uniform(a = sqrt(5)) gives bound 1/sqrt(fan_in) for
// the weight; the bias uses the same bound. kaiming_normal: the weight ~ N(0, 2 / fan_in) instead
// (torch.nn.init.kaiming_normal_ with a = 0, mode fan_in, as basicsr's default_init_weights calls it).
static void default_init(Tensor *w, Tensor *b, uint64_t seed, float weight_scale, bool zero_bias, bool kaiming_normal) {
    int64_t fan_in = w->numel / w->shape[0];
    float bound = 1.0f / sqrtf((float)fan_in);
    if (kaiming_normal) tensor_randn(w, seed, sqrtf(2.0f / (float)fan_in));
    else tensor_rand_uniform(w, seed, -bound, bound);
    if (weight_scale != 1.0f) {
        float *d = tensor_data_f32(w);
        for (int64_t i = 0; i < w->numel; i++) d[i] *= weight_scale;
    }
    if (zero_bias) tensor_fill(b, 0.0f);
    else tensor_rand_uniform(b, seed + 1, -bound, bound);
}

void dod_modulation_init(DodModulation *m, const DodModulationConfig *cfg, DodExtractorKind extractor,
                         ParamStore *store, const char *prefix, uint64_t seed) {
    Binder b = {store, prefix, true};
    bind_all(m, cfg, extractor, &b);
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 17;
    if (extractor == DOD_EXTRACTOR_CNN)
        for (int i = 0; i < DOD_CNN_LAYERS; i++)
            default_init(m->cnn_w[i], m->cnn_b[i], s + 2 * (uint64_t)i, 1.0f, false, false);
    bool pub = cfg->public_init;
    default_init(m->de_w, m->de_b, s + 100, cfg->mlp_init_scale, true, pub);
    default_init(m->blk_w, m->blk_b, s + 102, cfg->mlp_init_scale, true, pub);
    default_init(m->fuse_w, m->fuse_b, s + 104, cfg->mlp_init_scale, true, pub);
    tensor_randn(m->block_emb, s + 106, 1.0f);
}

void dod_modulation_bind(DodModulation *m, const DodModulationConfig *cfg, DodExtractorKind extractor,
                         ParamStore *store, const char *prefix) {
    Binder b = {store, prefix, false};
    bind_all(m, cfg, extractor, &b);
}

void dod_modulation_set_extractor(DodModulation *m, DodExtractFn fn, void *ctx) {
    DOD_CHECK(m->extractor == DOD_EXTRACTOR_EXTERNAL, "dod_modulation_set_extractor",
              "the modulation was built with the built-in cnn extractor");
    m->extract_fn = fn;
    m->extract_ctx = ctx;
}

Tensor *dod_modulation_features(const DodModulation *m, Tensor *y) {
    const DodModulationConfig *c = &m->cfg;
    DOD_CHECK(y->ndim == 4 && y->shape[1] == c->in_channels, "dod_modulation_features",
              "image has shape %s, expected [N, %d, H, W]", shape_str(y), c->in_channels);
    Tensor *d;
    if (m->extractor == DOD_EXTRACTOR_CNN) {
        Tensor *h = y;
        for (int i = 0; i < DOD_CNN_LAYERS; i++) h = op_silu(op_conv2d(h, m->cnn_w[i], m->cnn_b[i], 2, 1));
        d = op_global_avg_pool(h);
    } else {
        DOD_CHECK(m->extract_fn, "dod_modulation_features", "external extractor not set (dod_modulation_set_extractor)");
        d = m->extract_fn(m->extract_ctx, y);
    }
    DOD_CHECK(d->ndim == 2 && d->shape[0] == y->shape[0] && d->shape[1] == c->feature_dim, "dod_modulation_features",
              "extractor returned %s, expected [%ld, %d]", shape_str(d), (long)y->shape[0], c->feature_dim);
    return d;
}

void dod_modulation_from_features(const DodModulation *m, Tensor *d, Tensor **gamma, Tensor **beta) {
    const DodModulationConfig *c = &m->cfg;
    DOD_CHECK(d->ndim == 2 && d->shape[1] == c->feature_dim, "dod_modulation_from_features",
              "features have shape %s, expected [N, %d]", shape_str(d), c->feature_dim);
    Tensor *e = op_relu(op_linear(d, m->de_w, m->de_b));                 // [N, de]
    Tensor *bk = op_relu(op_linear(m->block_emb, m->blk_w, m->blk_b));   // [10, block]
    Tensor *w_parts[2];
    int64_t widths[2] = {c->de_dim, c->block_dim};
    op_split(m->fuse_w, 1, 2, widths, w_parts);                          // W_fuse = [W_e | W_b]
    Tensor *from_e = op_linear(e, w_parts[0], NULL);                     // [N, 2r]
    Tensor *from_b = op_linear(bk, w_parts[1], m->fuse_b);               // [10, 2r]
    Tensor *rows[LORA_N_BLOCKS];
    int64_t ones[LORA_N_BLOCKS];
    for (int k = 0; k < LORA_N_BLOCKS; k++) ones[k] = 1;
    op_split(from_b, 0, LORA_N_BLOCKS, ones, rows);                      // each [1, 2r]
    int64_t halves[2] = {c->rank, c->rank};
    for (int k = 0; k < LORA_N_BLOCKS; k++) {
        Tensor *gb[2];
        op_split(op_add(from_e, rows[k]), 1, 2, halves, gb);             // [N, 2r] -> gamma, beta
        gamma[k] = gb[0];
        beta[k] = gb[1];
    }
}

void dod_modulation_forward(const DodModulation *m, Tensor *y, Tensor **gamma, Tensor **beta) {
    dod_modulation_from_features(m, dod_modulation_features(m, y), gamma, beta);
}
