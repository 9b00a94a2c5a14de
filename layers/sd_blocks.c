// Stable Diffusion building blocks (diffusers 0.21.4 semantics); see sd_blocks.h.
#include "layers/sd_blocks.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// ---- names and parameters ------------------------------------------------------------------------
const char *sd_name(const SdNet *net, char out[SD_NAME_MAX], const char *a, const char *b) {
    int n = snprintf(out, SD_NAME_MAX, "%s%s%s", net->prefix ? net->prefix : "", a ? a : "", b ? b : "");
    DOD_CHECK(n >= 0 && n < SD_NAME_MAX, "sd_name", "tensor name %s%s%s is longer than %d characters",
              net->prefix ? net->prefix : "", a ? a : "", b ? b : "", SD_NAME_MAX - 1);
    return out;
}

const char *sd_fmt(char out[SD_NAME_MAX], const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, SD_NAME_MAX, fmt, ap);
    va_end(ap);
    DOD_CHECK(n >= 0 && n < SD_NAME_MAX, "sd_fmt", "name %s... is longer than %d characters", out, SD_NAME_MAX - 1);
    return out;
}

Tensor *sd_param(const SdNet *net, const char *layer, const char *suffix) {
    char name[SD_NAME_MAX];
    return params_require(net->ps, sd_name(net, name, layer, suffix), "stable diffusion forward");
}

Tensor *sd_param_opt(const SdNet *net, const char *layer, const char *suffix) {
    char name[SD_NAME_MAX];
    return params_get(net->ps, sd_name(net, name, layer, suffix));
}

bool sd_has_layer(const SdNet *net, const char *layer) { return sd_param_opt(net, layer, ".weight") != NULL; }

static Tensor *apply_hook(const SdNet *net, const char *layer, Tensor *x, Tensor *y) {
    return net->hook ? net->hook(net->hook_ctx, layer, x, y) : y;
}

static bool hook_needs_input(const SdNet *net, const char *layer) {
    if (!net->hook) return false;
    return net->hook_needs_input ? net->hook_needs_input(net->hook_ctx, layer) : true;
}

// ---- single layers ---------------------------------------------------------------------------------
static Tensor *conv_weight(const SdNet *net, const char *layer) {
    Tensor *w = sd_param(net, layer, ".weight");
    DOD_CHECK(w->ndim == 4, layer, "conv weight %s.weight has shape %s, expected [Cout, Cin, kh, kw]", layer,
              shape_str(w));
    return w;
}

Tensor *sd_conv(const SdNet *net, const char *layer, Tensor *x, int stride, int padding) {
    Tensor *y = op_conv2d(x, conv_weight(net, layer), sd_param_opt(net, layer, ".bias"), stride, padding);
    return apply_hook(net, layer, x, y);
}

Tensor *sd_linear(const SdNet *net, const char *layer, Tensor *x) {
    Tensor *w = sd_param(net, layer, ".weight");
    if (w->ndim == 4) {  // 1x1 conv weight used as a linear layer (old VAE attention checkpoints)
        DOD_CHECK(w->shape[2] == 1 && w->shape[3] == 1, layer, "linear weight %s.weight has shape %s", layer,
                  shape_str(w));
        int64_t shape2[2] = {w->shape[0], w->shape[1]};
        w = op_reshape(w, 2, shape2);
    }
    DOD_CHECK(w->ndim == 2, layer, "linear weight %s.weight has shape %s, expected [out, in]", layer, shape_str(w));
    Tensor *y = op_linear(x, w, sd_param_opt(net, layer, ".bias"));
    return apply_hook(net, layer, x, y);
}

Tensor *sd_group_norm(const SdNet *net, const char *layer, Tensor *x, int groups, float eps) {
    Tensor *gamma = sd_param(net, layer, ".weight"), *beta = sd_param(net, layer, ".bias");
    if (net->group_norm) return net->group_norm(net->group_norm_ctx, layer, x, groups, eps, gamma, beta);
    return op_group_norm(x, groups, gamma, beta, eps);
}

Tensor *sd_group_norm_silu_conv(const SdNet *net, const char *norm_layer, const char *conv_layer, Tensor *x, int groups,
                                float eps, int stride, int padding) {
    if (net->group_norm)  // a replaced norm is made, then the conv (and its hook) reads it
        return sd_conv(net, conv_layer, op_silu(sd_group_norm(net, norm_layer, x, groups, eps)), stride, padding);
    SdNormSiluInput in = {x, sd_param(net, norm_layer, ".weight"), sd_param(net, norm_layer, ".bias"), groups, eps};
    bool needs_x = hook_needs_input(net, conv_layer);
    if (needs_x && !net->hook_norm)  // the hook reads the made input
        return sd_conv(net, conv_layer, op_group_norm_silu(x, groups, in.gamma, in.beta, eps), stride, padding);
    Tensor *y = op_group_norm_silu_conv2d(x, groups, in.gamma, in.beta, eps, conv_weight(net, conv_layer),
                                          sd_param_opt(net, conv_layer, ".bias"), stride, padding);
    return needs_x ? net->hook_norm(net->hook_ctx, conv_layer, &in, y) : apply_hook(net, conv_layer, NULL, y);
}

Tensor *sd_layer_norm(const SdNet *net, const char *layer, Tensor *x, float eps) {
    return op_layer_norm(x, sd_param(net, layer, ".weight"), sd_param(net, layer, ".bias"), eps);
}

// ---- nearest resize to an arbitrary size: op_gather_hw with torch's source indices ------------------------
// torch's nearest_idx: same size -> identity, else floor(dst * (float)in / out) clamped.
static void nearest_index(int64_t in, int64_t out, int64_t *idx) {
    float scale = (float)in / (float)out;
    for (int64_t i = 0; i < out; i++) {
        int64_t s = in == out ? i : (int64_t)floorf((float)i * scale);
        idx[i] = s < in - 1 ? s : in - 1;
    }
}

Tensor *sd_resize_nearest(Tensor *x, int64_t out_h, int64_t out_w) {
    DOD_CHECK(x->ndim == 4 && out_h > 0 && out_w > 0, "sd_resize_nearest", "input %s to size %ldx%ld", shape_str(x),
              (long)out_h, (long)out_w);
    if (out_h == 2 * x->shape[2] && out_w == 2 * x->shape[3]) return op_upsample_nearest2x(x);
    int64_t *src_y = arena_alloc(sizeof(int64_t) * (size_t)(out_h + out_w), "sd_resize_nearest index");
    int64_t *src_x = src_y + out_h;
    nearest_index(x->shape[2], out_h, src_y);
    nearest_index(x->shape[3], out_w, src_x);
    return op_gather_hw(x, src_y, out_h, src_x, out_w);
}

Tensor *sd_nchw_to_tokens(Tensor *x) {
    static const int perm[4] = {0, 2, 3, 1};
    Tensor *p = op_permute(x, perm);
    int64_t shape[3] = {x->shape[0], x->shape[2] * x->shape[3], x->shape[1]};
    return op_reshape(p, 3, shape);
}

Tensor *sd_tokens_to_nchw(Tensor *x, int64_t h, int64_t w) {
    static const int perm[4] = {0, 3, 1, 2};
    DOD_CHECK(x->ndim == 3 && x->shape[1] == h * w, "sd_tokens_to_nchw", "tokens %s do not form a %ldx%ld image",
              shape_str(x), (long)h, (long)w);
    int64_t shape[4] = {x->shape[0], h, w, x->shape[2]};
    return op_permute(op_reshape(x, 4, shape), perm);
}

// ---- running a unit ----------------------------------------------------------------------------------
Tensor *sd_run_block(AgBlockFn fn, void *ctx, int n, Tensor *const *inputs, bool recompute) {
    if (ag_grad_enabled()) return recompute ? ag_checkpoint(fn, ctx, n, inputs) : fn(ctx, inputs);
    // Nothing is on the tape in no-grad mode, so everything the unit allocated is garbage but its output.
    return ag_run_keeping_output(fn, ctx, n, inputs);
}

// ---- blocks -------------------------------------------------------------------------------------------
Tensor *sd_resnet(const SdNet *net, const char *prefix, Tensor *x, Tensor *temb, int groups, float eps,
                  float output_scale_factor) {
    char layer[SD_NAME_MAX], norm[SD_NAME_MAX];
#define SUB(s) sd_fmt(layer, "%s.%s", prefix, s)
    sd_fmt(norm, "%s.norm1", prefix);
    Tensor *h = sd_group_norm_silu_conv(net, norm, SUB("conv1"), x, groups, eps, 1, 1);
    if (temb) {
        Tensor *t = sd_linear(net, SUB("time_emb_proj"), op_silu(temb));  // [N, Cout]
        int64_t shape4[4] = {t->shape[0], t->shape[1], 1, 1};
        h = op_add_into(h, op_reshape(t, 4, shape4));
    }
    sd_fmt(norm, "%s.norm2", prefix);
    h = sd_group_norm_silu_conv(net, norm, SUB("conv2"), h, groups, eps, 1, 1);
    Tensor *shortcut = sd_has_layer(net, SUB("conv_shortcut")) ? sd_conv(net, layer, x, 1, 0) : x;
    DOD_CHECK(tensor_same_shape(shortcut, h), prefix, "resnet output %s and shortcut %s differ (checkpoint lacks %s.conv_shortcut?)",
              shape_str(h), shape_str(shortcut), prefix);
    Tensor *out = op_add_into(h, shortcut);
    if (output_scale_factor != 1.0f) out = op_scale(out, 1.0f / output_scale_factor);
    return out;
#undef SUB
}

Tensor *sd_attention(const SdNet *net, const char *prefix, Tensor *x_q, Tensor *x_kv, int heads) {
    char layer[SD_NAME_MAX];
#define SUB(s) sd_fmt(layer, "%s.%s", prefix, s)
    Tensor *q = sd_linear(net, SUB("to_q"), x_q);
    Tensor *k = sd_linear(net, SUB("to_k"), x_kv);
    Tensor *v = sd_linear(net, SUB("to_v"), x_kv);
    DOD_CHECK(q->shape[2] % heads == 0, prefix, "inner dim %ld is not divisible by %d heads", (long)q->shape[2], heads);
    Tensor *a = op_attention(q, k, v, heads, 1.0f / sqrtf((float)(q->shape[2] / heads)));
    return sd_linear(net, SUB("to_out.0"), a);
#undef SUB
}

Tensor *sd_spatial_attention(const SdNet *net, const char *prefix, Tensor *x, int heads, int groups, float eps,
                             float rescale_output_factor) {
    char layer[SD_NAME_MAX];
    sd_fmt(layer, "%s.group_norm", prefix);
    Tensor *tokens = sd_nchw_to_tokens(sd_group_norm(net, layer, x, groups, eps));
    Tensor *a = sd_attention(net, prefix, tokens, tokens, heads);
    Tensor *out = op_add_into(sd_tokens_to_nchw(a, x->shape[2], x->shape[3]), x);
    if (rescale_output_factor != 1.0f) out = op_scale(out, 1.0f / rescale_output_factor);
    return out;
}

Tensor *sd_transformer_block(const SdNet *net, const char *prefix, Tensor *h, Tensor *context, int heads) {
    char layer[SD_NAME_MAX], sub[SD_NAME_MAX];
#define SUB(s) sd_fmt(layer, "%s.%s", prefix, s)
    Tensor *n = sd_layer_norm(net, SUB("norm1"), h, 1e-5f);
    sd_fmt(sub, "%s.attn1", prefix);
    h = op_add_into(sd_attention(net, sub, n, n, heads), h);
    n = sd_layer_norm(net, SUB("norm2"), h, 1e-5f);
    sd_fmt(sub, "%s.attn2", prefix);
    h = op_add_into(sd_attention(net, sub, n, context ? context : n, heads), h);
    n = sd_layer_norm(net, SUB("norm3"), h, 1e-5f);
    Tensor *ff = op_geglu(sd_linear(net, SUB("ff.net.0.proj"), n));
    ff = sd_linear(net, SUB("ff.net.2"), ff);
    return op_add_into(ff, h);
#undef SUB
}

Tensor *sd_transformer2d(const SdNet *net, const char *prefix, Tensor *x, Tensor *context, int heads, int groups,
                         int n_layers) {
    char layer[SD_NAME_MAX];
#define SUB(s) sd_fmt(layer, "%s.%s", prefix, s)
    int64_t h = x->shape[2], w = x->shape[3];
    Tensor *hs = sd_group_norm(net, SUB("norm"), x, groups, 1e-6f);
    bool conv_proj = sd_param(net, SUB("proj_in"), ".weight")->ndim == 4;  // decided by the checkpoint
    if (conv_proj) {
        hs = sd_nchw_to_tokens(sd_conv(net, SUB("proj_in"), hs, 1, 0));
    } else {
        hs = sd_linear(net, SUB("proj_in"), sd_nchw_to_tokens(hs));
    }
    for (int i = 0; i < n_layers; i++) {
        char block[SD_NAME_MAX];
        sd_fmt(block, "%s.transformer_blocks.%d", prefix, i);
        hs = sd_transformer_block(net, block, hs, context, heads);
    }
    if (conv_proj) {
        hs = sd_conv(net, SUB("proj_out"), sd_tokens_to_nchw(hs, h, w), 1, 0);
    } else {
        hs = sd_tokens_to_nchw(sd_linear(net, SUB("proj_out"), hs), h, w);
    }
    return op_add_into(hs, x);
#undef SUB
}

Tensor *sd_downsample(const SdNet *net, const char *prefix, Tensor *x, int padding) {
    char layer[SD_NAME_MAX];
    sd_fmt(layer, "%s.conv", prefix);
    if (padding == 0) return sd_conv(net, layer, op_pad2d(x, 0, 1, 0, 1), 2, 0);
    return sd_conv(net, layer, x, 2, padding);
}

Tensor *sd_upsample(const SdNet *net, const char *prefix, Tensor *x, int64_t out_h, int64_t out_w) {
    char layer[SD_NAME_MAX];
    sd_fmt(layer, "%s.conv", prefix);
    if (out_h <= 0 || out_w <= 0) {
        out_h = 2 * x->shape[2];
        out_w = 2 * x->shape[3];
    }
    if (out_h == 2 * x->shape[2] && out_w == 2 * x->shape[3] && !hook_needs_input(net, layer)) {
        // The upsampled tensor (4x the input) is never kept (op_upsample_nearest2x_conv2d).
        Tensor *y = op_upsample_nearest2x_conv2d(x, conv_weight(net, layer), sd_param_opt(net, layer, ".bias"), 1, 1);
        return apply_hook(net, layer, NULL, y);
    }
    return sd_conv(net, layer, sd_resize_nearest(x, out_h, out_w), 1, 1);
}
