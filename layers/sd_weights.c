// Stable Diffusion tensor tables: every parameter a config implies, under diffusers and original LDM
// names. Loading is in sd_load.c. See sd_weights.h.
//
// The LDM names follow the layout of the CompVis code (openaimodel.py UNetModel: input_blocks /
// middle_block / output_blocks numbered sequentially; ldm/modules/diffusionmodules/model.py Encoder /
// Decoder: down.i.block.j, mid.block_1 / attn_1 / block_2, up.i with i counted from the deepest level)
// which diffusers' convert_from_ckpt.py maps to its names; scripts/make_sd_fixture.py checks this
// mapping against diffusers' converter.
#include "layers/sd_weights.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// ---- building the table -------------------------------------------------------------------------
static void add(SdTensorTable *t, const char *dpre, const char *dsuf, const char *lpre, const char *lsuf, int rule,
                int ndim, int64_t s0, int64_t s1, int64_t s2, int64_t s3) {
    if (t->n == t->cap) {
        t->cap = t->cap ? 2 * t->cap : 512;
        t->items = realloc(t->items, sizeof(SdTensorSpec) * (size_t)t->cap);
        DOD_CHECK(t->items != NULL, "sd tensor table", "out of memory for %d entries", t->cap);
    }
    SdTensorSpec *s = &t->items[t->n++];
    int n1 = snprintf(s->name, SD_NAME_LEN, "%s%s%s", dpre, *dpre ? "." : "", dsuf);
    int n2 = snprintf(s->ldm_name, SD_NAME_LEN, "%s%s%s", lpre, *lpre ? "." : "", lsuf);
    DOD_CHECK(n1 < SD_NAME_LEN && n2 < SD_NAME_LEN, "sd tensor table", "name too long: %s.%s", dpre, dsuf);
    s->ndim = ndim;
    int64_t sh[4] = {s0, s1, s2, s3};
    memcpy(s->shape, sh, sizeof sh);
    s->rule = rule;
}

// "<dmod>.weight" / "<dmod>.bias" under both naming schemes.
static void conv(SdTensorTable *t, const char *dpre, const char *dmod, const char *lpre, const char *lmod, int64_t out,
                 int64_t in, int64_t k) {
    char d[SD_NAME_LEN], l[SD_NAME_LEN];
    snprintf(d, sizeof d, "%s.weight", dmod);
    snprintf(l, sizeof l, "%s.weight", lmod);
    add(t, dpre, d, lpre, l, SD_SHAPE_EXACT, 4, out, in, k, k);
    snprintf(d, sizeof d, "%s.bias", dmod);
    snprintf(l, sizeof l, "%s.bias", lmod);
    add(t, dpre, d, lpre, l, SD_SHAPE_EXACT, 1, out, 0, 0, 0);
}

static void linear(SdTensorTable *t, const char *dpre, const char *dmod, const char *lpre, const char *lmod,
                   int64_t out, int64_t in, bool bias, int rule, bool as_1x1) {
    char d[SD_NAME_LEN], l[SD_NAME_LEN];
    snprintf(d, sizeof d, "%s.weight", dmod);
    snprintf(l, sizeof l, "%s.weight", lmod);
    add(t, dpre, d, lpre, l, rule, as_1x1 ? 4 : 2, out, in, 1, 1);
    if (!bias) return;
    snprintf(d, sizeof d, "%s.bias", dmod);
    snprintf(l, sizeof l, "%s.bias", lmod);
    add(t, dpre, d, lpre, l, SD_SHAPE_EXACT, 1, out, 0, 0, 0);
}

static void norm(SdTensorTable *t, const char *dpre, const char *dmod, const char *lpre, const char *lmod, int64_t c) {
    char d[SD_NAME_LEN], l[SD_NAME_LEN];
    snprintf(d, sizeof d, "%s.weight", dmod);
    snprintf(l, sizeof l, "%s.weight", lmod);
    add(t, dpre, d, lpre, l, SD_SHAPE_EXACT, 1, c, 0, 0, 0);
    snprintf(d, sizeof d, "%s.bias", dmod);
    snprintf(l, sizeof l, "%s.bias", lmod);
    add(t, dpre, d, lpre, l, SD_SHAPE_EXACT, 1, c, 0, 0, 0);
}

// ResnetBlock2D. temb == 0: the VAE's (no time embedding, LDM names kept as they are).
static void resnet(SdTensorTable *t, const char *dpre, const char *lpre, int64_t in, int64_t out, int64_t temb) {
    bool unet = temb > 0;
    norm(t, dpre, "norm1", lpre, unet ? "in_layers.0" : "norm1", in);
    conv(t, dpre, "conv1", lpre, unet ? "in_layers.2" : "conv1", out, in, 3);
    if (unet) linear(t, dpre, "time_emb_proj", lpre, "emb_layers.1", out, temb, true, SD_SHAPE_EXACT, false);
    norm(t, dpre, "norm2", lpre, unet ? "out_layers.0" : "norm2", out);
    conv(t, dpre, "conv2", lpre, unet ? "out_layers.3" : "conv2", out, out, 3);
    if (in != out) conv(t, dpre, "conv_shortcut", lpre, unet ? "skip_connection" : "nin_shortcut", out, in, 1);
}

// Transformer2DModel (LDM SpatialTransformer; identical names below the block prefix).
static void transformer(SdTensorTable *t, const char *dpre, const char *lpre, int64_t c, int64_t cross, int layers,
                        bool linear_proj) {
    norm(t, dpre, "norm", lpre, "norm", c);
    linear(t, dpre, "proj_in", lpre, "proj_in", c, c, true, SD_SHAPE_1X1_KEEP, !linear_proj);
    for (int k = 0; k < layers; k++) {
        char d[SD_NAME_LEN], l[SD_NAME_LEN];
        snprintf(d, sizeof d, "%s.transformer_blocks.%d", dpre, k);
        snprintf(l, sizeof l, "%s.transformer_blocks.%d", lpre, k);
        norm(t, d, "norm1", l, "norm1", c);
        linear(t, d, "attn1.to_q", l, "attn1.to_q", c, c, false, SD_SHAPE_EXACT, false);
        linear(t, d, "attn1.to_k", l, "attn1.to_k", c, c, false, SD_SHAPE_EXACT, false);
        linear(t, d, "attn1.to_v", l, "attn1.to_v", c, c, false, SD_SHAPE_EXACT, false);
        linear(t, d, "attn1.to_out.0", l, "attn1.to_out.0", c, c, true, SD_SHAPE_EXACT, false);
        norm(t, d, "norm2", l, "norm2", c);
        linear(t, d, "attn2.to_q", l, "attn2.to_q", c, c, false, SD_SHAPE_EXACT, false);
        linear(t, d, "attn2.to_k", l, "attn2.to_k", c, cross, false, SD_SHAPE_EXACT, false);
        linear(t, d, "attn2.to_v", l, "attn2.to_v", c, cross, false, SD_SHAPE_EXACT, false);
        linear(t, d, "attn2.to_out.0", l, "attn2.to_out.0", c, c, true, SD_SHAPE_EXACT, false);
        norm(t, d, "norm3", l, "norm3", c);
        // GEGLU: one projection to 2 x 4c (value and gate), then 4c -> c.
        linear(t, d, "ff.net.0.proj", l, "ff.net.0.proj", 8 * c, c, true, SD_SHAPE_EXACT, false);
        linear(t, d, "ff.net.2", l, "ff.net.2", c, 4 * c, true, SD_SHAPE_EXACT, false);
    }
    linear(t, dpre, "proj_out", lpre, "proj_out", c, c, true, SD_SHAPE_1X1_KEEP, !linear_proj);
}

void sd_unet_tensor_table(const SdUNetConfig *u, SdTensorTable *t) {
    t->n = 0;
    const char *L = "model.diffusion_model";
    const int n = u->n_levels;
    DOD_CHECK(n >= 1 && n <= SD_MAX_LEVELS, "sd_unet_tensor_table", "%s: %d levels", u->path, n);
    int64_t ch[SD_MAX_LEVELS] = {0};
    for (int i = 0; i < n; i++) ch[i] = u->block_out_channels[i];
    const int64_t temb = u->time_embed_dim;
    char d[SD_NAME_LEN], l[SD_NAME_LEN];

    conv(t, "", "conv_in", L, "input_blocks.0.0", ch[0], u->in_channels, u->conv_in_kernel);
    linear(t, "", "time_embedding.linear_1", L, "time_embed.0", temb, ch[0], true, SD_SHAPE_EXACT, false);
    linear(t, "", "time_embedding.linear_2", L, "time_embed.2", temb, temb, true, SD_SHAPE_EXACT, false);

    int ib = 1;   // LDM input_blocks index (0 is conv_in)
    for (int i = 0; i < n; i++) {
        for (int j = 0; j < u->layers_per_block[i]; j++, ib++) {
            int64_t in = j == 0 ? ch[i > 0 ? i - 1 : 0] : ch[i];
            snprintf(d, sizeof d, "down_blocks.%d.resnets.%d", i, j);
            snprintf(l, sizeof l, "%s.input_blocks.%d.0", L, ib);
            resnet(t, d, l, in, ch[i], temb);
            if (u->down_attn[i]) {
                snprintf(d, sizeof d, "down_blocks.%d.attentions.%d", i, j);
                snprintf(l, sizeof l, "%s.input_blocks.%d.1", L, ib);
                transformer(t, d, l, ch[i], u->cross_attention_dim[i], u->transformer_layers[i],
                            u->use_linear_projection);
            }
        }
        if (i < n - 1) {
            snprintf(d, sizeof d, "down_blocks.%d.downsamplers.0", i);
            snprintf(l, sizeof l, "%s.input_blocks.%d.0", L, ib++);
            conv(t, d, "conv", l, "op", ch[i], ch[i], 3);
        }
    }

    const int64_t cm = ch[n - 1];
    snprintf(l, sizeof l, "%s.middle_block.0", L);
    resnet(t, "mid_block.resnets.0", l, cm, cm, temb);
    snprintf(l, sizeof l, "%s.middle_block.1", L);
    transformer(t, "mid_block.attentions.0", l, cm, u->cross_attention_dim[n - 1], u->transformer_layers[n - 1],
                u->use_linear_projection);
    snprintf(l, sizeof l, "%s.middle_block.2", L);
    resnet(t, "mid_block.resnets.1", l, cm, cm, temb);

    int ob = 0;   // LDM output_blocks index
    for (int i = 0; i < n; i++) {
        int r = n - 1 - i;                                  // the down level this up block mirrors
        int64_t out = ch[r], prev = i == 0 ? ch[n - 1] : ch[r + 1], skip_last = ch[r > 0 ? r - 1 : 0];
        int nres = u->layers_per_block[r] + 1;
        for (int j = 0; j < nres; j++, ob++) {
            // Input = the previous output concatenated with a skip from the down path; the last resnet
            // takes the skip from before the matching down level (its downsampler output / conv_in).
            int64_t in = (j == 0 ? prev : out) + (j == nres - 1 ? skip_last : out);
            snprintf(d, sizeof d, "up_blocks.%d.resnets.%d", i, j);
            snprintf(l, sizeof l, "%s.output_blocks.%d.0", L, ob);
            resnet(t, d, l, in, out, temb);
            if (u->up_attn[i]) {
                snprintf(d, sizeof d, "up_blocks.%d.attentions.%d", i, j);
                snprintf(l, sizeof l, "%s.output_blocks.%d.1", L, ob);
                transformer(t, d, l, out, u->cross_attention_dim[r], u->transformer_layers[r],
                            u->use_linear_projection);
            }
            if (j == nres - 1 && i < n - 1) {
                snprintf(d, sizeof d, "up_blocks.%d.upsamplers.0", i);
                snprintf(l, sizeof l, "%s.output_blocks.%d.%d", L, ob, u->up_attn[i] ? 2 : 1);
                conv(t, d, "conv", l, "conv", out, out, 3);
            }
        }
    }
    norm(t, "", "conv_norm_out", L, "out.0", ch[0]);
    conv(t, "", "conv_out", L, "out.2", u->out_channels, ch[0], u->conv_out_kernel);
}

// VAE mid block: resnet, attention (single head, Linear q/k/v/out; 1x1 convs in LDM), resnet.
static void vae_mid(SdTensorTable *t, const char *side, int64_t c, bool attn) {
    char d[SD_NAME_LEN], l[SD_NAME_LEN];
    snprintf(d, sizeof d, "%s.mid_block.resnets.0", side);
    snprintf(l, sizeof l, "first_stage_model.%s.mid.block_1", side);
    resnet(t, d, l, c, c, 0);
    if (attn) {
        snprintf(d, sizeof d, "%s.mid_block.attentions.0", side);
        snprintf(l, sizeof l, "first_stage_model.%s.mid.attn_1", side);
        norm(t, d, "group_norm", l, "norm", c);
        linear(t, d, "to_q", l, "q", c, c, true, SD_SHAPE_1X1_LINEAR, false);
        linear(t, d, "to_k", l, "k", c, c, true, SD_SHAPE_1X1_LINEAR, false);
        linear(t, d, "to_v", l, "v", c, c, true, SD_SHAPE_1X1_LINEAR, false);
        linear(t, d, "to_out.0", l, "proj_out", c, c, true, SD_SHAPE_1X1_LINEAR, false);
    }
    snprintf(d, sizeof d, "%s.mid_block.resnets.1", side);
    snprintf(l, sizeof l, "first_stage_model.%s.mid.block_2", side);
    resnet(t, d, l, c, c, 0);
}

void sd_vae_tensor_table(const SdVaeConfig *v, SdTensorTable *t) {
    t->n = 0;
    const char *E = "first_stage_model.encoder", *D = "first_stage_model.decoder";
    const int n = v->n_levels;
    DOD_CHECK(n >= 1 && n <= SD_MAX_LEVELS, "sd_vae_tensor_table", "%s: %d levels", v->path, n);
    int64_t ch[SD_MAX_LEVELS] = {0};
    for (int i = 0; i < n; i++) ch[i] = v->block_out_channels[i];
    const int64_t last = ch[n - 1], lat = v->latent_channels;
    char d[SD_NAME_LEN], l[SD_NAME_LEN];

    conv(t, "encoder", "conv_in", E, "conv_in", ch[0], v->in_channels, 3);
    for (int i = 0; i < n; i++) {
        for (int j = 0; j < v->layers_per_block; j++) {
            snprintf(d, sizeof d, "encoder.down_blocks.%d.resnets.%d", i, j);
            snprintf(l, sizeof l, "%s.down.%d.block.%d", E, i, j);
            resnet(t, d, l, j == 0 ? ch[i > 0 ? i - 1 : 0] : ch[i], ch[i], 0);
        }
        if (i < n - 1) {
            snprintf(d, sizeof d, "encoder.down_blocks.%d.downsamplers.0", i);
            snprintf(l, sizeof l, "%s.down.%d.downsample", E, i);
            conv(t, d, "conv", l, "conv", ch[i], ch[i], 3);
        }
    }
    vae_mid(t, "encoder", last, v->mid_block_add_attention);
    norm(t, "encoder", "conv_norm_out", E, "norm_out", last);
    conv(t, "encoder", "conv_out", E, "conv_out", 2 * lat, last, 3);
    if (v->use_quant_conv) conv(t, "", "quant_conv", "first_stage_model", "quant_conv", 2 * lat, 2 * lat, 1);
    if (v->use_post_quant_conv) conv(t, "", "post_quant_conv", "first_stage_model", "post_quant_conv", lat, lat, 1);

    conv(t, "decoder", "conv_in", D, "conv_in", last, lat, 3);
    vae_mid(t, "decoder", last, v->mid_block_add_attention);
    for (int i = 0; i < n; i++) {
        int r = n - 1 - i;   // LDM numbers decoder levels from the shallowest: up.<r>
        int64_t prev = i == 0 ? last : ch[r + 1];
        for (int j = 0; j < v->layers_per_block + 1; j++) {
            snprintf(d, sizeof d, "decoder.up_blocks.%d.resnets.%d", i, j);
            snprintf(l, sizeof l, "%s.up.%d.block.%d", D, r, j);
            resnet(t, d, l, j == 0 ? prev : ch[r], ch[r], 0);
        }
        if (i < n - 1) {
            snprintf(d, sizeof d, "decoder.up_blocks.%d.upsamplers.0", i);
            snprintf(l, sizeof l, "%s.up.%d.upsample", D, r);
            conv(t, d, "conv", l, "conv", ch[r], ch[r], 3);
        }
    }
    norm(t, "decoder", "conv_norm_out", D, "norm_out", ch[0]);
    conv(t, "decoder", "conv_out", D, "conv_out", v->out_channels, ch[0], 3);
}

void sd_text_encoder_tensor_table(const SdTextEncoderConfig *c, SdTensorTable *t) {
    t->n = 0;
    int64_t D = c->hidden_size, F = c->intermediate_size;
    add(t, "text_model.embeddings", "token_embedding.weight", "", "", SD_SHAPE_EXACT, 2, c->vocab_size, D, 0, 0);
    add(t, "text_model.embeddings", "position_embedding.weight", "", "", SD_SHAPE_EXACT, 2, c->max_positions, D, 0, 0);
    for (int i = 0; i < c->num_layers; i++) {
        char pre[SD_NAME_LEN];
        snprintf(pre, sizeof pre, "text_model.encoder.layers.%d", i);
        norm(t, pre, "layer_norm1", "", "", D);
        static const char *const proj[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj"};
        for (int k = 0; k < 4; k++) linear(t, pre, proj[k], "", "", D, D, true, SD_SHAPE_EXACT, false);
        norm(t, pre, "layer_norm2", "", "", D);
        linear(t, pre, "mlp.fc1", "", "", F, D, true, SD_SHAPE_EXACT, false);
        linear(t, pre, "mlp.fc2", "", "", D, F, true, SD_SHAPE_EXACT, false);
    }
    norm(t, "text_model", "final_layer_norm", "", "", D);
}

const SdTensorSpec *sd_table_find(const SdTensorTable *t, const char *name) {
    for (int i = 0; i < t->n; i++)
        if (!strcmp(t->items[i].name, name)) return &t->items[i];
    return NULL;
}

void sd_table_free(SdTensorTable *t) {
    free(t->items);
    memset(t, 0, sizeof *t);
}
