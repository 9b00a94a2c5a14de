// The paper's degradation extractor: the encoder half of OpenAI's guided-diffusion UNet ("ADM",
// guided_diffusion/unet.py UNetModel), frozen, run at one fixed timestep, its middle block's output
// average-pooled over space. DOD uses 256x256_diffusion_uncond.pt (the 256x256 unconditional ImageNet
// model) at t = 0 on the degraded image: [N, 3, H, W] in [-1, 1] -> [N, 1024].
//
//   emb = time_embed(timestep_embedding(t, C0))          linear -> SiLU -> linear (C0 -> 4 C0 -> 4 C0)
//   h   = input_blocks(x, emb)                           conv_in, then per level num_res_blocks ResBlocks
//                                                        (+ attention where the file has it) and, except
//                                                        after the last level, a downsampling ResBlock
//   h   = middle_block(h, emb)                           ResBlock, attention, ResBlock
//   d   = mean over H, W of h                            [N, C_mid]
//
// ResBlock (use_scale_shift_norm): h = conv(SiLU(GN(x))); [scale; shift] = linear(SiLU(emb));
// h = conv(SiLU(GN(h) * (1 + scale) + shift)); out = skip(x) + h, skip a 1x1 conv when the channel
// count changes. A downsampling ResBlock (resblock_updown) average-pools (2x2, stride 2, floor) both
// SiLU(GN(x)) before its first conv and x before the skip. Attention (QKVAttentionLegacy, the order
// of use_new_attention_order = False): qkv = conv1x1(GN(x)) split per head into q, k, v of
// head_channels each, softmax(q k^T / sqrt(head_channels)) v, proj_out, + x. GroupNorm: `groups`
// groups, eps 1e-5, computed in f32 (GroupNorm32).
//
// The timestep is fixed when the encoder is built, so emb is a constant: every ResBlock's scale and
// shift are folded into its second norm's affine (gamma (1 + scale), beta (1 + scale) + shift) at load
// time, and the norm, SiLU and conv then run as one fused op. time_embed and emb_layers are read to
// do that and not kept. output_blocks and out (the decoder half) are never read.
//
// Loading reads only time_embed.*, input_blocks.*, middle_block.* from the file (any format
// tensor_file_open reads: the released .pt is a PyTorch zip checkpoint, read by the safe reader of
// layers/torch_ckpt.h). The architecture comes from the tensors themselves (base width C0, the widths
// of every block, where attention is) plus what a state dict does not record: num_res_blocks,
// head_channels, groups (AdmEncoderConfig; the defaults are the released model's flags). Everything
// else is checked against the shapes, and a file of another layout (resblock_updown False,
// use_scale_shift_norm False, class-conditional) is refused naming the tensor.
//
// Frozen and without gradient: adm_encoder_features runs with grad mode off, each block as one unit
// that gives back its arena except its output (ag_run_keeping_output), so a forward holds one block's
// activations at a time and nothing for backward. Conv and linear weights are stored as the requested
// dtype (bf16 like the other frozen weights), norms and the folded affines in f32; compute is f32.
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "autograd/params.h"

#define ADM_MAX_LEVELS 8
#define ADM_MAX_BLOCKS 64

typedef struct {
    int num_res_blocks;  // ResBlocks per level before its downsampling block: 2
    int head_channels;   // num_head_channels: 64
    int groups;          // GroupNorm32 groups: 32
    float timestep;      // the fixed timestep: 0 (DOD)
} AdmEncoderConfig;

// One unit of the encoder: a (possibly downsampling) ResBlock with its attention, or conv_in.
typedef struct {
    int level;           // -1 for conv_in
    bool down;           // a downsampling ResBlock
    bool attention;      // followed by an AttentionBlock (its ".1." tensors)
    int cin, cout;
} AdmBlock;

typedef struct AdmEncoder {
    AdmEncoderConfig cfg;
    char path[1024];     // the weights file (messages), or "random"
    ParamStore *ps;      // frozen tensors: conv_in / ResBlock / attention weights under derived names
    int base_channels;   // C0 (num_channels)
    int n_levels;        // len(channel_mult)
    int n_blocks;        // input blocks, conv_in included
    AdmBlock block[ADM_MAX_BLOCKS];
    int out_channels;    // the middle block's width: the feature dimension
} AdmEncoder;

// The released model's flags: num_res_blocks 2, head_channels 64, groups 32, timestep 0.
AdmEncoderConfig adm_encoder_default_config(void);

// Loads path (=): its time_embed.*, input_blocks.*, middle_block.* tensors. Conv/linear weights stored
// as dtype (DT_F32 or DT_BF16). NULL with err naming the file and the tensor at fault.
AdmEncoder *adm_encoder_load(const char *path, const AdmEncoderConfig *cfg, DType dtype, char *err, size_t errlen);

// The tensors (names and shapes, as guided-diffusion's state dict has them) of the encoder half of a
// UNetModel with base width c0, channel_mult (n_levels entries), attention on the levels with
// attention_level[l] and in the middle block: into ps as f32 tensors filled with seeded random values
// (weights N(0, 1 / fan_in), biases N(0, 0.01), norm weights 1 + N(0, 0.01)), for benchmarks and tests
// without the 2 GB file. The released model: c0 256, mult 1 1 2 2 4 4, attention on levels 3, 4, 5.
ParamStore *adm_encoder_random_tensors(const AdmEncoderConfig *cfg, int c0, const int *channel_mult, int n_levels,
                                       const bool *attention_level, uint64_t seed);
// Builds an encoder from file-named f32 tensors (ps is consumed). name labels it in messages. NULL
// with err naming the tensor at fault.
AdmEncoder *adm_encoder_from_tensors(ParamStore *ps, const AdmEncoderConfig *cfg, DType dtype, const char *name,
                                     char *err, size_t errlen);

void adm_encoder_free(AdmEncoder *e);
// Every tensor moved to device (build on the CPU, then move).
void adm_encoder_to_device(AdmEncoder *e, Device device);

// The middle block's output [N, C_mid, h, w] for x [N, 3, H, W] (= new arena tensor, grad mode off
// inside: no tape node). H and W must be at least 2^(n_levels - 1) (one pixel after the last pool).
Tensor *adm_encoder_middle(AdmEncoder *e, Tensor *x);
// Its average over h, w: [N, C_mid] (= new arena tensor, no gradient).
Tensor *adm_encoder_features(AdmEncoder *e, Tensor *x);

// The DOD modulation's extractor (layers/dod_modulation.h DodExtractFn): ctx is the AdmEncoder;
// adm_encoder_features(ctx, y).
Tensor *adm_encoder_extract(void *ctx, Tensor *y);
