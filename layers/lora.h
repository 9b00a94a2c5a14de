// LoRA adapters for the Stable Diffusion UNet and VAE encoder, plain and conditional (DOD).
//
//   plain:        h = W0 x + s * B(A x)
//   conditional:  h = W0 x + s * B((1 + gamma_k) * (A x) + beta_k)        s = alpha / r
//
// A is r x in (linear) or a conv with the base layer's kernel, stride and padding (Cin -> r); B is
// out x r (linear) or a 1 x 1 conv (r -> Cout). gamma_k, beta_k [N, r] come per sample from the
// degradation modulation (layers/dod_modulation.h) for the layer's block k, and broadcast over
// tokens (linear on [N, L, C]) or over space (conv). The frozen base weight W0 is never written.
//
// An adapter set plugs into the SD blocks through their layer hook (layers/sd_blocks.h):
// net.hook = lora_hook, net.hook_ctx = the LoraSet. The hook finds the layer's adapter by name (hash
// table: it runs after every conv/linear) and adds the adapter's output to the base output.
//
// Adapter tensors are persistent trainable f32 tensors registered in a ParamStore the caller owns,
// named with PEFT's convention: "<name_prefix><layer>.lora_A.weight", "<name_prefix><layer>.lora_B.weight".
#pragma once
#include "autograd/ops.h"
#include "autograd/params.h"
#include "layers/sd_blocks.h"

#define LORA_N_BLOCKS 10   // block embeddings: down 0..3, mid 4, up 5..8, everything else 9

typedef enum { LORA_LINEAR = 0, LORA_CONV = 1 } LoraKind;
// Which layers of a diffusers model get adapters (the rules of the DOD spec, see lora_is_target).
// UNET_OSEDIFF is OSEDiff's UNet LoRA, which the VSD regulariser uses (layers/dod_vsd.h).
typedef enum { LORA_TARGETS_UNET = 0, LORA_TARGETS_VAE_ENCODER = 1, LORA_TARGETS_UNET_OSEDIFF = 2 } LoraTargets;

typedef struct {
    char *layer;          // base layer name as the hook sees it (no SdNet prefix, no ".weight")
    LoraKind kind;        // from the base weight's ndim: 2 -> linear, 4 -> conv
    int block;            // modulation block index (lora_block_index), used when conditional
    bool conditional;     // false: plain LoRA (VAE encoder)
    int rank;
    float scale;          // alpha / rank
    int64_t in, out;      // base layer's input / output features (channels)
    int64_t kh, kw;       // base kernel (1 x 1 for linear)
    Tensor *A, *B;        // linear: A [r, in], B [out, r]; conv: A [r, Cin, kh, kw], B [Cout, r, 1, 1]
} LoraAdapter;

typedef struct LoraSet LoraSet;

LoraSet *lora_set_new(void);
// Frees the set and its table (the adapter tensors belong to the ParamStore they were registered in).
void lora_set_free(LoraSet *set);
int lora_set_count(const LoraSet *set);
LoraAdapter *lora_set_at(LoraSet *set, int i);          // insertion order
LoraAdapter *lora_set_find(const LoraSet *set, const char *layer);  // NULL when the layer has none

// True when `layer` (a diffusers layer name without ".weight") is an adapter target:
//  UNET: every to_q, to_k, to_v, to_out.0, proj_in, proj_out, ff.net.0.proj, ff.net.2, resnet conv1,
//        conv2, conv_shortcut, down/up-sampler conv, and the top-level conv_out (not conv_in,
//        time_embedding.*, time_emb_proj, norms).
//  VAE_ENCODER: under "encoder.": conv_in, resnet conv1/conv2/conv_shortcut, downsampler conv,
//        conv_out, mid-block attention to_q/to_k/to_v/to_out.0 (not quant_conv, nothing in the decoder).
//  UNET_OSEDIFF: the UNET targets and conv_in (OSEDiff's substring list "to_k", ..., "conv", ...
//        over the non-norm weights selects exactly these on SD 2.x).
bool lora_is_target(LoraTargets which, const char *layer);
// Block index of a UNet layer: "down_blocks.i." -> i, "mid_block." -> 4, "up_blocks.i." -> 5 + i,
// anything else -> 9. Fatal (naming the layer) for a down/up block index outside 0..3.
int lora_block_index(const char *layer);

// Adds one adapter for `layer` whose frozen base weight w0 has shape [out, in] or [Cout, Cin, kh, kw]
// (square kernel). Creates and registers A and B in `store` ("<name_prefix><layer>.lora_A.weight", ...),
// trainable, initialised A ~ N(0, (1/rank)^2) (PEFT init_lora_weights="gaussian": std 1/r) from a seed
// derived from `seed` and the layer name, B = 0. Fatal on a duplicate layer. Returns the adapter.
LoraAdapter *lora_add(LoraSet *set, ParamStore *store, const char *name_prefix, const char *layer,
                      const Tensor *w0, int rank, float alpha, bool conditional, uint64_t seed);

// Adds adapters for every target of `which` found in `base` (tensors "<base_prefix><layer>.weight";
// names not starting with base_prefix are ignored). Conditional for UNET, plain for VAE_ENCODER and
// UNET_OSEDIFF.
// Returns how many were added.
int lora_add_targets(LoraSet *set, ParamStore *base, const char *base_prefix, LoraTargets which, ParamStore *store,
                     const char *name_prefix, int rank, float alpha, uint64_t seed);

// Sets the per-block modulation used by conditional adapters from now on: gamma[k], beta[k] [N, r]
// (not copied; must live as long as the forward and backward that use them). NULL arrays clear it.
// Blocks run under activation recomputation deliver d(loss)/d(gamma, beta) to the modulation too
// (gradient buffers are not arena memory, so the recomputation's release keeps them).
void lora_set_modulation(LoraSet *set, Tensor *const *gamma, Tensor *const *beta);
// Turns every adapter off (the hook returns the base output) or back on.
void lora_set_enabled(LoraSet *set, bool on);

// SdLayerHookFn: y + s * B((1 + gamma) * (A x) + beta) for layers with an adapter (x the base layer's
// input, y its output, gamma/beta [N, r] of the modulation for conditional adapters), y itself
// otherwise. ctx is a LoraSet. The up-projection accumulates into y's storage (op_add_projection_into:
// y is dead after the hook), so an adapter holds only its low-rank activations, not three more
// layer-sized tensors.
Tensor *lora_hook(void *ctx, const char *layer, Tensor *x, Tensor *y);
// SdHookNeedsInputFn of lora_hook: true where the layer has an adapter (and the set is enabled).
bool lora_hook_needs_input(void *ctx, const char *layer);
// SdNormHookFn: lora_hook for a conv whose input is silu(groupnorm(x)); A's conv runs fused with the
// norm (op_group_norm_silu_conv2d), so neither the base conv nor the adapter keeps the normalised input.
Tensor *lora_hook_norm(void *ctx, const char *layer, const SdNormSiluInput *in, Tensor *y);

// Stride and padding of a conv with a k x k kernel that maps an h x w input to an oh x ow output, among
// (1, k/2), (2, k/2), (2, 0), (1, 0) (SD's convs: same-padding, UNet downsampler, VAE downsampler after
// its explicit (0, 1, 0, 1) pad, 1 x 1). Returns false when none fits.
bool lora_conv_geometry(int64_t k, int64_t h, int64_t w, int64_t oh, int64_t ow, int *stride, int *padding);

// Merge for inference (one image): w_out = w0 + s * B diag(1 + gamma) A, b_out = b0 + s * B beta
// (both =). w0 as the base weight (any dtype), b0 [out] or NULL (zero), gamma/beta r floats or NULL
// (plain / zero). w_out has w0's shape, b_out [out]; both f32.
void lora_merge(const LoraAdapter *ad, const Tensor *w0, const Tensor *b0, const float *gamma, const float *beta,
                Tensor *w_out, Tensor *b_out);
// Merges every adapter of the set for sample n of the current modulation into new persistent tensors
// "<base_prefix><layer>.weight" and ".bias" registered in `out` (a store that overlays `base`).
// Returns how many layers were merged.
int lora_merge_all(const LoraSet *set, ParamStore *base, const char *base_prefix, int n, ParamStore *out);
