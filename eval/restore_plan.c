// Memory estimates of restoration stages from the model's shapes, and the plan that fits them in a
// budget (eval/restore.h; the table for SD 2.1-base at 4096 x 3072 is in docs/restore.md).
//
// How inference uses memory (autograd/tensor.h, layers/sd_blocks.h sd_run_block): every UNet / VAE
// unit (a resnet with its transformer, a sampler, the mid block) runs with grad mode off and gives back
// its internals when it ends, keeping only its output; the outputs of the units a network has run stay
// in the arena until the stage ends. So a stage's peak is, at its largest unit, the outputs kept so far
// plus that unit's internals (every tensor it makes: nothing inside a unit is freed before it ends)
// plus the copy of its output made when the internals are given back. The estimates below walk the
// networks' units with those counts per unit (tensors of C x pixels elements, counted per op below),
// plus the conv's im2col tile (at most 64 MiB) and the attention's score blocks, and a 25% margin
// (tests/test_restore.c checks them against measured arena peaks).
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "eval/restore.h"
#include "layers/dod_model.h"

#define MIB (1024.0 * 1024.0)
#define GIB (1024.0 * MIB)
#define SCRATCH_BYTES (64.0 * MIB + 16.0 * MIB)   // one conv im2col tile + two attention score blocks
#define MARGIN 1.25

// The walk: kept outputs and the largest (kept + unit) seen. Sizes in elements; act bytes applied at the end.
typedef struct {
    double kept, peak;
} Walk;

// A unit with `internal` elements (its output included) whose output (`out` elements) stays.
static void unit(Walk *w, double internal, double out) {
    double at = w->kept + internal + out;   // + the copy of the output made when the internals go back
    if (at > w->peak) w->peak = at;
    w->kept += out;
}

// LoRA temporaries of one adapter on px pixels: A x, and for conditional adapters (1 + gamma) A x and
// + beta (each r x px).
static double lora(int r, bool conditional, double px) { return (conditional ? 3.0 : 1.0) * r * px; }

// A resnet (norm-SiLU-conv twice, shortcut, add in place): conv1 and conv2 outputs, the normalised input
// a fused conv makes (transiently, the larger of the two), the shortcut when channels change.
static double resnet(double cin, double cout, double px, int r, bool cond, bool has_lora) {
    double n_ad = cin != cout ? 3 : 2;
    return (2 * cout + fmax(cin, cout) + (cin != cout ? cout : 0)) * px + (has_lora ? n_ad * lora(r, cond, px) : 0);
}

// A transformer2d with n blocks on C x px tokens (context of L tokens): norm, tokens, proj_in, per block
// norm1, q, k, v, attention, to_out, norm2, q, attention, to_out, norm3, ff proj (8C, GEGLU input), GEGLU
// (4C), ff out; proj_out, back to NCHW (the adds write in place). Adapters on every projection.
static double transformer(double C, double px, int n, int r) {
    return (4 + n * 21.0) * C * px + (2 + 10.0 * n) * lora(r, true, px);
}

// The VAE's mid-block attention on C x px: norm, tokens, q, k, v, attention, to_out, back.
static double vae_attention(double C, double px, int r, bool has_lora) {
    return 8 * C * px + (has_lora ? 4 * lora(r, false, px) : 0);
}

static double finish(const RestoreShapes *s, const Walk *w) { return MARGIN * (w->peak * s->act_bytes + SCRATCH_BYTES); }

// The encoder on H x W: conv_in, the down levels, the mid block, norm-out-conv, quant conv, moments.
// skips: the encoder's down-block inputs are kept (they are top-level outputs anyway); lora: the
// model's encoder adapters (the vae extractor runs the encoder without them).
static void walk_encoder(const RestoreShapes *s, Walk *w, double H, double W, bool has_lora) {
    const SdVaeConfig *v = s->vae;
    const int r = 8;
    double px = H * W;
    w->kept += 3 * px * (4.0 / s->act_bytes);   // the f32 input
    unit(w, (has_lora ? lora(r, false, px) : 0), v->block_out_channels[0] * px);  // conv_in
    double cin = v->block_out_channels[0];
    for (int l = 0; l < v->n_levels; l++) {
        double c = v->block_out_channels[l];
        for (int j = 0; j < v->layers_per_block; j++) {
            unit(w, resnet(cin, c, px, r, false, has_lora), c * px);
            cin = c;
        }
        if (l < v->n_levels - 1) {   // zero-pad copy, stride-2 conv
            unit(w, c * px + (has_lora ? lora(r, false, px / 4) : 0), c * px / 4);
            px /= 4;
        }
    }
    unit(w, resnet(cin, cin, px, r, false, has_lora) * 2 + vae_attention(cin, px, r, has_lora), cin * px);  // mid
    unit(w, cin * px + 2 * v->latent_channels * px * 2, 2 * v->latent_channels * px * 2);   // out, quant, moments
}

double restore_estimate_encoder(const RestoreShapes *s, int64_t H, int64_t W, bool skips) {
    (void)skips;   // the skip features are top-level outputs: kept in any case until the stage ends
    Walk w = {0};
    walk_encoder(s, &w, (double)H, (double)W, true);
    return finish(s, &w);
}

double restore_estimate_extractor(const RestoreShapes *s, int64_t H, int64_t W) {
    Walk w = {0};
    if (s->vae_extractor) {
        walk_encoder(s, &w, (double)H, (double)W, false);
    } else {   // 4 stride-2 convs + SiLU (cnn_channels0, 2x, 4x, 8x), global pooling
        double px = (double)H * W, c = s->cnn_channels0;
        w.kept = 3 * px * (4.0 / s->act_bytes);
        for (int i = 0; i < 4; i++, c *= 2) {
            px /= 4;
            unit(&w, 2 * c * px, c * px);   // conv output and its SiLU, both kept (no units here)
            w.kept += c * px;
        }
    }
    return finish(s, &w);
}

double restore_estimate_unet(const RestoreShapes *s, int64_t h, int64_t w_) {
    const SdUNetConfig *u = s->unet;
    const int r = 8;
    Walk w = {0};
    double px = (double)h * w_;
    w.kept += 2 * 4 * px;   // z and its f32 upload
    double c0 = u->block_out_channels[0];
    unit(&w, c0 * px + lora(r, true, px), c0 * px);   // conv_in (the trained copy replaces the output)
    double cin = c0;
    double skip_c[64];
    int n_skips = 0;
    skip_c[n_skips++] = c0;
    for (int l = 0; l < u->n_levels; l++) {
        double c = u->block_out_channels[l];
        for (int j = 0; j < u->layers_per_block[l]; j++) {
            double in = resnet(cin, c, px, r, true, true) + (u->down_attn[l] ? transformer(c, px, u->transformer_layers[l], r) : 0);
            unit(&w, in, c * px);
            cin = c;
            if (n_skips < 64) skip_c[n_skips++] = c;
        }
        if (l < u->n_levels - 1) {
            unit(&w, lora(r, true, px / 4), c * px / 4);
            px /= 4;
            if (n_skips < 64) skip_c[n_skips++] = c;
        }
    }
    int last = u->n_levels - 1;
    unit(&w, 2 * resnet(cin, cin, px, r, true, true) + transformer(cin, px, u->transformer_layers[last], r), cin * px);
    for (int b = 0; b < u->n_levels; b++) {
        int level = u->n_levels - 1 - b;
        double c = u->block_out_channels[level];
        for (int j = 0; j < u->layers_per_block[level] + 1 && n_skips > 0; j++) {
            n_skips--;
            double cat = cin + skip_c[n_skips];
            double in = cat * px + resnet(cat, c, px, r, true, true) +
                        (u->up_attn[b] ? transformer(c, px, u->transformer_layers[level], r) : 0);
            unit(&w, in, c * px);
            cin = c;
        }
        if (b < u->n_levels - 1) {   // nearest 2x (kept: the adapter reads it) and its conv
            unit(&w, 4 * c * px + lora(r, true, 4 * px), 4 * c * px);
            px *= 4;
        }
    }
    unit(&w, 2 * c0 * px + lora(r, true, px), 4 * px);   // norm-out-conv
    return finish(s, &w);
}

double restore_estimate_decoder(const RestoreShapes *s, int64_t H, int64_t W) {
    const SdVaeConfig *v = s->vae;
    const int L = v->n_levels, g = 32;
    Walk w = {0};
    double px = (double)H * W / pow(4.0, L - 1);
    w.kept += 2 * v->latent_channels * px;   // the latent and its upload
    double cin = v->block_out_channels[L - 1];
    unit(&w, v->latent_channels * px, cin * px);   // post_quant_conv, conv_in
    unit(&w, resnet(cin, cin, px, 0, false, false) * 2 + vae_attention(cin, px, 0, false), cin * px);   // mid
    for (int i = 0; i < L; i++) {
        double c = v->block_out_channels[L - 1 - i];
        if (s->stage == 2) {   // the detail module: skip conv, concat, res_in, RRDB (3 x 5 convs), res_out;
            // it runs outside the decoder's units, so everything it makes stays until decoding ends
            double fuse = (cin + 2 * cin + 3 * (cin + 5 * g + cin) + 2 * cin) * px +
                          resnet(2 * cin, cin, px, 0, false, false) + resnet(cin, cin, px, 0, false, false);
            w.kept += fuse;
            w.peak = fmax(w.peak, w.kept);
        }
        for (int j = 0; j < v->layers_per_block + 1; j++) {
            unit(&w, resnet(cin, c, px, 0, false, false), c * px);
            cin = c;
        }
        if (i < L - 1) {   // nearest 2x fused with its conv (the upsampled input made transiently)
            unit(&w, 4 * c * px, 4 * c * px);
            px *= 4;
        }
    }
    unit(&w, cin * px + 3 * px, 3 * px);   // norm-out-conv
    return finish(s, &w);
}

double restore_estimate_host_buffers(int64_t H, int64_t W) {
    // input and output of the caller, the padded input, the decoded output, the blend weights (floats)
    return 13.0 * 4.0 * (double)H * (double)W;
}

// ---- the model's shapes -------------------------------------------------------------------------------
static double store_bytes(ParamStore *ps) {
    double b = 0;
    for (int i = 0; i < params_count(ps); i++) {
        const Tensor *t = params_at(ps, i);
        b += (double)t->numel * dtype_size(t->dtype);
    }
    return b;
}

void restore_shapes_of(const DodModel *m, RestoreShapes *s) {
    memset(s, 0, sizeof *s);
    s->unet = &m->unet->cfg;
    s->vae = &m->vae->cfg;
    s->stage = m->cfg.stage;
    s->vae_extractor = m->cfg.extractor == DOD_EXTRACTOR_VAE;
    s->cnn_channels0 = m->mod.cfg.cnn_channels[0];
    s->weight_bytes = store_bytes(m->unet->net.ps) + store_bytes(m->vae->net.ps) + store_bytes(m->params) +
                      (double)m->prompt->numel * 4;
    s->act_bytes = (int)dtype_size(ag_activation_dtype());
    s->count_host_buffers = m->device == DEV_CPU;
    s->cuda = m->device == DEV_CUDA;
    for (int i = 0; i < lora_set_count(m->unet_lora); i++) {
        const LoraAdapter *ad = lora_set_at(m->unet_lora, i);
        s->merged_bytes += 4.0 * (double)ad->out * ((double)ad->in * ad->kh * ad->kw + 1);
    }
}

// ---- the plan -----------------------------------------------------------------------------------------
static int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

int restore_plan(const RestoreShapes *s, int H, int W, const RestoreOptions *o, RestorePlan *p, char *err, size_t errlen) {
    memset(p, 0, sizeof *p);
    p->H = H;
    p->W = W;
    const int f = 1 << (s->vae->n_levels - 1), mult = f > 8 ? f : 8;
    const int h = H / f, w = W / f;
    const double budget = o->max_memory_gib > 0 ? o->max_memory_gib * GIB : INFINITY;
    p->weights = s->weight_bytes;
    p->buffers = s->count_host_buffers ? restore_estimate_host_buffers(H, W) : 0;
    const double avail = budget - p->weights - p->buffers;
    if (!(avail > 0)) {
        snprintf(err, errlen, "--max-memory %g GiB: the weights (%.2f GiB) and the image buffers (%.2f GiB) alone do not "
                 "fit", o->max_memory_gib, p->weights / GIB, p->buffers / GIB);
        return -1;
    }
    // the extractor: whole, or on the image downscaled k times
    for (p->extractor_scale = 1;; p->extractor_scale++) {
        int64_t k = p->extractor_scale;
        p->extractor = restore_estimate_extractor(s, ceil_div(H, k), ceil_div(W, k));
        if (p->extractor <= avail) break;
        if (ceil_div(H, k) <= mult && ceil_div(W, k) <= mult) {
            snprintf(err, errlen, "--max-memory %g GiB: the degradation extractor does not fit even on a %dx%d image",
                     o->max_memory_gib, mult, mult);
            return -1;
        }
    }
    // the UNet: the public tiling; tiles shrink (ours) while one does not fit
    restore_unet_grid(h, w, o->tile, o->overlap, &p->unet);
    for (;;) {
        int th = p->unet.tile ? p->unet.tile : h, tw = p->unet.tile ? p->unet.tile : w;
        p->unet_tile = restore_estimate_unet(s, th, tw);
        if (p->unet_tile <= avail) break;
        int t = p->unet.tile ? p->unet.tile : (h < w ? h : w);
        if (t <= 8) {
            snprintf(err, errlen, "--max-memory %g GiB: the UNet does not fit even on an 8x8 latent tile (%.2f GiB more "
                     "than the weights)", o->max_memory_gib, p->unet_tile / GIB);
            return -1;
        }
        p->unet = (TileGrid){t - 8, o->overlap < t - 8 ? o->overlap : (t - 8) / 2};
    }
    // the per-image merge: worth it for enough UNet work (latent pixels over all tiles), where it fits
    {
        double work = (double)h * w;
        if (p->unet.tile) {
            int ny = restore_tile_count(h, &p->unet), nx = restore_tile_count(w, &p->unet);
            work = (double)ny * nx * p->unet.tile * p->unet.tile;
        }
        const bool fits = p->unet_tile + s->merged_bytes <= avail;
        p->merge = !s->cuda && fits &&
                   (o->merge == RESTORE_MERGE_ON || (o->merge == RESTORE_MERGE_AUTO && work >= RESTORE_MERGE_MIN_LATENT_PIXELS));
        if (p->merge) p->unet_tile += s->merged_bytes;
    }
    // the VAE: whole while it fits and its mid-block attention is not too long, else tiles
    const bool detail = s->stage == 2;
    p->encoder = restore_estimate_encoder(s, H, W, detail);
    p->decoder = restore_estimate_decoder(s, H, W);
    const double held = detail ? p->encoder : 0;   // stage 2 whole: the encoder's skips stay to the end
    const bool fits = p->encoder <= avail && p->decoder + held <= avail && p->unet_tile + held <= avail;
    const bool forced = o->vae_tile > 0;
    const bool unlimited = !(o->max_memory_gib > 0);
    if (forced ? (o->vae_tile >= H && o->vae_tile >= W)
               : (unlimited || ((double)h * w <= RESTORE_VAE_MAX_TOKENS && fits))) {
        p->vae_whole = true;
        p->peak = p->weights + p->buffers + fmax(fmax(p->extractor, p->encoder), fmax(p->unet_tile + held, p->decoder + held));
        return 0;
    }
    int O = o->vae_overlap / f * f, T;
    if (forced) {
        T = o->vae_tile / mult * mult;
    } else {
        int cap = (int)sqrt((double)RESTORE_VAE_TILE_TOKENS) * f / mult * mult, side = (H > W ? H : W);
        T = side < cap ? (side + mult - 1) / mult * mult : cap;
        for (;; T -= mult) {
            if (T <= O || T < 2 * mult) {
                snprintf(err, errlen, "--max-memory %g GiB: the VAE does not fit even in %dx%d tiles (overlap %d)",
                         o->max_memory_gib, T + mult, T + mult, O);
                return -1;
            }
            double e = restore_estimate_encoder(s, T, T, detail), d = restore_estimate_decoder(s, T, T) + (detail ? e : 0);
            if (e <= avail && d <= avail) break;
        }
    }
    if (O >= T) O = T / 2 / f * f;
    p->vae_tile = T;
    p->vae_overlap = O;
    p->encoder = restore_estimate_encoder(s, T, T, detail);
    p->decoder = restore_estimate_decoder(s, T, T) + (detail ? p->encoder : 0);
    // the GroupNorm statistics: the image downscaled until the pass fits (both bounds as above)
    for (p->stats_scale = 1;; p->stats_scale++) {
        int64_t k = p->stats_scale, hs = ceil_div(h, k), ws = ceil_div(w, k);
        double e = restore_estimate_encoder(s, f * hs, f * ws, detail), d = restore_estimate_decoder(s, f * hs, f * ws);
        p->stats = fmax(e, d + (detail ? e : 0));
        if ((double)hs * ws <= RESTORE_VAE_MAX_TOKENS && p->stats <= avail) break;
        if (hs <= 1 && ws <= 1) {
            snprintf(err, errlen, "--max-memory %g GiB: no downscaled copy of the image fits for the VAE statistics",
                     o->max_memory_gib);
            return -1;
        }
    }
    p->peak = p->weights + p->buffers +
              fmax(fmax(p->extractor, p->encoder), fmax(fmax(p->unet_tile, p->decoder), p->stats));
    return 0;
}

void restore_plan_print(FILE *f, const RestorePlan *p, int H, int W) {
    char how[160];
    fprintf(f, "| stage | runs on | estimate GiB |\n|---|---|---:|\n");
    fprintf(f, "| weights | (as loaded) | %.2f |\n", p->weights / GIB);
    if (p->buffers > 0) fprintf(f, "| image buffers (host) | %dx%d | %.2f |\n", W, H, p->buffers / GIB);
    if (p->extractor_scale == 1) snprintf(how, sizeof how, "whole image %dx%d", W, H);
    else snprintf(how, sizeof how, "the image downscaled %dx", p->extractor_scale);
    fprintf(f, "| degradation extractor | %s | %.2f |\n", how, p->extractor / GIB);
    if (p->vae_whole) snprintf(how, sizeof how, "whole image %dx%d", W, H);
    else snprintf(how, sizeof how, "%dx%d tiles, overlap %d", p->vae_tile, p->vae_tile, p->vae_overlap);
    fprintf(f, "| VAE encoder | %s | %.2f |\n", how, p->encoder / GIB);
    if (!p->vae_whole)
        fprintf(f, "| VAE GroupNorm statistics | the image downscaled %dx | %.2f |\n", p->stats_scale, p->stats / GIB);
    if (p->unet.tile) snprintf(how, sizeof how, "%dx%d latent tiles, overlap %d%s", p->unet.tile, p->unet.tile, p->unet.overlap,
                               p->merge ? ", LoRA merged" : "");
    else snprintf(how, sizeof how, "whole latent%s", p->merge ? ", LoRA merged" : "");
    fprintf(f, "| UNet | %s | %.2f |\n", how, p->unet_tile / GIB);
    if (p->vae_whole) snprintf(how, sizeof how, "whole image %dx%d", W, H);
    else snprintf(how, sizeof how, "%dx%d tiles, overlap %d", p->vae_tile, p->vae_tile, p->vae_overlap);
    fprintf(f, "| VAE decoder | %s | %.2f |\n", how, p->decoder / GIB);
    fprintf(f, "| **peak** | weights + buffers + the largest stage | **%.2f** |\n", p->peak / GIB);
}
