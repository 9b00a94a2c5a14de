// High-fidelity detail enhancement (DOD stage 2): fuses the VAE encoder's skip features into the
// decoder before each up block.
//
// Before decoder up block i (i = 0..L-1, L = len(block_out_channels)):
//   f   = skip_conv_i(s[L-1-i])                      1 x 1, no bias (encoder channels -> C_i)
//   dec = dec + w_i * Fuse_i(concat(f, dec))         w_i a learnable scalar
//   Fuse = ResBlock(2C -> C) -> RRDB(C, growth) -> ResBlock(C -> C)
// s[j] is the INPUT of encoder down block j (channels b0, b0, b1, .., b_{L-2}; SD: 128, 128, 256, 512)
// and C_i the decoder's channels entering up block i (b_{L-1}, b_{L-1}, b_{L-2}, ..; SD: 512, 512, 512,
// 256), both from the VAE config.
//   ResBlock: GroupNorm(groups, eps) -> SiLU -> conv3x3 -> GroupNorm -> SiLU -> conv3x3, plus the input
//             (through a 1 x 1 conv when the channel count changes).
//   RRDB (ESRGAN): 3 residual dense blocks (RDB) of five 3x3 convs, conv_j sees concat(x, x1..x_{j-1}),
//             LeakyReLU(0.2) after the first four; RDB(x) = 0.2 * conv5 + x; RRDB(x) = 0.2 * RDB3(RDB2(RDB1(x))) + x.
//
// Parameters (trainable f32, in a caller-owned ParamStore, names after "<prefix>"):
//   skip_convs.<i>.weight                          [C_i, C_enc, 1, 1]
//   fuse.<i>.res_in.{norm1,conv1,norm2,conv2,conv_shortcut}.{weight,bias}
//   fuse.<i>.rrdb.rdb<1..3>.conv<1..5>.{weight,bias}
//   fuse.<i>.res_out.{norm1,conv1,norm2,conv2}.{weight,bias}
//   fuse_weights.<i>                               [1]
#pragma once
#include "autograd/ops.h"
#include "autograd/params.h"
#include "layers/sd_blocks.h"
#include "layers/sd_config.h"

typedef struct {
    int n_levels;                              // L
    int block_out_channels[SD_MAX_LEVELS];     // the VAE's
    int groups;                                // the VAE's norm_num_groups
    float eps;                                 // 1e-6 (diffusers' VAE GroupNorm eps)
    int growth;                                // RRDB growth channels: 32
    float skip_init;                           // skip conv weights' constant init: 1e-5
    float weight_init;                         // w_i init: 1.0
    bool public_init;                          // RRDB convs: the public code's init (true) or PyTorch's default
                                               // (false); see dod_detail_init
} DodDetailConfig;

typedef struct {
    DodDetailConfig cfg;
    ParamStore *ps;
    char prefix[128];
    SdGroupNormFn group_norm;   // optional: replaces every GroupNorm (layers/sd_blocks.h; NULL: the fused ops);
    void *group_norm_ctx;       // called with the norm's full name "<prefix>fuse.<i>.res_in.norm1"
} DodDetail;

// DOD's sizes for a VAE: its block_out_channels and norm groups, growth 32, eps 1e-6, skip 1e-5, w 1,
// the public code's init.
DodDetailConfig dod_detail_config_from_vae(const SdVaeConfig *vae);
// Channels of skip feature s[j] (encoder) and entering decoder up block i.
int dod_detail_skip_channels(const DodDetailConfig *cfg, int j);
int dod_detail_dec_channels(const DodDetailConfig *cfg, int i);

// Creates every parameter in `store` under `prefix` and initialises it (seeded): skip convs constant
// skip_init, w_i weight_init, GroupNorm weight 1 / bias 0, the ResBlocks' convs PyTorch's default Conv2d
// init (weight and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))), the RRDB convs with public_init as
// basicsr's RRDB does (default_init_weights(..., 0.1): weight N(0, 2 / fan_in) x 0.1, bias 0), else as
// the ResBlocks' convs.
void dod_detail_init(DodDetail *m, const DodDetailConfig *cfg, ParamStore *store, const char *prefix, uint64_t seed);
// Uses parameters already in `store` (e.g. a loaded checkpoint), checking every name and shape.
void dod_detail_bind(DodDetail *m, const DodDetailConfig *cfg, ParamStore *store, const char *prefix);

// Fuse_i(concat(f, dec)) for up block i: f [N, C_i, H, W] (already skip-converted), dec [N, C_i, H, W]
// (= new tensor [N, C_i, H, W]).
Tensor *dod_detail_fuse(const DodDetail *m, int i, Tensor *f, Tensor *dec);
// dec + w_i * Fuse_i(concat(skip_conv_i(skip), dec)) (= new tensor); skip = s[L-1-i].
Tensor *dod_detail_apply(const DodDetail *m, int i, Tensor *skip, Tensor *dec);

// The decoder callback (layers/vae.h VaeBeforeUpFn) with its context: the encoder's skip features
// (VaeEncoded.skips) and whether to run each fuse under activation recomputation (ag_checkpoint).
typedef struct {
    const DodDetail *m;
    int n_skips;
    Tensor *skips[SD_MAX_LEVELS];
    bool recompute;
} DodDetailCtx;
Tensor *dod_detail_before_up(void *ctx, int i, Tensor *h);
