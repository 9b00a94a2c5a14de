// AutoencoderKL forward (diffusers 0.21.4): Encoder (DownEncoderBlock2D levels, UNetMidBlock2D with
// one single-head attention, conv_out to 2 x latent channels) + quant_conv -> posterior mean and
// logvar; post_quant_conv + Decoder (UNetMidBlock2D, UpDecoderBlock2D levels).
//
// Hooks for the DOD detail module (docs/sd-forward.md): the encoder can hand back its skip
// features (the INPUTS of its down blocks: conv_in's output, then each down block's output that
// feeds the next), and the decoder calls before_up(ctx, i, h) on the input of up block i and
// continues with what it returns.
#pragma once
#include "layers/sd_blocks.h"
#include "layers/sd_config.h"

typedef struct {
    SdVaeConfig cfg;        // architecture (layers/sd_config.h)
    SdNet net;              // weights under "encoder.", "decoder.", "quant_conv", "post_quant_conv"
    ParamStore *owned_ps;   // set by vae_load: freed with its tensors by vae_free
    void *owned_file;       // set by vae_load: the checkpoint mapping its zero-copy views point into
} Vae;

typedef struct {
    Tensor *mean, *logvar;          // [N, latent_channels, H/f, W/f]; logvar clamped to [-30, 20]
    int n_skips;                    // = cfg.n_levels when skips were asked for, else 0
    Tensor *skips[SD_MAX_LEVELS];   // skips[i] = input of encoder down block i
} VaeEncoded;

typedef Tensor *(*VaeBeforeUpFn)(void *ctx, int i, Tensor *h);

typedef struct {
    bool recompute_blocks;  // run each encoder/decoder resnet and sampler and the mid block via ag_checkpoint
} VaeOptions;

// Loads a VAE like unet_load (a part directory, a diffusers root holding vae/, or a single-file
// checkpoint's "first_stage_model." tensors with config_dir).
Vae *vae_load(const char *model_dir_or_file, DType weight_dtype, const char *config_dir);
void vae_free(Vae *m);

// Encoder + quant_conv on image [N, in_channels, H, W] (in [-1, 1]); writes (=) *out. want_skips
// fills out->skips. opt may be NULL.
void vae_encode(const Vae *m, Tensor *image, bool want_skips, const VaeOptions *opt, VaeEncoded *out);
// post_quant_conv + Decoder on latent [N, latent_channels, h, w] (NOT scaled: divide a UNet-space
// latent by cfg.scaling_factor first). before_up may be NULL. Returns the image (= new tensor).
Tensor *vae_decode(const Vae *m, Tensor *latent, VaeBeforeUpFn before_up, void *before_up_ctx, const VaeOptions *opt);
