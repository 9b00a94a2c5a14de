// UNet2DConditionModel forward (diffusers 0.21.4); see unet.h. Loading lives in sd_model_load.c.
#include "layers/unet.h"

#include <stdio.h>
#include <stdlib.h>

// One recomputable unit of the network: a resnet (+ its transformer), a sampler, or the mid block.
// Allocated in the arena because ag_checkpoint re-runs it during backward.
typedef struct {
    const Unet *m;
    int block, layer;        // up/down block index and layer inside it
    int64_t out_h, out_w;    // up sampler target size
} UnitCtx;

static int resnet_groups(const Unet *m) { return m->cfg.norm_num_groups; }

// inputs: h, temb, context
static Tensor *down_layer(void *vctx, Tensor *const *in) {
    const UnitCtx *c = vctx;
    const Unet *m = c->m;
    char prefix[SD_NAME_MAX];
    sd_fmt(prefix, "down_blocks.%d.resnets.%d", c->block, c->layer);
    Tensor *h = sd_resnet(&m->net, prefix, in[0], in[1], resnet_groups(m), m->cfg.norm_eps, 1.0f);
    if (m->cfg.down_attn[c->block]) {
        sd_fmt(prefix, "down_blocks.%d.attentions.%d", c->block, c->layer);
        h = sd_transformer2d(&m->net, prefix, h, in[2], m->cfg.num_heads[c->block], resnet_groups(m),
                             m->cfg.transformer_layers[c->block]);
    }
    return h;
}

// inputs: h
static Tensor *down_sampler(void *vctx, Tensor *const *in) {
    const UnitCtx *c = vctx;
    char prefix[SD_NAME_MAX];
    sd_fmt(prefix, "down_blocks.%d.downsamplers.0", c->block);
    return sd_downsample(&c->m->net, prefix, in[0], c->m->cfg.downsample_padding);
}

// inputs: h, temb, context. UNetMidBlock2DCrossAttn: resnets.0, then (attentions.i, resnets.i+1).
static Tensor *mid_block(void *vctx, Tensor *const *in) {
    const UnitCtx *c = vctx;
    const Unet *m = c->m;
    int last = m->cfg.n_levels - 1;
    float scale = m->cfg.mid_block_scale_factor;
    Tensor *h = sd_resnet(&m->net, "mid_block.resnets.0", in[0], in[1], resnet_groups(m), m->cfg.norm_eps, scale);
    char prefix[SD_NAME_MAX];
    for (int i = 0;; i++) {
        sd_fmt(prefix, "mid_block.attentions.%d.proj_in", i);
        if (!sd_has_layer(&m->net, prefix)) break;
        sd_fmt(prefix, "mid_block.attentions.%d", i);
        h = sd_transformer2d(&m->net, prefix, h, in[2], m->cfg.num_heads[last], resnet_groups(m),
                             m->cfg.transformer_layers[last]);
        sd_fmt(prefix, "mid_block.resnets.%d", i + 1);
        h = sd_resnet(&m->net, prefix, h, in[1], resnet_groups(m), m->cfg.norm_eps, scale);
    }
    return h;
}

// inputs: h, skip, temb, context. cat([h, skip], channels) -> resnet (+ transformer).
static Tensor *up_layer(void *vctx, Tensor *const *in) {
    const UnitCtx *c = vctx;
    const Unet *m = c->m;
    int level = m->cfg.n_levels - 1 - c->block;  // the down level this up block mirrors
    Tensor *pair[2] = {in[0], in[1]};
    Tensor *h = op_concat(pair, 2, 1);
    char prefix[SD_NAME_MAX];
    sd_fmt(prefix, "up_blocks.%d.resnets.%d", c->block, c->layer);
    h = sd_resnet(&m->net, prefix, h, in[2], resnet_groups(m), m->cfg.norm_eps, 1.0f);
    if (m->cfg.up_attn[c->block]) {
        sd_fmt(prefix, "up_blocks.%d.attentions.%d", c->block, c->layer);
        h = sd_transformer2d(&m->net, prefix, h, in[3], m->cfg.num_heads[level], resnet_groups(m),
                             m->cfg.transformer_layers[level]);
    }
    return h;
}

// inputs: h
static Tensor *up_sampler(void *vctx, Tensor *const *in) {
    const UnitCtx *c = vctx;
    char prefix[SD_NAME_MAX];
    sd_fmt(prefix, "up_blocks.%d.upsamplers.0", c->block);
    return sd_upsample(&c->m->net, prefix, in[0], c->out_h, c->out_w);
}

// Run a unit through sd_run_block (ctx copied into the arena when backward will re-run it).
static Tensor *run_unit(AgBlockFn fn, UnitCtx ctx, int n, Tensor *const *inputs, bool recompute) {
    UnitCtx *c = &ctx;
    if (recompute && ag_grad_enabled()) {
        c = arena_alloc(sizeof(UnitCtx), "unet checkpoint context");
        *c = ctx;
    }
    return sd_run_block(fn, c, n, inputs, recompute);
}

// The sinusoidal embedding of n host scalars is computed on the host (op_timestep_embedding always
// builds a CPU tensor) and copied to the sample's device; the two linear layers run there.
static Tensor *time_embedding(const Unet *m, const float *timesteps, int n, Device device) {
    Tensor *t = op_timestep_embedding(timesteps, n, m->cfg.block_out_channels[0], m->cfg.flip_sin_to_cos,
                                      (float)m->cfg.freq_shift);
    if (device != DEV_CPU) t = tensor_to_device(t, device);
    t = op_silu(sd_linear(&m->net, "time_embedding.linear_1", t));
    return sd_linear(&m->net, "time_embedding.linear_2", t);
}

Tensor *unet_forward(const Unet *m, Tensor *sample, const float *timesteps, Tensor *encoder_hidden_states,
                     const UnetOptions *opt) {
    const SdUNetConfig *cfg = &m->cfg;
    bool recompute = opt && opt->recompute_blocks;
    DOD_CHECK(sample->ndim == 4 && sample->shape[1] == cfg->in_channels, "unet_forward",
              "sample %s must be [N, %d, h, w] (%s)", shape_str(sample), cfg->in_channels, cfg->path);
    DOD_CHECK(encoder_hidden_states && encoder_hidden_states->ndim == 3 &&
                  encoder_hidden_states->shape[0] == sample->shape[0] &&
                  encoder_hidden_states->shape[2] == cfg->cross_attention_dim[0],
              "unet_forward", "encoder_hidden_states %s must be [%ld, L, %d] (%s)",
              encoder_hidden_states ? shape_str(encoder_hidden_states) : "NULL", (long)sample->shape[0],
              cfg->cross_attention_dim[0], cfg->path);
    int n = (int)sample->shape[0];
    Tensor *context = encoder_hidden_states;
    Tensor *temb = time_embedding(m, timesteps, n, sample->device);

    Tensor *h = sample;
    h = sd_conv(&m->net, "conv_in", h, 1, (cfg->conv_in_kernel - 1) / 2);

    // Skip connections, consumed last-in first-out by the up path.
    int n_skips = 1;
    for (int i = 0; i < cfg->n_levels; i++) n_skips += cfg->layers_per_block[i] + (i < cfg->n_levels - 1);
    Tensor **skips = arena_alloc(sizeof(Tensor *) * (size_t)n_skips, "unet skip list");
    int top = 0;
    skips[top++] = h;

    for (int b = 0; b < cfg->n_levels; b++) {
        for (int l = 0; l < cfg->layers_per_block[b]; l++) {
            Tensor *in[3] = {h, temb, context};
            h = run_unit(down_layer, (UnitCtx){m, b, l, 0, 0}, 3, in, recompute);
            skips[top++] = h;
        }
        if (b < cfg->n_levels - 1) {
            h = run_unit(down_sampler, (UnitCtx){m, b, 0, 0, 0}, 1, &h, recompute);
            skips[top++] = h;
        }
    }

    if (cfg->mid_attn) {
        Tensor *in[3] = {h, temb, context};
        h = run_unit(mid_block, (UnitCtx){m, 0, 0, 0, 0}, 3, in, recompute);
    }

    for (int b = 0; b < cfg->n_levels; b++) {
        int level = cfg->n_levels - 1 - b;
        for (int l = 0; l < cfg->layers_per_block[level] + 1; l++) {
            DOD_CHECK(top > 0, "unet_forward", "up block %d ran out of skip connections", b);
            Tensor *in[4] = {h, skips[--top], temb, context};
            h = run_unit(up_layer, (UnitCtx){m, b, l, 0, 0}, 4, in, recompute);
        }
        if (b < cfg->n_levels - 1) {
            // diffusers resizes to the next skip's size (2x when the input divides evenly).
            Tensor *next = skips[top - 1];
            h = run_unit(up_sampler, (UnitCtx){m, b, 0, next->shape[2], next->shape[3]}, 1, &h, recompute);
        }
    }
    DOD_CHECK(top == 0, "unet_forward", "%d skip connections left unused (%s)", top, cfg->path);

    return sd_group_norm_silu_conv(&m->net, "conv_norm_out", "conv_out", h, cfg->norm_num_groups, cfg->norm_eps, 1,
                                   (cfg->conv_out_kernel - 1) / 2);
}
