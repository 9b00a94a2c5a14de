// The `vae` degradation extractor; see dod_extract_vae.h.
#include "layers/dod_extract_vae.h"

#include <string.h>

#define CAPTURE_LAYER "encoder.conv_out"

// Layer hook of the extractor's pass: keeps the input of encoder.conv_out, adds no adapter.
typedef struct {
    Tensor *conv_out_input;
} Capture;

static Tensor *capture_hook(void *ctx, const char *layer, Tensor *x, Tensor *y) {
    if (strcmp(layer, CAPTURE_LAYER) == 0) ((Capture *)ctx)->conv_out_input = x;
    return y;
}

static bool capture_needs_input(void *ctx, const char *layer) {
    (void)ctx;
    return strcmp(layer, CAPTURE_LAYER) == 0;
}

int dod_extract_vae_dim(const Vae *vae) { return vae->cfg.block_out_channels[vae->cfg.n_levels - 1]; }

Tensor *dod_extract_vae(void *ctx, Tensor *y) {
    const Vae *model_vae = ctx;
    DOD_CHECK(y->ndim == 4 && y->shape[1] == model_vae->cfg.in_channels, "dod_extract_vae",
              "image %s must be [N, %d, H, W] (%s)", shape_str(y), model_vae->cfg.in_channels, model_vae->cfg.path);
    // A shallow copy of the model's VAE with our hook instead of the LoRA hook: the weights are shared,
    // nothing of the model is modified. Grad mode off: no tape refers to the copy or the capture after
    // we return (and no recomputation unit is created).
    Vae frozen = *model_vae;
    Capture cap = {0};
    frozen.net.hook = capture_hook;
    frozen.net.hook_ctx = &cap;
    frozen.net.hook_needs_input = capture_needs_input;
    frozen.net.hook_norm = NULL;  // the model's LoRA one must not see our context
    bool prev = ag_set_grad_enabled(false);
    VaeEncoded enc;
    vae_encode(&frozen, y, false, NULL, &enc);
    DOD_CHECK(cap.conv_out_input != NULL, "dod_extract_vae", "%s: the encoder never ran layer %s",
              model_vae->cfg.path, CAPTURE_LAYER);
    Tensor *d = op_global_avg_pool(cap.conv_out_input);
    ag_set_grad_enabled(prev);
    DOD_CHECK(d->ndim == 2 && d->shape[1] == dod_extract_vae_dim(model_vae), "dod_extract_vae",
              "pooled features %s, expected [N, %d] (%s)", shape_str(d), dod_extract_vae_dim(model_vae),
              model_vae->cfg.path);
    return d;
}
