// UNet2DConditionModel forward (diffusers 0.21.4) for SD 1.x, SD 2.x (base and 768-v) and SD-Turbo:
// down blocks CrossAttnDownBlock2D / DownBlock2D, mid block UNetMidBlock2DCrossAttn, up blocks
// CrossAttnUpBlock2D / UpBlock2D, "default" resnet time embedding, continuous Transformer2DModel.
//
// Attention heads follow diffusers 0.21 exactly: when the config has no num_attention_heads, the
// config's attention_head_dim IS the number of heads (the historical naming bug), per level as an
// int or a list; down level i uses heads[i], the mid block heads[last], up block i the reversed
// list's entry i; the per-head dim is the block's channels / heads.
#pragma once
#include "layers/sd_blocks.h"
#include "layers/sd_config.h"

typedef struct {
    SdUNetConfig cfg;          // architecture (layers/sd_config.h): levels, heads, block types, ...
    SdNet net;                 // weights (diffusers names) and the optional layer hook (LoRA)
    ParamStore *owned_ps;      // set by unet_load: freed with its tensors by unet_free
    void *owned_file;          // set by unet_load: the checkpoint mapping its zero-copy views point into
} Unet;

typedef struct {
    // Run every down/up layer (resnet + its transformer), every sampler and the mid block through
    // ag_checkpoint: activations inside them are recomputed in backward instead of kept.
    bool recompute_blocks;
} UnetOptions;

// Loads a UNet through layers/sd_weights.h (every tensor the config implies, shapes checked):
//  - model_dir_or_file a directory: the part directory itself (config.json +
//    diffusion_pytorch_model[.fp16].safetensors) or a diffusers root holding unet/; config_dir unused;
//  - a file: an original single-file SD checkpoint (its "model.diffusion_model." tensors) with the
//    config from config_dir (a part directory or a diffusers root).
// Weights are stored as weight_dtype (DT_F32, DT_BF16 or DT_F16; zero-copy, read-only views of the
// file when the dtypes agree: sd_tensor_make_owned() one before training it in full). Fatal with the
// path and reason on any error. Returns a heap Unet; unet_free releases it.
Unet *unet_load(const char *model_dir_or_file, DType weight_dtype, const char *config_dir);
void unet_free(Unet *m);

// eps/v prediction [N, out_channels, h, w] (= new arena tensor) for sample [N, in_channels, h, w],
// timesteps[N] and encoder_hidden_states [N, L, cross_attention_dim]. opt may be NULL (defaults).
// Sizes not divisible by 2^(levels-1) are handled like diffusers (up samplers resize to the skip size).
Tensor *unet_forward(const Unet *m, Tensor *sample, const float *timesteps, Tensor *encoder_hidden_states,
                     const UnetOptions *opt);
