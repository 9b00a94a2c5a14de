// The assembled DOD model; see dod_model.h and docs/dod-model.md.
#include "layers/dod_model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layers/dod_extract_vae.h"
#include "layers/dod_model_util.h"
#include "layers/sd_prompt.h"
#include "layers/sd_random.h"

DodModelConfig dod_model_default_config(int stage) {
    DodModelConfig c = {0};
    c.frozen_dtype = DT_F32;
    c.stage = stage;
    c.lora_rank = 8;
    c.lora_alpha = 8.0f;
    c.extractor = DOD_EXTRACTOR_CNN;
    c.adm = adm_encoder_default_config();
    c.modulation = dod_modulation_default_config(8);
    c.public_init = true;
    c.detail_growth = 32;
    c.clamp_train = true;
    c.seed = 123;
    c.mse_weight = stage == 2 ? 1.0f : 2.0f;
    c.lpips_weight = 0.0f;
    c.ssim_weight = stage == 2 ? 0.1f : 0.0f;
    return c;
}

static void check_config(const DodModelConfig *c) {
    const char *who = "dod_model_create";
    DOD_CHECK(c->stage == 1 || c->stage == 2, who, "stage must be 1 or 2, got %d", c->stage);
    DOD_CHECK(c->base_model_dir && c->base_model_dir[0], who, "no base model directory given");
    DOD_CHECK(c->frozen_dtype == DT_F32 || c->frozen_dtype == DT_BF16, who,
              "frozen weight dtype must be f32 or bf16, got %s", dtype_name(c->frozen_dtype));
    DOD_CHECK(c->lora_rank > 0 && c->lora_alpha > 0, who, "LoRA rank %d and alpha %g must be positive", c->lora_rank,
              c->lora_alpha);
    DOD_CHECK(c->extractor == DOD_EXTRACTOR_CNN || c->extractor == DOD_EXTRACTOR_VAE || c->extractor == DOD_EXTRACTOR_ADM,
              who, "unknown extractor kind %d (cnn, vae or adm)", (int)c->extractor);
    DOD_CHECK(c->extractor != DOD_EXTRACTOR_ADM || (c->adm_weights && c->adm_weights[0]), who,
              "the adm extractor needs adm_weights (guided-diffusion's 256x256_diffusion_uncond.pt)");
    DOD_CHECK(c->detail_growth > 0, who, "detail module growth %d must be positive", c->detail_growth);
    DOD_CHECK(c->lpips_weight == 0.0f || c->lpips, who,
              "lpips_weight %g needs an LPIPS network (DodModelConfig.lpips, layers/lpips.h)", c->lpips_weight);
    DOD_CHECK(c->mse_weight >= 0 && c->ssim_weight >= 0 && c->lpips_weight >= 0, who,
              "loss weights must be >= 0 (mse %g, ssim %g, lpips %g)", c->mse_weight, c->ssim_weight, c->lpips_weight);
    DOD_CHECK(c->stage == 2 || c->ssim_weight == 0.0f, who, "ssim_weight %g is a stage-2 loss; stage 1 needs 0",
              c->ssim_weight);
}

// alpha-bar at t = 999 and the x0 coefficients for the scheduler's prediction type (spec step 6).
static void setup_scheduler(DodModel *m) {
    char path[1200], err[SD_CONFIG_ERR_LEN];
    snprintf(path, sizeof path, "%s/scheduler/scheduler_config.json", m->cfg.base_model_dir);
    if (sd_scheduler_config_load(path, &m->sched, err) != 0) dod_fatal("dod_model_create", "%s", err);
    int T = m->sched.num_train_timesteps;
    DOD_CHECK(T > DOD_TIMESTEP, path, "num_train_timesteps %d: the model runs at t = %d", T, DOD_TIMESTEP);
    double *abar = dod_malloc(sizeof(double) * (size_t)T, "alphas_cumprod");
    sd_scheduler_alphas_cumprod(&m->sched, abar);
    double a = abar[DOD_TIMESTEP];
    free(abar);
    m->alpha_bar = a;
    switch (m->sched.prediction_type) {
    case SD_PRED_EPSILON:  // x0 = (z - sqrt(1 - a) eps) / sqrt(a)
        m->x0_z = (float)(1.0 / sqrt(a));
        m->x0_pred = (float)(sqrt(1.0 - a) / sqrt(a));
        break;
    case SD_PRED_V:  // x0 = sqrt(a) z - sqrt(1 - a) v
        m->x0_z = (float)sqrt(a);
        m->x0_pred = (float)sqrt(1.0 - a);
        break;
    default:
        dod_fatal(path, "prediction_type %s: DOD needs epsilon or v_prediction",
                  sd_prediction_name(m->sched.prediction_type));
    }
}

// The UNet's layer hook, by m->unet_adapters. GENERATOR: conv_in runs with the trainable f32 copy (its
// frozen output y is replaced; the frozen weight may be a read-only bf16 view, and the store that owns it
// cannot hand it over), every other layer goes to the conditional LoRA set. FROZEN: y as it is.
// REGULARISER: the regulariser's plain LoRA (conv_in included) on the frozen layers.
static Tensor *unet_hook(void *ctx, const char *layer, Tensor *x, Tensor *y) {
    DodModel *m = ctx;
    switch (m->unet_adapters) {
    case DOD_UNET_GENERATOR:
        if (strcmp(layer, "conv_in") == 0) {
            int k = m->unet->cfg.conv_in_kernel;
            return op_conv2d(x, m->conv_in_w, m->conv_in_b, 1, (k - 1) / 2);
        }
        return lora_hook(m->unet_lora, layer, x, y);
    case DOD_UNET_REGULARISER: return lora_hook(m->regulariser_lora, layer, x, y);
    default: return y;
    }
}

static Tensor *unet_hook_norm(void *ctx, const char *layer, const SdNormSiluInput *in, Tensor *y) {
    DodModel *m = ctx;  // conv_in follows no norm: only adapters come this way
    switch (m->unet_adapters) {
    case DOD_UNET_GENERATOR: return lora_hook_norm(m->unet_lora, layer, in, y);
    case DOD_UNET_REGULARISER: return lora_hook_norm(m->regulariser_lora, layer, in, y);
    default: return y;
    }
}

static bool unet_hook_needs_input(void *ctx, const char *layer) {
    DodModel *m = ctx;
    switch (m->unet_adapters) {
    case DOD_UNET_GENERATOR: return strcmp(layer, "conv_in") == 0 || lora_hook_needs_input(m->unet_lora, layer);
    case DOD_UNET_REGULARISER: return lora_hook_needs_input(m->regulariser_lora, layer);
    default: return false;
    }
}

void dod_model_set_unet_adapters(DodModel *m, DodUnetAdapters which) {
    DOD_CHECK(which != DOD_UNET_REGULARISER || m->regulariser_lora, "dod_model_set_unet_adapters",
              "no VSD regulariser is attached to the model (layers/dod_vsd.h)");
    m->unet_adapters = which;
}

// m->prompt and m->negative_prompt as the config says (dod_model.h), D wide (the UNet's cross_attention_dim).
static void load_prompts(DodModel *m, int D) {
    const DodModelConfig *c = &m->cfg;
    const char *who = "dod_model_create";
    bool negative = c->negative_prompt && c->negative_prompt[0];
    if (c->prompt_path) m->prompt = dod_load_prompt(c->prompt_path, D);
    if (c->prompt_path && !negative) m->negative_prompt = dod_load_negative_prompt(c->prompt_path, D);
    if (c->zero_prompt && !c->prompt_path) {  // benchmarks (dod_model.h)
        int64_t shape[2] = {77, D};
        m->prompt = tensor_new_persistent("prompt_embeds", 2, shape, DT_F32);
    }
    if (m->prompt && !negative) return;
    SdPromptEmbeds e;
    bool reused;
    char err[2048];
    if (sd_prompt_cached(c->base_model_dir, m->prompt ? "" : c->prompt, c->negative_prompt ? c->negative_prompt : "",
                         c->prompt_cache_path, "prompt", &e, &reused, err, sizeof err))
        dod_fatal(who, "%s", err);
    DOD_CHECK(e.prompt->shape[1] == D, who, "%s/text_encoder: embeddings %ld wide, the UNet's cross_attention_dim is %d",
              c->base_model_dir, (long)e.prompt->shape[1], D);
    if (reused) fprintf(stderr, "dod: prompt embeddings from %s\n", c->prompt_cache_path);
    if (m->prompt) tensor_free(e.prompt);
    else m->prompt = e.prompt;
    m->negative_prompt = e.negative;
}

// An owned f32 trainable copy of a frozen UNet tensor, registered as "unet.<name>".
static Tensor *trainable_copy(DodModel *m, const char *name) {
    Tensor *src = params_require(m->unet->net.ps, name, "dod_model_create");
    char full[256];
    snprintf(full, sizeof full, "unet.%s", name);
    Tensor *t = tensor_new_persistent(full, src->ndim, src->shape, DT_F32);
    memcpy(t->data, tensor_f32(src), sizeof(float) * (size_t)t->numel);
    t->requires_grad = true;
    return params_add(m->params, full, t);
}

DodModel *dod_model_create(const DodModelConfig *cfg) {
    check_config(cfg);
    DodModel *m = dod_calloc(sizeof(DodModel), "dod model");
    m->cfg = *cfg;
    const char *dir = cfg->base_model_dir;
    if (cfg->random_base_weights) {
        m->unet = unet_create_random(dir, cfg->frozen_dtype, cfg->seed * 0x9E3779B97F4A7C15ull + 1000);
        m->vae = vae_create_random(dir, cfg->frozen_dtype, cfg->seed * 0x9E3779B97F4A7C15ull + 500000);
    } else {
        m->unet = unet_load(dir, cfg->frozen_dtype, NULL);
        m->vae = vae_load(dir, cfg->frozen_dtype, NULL);
    }
    setup_scheduler(m);
    // The two parts must fit together; otherwise the first op joining them would fail naming itself.
    const SdUNetConfig *uc = &m->unet->cfg;
    const SdVaeConfig *vc = &m->vae->cfg;
    DOD_CHECK(uc->in_channels == vc->latent_channels && uc->out_channels == vc->latent_channels, uc->path,
              "in_channels %d / out_channels %d: the VAE (%s) has latent_channels %d", uc->in_channels,
              uc->out_channels, vc->path, vc->latent_channels);
    DOD_CHECK(vc->in_channels == 3 && vc->out_channels == 3, vc->path,
              "in_channels %d / out_channels %d: DOD restores RGB images (3 and 3)", vc->in_channels, vc->out_channels);
    int D = m->unet->cfg.cross_attention_dim[0];
    for (int i = 1; i < m->unet->cfg.n_levels; i++)
        DOD_CHECK(m->unet->cfg.cross_attention_dim[i] == D, m->unet->cfg.path,
                  "cross_attention_dim differs per level (%d vs %d): one prompt embedding cannot feed both", D,
                  m->unet->cfg.cross_attention_dim[i]);
    load_prompts(m, D);

    m->params = params_new();
    m->conv_in_w = trainable_copy(m, "conv_in.weight");
    m->conv_in_b = trainable_copy(m, "conv_in.bias");
    m->unet_lora = lora_set_new();
    m->vae_lora = lora_set_new();
    int r = cfg->lora_rank;
    lora_add_targets(m->unet_lora, m->unet->net.ps, m->unet->net.prefix, LORA_TARGETS_UNET, m->params, "unet.", r,
                     cfg->lora_alpha, cfg->seed);
    lora_add_targets(m->vae_lora, m->vae->net.ps, m->vae->net.prefix, LORA_TARGETS_VAE_ENCODER, m->params, "vae.", r,
                     cfg->lora_alpha, cfg->seed + 1);
    DodModulationConfig mc = cfg->modulation;
    if (mc.feature_dim == 0) mc = dod_modulation_default_config(r);
    mc.rank = r;
    mc.public_init = cfg->public_init;
    // The vae extractor (layers/dod_extract_vae.h) is an external one over this model's own VAE, the
    // adm one (layers/adm_encoder.h) over the frozen guided-diffusion encoder loaded here; both set
    // the features' width.
    if (cfg->extractor == DOD_EXTRACTOR_ADM) {
        char err[2048];
        m->adm = adm_encoder_load(cfg->adm_weights, &cfg->adm, cfg->frozen_dtype, err, sizeof err);
        if (!m->adm) dod_fatal("dod_model_create", "adm extractor: %s", err);
        mc.feature_dim = m->adm->out_channels;
    }
    if (cfg->extractor == DOD_EXTRACTOR_VAE) mc.feature_dim = dod_extract_vae_dim(m->vae);
    bool external = cfg->extractor == DOD_EXTRACTOR_VAE || cfg->extractor == DOD_EXTRACTOR_ADM;
    dod_modulation_init(&m->mod, &mc, external ? DOD_EXTRACTOR_EXTERNAL : cfg->extractor, m->params, "mod.",
                        cfg->seed + 2);
    if (cfg->extractor == DOD_EXTRACTOR_VAE) dod_modulation_set_extractor(&m->mod, dod_extract_vae, m->vae);
    if (cfg->extractor == DOD_EXTRACTOR_ADM) dod_modulation_set_extractor(&m->mod, adm_encoder_extract, m->adm);
    if (cfg->stage == 2) {
        for (int i = 0; i < params_count(m->params); i++) params_at(m->params, i)->requires_grad = false;
        DodDetailConfig dc = dod_detail_config_from_vae(&m->vae->cfg);
        dc.growth = cfg->detail_growth;
        dc.public_init = cfg->public_init;
        dod_detail_init(&m->detail, &dc, m->params, "detail.", cfg->seed + 3);
        m->has_detail = true;
    }
    m->unet->net.hook = unet_hook;
    m->unet->net.hook_ctx = m;
    m->unet->net.hook_needs_input = unet_hook_needs_input;
    m->unet->net.hook_norm = unet_hook_norm;
    m->vae->net.hook = lora_hook;
    m->vae->net.hook_ctx = m->vae_lora;
    m->vae->net.hook_needs_input = lora_hook_needs_input;
    m->vae->net.hook_norm = lora_hook_norm;
    return m;
}

void dod_model_free(DodModel *m) {
    if (!m) return;
    lora_set_free(m->unet_lora);
    lora_set_free(m->vae_lora);
    params_free(m->params);
    adm_encoder_free(m->adm);
    tensor_free(m->prompt);
    tensor_free(m->negative_prompt);
    unet_free(m->unet);
    vae_free(m->vae);
    free(m);
}

ParamStore *dod_model_params(DodModel *m) { return m->params; }

void dod_model_to_device(DodModel *m, Device device) {
    params_to_device(m->unet->net.ps, device);
    params_to_device(m->vae->net.ps, device);
    params_to_device(m->params, device);
    if (m->adm) adm_encoder_to_device(m->adm, device);
    tensor_move_to(m->prompt, device);
    if (m->negative_prompt) tensor_move_to(m->negative_prompt, device);
    m->device = device;
}

int dod_model_trainable(const DodModel *m, Tensor **out, int cap) { return params_trainable(m->params, out, cap); }

int dod_model_load_tensors(DodModel *m, const char *path, const char *prefix, bool require_all) {
    return dod_load_into(m->params, path, prefix, require_all);
}

// ---- forward, stage by stage ---------------------------------------------------------------------------
void dod_model_modulation(DodModel *m, Tensor *lq, Tensor **gamma, Tensor **beta) {
    dod_modulation_forward(&m->mod, lq, gamma, beta);
}

void dod_model_set_modulation(DodModel *m, Tensor *const *gamma, Tensor *const *beta) {
    lora_set_modulation(m->unet_lora, gamma, beta);
}

Tensor *dod_model_encode(DodModel *m, Tensor *x, Tensor *eps, bool want_skips, VaeEncoded *enc) {
    VaeOptions vopt = {.recompute_blocks = m->cfg.recompute};
    vae_encode(m->vae, x, want_skips, &vopt, enc);
    Tensor *latent = enc->mean;
    if (eps) {
        DOD_CHECK(tensor_same_shape(eps, enc->mean), "dod_model_forward", "posterior noise %s, the latent is %s",
                  shape_str(eps), shape_str(enc->mean));
        latent = op_posterior_sample(enc->mean, enc->logvar, eps);
    }
    return op_scale(latent, m->vae->cfg.scaling_factor);
}

Tensor *dod_model_predict(DodModel *m, Tensor *z) {
    dod_model_set_unet_adapters(m, DOD_UNET_GENERATOR);   // the VSD step switches them (layers/dod_vsd.h)
    // The fixed prompt embedding for every image, and t = 999 for every image (arena: the UNet's
    // recomputed units may read them in backward).
    int64_t N = z->shape[0];
    DOD_CHECK(m->prompt->device == z->device, "dod_model_forward",
              "input %s is on %s, the model on %s (dod_model_to_device)", shape_str(z),
              z->device == DEV_CUDA ? "cuda" : "cpu", m->prompt->device == DEV_CUDA ? "cuda" : "cpu");
    Tensor *context = dod_repeat_constant(m->prompt, N);
    float *timesteps = arena_alloc(sizeof(float) * (size_t)N, "dod timesteps");
    for (int64_t n = 0; n < N; n++) timesteps[n] = (float)DOD_TIMESTEP;
    UnetOptions uopt = {.recompute_blocks = m->cfg.recompute};
    return unet_forward(m->unet, z, timesteps, context, &uopt);
}

// x0 in the UNet's latent space (scaled by the VAE's scaling factor; = new tensor).
static Tensor *x0_scaled(const DodModel *m, Tensor *z, Tensor *pred) {
    return op_sub(op_scale(z, m->x0_z), op_scale(pred, m->x0_pred));
}

Tensor *dod_model_x0(const DodModel *m, Tensor *z, Tensor *pred) {
    return op_scale(x0_scaled(m, z, pred), 1.0f / m->vae->cfg.scaling_factor);
}

Tensor *dod_model_decode(DodModel *m, Tensor *latent, const VaeEncoded *enc) {
    VaeOptions vopt = {.recompute_blocks = m->cfg.recompute};
    if (!m->has_detail) return vae_decode(m->vae, latent, NULL, NULL, &vopt);
    DOD_CHECK(enc && enc->n_skips == m->vae->cfg.n_levels, "dod_model_decode",
              "the detail module needs the encoder's %d skip features, got %d", m->vae->cfg.n_levels,
              enc ? enc->n_skips : 0);
    DodDetailCtx *dctx = arena_calloc(sizeof(DodDetailCtx), "dod detail context");
    dctx->m = &m->detail;
    dctx->n_skips = enc->n_skips;
    for (int i = 0; i < enc->n_skips; i++) dctx->skips[i] = enc->skips[i];
    dctx->recompute = m->cfg.recompute;
    return vae_decode(m->vae, latent, dod_detail_before_up, dctx, &vopt);
}

int dod_model_pad_multiple(const DodModel *m) {
    int f = 1 << (m->vae->cfg.n_levels - 1);
    return f > 8 ? f : 8;
}

// Spec steps 2-7 on an image whose H, W the VAE and UNet accept; eps NULL: posterior mean.
static Tensor *pipeline(DodModel *m, Tensor *lq, Tensor *eps, bool clamp) {
    Tensor *gamma[LORA_N_BLOCKS], *beta[LORA_N_BLOCKS];
    dod_model_modulation(m, lq, gamma, beta);
    dod_model_set_modulation(m, gamma, beta);
    VaeEncoded enc;
    Tensor *z = dod_model_encode(m, lq, eps, m->has_detail, &enc);
    Tensor *x0 = x0_scaled(m, z, dod_model_predict(m, z));
    m->train_latent = eps ? x0 : NULL;   // the VSD term's input (layers/dod_vsd.h)
    Tensor *out = dod_model_decode(m, op_scale(x0, 1.0f / m->vae->cfg.scaling_factor), &enc);
    return clamp ? op_clamp(out, -1.0f, 1.0f) : out;
}

static void check_input(const DodModel *m, const Tensor *lq) {
    DOD_CHECK(lq->ndim == 4 && lq->shape[1] == m->vae->cfg.in_channels && lq->shape[0] > 0, "dod_model_forward",
              "input %s: expected [N, %d, H, W]", shape_str(lq), m->vae->cfg.in_channels);
}

Tensor *dod_model_forward_eps(DodModel *m, Tensor *lq, Tensor *eps) {
    check_input(m, lq);
    DOD_CHECK(lq->shape[2] % 8 == 0 && lq->shape[3] % 8 == 0, "dod_model_forward",
              "train-mode input %s: crops must have H and W divisible by 8", shape_str(lq));
    DOD_CHECK(eps != NULL, "dod_model_forward_eps", "no posterior noise given");
    return pipeline(m, lq, eps, m->cfg.clamp_train);
}

// The posterior noise for an image batch x whose H, W the VAE accepts: N(0, 1) of the latent's shape
// from the counter-based tensor_randn keyed by seed, drawn on the host (the same noise on every device)
// and moved to x's device.
static Tensor *posterior_noise(const DodModel *m, const Tensor *x, uint64_t seed) {
    int f = 1 << (m->vae->cfg.n_levels - 1);
    Tensor *eps = tensor_new4(x->shape[0], m->vae->cfg.latent_channels, x->shape[2] / f, x->shape[3] / f);
    tensor_randn(eps, seed, 1.0f);
    return x->device != DEV_CPU ? tensor_to_device(eps, x->device) : eps;
}

Tensor *dod_model_eval_noise(const DodModel *m, const Tensor *x) {
    return m->cfg.eval_sample ? posterior_noise(m, x, m->cfg.eval_seed) : NULL;
}

Tensor *dod_model_forward(DodModel *m, Tensor *lq, DodMode mode, uint64_t noise_seed) {
    check_input(m, lq);
    if (mode == DOD_MODE_TRAIN) return dod_model_forward_eps(m, lq, posterior_noise(m, lq, noise_seed));
    DOD_CHECK(mode == DOD_MODE_EVAL, "dod_model_forward", "unknown mode %d", (int)mode);
    bool prev = ag_set_grad_enabled(false);
    int64_t H = lq->shape[2], W = lq->shape[3];
    int mult = dod_model_pad_multiple(m);
    int pad_h = (int)((mult - H % mult) % mult), pad_w = (int)((mult - W % mult) % mult);
    Tensor *x = op_clamp(lq, -1.0f, 1.0f);
    if (pad_h || pad_w) x = dod_pad_reflect(x, pad_h, pad_w);
    Tensor *out = pipeline(m, x, dod_model_eval_noise(m, x), true);
    if (pad_h || pad_w) out = dod_crop(out, H, W);
    ag_set_grad_enabled(prev);
    return out;
}

Tensor *dod_model_restore(DodModel *m, Tensor *lq) { return dod_model_forward(m, lq, DOD_MODE_EVAL, 0); }

// ---- losses ------------------------------------------------------------------------------------------
// check_config keeps ssim_weight at 0 in stage 1 and gives a non-zero lpips_weight its network.
DodLossWeights dod_model_loss_weights(const DodModel *m) {
    return (DodLossWeights){.mse = m->cfg.mse_weight, .ssim = m->cfg.ssim_weight, .lpips = m->cfg.lpips_weight,
                            .lpips_net = m->cfg.lpips};
}

DodLoss dod_model_loss(const DodModel *m, Tensor *out, Tensor *hq) { return dod_loss(out, hq, dod_model_loss_weights(m)); }

DodLoss dod_model_forward_loss(DodModel *m, Tensor *lq, Tensor *hq, uint64_t step_seed) {
    Tensor *out = dod_model_forward(m, lq, DOD_MODE_TRAIN, step_seed);
    return dod_model_loss(m, out, hq);
}
