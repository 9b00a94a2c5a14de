// High-fidelity detail enhancement; see dod_detail.h.
#include "layers/dod_detail.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

DodDetailConfig dod_detail_config_from_vae(const SdVaeConfig *vae) {
    DodDetailConfig c = {0};
    c.n_levels = vae->n_levels;
    for (int i = 0; i < vae->n_levels; i++) c.block_out_channels[i] = vae->block_out_channels[i];
    c.groups = vae->norm_num_groups;
    c.eps = 1e-6f;
    c.growth = 32;
    c.skip_init = 1e-5f;
    c.weight_init = 1.0f;
    c.public_init = true;
    return c;
}

int dod_detail_skip_channels(const DodDetailConfig *cfg, int j) {
    DOD_CHECK(j >= 0 && j < cfg->n_levels, "dod_detail", "skip index %d outside 0..%d", j, cfg->n_levels - 1);
    return j == 0 ? cfg->block_out_channels[0] : cfg->block_out_channels[j - 1];
}

int dod_detail_dec_channels(const DodDetailConfig *cfg, int i) {
    DOD_CHECK(i >= 0 && i < cfg->n_levels, "dod_detail", "up block %d outside 0..%d", i, cfg->n_levels - 1);
    int L = cfg->n_levels;
    return i == 0 ? cfg->block_out_channels[L - 1] : cfg->block_out_channels[L - i];
}

// ---- parameter table: one walk used to create (and initialise) or to bind (and check) ------------
typedef enum { INIT_CONV, INIT_RRDB, INIT_NORM, INIT_SKIP, INIT_SCALAR } InitKind;

typedef struct {
    DodDetail *m;
    bool create;
    uint64_t seed;
    int count;  // parameters visited, also the per-tensor seed offset
} Walker;

static void visit(Walker *wk, InitKind kind, int ndim, const int64_t *shape, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static void visit(Walker *wk, InitKind kind, int ndim, const int64_t *shape, const char *fmt, ...) {
    char name[256], full[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    int len = snprintf(full, sizeof full, "%s%s", wk->m->prefix, name);
    DOD_CHECK(len > 0 && len < (int)sizeof full, name, "parameter name too long");
    Tensor want = {.ndim = ndim};
    for (int d = 0; d < ndim; d++) want.shape[d] = shape[d];
    uint64_t seed = wk->seed + 2 * (uint64_t)wk->count++;
    if (!wk->create) {
        Tensor *t = params_require(wk->m->ps, full, "dod_detail");
        DOD_CHECK(tensor_same_shape(t, &want) && t->dtype == DT_F32, full,
                  "is %s %s, the detail config needs f32 %s", dtype_name(t->dtype), shape_str(t), shape_str(&want));
        t->requires_grad = true;
        return;
    }
    Tensor *t = params_add(wk->m->ps, full, tensor_new_persistent(full, ndim, shape, DT_F32));
    t->requires_grad = true;
    bool is_weight = len >= 7 && strcmp(full + len - 7, ".weight") == 0;
    if (kind == INIT_RRDB) {
        if (wk->m->cfg.public_init) {   // basicsr default_init_weights(convs, 0.1): kaiming_normal_ x 0.1, bias 0
            if (is_weight) tensor_randn(t, seed, 0.1f * sqrtf(2.0f / (float)(t->numel / t->shape[0])));
            else tensor_fill(t, 0.0f);
            return;
        }
        kind = INIT_CONV;
    }
    switch (kind) {
    case INIT_CONV: {  // PyTorch Conv2d default: bound 1/sqrt(fan_in) for weight and bias
        int64_t fan_in = is_weight ? t->numel / t->shape[0] : 0;
        if (!is_weight) {  // the bias of the conv visited just before: fan_in from that weight
            char wname[512];
            snprintf(wname, sizeof wname, "%.*s.weight", len - 5, full);
            Tensor *w = params_require(wk->m->ps, wname, "dod_detail init");
            fan_in = w->numel / w->shape[0];
        }
        float bound = 1.0f / sqrtf((float)fan_in);
        tensor_rand_uniform(t, seed, -bound, bound);
        break;
    }
    case INIT_NORM: tensor_fill(t, is_weight ? 1.0f : 0.0f); break;
    case INIT_SKIP: tensor_fill(t, wk->m->cfg.skip_init); break;
    case INIT_SCALAR: tensor_fill(t, wk->m->cfg.weight_init); break;
    case INIT_RRDB: break;   // handled above
    }
}

static void visit_conv(Walker *wk, InitKind kind, const char *layer, int64_t cout, int64_t cin, int64_t k) {
    int64_t ws[4] = {cout, cin, k, k};
    visit(wk, kind, 4, ws, "%s.weight", layer);
    visit(wk, kind, 1, &cout, "%s.bias", layer);
}

static void visit_norm(Walker *wk, const char *layer, int64_t c) {
    visit(wk, INIT_NORM, 1, &c, "%s.weight", layer);
    visit(wk, INIT_NORM, 1, &c, "%s.bias", layer);
}

static void visit_resblock(Walker *wk, const char *prefix, int64_t cin, int64_t cout) {
    char layer[256];
    snprintf(layer, sizeof layer, "%s.norm1", prefix), visit_norm(wk, layer, cin);
    snprintf(layer, sizeof layer, "%s.conv1", prefix), visit_conv(wk, INIT_CONV, layer, cout, cin, 3);
    snprintf(layer, sizeof layer, "%s.norm2", prefix), visit_norm(wk, layer, cout);
    snprintf(layer, sizeof layer, "%s.conv2", prefix), visit_conv(wk, INIT_CONV, layer, cout, cout, 3);
    if (cin != cout) snprintf(layer, sizeof layer, "%s.conv_shortcut", prefix), visit_conv(wk, INIT_CONV, layer, cout, cin, 1);
}

static void walk(Walker *wk) {
    const DodDetailConfig *c = &wk->m->cfg;
    int L = c->n_levels, g = c->growth;
    for (int i = 0; i < L; i++) {
        int64_t C = dod_detail_dec_channels(c, i), enc = dod_detail_skip_channels(c, L - 1 - i);
        int64_t ss[4] = {C, enc, 1, 1};
        visit(wk, INIT_SKIP, 4, ss, "skip_convs.%d.weight", i);
        char prefix[256];
        snprintf(prefix, sizeof prefix, "fuse.%d.res_in", i), visit_resblock(wk, prefix, 2 * C, C);
        for (int r = 1; r <= 3; r++)
            for (int j = 1; j <= 5; j++) {
                snprintf(prefix, sizeof prefix, "fuse.%d.rrdb.rdb%d.conv%d", i, r, j);
                visit_conv(wk, INIT_RRDB, prefix, j < 5 ? g : C, C + (int64_t)(j - 1) * g, 3);
            }
        snprintf(prefix, sizeof prefix, "fuse.%d.res_out", i), visit_resblock(wk, prefix, C, C);
        int64_t one = 1;
        visit(wk, INIT_SCALAR, 1, &one, "fuse_weights.%d", i);
    }
}

static void setup(DodDetail *m, const DodDetailConfig *cfg, ParamStore *store, const char *prefix) {
    DOD_CHECK(cfg->n_levels >= 1 && cfg->n_levels <= SD_MAX_LEVELS && cfg->groups > 0 && cfg->growth > 0,
              "dod_detail", "config: %d levels, %d groups, growth %d", cfg->n_levels, cfg->groups, cfg->growth);
    for (int i = 0; i < cfg->n_levels; i++) {
        int C = dod_detail_dec_channels(cfg, i);
        DOD_CHECK(C % cfg->groups == 0, "dod_detail", "up block %d has %d channels, not divisible by %d groups", i, C,
                  cfg->groups);
    }
    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    m->ps = store;
    int len = snprintf(m->prefix, sizeof m->prefix, "%s", prefix ? prefix : "");
    DOD_CHECK(len >= 0 && len < (int)sizeof m->prefix, "dod_detail", "prefix %s too long", prefix);
}

void dod_detail_init(DodDetail *m, const DodDetailConfig *cfg, ParamStore *store, const char *prefix, uint64_t seed) {
    setup(m, cfg, store, prefix);
    Walker wk = {m, true, seed * 0x9E3779B97F4A7C15ull + 29, 0};
    walk(&wk);
}

void dod_detail_bind(DodDetail *m, const DodDetailConfig *cfg, ParamStore *store, const char *prefix) {
    setup(m, cfg, store, prefix);
    Walker wk = {m, false, 0, 0};
    walk(&wk);
}

// ---- forward -------------------------------------------------------------------------------------------
static Tensor *param(const DodDetail *m, const char *layer, const char *suffix) {
    char full[512];
    snprintf(full, sizeof full, "%s%s%s", m->prefix, layer, suffix);
    return params_require(m->ps, full, "dod_detail");
}

static Tensor *conv(const DodDetail *m, const char *layer, Tensor *x, int padding) {
    return op_conv2d(x, param(m, layer, ".weight"), param(m, layer, ".bias"), 1, padding);
}

// conv(silu(groupnorm(x))) with <prefix>.<norm> and <prefix>.<conv> (3x3), not keeping the conv's input
// (op_group_norm_silu_conv2d).
static Tensor *norm_silu_conv(const DodDetail *m, const char *prefix, const char *norm, const char *conv, Tensor *x) {
    char nl[256], cl[256];
    snprintf(nl, sizeof nl, "%s.%s", prefix, norm);
    snprintf(cl, sizeof cl, "%s.%s", prefix, conv);
    if (m->group_norm) {   // a replaced norm (tiled restoration): made, then the conv
        char full[512];
        snprintf(full, sizeof full, "%s%s", m->prefix, nl);
        Tensor *n = m->group_norm(m->group_norm_ctx, full, x, m->cfg.groups, m->cfg.eps, param(m, nl, ".weight"),
                                  param(m, nl, ".bias"));
        return op_conv2d(op_silu(n), param(m, cl, ".weight"), param(m, cl, ".bias"), 1, 1);
    }
    return op_group_norm_silu_conv2d(x, m->cfg.groups, param(m, nl, ".weight"), param(m, nl, ".bias"), m->cfg.eps,
                                     param(m, cl, ".weight"), param(m, cl, ".bias"), 1, 1);
}

static Tensor *resblock(const DodDetail *m, const char *prefix, Tensor *x) {
    char layer[256];
#define SUB(s) (snprintf(layer, sizeof layer, "%s.%s", prefix, s), layer)
    Tensor *h = norm_silu_conv(m, prefix, "norm1", "conv1", x);
    h = norm_silu_conv(m, prefix, "norm2", "conv2", h);
    Tensor *w = param(m, SUB("conv1"), ".weight");
    Tensor *shortcut = w->shape[0] != w->shape[1] ? conv(m, SUB("conv_shortcut"), x, 0) : x;
#undef SUB
    return op_add_into(h, shortcut);  // h, conv2's output, is read by nothing else
}

// conv(cat(feats[0..n)), padding 1) without keeping the concatenation (op_concat_conv2d).
static Tensor *dense_conv(const DodDetail *m, const char *layer, Tensor *const *feats, int n) {
    return op_concat_conv2d(feats, n, param(m, layer, ".weight"), param(m, layer, ".bias"), 1, 1);
}

static Tensor *rdb(const DodDetail *m, const char *prefix, Tensor *x) {
    Tensor *feats[5] = {x};
    char layer[320];
    for (int j = 1; j <= 4; j++) {
        snprintf(layer, sizeof layer, "%s.conv%d", prefix, j);
        feats[j] = op_leaky_relu(dense_conv(m, layer, feats, j), 0.2f);
    }
    snprintf(layer, sizeof layer, "%s.conv5", prefix);
    return op_scale_add_into(dense_conv(m, layer, feats, 5), 0.2f, x);  // 0.2 conv5 + x, in conv5's storage
}

static Tensor *rrdb(const DodDetail *m, const char *prefix, Tensor *x) {
    char sub[128];
    Tensor *h = x;
    for (int r = 1; r <= 3; r++) {
        snprintf(sub, sizeof sub, "%s.rdb%d", prefix, r);
        h = rdb(m, sub, h);
    }
    return op_scale_add_into(h, 0.2f, x);  // h, the last dense block's output, is read by nothing else
}

Tensor *dod_detail_fuse(const DodDetail *m, int i, Tensor *f, Tensor *dec) {
    int C = dod_detail_dec_channels(&m->cfg, i);
    DOD_CHECK(f->ndim == 4 && dec->ndim == 4 && f->shape[1] == C && dec->shape[1] == C && f->shape[0] == dec->shape[0] &&
                  f->shape[2] == dec->shape[2] && f->shape[3] == dec->shape[3],
              "dod_detail_fuse", "up block %d: skip %s and decoder %s must both be [N, %d, H, W]", i, shape_str(f),
              shape_str(dec), C);
    char prefix[64];
    Tensor *cat[2] = {f, dec};
    snprintf(prefix, sizeof prefix, "fuse.%d.res_in", i);
    Tensor *h = resblock(m, prefix, op_concat(cat, 2, 1));
    snprintf(prefix, sizeof prefix, "fuse.%d.rrdb", i);
    h = rrdb(m, prefix, h);
    snprintf(prefix, sizeof prefix, "fuse.%d.res_out", i);
    return resblock(m, prefix, h);
}

Tensor *dod_detail_apply(const DodDetail *m, int i, Tensor *skip, Tensor *dec) {
    char layer[64];
    snprintf(layer, sizeof layer, "skip_convs.%d", i);
    Tensor *f = op_conv2d(skip, param(m, layer, ".weight"), NULL, 1, 0);
    snprintf(layer, sizeof layer, "fuse_weights.%d", i);
    return op_add_into(op_mul(param(m, layer, ""), dod_detail_fuse(m, i, f, dec)), dec);
}

typedef struct {
    const DodDetail *m;
    int i;
} ApplyCtx;

static Tensor *apply_block(void *ctx, Tensor *const *in) {
    const ApplyCtx *c = ctx;
    return dod_detail_apply(c->m, c->i, in[0], in[1]);
}

Tensor *dod_detail_before_up(void *ctx, int i, Tensor *h) {
    const DodDetailCtx *c = ctx;
    int L = c->m->cfg.n_levels;
    DOD_CHECK(c->n_skips == L, "dod_detail_before_up", "%d skip features given, the detail module has %d levels",
              c->n_skips, L);
    DOD_CHECK(i >= 0 && i < L, "dod_detail_before_up", "up block %d outside 0..%d", i, L - 1);
    Tensor *skip = c->skips[L - 1 - i];
    DOD_CHECK(skip && skip->ndim == 4 && h->ndim == 4 && skip->shape[0] == h->shape[0] &&
                  skip->shape[2] == h->shape[2] && skip->shape[3] == h->shape[3],
              "dod_detail_before_up", "up block %d: skip feature s[%d] %s does not match the decoder's %s", i,
              L - 1 - i, skip ? shape_str(skip) : "NULL", shape_str(h));
    if (!c->recompute) return dod_detail_apply(c->m, i, skip, h);
    ApplyCtx *ac = arena_alloc(sizeof(ApplyCtx), "dod_detail recompute context");  // lives until the step ends
    ac->m = c->m;
    ac->i = i;
    Tensor *in[2] = {skip, h};
    return ag_checkpoint(apply_block, ac, 2, in);
}
