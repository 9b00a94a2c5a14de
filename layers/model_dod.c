// The DOD model (layers/dod_model.h) behind the Model interface. The training loop owns the loss
// weights ([loss] in the training configuration), so only the model's forward is used here.
#include "layers/model.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistr.h>

#include "layers/dod_model.h"
#include "layers/dod_vsd.h"

static ParamStore *dod_params(void *self) { return dod_model_params(self); }

static Tensor *dod_forward(void *self, Tensor *lq, uint64_t noise_seed, bool training) {
    return dod_model_forward(self, lq, training ? DOD_MODE_TRAIN : DOD_MODE_EVAL, noise_seed);
}

static void dod_destroy(void *self) { dod_model_free(self); }

// The prompt keys' own checks, before anything loads: valid UTF-8, and a base with tokenizer/ and
// text_encoder/ where the text encoder will run (no prompt_embedding file, or a negative prompt).
// 0, or -1 with a message naming the key and the folder.
static int check_prompts(const ModelOptions *o, char *err, size_t errlen) {
    const char *texts[2] = {o->prompt, o->negative_prompt}, *keys[2] = {"prompt", "negative_prompt"};
    for (int i = 0; i < 2; i++) {
        const uint8_t *bad = u8_check((const uint8_t *)texts[i], strlen(texts[i]));
        if (bad) {
            snprintf(err, errlen, "[model] %s: not valid UTF-8 (byte %zu)", keys[i], (size_t)(bad - (const uint8_t *)texts[i]));
            return -1;
        }
    }
    bool from_file = o->prompt_embedding[0], negative = o->negative_prompt[0];
    for (int i = 0; i < 2 && (!from_file || negative); i++) {
        char dir[CFG_STR + 16];
        struct stat sb;
        snprintf(dir, sizeof dir, "%s/%s", o->base, i ? "text_encoder" : "tokenizer");
        if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
            snprintf(err, errlen, "[model] base = %s has no %s/ folder, needed to encode [model] %s; give a base "
                     "with tokenizer/ and text_encoder/, or a [model] prompt_embedding file (dod-encode-prompt)",
                     o->base, i ? "text_encoder" : "tokenizer", from_file ? "negative_prompt" : "prompt");
            return -1;
        }
    }
    return 0;
}

// extractor = adm: the weights file must be there before anything loads. 0, or -1 with a message
// naming the file, the key and where it was set.
static int check_adm_weights(const ModelOptions *o, char *err, size_t errlen) {
    const char *where = o->adm_weights_origin[0] ? o->adm_weights_origin : "the configuration";
    if (!o->adm_weights[0]) {
        snprintf(err, errlen, "%s: [modulation] adm_weights is empty: extractor = adm needs guided-diffusion's "
                 "256x256_diffusion_uncond.pt", where);
        return -1;
    }
    struct stat sb;
    int missing = stat(o->adm_weights, &sb);
    if (missing || !S_ISREG(sb.st_mode)) {
        snprintf(err, errlen, "%s: [modulation] adm_weights = %s: %s. extractor = adm (the paper's degradation "
                 "extractor) needs guided-diffusion's 256x256_diffusion_uncond.pt, from "
                 "https://openaipublic.blob.core.windows.net/diffusion/jul-2021/256x256_diffusion_uncond.pt (2.1 GB); "
                 "or set [modulation] extractor = cnn", where, o->adm_weights,
                 missing ? strerror(errno) : "not a regular file");
        return -1;
    }
    return 0;
}

Model *model_dod_create(const ModelOptions *o, char *err, size_t errlen) {
    if (o->stage != 1 && o->stage != 2) {
        snprintf(err, errlen, "[stage] stage = %lld: must be 1 or 2", o->stage);
        return NULL;
    }
    DodModelConfig cfg = dod_model_default_config((int)o->stage);
    switch (o->extractor) {
    case MODEL_EXTRACTOR_CNN: cfg.extractor = DOD_EXTRACTOR_CNN; break;
    case MODEL_EXTRACTOR_VAE: cfg.extractor = DOD_EXTRACTOR_VAE; break;  // pooled frozen VAE-encoder features
    case MODEL_EXTRACTOR_ADM: cfg.extractor = DOD_EXTRACTOR_ADM; break;  // the frozen guided-diffusion encoder
    default:
        snprintf(err, errlen, "[modulation] extractor %d: expected cnn, vae or adm", (int)o->extractor);
        return NULL;
    }
    if (!o->base[0]) {
        snprintf(err, errlen, "[model] base is empty: the DOD model needs a diffusers SD directory");
        return NULL;
    }
    cfg.base_model_dir = o->base;
    // Before anything loads, in the order a new user fixes them: the base folder, the extractor's weights
    // (a 2.1 GB download in the public-code configurations, aio*.ini), then the prompt keys' folders.
    struct stat sb;
    int missing = stat(o->base, &sb);
    if (missing || !S_ISDIR(sb.st_mode)) {
        snprintf(err, errlen, "[model] base = %s: %s; give a diffusers Stable Diffusion folder (unet/, vae/, "
                 "scheduler/; docs/model-loading.md)", o->base, missing ? strerror(errno) : "not a folder");
        return NULL;
    }
    if ((cfg.extractor == DOD_EXTRACTOR_ADM && check_adm_weights(o, err, errlen)) || check_prompts(o, err, errlen))
        return NULL;
    cfg.adm_weights = o->adm_weights;
    if (o->adm_head_channels > 0) cfg.adm.head_channels = (int)o->adm_head_channels;   // 0 (a zeroed struct): 64
    if (o->adm_norm_groups > 0) cfg.adm.groups = (int)o->adm_norm_groups;               // 0: 32
    cfg.public_init = o->init == MODEL_INIT_PUBLIC;
    cfg.eval_sample = o->eval_latent == MODEL_EVAL_LATENT_SAMPLE;
    cfg.eval_seed = (uint64_t)o->eval_seed;
    cfg.prompt_path = o->prompt_embedding[0] ? o->prompt_embedding : NULL;
    cfg.prompt = o->prompt;
    cfg.negative_prompt = o->negative_prompt;
    cfg.prompt_cache_path = o->prompt_cache[0] ? o->prompt_cache : NULL;
    cfg.frozen_dtype = o->frozen_dtype == MODEL_FROZEN_BF16 ? DT_BF16 : DT_F32;
    cfg.lora_rank = (int)o->lora_rank;
    cfg.lora_alpha = (float)o->lora_alpha;
    cfg.recompute = o->recompute;
    cfg.seed = (uint64_t)o->seed;
    DodModel *dm = dod_model_create(&cfg);
    // Created and loaded on the CPU; moved whole (frozen weights, trainables, prompt) in place.
    if (o->device != DEV_CPU) dod_model_to_device(dm, o->device);
    return model_dod_wrap(dm);
}

Model *model_dod_wrap(DodModel *dm) {
    Model *m = dod_calloc(sizeof *m, "DOD model");
    *m = (Model){.self = dm, .kind = model_kind_name(MODEL_DOD), .device = dm->device, .params = dod_params,
                 .forward = dod_forward, .destroy = dod_destroy};
    return m;
}

DodVsd *dod_vsd_for_model(Model *m, const DodVsdConfig *c, char *err, size_t errlen) {
    if (m->destroy != dod_destroy) {
        snprintf(err, errlen, "the VSD regulariser needs the DOD model ([model] kind = dod), not %s", m->kind);
        return NULL;
    }
    return dod_vsd_create(m->self, c, err, errlen);
}
