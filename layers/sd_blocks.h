// Building blocks shared by the Stable Diffusion UNet and VAE, matching diffusers 0.21.4:
// ResnetBlock2D, Attention (cross/self, and the VAE mid-block flavour), BasicTransformerBlock,
// Transformer2DModel, Downsample2D and Upsample2D.
//
// Layers are keyed by the checkpoint's own (diffusers) tensor names: a block is called with the
// name prefix of its module ("down_blocks.0.resnets.1") and looks its weights up in a ParamStore
// ("down_blocks.0.resnets.1.conv1.weight"). Nothing is copied: half-precision weights are widened
// by the ops on use. Everything runs through autograd/ops.h, so backward works through every block.
//
// Every conv/linear layer goes through sd_conv()/sd_linear(), which call an optional layer hook
// after the base layer: adapters (LoRA) add their contribution there without the blocks knowing.
#pragma once
#include "autograd/ops.h"
#include "autograd/params.h"

// Called after every conv/linear layer with the layer's name (without ".weight"; e.g.
// "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"), the layer's input x and the base
// output y. Returns the tensor the network continues with (y, or y plus an adapter's output). y is
// the fresh output of op_conv2d / op_linear and nothing else reads it, so a hook may overwrite it
// (op_add_projection_into); what the hook returns must be y or another tensor nothing else reads,
// since the blocks write residual adds into it (op_add_into), never x. Under activation recomputation the hook is re-run in backward, so it must be deterministic.
typedef Tensor *(*SdLayerHookFn)(void *ctx, const char *layer, Tensor *x, Tensor *y);
// Whether the hook reads x at this layer (an adapter, a capture). Where it does not, the blocks may
// fuse the layer with the op before it and call the hook with x = NULL (the fused op never keeps the
// layer's input: op_group_norm_silu_conv2d).
typedef bool (*SdHookNeedsInputFn)(void *ctx, const char *layer);
// A conv layer's input given as silu(groupnorm(x)) rather than as a tensor: what a hook gets through
// SdNormHookFn, so that it can fuse its own convs with the norm (op_group_norm_silu_conv2d) and the
// normalised tensor is never kept.
typedef struct {
    Tensor *x, *gamma, *beta;
    int groups;
    float eps;
} SdNormSiluInput;
// The layer hook for a conv that follows group norm + SiLU, given that input in its unmade form. Same
// contract as SdLayerHookFn otherwise.
typedef Tensor *(*SdNormHookFn)(void *ctx, const char *layer, const SdNormSiluInput *in, Tensor *y);

// Replaces a group norm of the network (layer: the norm's name, e.g. "encoder.mid_block.resnets.0.norm1";
// gamma, beta its affine parameters): returns GroupNorm(x) computed as the function chooses (= new
// tensor of x's shape). Restoration in tiles uses it to normalise every tile with statistics of the
// whole image (eval/restore.h); training never sets it.
typedef Tensor *(*SdGroupNormFn)(void *ctx, const char *layer, Tensor *x, int groups, float eps, Tensor *gamma,
                                 Tensor *beta);

// Where a network's weights live. prefix is prepended to every name ("" for a store holding one
// model with diffusers' own names, or e.g. "vae." for a shared store).
typedef struct {
    ParamStore *ps;
    const char *prefix;
    SdLayerHookFn hook;   // NULL: no adapters
    void *hook_ctx;
    SdHookNeedsInputFn hook_needs_input;  // NULL with a hook: it reads x at every layer
    SdNormHookFn hook_norm;               // optional: the hook for norm -> SiLU -> conv layers (NULL: the
                                          // norm's output is made and passed to hook)
    SdGroupNormFn group_norm;             // optional: every GroupNorm goes through it (NULL: op_group_norm
    void *group_norm_ctx;                 // and the fused norm ops)
} SdNet;

#define SD_NAME_MAX 256

// Full name prefix + a + b into out (fatal when too long). Returns out.
const char *sd_name(const SdNet *net, char out[SD_NAME_MAX], const char *a, const char *b);
// printf into a name buffer; fatal (naming the truncated text) when it does not fit. Returns out.
const char *sd_fmt(char out[SD_NAME_MAX], const char *fmt, ...) __attribute__((format(printf, 2, 3)));
// The tensor prefix + layer + suffix (suffix e.g. ".weight"); fatal naming it when absent.
Tensor *sd_param(const SdNet *net, const char *layer, const char *suffix);
// Same, NULL when absent (optional biases).
Tensor *sd_param_opt(const SdNet *net, const char *layer, const char *suffix);
// True when prefix + layer + ".weight" exists (used to find how many resnets/blocks a level has).
bool sd_has_layer(const SdNet *net, const char *layer);

// ---- single layers (each = a new tensor) -------------------------------------------------------
// torch.nn.Conv2d "layer" (weight [Cout, Cin, k, k], optional bias), then the hook.
Tensor *sd_conv(const SdNet *net, const char *layer, Tensor *x, int stride, int padding);
// torch.nn.Linear "layer" over the last dim of x; a [out, in, 1, 1] weight (1x1 conv stored in
// old checkpoints) is used as [out, in]. Then the hook.
Tensor *sd_linear(const SdNet *net, const char *layer, Tensor *x);
// GroupNorm `layer` of x: op_group_norm, or net->group_norm when set.
Tensor *sd_group_norm(const SdNet *net, const char *layer, Tensor *x, int groups, float eps);
// sd_conv(net, conv_layer, silu(sd_group_norm(net, norm_layer, x, ...)), stride, padding), fused
// (op_group_norm_silu_conv2d, which keeps neither the norm's output nor the conv's input) where the
// hook does not read the conv's input or takes it unmade (hook_norm), and net->group_norm is unset.
Tensor *sd_group_norm_silu_conv(const SdNet *net, const char *norm_layer, const char *conv_layer, Tensor *x, int groups,
                                float eps, int stride, int padding);
Tensor *sd_layer_norm(const SdNet *net, const char *layer, Tensor *x, float eps);

// Nearest-neighbour resize of NCHW x to (out_h, out_w), torch F.interpolate(mode='nearest')
// semantics (source index floor(dst * in / out) in f32). Exactly 2x goes to op_upsample_nearest2x,
// any other size to op_gather_hw with those source indices.
Tensor *sd_resize_nearest(Tensor *x, int64_t out_h, int64_t out_w);
// [N, C, H, W] <-> [N, H*W, C] (copies through op_permute).
Tensor *sd_nchw_to_tokens(Tensor *x);
Tensor *sd_tokens_to_nchw(Tensor *x, int64_t h, int64_t w);

// Runs fn(ctx, inputs) as one unit of a network:
//  - grad mode off (inference): the arena used inside the unit (activations, widened half-precision
//    weights) is released afterwards and only the output is kept (copied down), so a forward needs
//    the skip tensors plus one unit's internals, not every intermediate;
//  - grad mode on and recompute: through ag_checkpoint (ctx must outlive the step: arena or longer);
//  - otherwise: fn directly.
Tensor *sd_run_block(AgBlockFn fn, void *ctx, int n, Tensor *const *inputs, bool recompute);

// ---- blocks ------------------------------------------------------------------------------------
// ResnetBlock2D ("default" time embedding norm): norm1 -> SiLU -> conv1 (+ time_emb_proj(SiLU(temb))
// broadcast over space when temb != NULL) -> norm2 -> SiLU -> conv2, plus the input (through
// conv_shortcut when the checkpoint has one), all divided by output_scale_factor.
Tensor *sd_resnet(const SdNet *net, const char *prefix, Tensor *x, Tensor *temb, int groups, float eps,
                  float output_scale_factor);

// diffusers Attention (AttnProcessor semantics): q = to_q(x_q), k = to_k(x_kv), v = to_v(x_kv),
// multi-head softmax(q k^T / sqrt(d)) v, then to_out.0. x_q [B, Lq, Cq], x_kv [B, Lk, Ckv] (x_kv ==
// x_q for self-attention). Biases are used when present (VAE has them, the UNet does not).
Tensor *sd_attention(const SdNet *net, const char *prefix, Tensor *x_q, Tensor *x_kv, int heads);

// The VAE mid-block attention on [N, C, H, W]: group_norm -> tokens -> sd_attention (heads =
// C / head_dim) -> back to NCHW, + residual, / rescale_output_factor.
Tensor *sd_spatial_attention(const SdNet *net, const char *prefix, Tensor *x, int heads, int groups, float eps,
                             float rescale_output_factor);

// BasicTransformerBlock on tokens h [B, L, C]: h += attn1(norm1(h)); h += attn2(norm2(h), context);
// h += ff(norm3(h)) with ff = net.0.proj -> GEGLU -> net.2. LayerNorm eps 1e-5.
Tensor *sd_transformer_block(const SdNet *net, const char *prefix, Tensor *h, Tensor *context, int heads);

// Transformer2DModel (continuous input): GroupNorm(groups, eps 1e-6) -> proj_in (1x1 conv when the
// checkpoint's proj_in.weight is 4-d, linear when 2-d) -> transformer_blocks.0..n_layers-1 ->
// proj_out -> + residual. x [N, C, H, W], context [N, L, D].
Tensor *sd_transformer2d(const SdNet *net, const char *prefix, Tensor *x, Tensor *context, int heads, int groups,
                         int n_layers);

// Downsample2D with use_conv: padding 1 -> conv stride 2 pad 1 (UNet); padding 0 -> zero-pad
// (0, 1, 0, 1) then conv stride 2 pad 0 (VAE). prefix names the module ("...downsamplers.0").
Tensor *sd_downsample(const SdNet *net, const char *prefix, Tensor *x, int padding);
// Upsample2D with use_conv: nearest resize to (out_h, out_w) (2x when both are 0) -> conv 3x3 pad 1.
Tensor *sd_upsample(const SdNet *net, const char *prefix, Tensor *x, int64_t out_h, int64_t out_w);
