// The extension points of the SD forwards (layers/sd_blocks.h layer hook, layers/vae.h skips and
// before_up), on the committed tiny fixture:
//  - vae_encode's skips are the inputs of the encoder's down blocks: skip 0 is conv_in's output,
//    and each skip has the channels and size the config implies;
//  - vae_decode calls before_up once per up block, in order, on tensors of the expected channels;
//    an identity hook leaves the output bitwise unchanged, a hook that adds to h changes it;
//  - the layer hook sees every conv/linear by its diffusers name (no SdNet prefix) including the
//    attention projections; an identity hook leaves the UNet output bitwise unchanged, a hook that
//    perturbs one layer changes it.
// Usage: test_sd_hooks [FIXTURE_DIR]   (default: tests/fixtures/sd/sd2_tiny of the source tree)
#include <string.h>

#include "layers/unet.h"
#include "layers/vae.h"
#include "tests/check.h"

typedef struct {
    const Vae *vae;
    int calls;
    int order_ok;
    float add;
} UpHookCtx;

static Tensor *before_up(void *vctx, int i, Tensor *h) {
    UpHookCtx *c = vctx;
    const SdVaeConfig *cfg = &c->vae->cfg;
    // Up block i is entered by the mid block's channels (i == 0) or by up block i-1's output.
    int expect = cfg->block_out_channels[cfg->n_levels - 1 - (i == 0 ? 0 : i - 1)];
    if (i == c->calls && h->shape[1] == expect) c->order_ok++;
    c->calls++;
    return c->add != 0.0f ? op_add_scalar(h, c->add) : h;
}

typedef struct {
    int calls, saw_to_q, saw_to_out, saw_conv_in, saw_prefix;
    const char *perturb;   // layer to add 0.1 to, or NULL
} LayerHookCtx;

static Tensor *layer_hook(void *vctx, const char *layer, Tensor *x, Tensor *y) {
    LayerHookCtx *c = vctx;
    (void)x;
    c->calls++;
    if (strstr(layer, "attn1.to_q")) c->saw_to_q++;
    if (strstr(layer, "attn2.to_out.0")) c->saw_to_out++;
    if (!strcmp(layer, "conv_in")) c->saw_conv_in++;
    if (!strncmp(layer, "unet.", 5)) c->saw_prefix++;
    if (c->perturb && !strcmp(layer, c->perturb)) return op_add_scalar(y, 0.1f);
    return y;
}

static bool same(const Tensor *a, const Tensor *b) {
    return tensor_same_shape(a, b) && !memcmp(a->data, b->data, sizeof(float) * (size_t)a->numel);
}

int main(int argc, char **argv) {
    char fix[1024], path[1100];
    snprintf(fix, sizeof fix, "%s", argc > 1 ? argv[1] : DOD_SOURCE_DIR "/tests/fixtures/sd/sd2_tiny");
    snprintf(path, sizeof path, "%s/model/vae", fix);
    Vae *vae = vae_load(path, DT_F32, NULL);
    snprintf(path, sizeof path, "%s/model/unet", fix);
    Unet *unet = unet_load(path, DT_F32, NULL);
    ag_set_grad_enabled(false);
    const SdVaeConfig *vc = &vae->cfg;

    // ---- VAE skips ----
    int64_t ishape[4] = {1, vc->in_channels, 32, 32};
    Tensor *image = test_input("image", 4, ishape, 5, 0.5f, false);
    VaeEncoded enc, plain;
    vae_encode(vae, image, true, NULL, &enc);
    vae_encode(vae, image, false, NULL, &plain);
    CHECK(plain.n_skips == 0, "skips returned without being asked for (%d)", plain.n_skips);
    CHECK(same(enc.mean, plain.mean), "asking for skips changed the mean");
    CHECK(enc.n_skips == vc->n_levels, "%d skips for %d levels", enc.n_skips, vc->n_levels);
    CHECK(same(enc.skips[0], sd_conv(&vae->net, "encoder.conv_in", image, 1, 1)), "skip 0 is not conv_in's output");
    for (int i = 0; i < enc.n_skips; i++) {
        int64_t c = i == 0 ? vc->block_out_channels[0] : vc->block_out_channels[i - 1];
        CHECK(enc.skips[i]->shape[1] == c && enc.skips[i]->shape[2] == 32 >> i && enc.skips[i]->shape[3] == 32 >> i,
              "skip %d has shape %s, expected [1, %ld, %d, %d]", i, shape_str(enc.skips[i]), (long)c, 32 >> i, 32 >> i);
    }

    // ---- VAE before_up ----
    Tensor *ref = vae_decode(vae, enc.mean, NULL, NULL, NULL);
    UpHookCtx uc = {.vae = vae};
    Tensor *hooked = vae_decode(vae, enc.mean, before_up, &uc, NULL);
    CHECK(uc.calls == vc->n_levels && uc.order_ok == vc->n_levels, "before_up: %d calls, %d in order with the right channels (levels %d)",
          uc.calls, uc.order_ok, vc->n_levels);
    CHECK(same(ref, hooked), "identity before_up changed the decoded image");
    uc = (UpHookCtx){.vae = vae, .add = 0.5f};
    Tensor *shifted = vae_decode(vae, enc.mean, before_up, &uc, NULL);
    CHECK(!same(ref, shifted), "before_up's returned tensor was not used");

    // ---- UNet layer hook ----
    int64_t sshape[4] = {1, unet->cfg.in_channels, 8, 8};
    Tensor *sample = test_input("sample", 4, sshape, 6, 1.0f, false);
    int64_t cshape[3] = {1, 5, unet->cfg.cross_attention_dim[0]};
    Tensor *context = test_input("context", 3, cshape, 7, 1.0f, false);
    float t = 999.0f;
    Tensor *uref = unet_forward(unet, sample, &t, context, NULL);
    LayerHookCtx lc = {0};
    unet->net.hook = layer_hook;
    unet->net.hook_ctx = &lc;
    Tensor *uhook = unet_forward(unet, sample, &t, context, NULL);
    CHECK(same(uref, uhook), "identity layer hook changed the UNet output");
    CHECK(lc.saw_conv_in == 1 && lc.saw_to_q > 0 && lc.saw_to_out > 0 && lc.saw_prefix == 0,
          "layer hook saw conv_in %d, attn1.to_q %d, attn2.to_out.0 %d, prefixed names %d", lc.saw_conv_in, lc.saw_to_q,
          lc.saw_to_out, lc.saw_prefix);
    printf("layer hook: %d layer calls in one UNet forward\n", lc.calls);
    lc = (LayerHookCtx){.perturb = "mid_block.attentions.0.transformer_blocks.0.attn2.to_v"};
    Tensor *upert = unet_forward(unet, sample, &t, context, NULL);
    CHECK(!same(uref, upert), "the layer hook's returned tensor was not used");
    unet->net.hook = NULL;

    unet_free(unet);
    vae_free(vae);
    return check_summary();
}
