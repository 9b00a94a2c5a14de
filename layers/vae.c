// AutoencoderKL forward (diffusers 0.21.4); see vae.h. Loading lives in sd_model_load.c.
#include "layers/vae.h"

#include <stdio.h>
#include <string.h>

#define VAE_EPS 1e-6f  // diffusers hard-codes GroupNorm eps 1e-6 in the VAE

typedef enum { UNIT_RESNET, UNIT_DOWN, UNIT_UP, UNIT_MID } UnitKind;

// One recomputable unit (arena-allocated when run through ag_checkpoint).
typedef struct {
    const Vae *m;
    UnitKind kind;
    char prefix[SD_NAME_MAX];   // module name, e.g. "encoder.down_blocks.1.resnets.0"
} VaeUnit;

// inputs: h. UNetMidBlock2D without time embedding: resnets.0, attentions.0, resnets.1.
static Tensor *mid_block(const Vae *m, const char *prefix, Tensor *h) {
    char name[SD_NAME_MAX];
    int groups = m->cfg.norm_num_groups;
    sd_fmt(name, "%s.resnets.0", prefix);
    h = sd_resnet(&m->net, name, h, NULL, groups, VAE_EPS, 1.0f);
    if (m->cfg.mid_block_add_attention) {
        // attention_head_dim = channels, so one head over all channels.
        sd_fmt(name, "%s.attentions.0", prefix);
        h = sd_spatial_attention(&m->net, name, h, 1, groups, VAE_EPS, 1.0f);
    }
    sd_fmt(name, "%s.resnets.1", prefix);
    return sd_resnet(&m->net, name, h, NULL, groups, VAE_EPS, 1.0f);
}

static Tensor *unit_fn(void *vctx, Tensor *const *in) {
    const VaeUnit *u = vctx;
    switch (u->kind) {
    case UNIT_RESNET: return sd_resnet(&u->m->net, u->prefix, in[0], NULL, u->m->cfg.norm_num_groups, VAE_EPS, 1.0f);
    case UNIT_DOWN: return sd_downsample(&u->m->net, u->prefix, in[0], 0);
    case UNIT_UP: return sd_upsample(&u->m->net, u->prefix, in[0], 0, 0);
    case UNIT_MID: return mid_block(u->m, u->prefix, in[0]);
    }
    dod_fatal("vae", "unknown unit kind %d", (int)u->kind);
}

static Tensor *run_unit(const Vae *m, UnitKind kind, const char *prefix, Tensor *h, const VaeOptions *opt) {
    VaeUnit local = {.m = m, .kind = kind};
    sd_fmt(local.prefix, "%s", prefix);
    bool recompute = opt && opt->recompute_blocks;
    VaeUnit *u = &local;
    if (recompute && ag_grad_enabled()) {  // backward re-runs the unit: its context must outlive us
        u = arena_alloc(sizeof(VaeUnit), "vae checkpoint context");
        *u = local;
    }
    return sd_run_block(unit_fn, u, 1, &h, recompute);
}

void vae_encode(const Vae *m, Tensor *image, bool want_skips, const VaeOptions *opt, VaeEncoded *out) {
    const SdVaeConfig *cfg = &m->cfg;
    DOD_CHECK(image->ndim == 4 && image->shape[1] == cfg->in_channels, "vae_encode",
              "image %s must be [N, %d, H, W] (%s)", shape_str(image), cfg->in_channels, cfg->path);
    memset(out, 0, sizeof *out);
    char name[SD_NAME_MAX];
    Tensor *h = sd_conv(&m->net, "encoder.conv_in", image, 1, 1);
    for (int i = 0; i < cfg->n_levels; i++) {
        if (want_skips) out->skips[out->n_skips++] = h;
        for (int j = 0; j < cfg->layers_per_block; j++) {
            sd_fmt(name, "encoder.down_blocks.%d.resnets.%d", i, j);
            h = run_unit(m, UNIT_RESNET, name, h, opt);
        }
        if (i < cfg->n_levels - 1) {
            sd_fmt(name, "encoder.down_blocks.%d.downsamplers.0", i);
            h = run_unit(m, UNIT_DOWN, name, h, opt);
        }
    }
    h = run_unit(m, UNIT_MID, "encoder.mid_block", h, opt);
    h = sd_group_norm_silu_conv(&m->net, "encoder.conv_norm_out", "encoder.conv_out", h, cfg->norm_num_groups, VAE_EPS,
                                1, 1);
    if (cfg->use_quant_conv) h = sd_conv(&m->net, "quant_conv", h, 1, 0);
    DOD_CHECK(h->shape[1] == 2 * cfg->latent_channels, "vae_encode", "moments have %ld channels, expected 2 x %d (%s)",
              (long)h->shape[1], cfg->latent_channels, cfg->path);
    Tensor *parts[2];
    op_chunk(h, 2, 1, parts);
    out->mean = parts[0];
    out->logvar = op_clamp(parts[1], -30.0f, 20.0f);  // DiagonalGaussianDistribution clamps logvar
}

Tensor *vae_decode(const Vae *m, Tensor *latent, VaeBeforeUpFn before_up, void *before_up_ctx, const VaeOptions *opt) {
    const SdVaeConfig *cfg = &m->cfg;
    DOD_CHECK(latent->ndim == 4 && latent->shape[1] == cfg->latent_channels, "vae_decode",
              "latent %s must be [N, %d, h, w] (%s)", shape_str(latent), cfg->latent_channels, cfg->path);
    char name[SD_NAME_MAX];
    Tensor *h = latent;
    if (cfg->use_post_quant_conv) h = sd_conv(&m->net, "post_quant_conv", h, 1, 0);
    h = sd_conv(&m->net, "decoder.conv_in", h, 1, 1);
    h = run_unit(m, UNIT_MID, "decoder.mid_block", h, opt);
    for (int i = 0; i < cfg->n_levels; i++) {
        if (before_up) {
            h = before_up(before_up_ctx, i, h);
            DOD_CHECK(h != NULL, "vae_decode", "before_up hook returned NULL for up block %d", i);
        }
        for (int j = 0; j < cfg->layers_per_block + 1; j++) {
            sd_fmt(name, "decoder.up_blocks.%d.resnets.%d", i, j);
            h = run_unit(m, UNIT_RESNET, name, h, opt);
        }
        if (i < cfg->n_levels - 1) {
            sd_fmt(name, "decoder.up_blocks.%d.upsamplers.0", i);
            h = run_unit(m, UNIT_UP, name, h, opt);
        }
    }
    return sd_group_norm_silu_conv(&m->net, "decoder.conv_norm_out", "decoder.conv_out", h, cfg->norm_num_groups,
                                   VAE_EPS, 1, 1);
}
