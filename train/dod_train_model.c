// Adapter: DodModel -> TrainModel. The loop owns the loss weights (MSE / SSIM from [loss]), so only
// the model's forward is used here; dod_model_loss stays for tests and tools that want the spec's
// per-stage default loss.
#include "train/dod_train_model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistr.h>

#include "layers/dod_extract_vae.h"
#include "layers/dod_model.h"

static ParamStore *dod_params(void *self) { return dod_model_params(self); }

static Tensor *dod_forward(void *self, Tensor *lq, uint64_t noise_seed, bool training) {
    return dod_model_forward(self, lq, training ? DOD_MODE_TRAIN : DOD_MODE_EVAL, noise_seed);
}

static void dod_destroy(void *self) { dod_model_free(self); }

TrainModel *dod_train_model_create(const TrainModelOptions *o, char *err, size_t errlen) {
    if (o->stage != 1 && o->stage != 2) {
        snprintf(err, errlen, "[stage] stage = %d: must be 1 or 2", o->stage);
        return NULL;
    }
    DodModelConfig cfg = dod_model_default_config(o->stage);
    if (!o->extractor || !strcmp(o->extractor, "cnn")) {
        cfg.extractor = DOD_EXTRACTOR_CNN;
    } else if (!strcmp(o->extractor, "vae")) {
        cfg.extractor = DOD_EXTRACTOR_VAE;  // pooled frozen VAE-encoder features (layers/dod_extract_vae.h)
    } else {
        snprintf(err, errlen, "[modulation] extractor = %s: expected cnn or vae", o->extractor);
        return NULL;
    }
    if (!o->base_path || !*o->base_path) {
        snprintf(err, errlen, "[model] base is empty: the DOD model needs a diffusers SD directory");
        return NULL;
    }
    cfg.base_model_dir = o->base_path;
    cfg.prompt_path = o->prompt_embedding && *o->prompt_embedding ? o->prompt_embedding : NULL;
    cfg.prompt = o->prompt;
    cfg.negative_prompt = o->negative_prompt;
    cfg.prompt_cache_path = o->prompt_cache;
    bool negative = o->negative_prompt && *o->negative_prompt;
    const char *texts[2] = {o->prompt, o->negative_prompt}, *keys[2] = {"prompt", "negative_prompt"};
    for (int i = 0; i < 2; i++) {
        const uint8_t *bad = texts[i] ? u8_check((const uint8_t *)texts[i], strlen(texts[i])) : NULL;
        if (bad) {
            snprintf(err, errlen, "[model] %s: not valid UTF-8 (byte %zu)", keys[i], (size_t)(bad - (const uint8_t *)texts[i]));
            return NULL;
        }
    }
    for (int i = 0; i < 2 && (!cfg.prompt_path || negative); i++) {  // the text encoder is needed
        char dir[2048];
        struct stat sb;
        snprintf(dir, sizeof dir, "%s/%s", o->base_path, i ? "text_encoder" : "tokenizer");
        if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
            snprintf(err, errlen, "[model] base = %s has no %s/ folder, needed to encode [model] %s; give a base "
                     "with tokenizer/ and text_encoder/, or a [model] prompt_embedding file (dod-encode-prompt)",
                     o->base_path, i ? "text_encoder" : "tokenizer", cfg.prompt_path ? "negative_prompt" : "prompt");
            return NULL;
        }
    }
    cfg.frozen_dtype = o->frozen_dtype;
    cfg.lora_rank = o->lora_rank;
    cfg.lora_alpha = o->lora_alpha;
    cfg.recompute = o->recompute;
    cfg.seed = o->seed;
    TrainModel *m = dod_calloc(sizeof *m, "TrainModel");
    m->self = dod_model_create(&cfg);
    // Created and loaded on the CPU; moved whole (frozen weights, trainables, prompt) in place.
    if (o->device != DEV_CPU) dod_model_to_device(m->self, o->device);
    m->device = o->device;
    m->kind = "dod";
    m->params = dod_params;
    m->forward = dod_forward;
    m->destroy = dod_destroy;
    return m;
}
