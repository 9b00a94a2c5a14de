// The guided-diffusion (ADM) encoder as DOD's degradation extractor; see adm_encoder.h. Reference:
// openai/guided-diffusion, guided_diffusion/unet.py (UNetModel, ResBlock, AttentionBlock,
// QKVAttentionLegacy, Downsample with use_conv False) and nn.py (GroupNorm32, timestep_embedding).
#include "layers/adm_encoder.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/ops.h"
#include "autograd/tape.h"
#include "layers/safetensors.h"
#include "layers/sd_blocks.h"
#include "layers/sd_weights.h"

#define ADM_EPS 1e-5f   // GroupNorm32's (nn.GroupNorm default)

AdmEncoderConfig adm_encoder_default_config(void) {
    return (AdmEncoderConfig){.num_res_blocks = 2, .head_channels = 64, .groups = 32, .timestep = 0.0f};
}

void adm_encoder_free(AdmEncoder *e) {
    if (!e) return;
    params_free(e->ps);
    free(e);
}

void adm_encoder_to_device(AdmEncoder *e, Device device) { params_to_device(e->ps, device); }

// ---- building: the file's tensors -> checked architecture, folded norms, derived attention weights ----

// Loader state: the file-named f32 tensors (src), the encoder being built, the first error.
typedef struct {
    ParamStore *src;
    AdmEncoder *e;
    DType dtype;
    char *err;
    size_t errlen;
    int failed;
    Tensor *emb_silu;   // SiLU(emb) [1, 4 C0], the constant input of every emb_layers
} Build;

static void fail(Build *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(Build *b, const char *fmt, ...) {
    if (b->failed++) return;   // the first problem is the one reported
    int k = snprintf(b->err, b->errlen, "%s: ", b->e->path);
    va_list ap;
    va_start(ap, fmt);
    if (k >= 0 && (size_t)k < b->errlen) vsnprintf(b->err + k, b->errlen - (size_t)k, fmt, ap);
    va_end(ap);
}

static const char *fmt_name(char out[SD_NAME_MAX], const char *prefix, const char *suffix) {
    return sd_fmt(out, "%s.%s", prefix, suffix);
}

// The source tensor prefix.suffix with shape (ndim, dims...); NULL after fail() when absent or misshapen.
static Tensor *need(Build *b, const char *prefix, const char *suffix, int ndim, ...) {
    char name[SD_NAME_MAX];
    fmt_name(name, prefix, suffix);
    Tensor *t = params_get(b->src, name);
    Tensor want = {.ndim = ndim};
    va_list ap;
    va_start(ap, ndim);
    for (int d = 0; d < ndim; d++) want.shape[d] = va_arg(ap, int64_t);
    va_end(ap);
    if (!t) {
        fail(b, "tensor %s is missing (a guided-diffusion UNetModel state dict with %d ResBlocks a level?)", name,
             b->e->cfg.num_res_blocks);
        return NULL;
    }
    if (!tensor_same_shape(t, &want)) {
        char s[96];
        snprintf(s, sizeof s, "%s", shape_str(t));
        fail(b, "tensor %s has shape %s, the architecture needs %s", name, s, shape_str(&want));
        return NULL;
    }
    return t;
}

// Moves src tensor prefix.suffix into the encoder under the same name; weights (ndim >= 2) as the
// frozen dtype, vectors f32.
static void keep(Build *b, const char *prefix, const char *suffix) {
    char name[SD_NAME_MAX];
    fmt_name(name, prefix, suffix);
    Tensor *t = params_get(b->src, name);
    Tensor *copy = tensor_new_persistent(name, t->ndim, t->shape, DT_F32);
    memcpy(copy->data, tensor_data_f32(t), sizeof(float) * (size_t)t->numel);
    if (t->ndim >= 2 && b->dtype != DT_F32) tensor_convert_dtype(copy, b->dtype);
    params_add(b->e->ps, name, copy);
}

// A new encoder tensor (f32, or the frozen dtype for 2-d weights) filled from host floats.
static Tensor *add_derived(Build *b, const char *prefix, const char *suffix, int ndim, const int64_t *shape,
                           const float *v) {
    char name[SD_NAME_MAX];
    fmt_name(name, prefix, suffix);
    Tensor *t = tensor_new_persistent(name, ndim, shape, DT_F32);
    memcpy(t->data, v, sizeof(float) * (size_t)t->numel);
    if (ndim >= 2 && b->dtype != DT_F32) tensor_convert_dtype(t, b->dtype);
    return params_add(b->e->ps, name, t);
}

static void check_groups(Build *b, const char *prefix, int64_t c) {
    if (c % b->e->cfg.groups)
        fail(b, "%s: %lld channels are not divisible by %d norm groups", prefix, (long long)c, b->e->cfg.groups);
}

// A ResBlock (scale-shift norm) from cin to cout: checked, kept, its emb projection folded into the
// second norm as out_layers.0.folded_{weight,bias} (adm_encoder.h).
static void build_resblock(Build *b, const char *p, int64_t cin, int64_t cout) {
    if (b->failed) return;
    int64_t emb = 4 * (int64_t)b->e->base_channels;
    check_groups(b, p, cin);
    check_groups(b, p, cout);
    char name[SD_NAME_MAX];
    Tensor *plain = params_get(b->src, fmt_name(name, p, "emb_layers.1.weight"));
    if (plain && plain->ndim == 2 && plain->shape[0] == cout) {
        fail(b, "tensor %s is %s: a model without use_scale_shift_norm, which is not supported", name, shape_str(plain));
        return;
    }
    Tensor *ew = need(b, p, "emb_layers.1.weight", 2, 2 * cout, emb);
    Tensor *eb = need(b, p, "emb_layers.1.bias", 1, 2 * cout);
    Tensor *g = need(b, p, "out_layers.0.weight", 1, cout), *be = need(b, p, "out_layers.0.bias", 1, cout);
    need(b, p, "in_layers.0.weight", 1, cin);
    need(b, p, "in_layers.0.bias", 1, cin);
    need(b, p, "in_layers.2.weight", 4, cout, cin, (int64_t)3, (int64_t)3);
    need(b, p, "in_layers.2.bias", 1, cout);
    need(b, p, "out_layers.3.weight", 4, cout, cout, (int64_t)3, (int64_t)3);
    need(b, p, "out_layers.3.bias", 1, cout);
    bool skip = cin != cout;
    if (skip) {
        need(b, p, "skip_connection.weight", 4, cout, cin, (int64_t)1, (int64_t)1);
        need(b, p, "skip_connection.bias", 1, cout);
    }
    if (b->failed) return;
    keep(b, p, "in_layers.0.weight");
    keep(b, p, "in_layers.0.bias");
    keep(b, p, "in_layers.2.weight");
    keep(b, p, "in_layers.2.bias");
    keep(b, p, "out_layers.3.weight");
    keep(b, p, "out_layers.3.bias");
    if (skip) {
        keep(b, p, "skip_connection.weight");
        keep(b, p, "skip_connection.bias");
    }
    // [scale; shift] = emb_layers(emb); GN(h) (1 + scale) + shift = xhat (g (1 + scale)) + (be (1 + scale) + shift).
    size_t mark = arena_mark();
    const float *ss = tensor_f32(op_linear(b->emb_silu, ew, eb));
    float *fw = dod_malloc(sizeof(float) * 2 * (size_t)cout, "adm folded norm");
    const float *gv = tensor_data_f32(g), *bv = tensor_data_f32(be);
    for (int64_t c = 0; c < cout; c++) {
        float s = 1.0f + ss[c];
        fw[c] = gv[c] * s;
        fw[cout + c] = bv[c] * s + ss[cout + c];
    }
    arena_release(mark);
    add_derived(b, p, "out_layers.0.folded_weight", 1, &cout, fw);
    add_derived(b, p, "out_layers.0.folded_bias", 1, &cout, fw + cout);
    free(fw);
}

// An AttentionBlock of c channels: q, k, v split out of the legacy qkv conv (per head: q, k, v rows of
// head_channels each) into q.{weight,bias} etc. in head-major order, proj_out as a [c, c] linear.
static void build_attention(Build *b, const char *p, int64_t c) {
    if (b->failed) return;
    int hc = b->e->cfg.head_channels;
    check_groups(b, p, c);
    if (c % hc) fail(b, "%s: %lld channels are not divisible by head_channels %d", p, (long long)c, hc);
    Tensor *qw = need(b, p, "qkv.weight", 3, 3 * c, c, (int64_t)1), *qb = need(b, p, "qkv.bias", 1, 3 * c);
    Tensor *pw = need(b, p, "proj_out.weight", 3, c, c, (int64_t)1);
    need(b, p, "proj_out.bias", 1, c);
    need(b, p, "norm.weight", 1, c);
    need(b, p, "norm.bias", 1, c);
    if (b->failed) return;
    keep(b, p, "norm.weight");
    keep(b, p, "norm.bias");
    keep(b, p, "proj_out.bias");
    int64_t heads = c / hc, shape2[2] = {c, c};
    add_derived(b, p, "proj_out.linear_weight", 2, shape2, tensor_data_f32(pw));
    const float *w = tensor_data_f32(qw), *bias = tensor_data_f32(qb);
    float *dw = dod_malloc(sizeof(float) * (size_t)(c * c), "adm attention weight");
    float *db = dod_malloc(sizeof(float) * (size_t)c, "adm attention bias");
    static const char *const part[3] = {"q", "k", "v"};
    for (int which = 0; which < 3; which++) {
        for (int64_t h = 0; h < heads; h++)
            for (int64_t i = 0; i < hc; i++) {   // legacy row h * 3 hc + which * hc + i -> row h * hc + i
                int64_t src = h * 3 * hc + which * hc + i, dst = h * hc + i;
                memcpy(dw + dst * c, w + src * c, sizeof(float) * (size_t)c);
                db[dst] = bias[src];
            }
        char suffix[16];
        snprintf(suffix, sizeof suffix, "%s.weight", part[which]);
        add_derived(b, p, suffix, 2, shape2, dw);
        snprintf(suffix, sizeof suffix, "%s.bias", part[which]);
        add_derived(b, p, suffix, 1, &c, db);
    }
    free(dw);
    free(db);
}

// SiLU(time_embed(timestep_embedding(t, C0))) [1, 4 C0] (arena, CPU).
static void build_time_embedding(Build *b) {
    int64_t c0 = b->e->base_channels;
    Tensor *w0 = need(b, "time_embed", "0.weight", 2, 4 * c0, c0), *b0 = need(b, "time_embed", "0.bias", 1, 4 * c0);
    Tensor *w2 = need(b, "time_embed", "2.weight", 2, 4 * c0, 4 * c0), *b2 = need(b, "time_embed", "2.bias", 1, 4 * c0);
    if (b->failed) return;
    // guided-diffusion's timestep_embedding: [cos(t f_i), sin(t f_i)], f_i = exp(-ln(10000) i / half):
    // diffusers' form with flip_sin_to_cos and no frequency shift.
    Tensor *t = op_timestep_embedding(&b->e->cfg.timestep, 1, (int)c0, true, 0.0f);
    Tensor *emb = op_linear(op_silu(op_linear(t, w0, b0)), w2, b2);
    b->emb_silu = op_silu(emb);
}

// The file's architecture (adm_encoder.h): block list, widths, attention; every tensor checked.
static void build_blocks(Build *b) {
    AdmEncoder *e = b->e;
    Tensor *w_in = params_get(b->src, "input_blocks.0.0.weight");
    if (!w_in || w_in->ndim != 4 || w_in->shape[1] != 3 || w_in->shape[2] != 3 || w_in->shape[3] != 3) {
        fail(b, "no input_blocks.0.0.weight of shape [C, 3, 3, 3]: not a guided-diffusion UNetModel for RGB images");
        return;
    }
    if (params_get(b->src, "label_emb.weight")) {
        fail(b, "holds label_emb.weight: a class-conditional model, which needs class labels (use the unconditional "
                "256x256_diffusion_uncond.pt)");
        return;
    }
    e->base_channels = (int)w_in->shape[0];
    if (!need(b, "input_blocks.0.0", "bias", 1, (int64_t)e->base_channels)) return;
    keep(b, "input_blocks.0.0", "weight");
    keep(b, "input_blocks.0.0", "bias");
    e->block[0] = (AdmBlock){.level = -1, .cin = 3, .cout = e->base_channels};
    int nrb = e->cfg.num_res_blocks, n = 1;
    char name[SD_NAME_MAX];
    while (params_get(b->src, sd_fmt(name, "input_blocks.%d.0.in_layers.2.weight", n))) n++;
    if (params_get(b->src, sd_fmt(name, "input_blocks.%d.0.op.weight", n))) {
        fail(b, "holds %s: a convolution downsampler (resblock_updown False), which is not supported", name);
        return;
    }
    if (n < 2 || n % (nrb + 1) != 0 || n / (nrb + 1) > ADM_MAX_LEVELS) {
        fail(b, "%d input blocks do not make levels of %d ResBlocks plus a downsampling block (num_res_blocks)", n, nrb);
        return;
    }
    e->n_levels = n / (nrb + 1);
    e->n_blocks = n;
    build_time_embedding(b);
    int64_t ch = e->base_channels;
    for (int i = 1; i < n && !b->failed; i++) {
        AdmBlock *blk = &e->block[i];
        blk->level = (i - 1) / (nrb + 1);
        blk->down = (i - 1) % (nrb + 1) == nrb;
        Tensor *conv = params_get(b->src, sd_fmt(name, "input_blocks.%d.0.in_layers.2.weight", i));
        blk->cin = (int)ch;
        blk->cout = (int)(blk->down ? ch : conv->shape[0]);
        char p[SD_NAME_MAX];
        sd_fmt(p, "input_blocks.%d.0", i);
        build_resblock(b, p, blk->cin, blk->cout);
        blk->attention = params_get(b->src, sd_fmt(name, "input_blocks.%d.1.qkv.weight", i)) != NULL;
        if (blk->attention && blk->down) fail(b, "%s: a downsampling block with attention", name);
        if (blk->attention) build_attention(b, sd_fmt(p, "input_blocks.%d.1", i), blk->cout);
        ch = blk->cout;
    }
    build_resblock(b, "middle_block.0", ch, ch);
    build_attention(b, "middle_block.1", ch);
    build_resblock(b, "middle_block.2", ch, ch);
    e->out_channels = (int)ch;
}

AdmEncoder *adm_encoder_from_tensors(ParamStore *ps, const AdmEncoderConfig *cfg, DType dtype, const char *name,
                                     char *err, size_t errlen) {
    AdmEncoder *e = dod_calloc(sizeof(AdmEncoder), "adm encoder");
    e->cfg = *cfg;
    snprintf(e->path, sizeof e->path, "%s", name);
    e->ps = params_new();
    Build b = {.src = ps, .e = e, .dtype = dtype, .err = err, .errlen = errlen};
    if (cfg->num_res_blocks < 1 || cfg->head_channels < 1 || cfg->groups < 1)
        fail(&b, "config: num_res_blocks %d, head_channels %d, groups %d must be positive", cfg->num_res_blocks,
             cfg->head_channels, cfg->groups);
    if (dtype != DT_F32 && dtype != DT_BF16) fail(&b, "frozen dtype must be f32 or bf16, got %s", dtype_name(dtype));
    bool prev = ag_set_grad_enabled(false);
    size_t mark = arena_mark();
    if (!b.failed) build_blocks(&b);
    arena_release(mark);
    ag_set_grad_enabled(prev);
    params_free(ps);
    if (b.failed) {
        adm_encoder_free(e);
        return NULL;
    }
    return e;
}

static bool encoder_tensor(const char *name) {
    return !strncmp(name, "time_embed.", 11) || !strncmp(name, "input_blocks.", 13) ||
           !strncmp(name, "middle_block.", 13) || !strcmp(name, "label_emb.weight");
}

AdmEncoder *adm_encoder_load(const char *path, const AdmEncoderConfig *cfg, DType dtype, char *err, size_t errlen) {
    SafeTensors *st;
    char msg[ST_ERR_LEN];
    if (tensor_file_open(path, &st, msg) != ST_OK) {
        snprintf(err, errlen, "%s", msg);
        return NULL;
    }
    ParamStore *ps = params_new();
    for (int i = 0; i < safetensors_count(st); i++) {
        const StEntry *en = safetensors_entry(st, i);
        if (!encoder_tensor(en->name)) continue;   // output_blocks.*, out.*: the decoder half is never read
        Tensor *t;
        if (safetensors_tensor(st, en, DT_F32, en->name, &t, msg) != ST_OK) {
            snprintf(err, errlen, "%s", msg);
            params_free(ps);
            safetensors_close(st);
            return NULL;
        }
        sd_tensor_make_owned(t);   // a view into a safetensors mapping: copied before the file closes
        params_add(ps, en->name, t);
    }
    safetensors_close(st);
    return adm_encoder_from_tensors(ps, cfg, dtype, path, err, errlen);
}

// ---- the table of a UNetModel's encoder tensors, with random values ---------------------------------
typedef struct {
    ParamStore *ps;
    uint64_t seed;
} RandomTable;

static void add_random(RandomTable *r, const char *prefix, const char *suffix, int ndim, const int64_t *shape,
                       int kind) {   // kind 0: weight, 1: bias, 2: norm weight
    char name[SD_NAME_MAX];
    fmt_name(name, prefix, suffix);
    Tensor *t = tensor_new_persistent(name, ndim, shape, DT_F32);
    int64_t fan_in = ndim >= 2 ? t->numel / shape[0] : 1;
    tensor_randn(t, r->seed++, kind == 0 ? (float)(1.0 / sqrt((double)fan_in)) : 0.01f);
    if (kind == 2)
        for (int64_t i = 0; i < t->numel; i++) tensor_data_f32(t)[i] += 1.0f;
    params_add(r->ps, name, t);
}

static void random_norm(RandomTable *r, const char *p, const char *which, int64_t c) {
    char s[64];
    snprintf(s, sizeof s, "%s.weight", which);
    add_random(r, p, s, 1, &c, 2);
    snprintf(s, sizeof s, "%s.bias", which);
    add_random(r, p, s, 1, &c, 1);
}

static void random_resblock(RandomTable *r, const char *p, int64_t cin, int64_t cout, int64_t emb) {
    random_norm(r, p, "in_layers.0", cin);
    add_random(r, p, "in_layers.2.weight", 4, (int64_t[]){cout, cin, 3, 3}, 0);
    add_random(r, p, "in_layers.2.bias", 1, &cout, 1);
    add_random(r, p, "emb_layers.1.weight", 2, (int64_t[]){2 * cout, emb}, 0);
    add_random(r, p, "emb_layers.1.bias", 1, (int64_t[]){2 * cout}, 1);
    random_norm(r, p, "out_layers.0", cout);
    add_random(r, p, "out_layers.3.weight", 4, (int64_t[]){cout, cout, 3, 3}, 0);
    add_random(r, p, "out_layers.3.bias", 1, &cout, 1);
    if (cin != cout) {
        add_random(r, p, "skip_connection.weight", 4, (int64_t[]){cout, cin, 1, 1}, 0);
        add_random(r, p, "skip_connection.bias", 1, &cout, 1);
    }
}

static void random_attention(RandomTable *r, const char *p, int64_t c) {
    random_norm(r, p, "norm", c);
    add_random(r, p, "qkv.weight", 3, (int64_t[]){3 * c, c, 1}, 0);
    add_random(r, p, "qkv.bias", 1, (int64_t[]){3 * c}, 1);
    add_random(r, p, "proj_out.weight", 3, (int64_t[]){c, c, 1}, 0);
    add_random(r, p, "proj_out.bias", 1, &c, 1);
}

ParamStore *adm_encoder_random_tensors(const AdmEncoderConfig *cfg, int c0, const int *channel_mult, int n_levels,
                                       const bool *attention_level, uint64_t seed) {
    DOD_CHECK(c0 > 0 && n_levels > 0 && n_levels <= ADM_MAX_LEVELS, "adm_encoder_random_tensors",
              "base width %d, %d levels", c0, n_levels);
    RandomTable r = {params_new(), seed};
    int64_t emb = 4 * (int64_t)c0, ch = c0;
    add_random(&r, "time_embed", "0.weight", 2, (int64_t[]){emb, c0}, 0);
    add_random(&r, "time_embed", "0.bias", 1, &emb, 1);
    add_random(&r, "time_embed", "2.weight", 2, (int64_t[]){emb, emb}, 0);
    add_random(&r, "time_embed", "2.bias", 1, &emb, 1);
    add_random(&r, "input_blocks.0.0", "weight", 4, (int64_t[]){c0, 3, 3, 3}, 0);
    add_random(&r, "input_blocks.0.0", "bias", 1, &ch, 1);
    int i = 1;
    char p[SD_NAME_MAX];
    for (int l = 0; l < n_levels; l++) {
        int64_t cout = (int64_t)channel_mult[l] * c0;
        for (int k = 0; k < cfg->num_res_blocks; k++, i++) {
            random_resblock(&r, sd_fmt(p, "input_blocks.%d.0", i), ch, cout, emb);
            ch = cout;
            if (attention_level[l]) random_attention(&r, sd_fmt(p, "input_blocks.%d.1", i), ch);
        }
        if (l < n_levels - 1) random_resblock(&r, sd_fmt(p, "input_blocks.%d.0", i++), ch, ch, emb);
    }
    random_resblock(&r, "middle_block.0", ch, ch, emb);
    random_attention(&r, "middle_block.1", ch);
    random_resblock(&r, "middle_block.2", ch, ch, emb);
    return r.ps;
}

// ---- forward --------------------------------------------------------------------------------------------
typedef struct {
    AdmEncoder *e;
    int unit;   // 0: conv_in; 1..n_blocks-1: input blocks; n_blocks + 0/1/2: middle ResBlock, attention, ResBlock
} UnitCtx;

static Tensor *param(AdmEncoder *e, const char *prefix, const char *suffix) {
    char name[SD_NAME_MAX];
    return params_require(e->ps, fmt_name(name, prefix, suffix), e->path);
}

// 2x2 average pool, stride 2, floor (torch AvgPool2d(2)): the mean of four strided gathers.
static Tensor *avg_pool2(Tensor *x) {
    int64_t oh = x->shape[2] / 2, ow = x->shape[3] / 2;
    int64_t *idx = arena_alloc(sizeof(int64_t) * (size_t)(2 * (oh + ow)), "adm avg pool index");
    int64_t *y0 = idx, *y1 = idx + oh, *x0 = idx + 2 * oh, *x1 = idx + 2 * oh + ow;
    for (int64_t i = 0; i < oh; i++) y0[i] = 2 * i, y1[i] = 2 * i + 1;
    for (int64_t j = 0; j < ow; j++) x0[j] = 2 * j, x1[j] = 2 * j + 1;
    Tensor *s = op_add(op_gather_hw(x, y0, oh, x0, ow), op_gather_hw(x, y0, oh, x1, ow));
    s = op_add_into(s, op_gather_hw(x, y1, oh, x0, ow));
    s = op_add_into(s, op_gather_hw(x, y1, oh, x1, ow));
    return op_scale(s, 0.25f);
}

static Tensor *resblock(AdmEncoder *e, const char *p, Tensor *x, bool down, int cout) {
    int g = e->cfg.groups;
    Tensor *w1 = param(e, p, "in_layers.2.weight"), *b1 = param(e, p, "in_layers.2.bias");
    Tensor *g1 = param(e, p, "in_layers.0.weight"), *be1 = param(e, p, "in_layers.0.bias");
    Tensor *h;
    if (down) {   // in_rest -> h_upd (avg pool) -> in_conv; x_upd pools x the same way
        h = op_conv2d(avg_pool2(op_group_norm_silu(x, g, g1, be1, ADM_EPS)), w1, b1, 1, 1);
        x = avg_pool2(x);
    } else {
        h = op_group_norm_silu_conv2d(x, g, g1, be1, ADM_EPS, w1, b1, 1, 1);
    }
    h = op_group_norm_silu_conv2d(h, g, param(e, p, "out_layers.0.folded_weight"), param(e, p, "out_layers.0.folded_bias"),
                                  ADM_EPS, param(e, p, "out_layers.3.weight"), param(e, p, "out_layers.3.bias"), 1, 1);
    Tensor *skip = x->shape[1] == cout ? x
                                       : op_conv2d(x, param(e, p, "skip_connection.weight"),
                                                   param(e, p, "skip_connection.bias"), 1, 0);
    return op_add_into(h, skip);
}

static Tensor *attention(AdmEncoder *e, const char *p, Tensor *x) {
    int64_t c = x->shape[1], hh = x->shape[2], ww = x->shape[3];
    Tensor *n = sd_nchw_to_tokens(op_group_norm(x, e->cfg.groups, param(e, p, "norm.weight"), param(e, p, "norm.bias"),
                                                ADM_EPS));
    Tensor *q = op_linear(n, param(e, p, "q.weight"), param(e, p, "q.bias"));
    Tensor *k = op_linear(n, param(e, p, "k.weight"), param(e, p, "k.bias"));
    Tensor *v = op_linear(n, param(e, p, "v.weight"), param(e, p, "v.bias"));
    int hc = e->cfg.head_channels;
    Tensor *a = op_attention(q, k, v, (int)(c / hc), 1.0f / sqrtf((float)hc));
    Tensor *o = op_linear(a, param(e, p, "proj_out.linear_weight"), param(e, p, "proj_out.bias"));
    return op_add_into(sd_tokens_to_nchw(o, hh, ww), x);
}

static Tensor *run_unit(void *vctx, Tensor *const *in) {
    const UnitCtx *u = vctx;
    AdmEncoder *e = u->e;
    char p[SD_NAME_MAX];
    if (u->unit == 0) return op_conv2d(in[0], param(e, "input_blocks.0.0", "weight"), param(e, "input_blocks.0.0", "bias"), 1, 1);
    if (u->unit < e->n_blocks) {
        const AdmBlock *blk = &e->block[u->unit];
        Tensor *h = resblock(e, sd_fmt(p, "input_blocks.%d.0", u->unit), in[0], blk->down, blk->cout);
        return blk->attention ? attention(e, sd_fmt(p, "input_blocks.%d.1", u->unit), h) : h;
    }
    int m = u->unit - e->n_blocks;
    if (m == 1) return attention(e, "middle_block.1", in[0]);
    return resblock(e, m == 0 ? "middle_block.0" : "middle_block.2", in[0], false, e->out_channels);
}

// Runs the units one after the other, each output taking the place of the previous one: the arena
// (host, and the device arena on CUDA) is rewound to where it stood before the first unit after each,
// and the output is parked outside it meanwhile (as ag_run_keeping_output does for one unit, whose
// input would stay below its mark). A forward holds x, one output and one unit's internals.
static Tensor *run_units(AdmEncoder *e, Tensor *x) {
    Device dev = x->device;
    size_t host_mark = arena_mark();
    ScratchScope dev_mark = scratch_begin(dev);
    Tensor *h = x;
    for (int unit = 0; unit < e->n_blocks + 3; unit++) {
        UnitCtx u = {e, unit};
        Tensor *out = run_unit(&u, &h);
        size_t bytes = (size_t)out->numel * dtype_size(out->dtype);
        int64_t shape[TENSOR_MAX_DIMS];
        memcpy(shape, out->shape, sizeof shape);
        int ndim = out->ndim;
        DType dtype = out->dtype;
        void *parked = device_malloc(dev, bytes, "adm block output");
        device_copy(parked, dev, out->data, dev, bytes);
        scratch_end(dev_mark);
        arena_release(host_mark);
        h = tensor_new_on(dev, ndim, shape, dtype);
        device_copy(h->data, dev, parked, dev, bytes);
        device_free(dev, parked);
    }
    return h;
}

Tensor *adm_encoder_middle(AdmEncoder *e, Tensor *x) {
    int64_t min_size = (int64_t)1 << (e->n_levels - 1);
    DOD_CHECK(x->ndim == 4 && x->shape[1] == 3 && x->shape[0] > 0, "adm_encoder", "image %s must be [N, 3, H, W] (%s)",
              shape_str(x), e->path);
    DOD_CHECK(x->shape[2] >= min_size && x->shape[3] >= min_size, "adm_encoder",
              "image %s is smaller than %ld x %ld, the least size %d downsamplings leave a pixel of (%s)", shape_str(x),
              (long)min_size, (long)min_size, e->n_levels - 1, e->path);
    bool prev = ag_set_grad_enabled(false);
    Tensor *h = run_units(e, x);
    ag_set_grad_enabled(prev);
    return h;
}

Tensor *adm_encoder_features(AdmEncoder *e, Tensor *x) {
    Tensor *mid = adm_encoder_middle(e, x);
    bool prev = ag_set_grad_enabled(false);
    Tensor *d = op_global_avg_pool(mid);
    ag_set_grad_enabled(prev);
    return d;
}

Tensor *adm_encoder_extract(void *ctx, Tensor *y) { return adm_encoder_features(ctx, y); }
