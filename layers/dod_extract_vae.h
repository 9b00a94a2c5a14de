// The `vae` degradation extractor (spec step 2, "pooled features of the frozen SD VAE encoder"):
// F(y) for the modulation (layers/dod_modulation.h) computed by the base model's own VAE encoder,
// frozen and WITHOUT the encoder's LoRA.
//
//   h = SiLU(GroupNorm_conv_norm_out(mid_block(down_blocks(conv_in(y)))))   the input of encoder.conv_out
//   d = mean over H, W of h                                                  [N, block_out_channels[-1]]
//
// (ours) The public code uses a frozen guided-diffusion encoder instead; the spec lists this pooled
// VAE feature as the alternative without fixing the layer. We take the encoder's last activation
// before conv_out: the deepest features the encoder has (512 channels at H/8 for SD), already group-
// normalised, so their scale does not depend on the image's size or contrast. The 8-channel moments
// after conv_out would carry too little.
//
// No gradient flows into this path: it runs with grad mode off, so d is a constant for the tape and
// the modulation MLPs downstream still get theirs. The LoRA adapters of the VAE encoder (used by the
// latent path of the same model) are bypassed: the extractor runs the encoder with its own layer
// hook, which only records the activation above.
#pragma once
#include "layers/dod_modulation.h"
#include "layers/vae.h"

// DodModelConfig.extractor = DOD_EXTRACTOR_VAE selects this extractor; dod_model.c wires it (the
// modulation itself is built as DOD_EXTRACTOR_EXTERNAL with feature_dim = dod_extract_vae_dim).

// The feature width d has for this VAE: its last block_out_channels entry.
int dod_extract_vae_dim(const Vae *vae);

// A DodExtractFn: ctx is the model's (const Vae *). y [N, in_channels, H, W] -> d (= new tensor
// [N, dod_extract_vae_dim], requires_grad off). Any H, W the VAE encoder accepts.
Tensor *dod_extract_vae(void *ctx, Tensor *y);
