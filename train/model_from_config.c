// TrainConfig -> TrainModel (see train/model_from_config.h).
#include "train/model_from_config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

void train_model_options_from_config(const TrainConfig *c, TrainModelOptions *mo) {
    static const char *kinds[] = {"toy", "dod"}, *extractors[] = {"cnn", "vae"};
    *mo = (TrainModelOptions){.kind = kinds[c->model_kind], .stage = (int)c->stage, .base_path = c->model_base,
                              .prompt_embedding = c->prompt_embedding, .prompt = c->prompt,
                              .negative_prompt = c->negative_prompt,
                              .frozen_dtype = c->frozen_dtype == CFG_FROZEN_BF16 ? DT_BF16 : DT_F32,
                              .lora_rank = (int)c->lora_rank, .lora_alpha = (float)c->lora_alpha,
                              .extractor = extractors[c->extractor], .toy_width = (int)c->toy_width,
                              .seed = (uint64_t)c->seed, .recompute = c->recompute,
                              .device = c->device == CFG_DEVICE_CUDA ? DEV_CUDA : DEV_CPU,
                              .mixed_precision = c->precision == CFG_PRECISION_MIXED};
    bool bf16 = c->activations == CFG_ACTIVATIONS_BF16 ||
                (c->activations == CFG_ACTIVATIONS_AUTO && c->precision == CFG_PRECISION_MIXED);
    mo->activation_dtype = bf16 ? DT_BF16 : DT_F32;
}

TrainModel *train_model_from_config(const TrainConfig *c, int *n_stage1, char *err, size_t errlen) {
    TrainModelOptions mo;
    train_model_options_from_config(c, &mo);
    // The encoded prompts are cached beside the run (when its directory exists: dod-train makes it first).
    char cache[CFG_STR + 32];
    struct stat sb;
    snprintf(cache, sizeof cache, "%s/prompt_embeds.safetensors", c->run_dir);
    if (c->run_dir[0] && stat(c->run_dir, &sb) == 0 && S_ISDIR(sb.st_mode)) mo.prompt_cache = cache;
    TrainModel *m = train_model_create(&mo, err, errlen);
    if (!m) return NULL;
    int n_loaded = 0;
    if (c->stage == 2) {   // the frozen stage-1 tensors come from the stage-1 run
        char init_path[2 * CFG_STR + 64];
        if (checkpoint_resolve(c->init_from, c->ckpt_dir, init_path, sizeof init_path, err, errlen) ||
            checkpoint_load_weights(init_path, m->params(m->self), &n_loaded, err, errlen)) {
            train_model_free(m);
            return NULL;
        }
    }
    if (n_stage1) *n_stage1 = n_loaded;
    return m;
}

int train_model_load_eval_checkpoint(TrainModel *m, const TrainConfig *c, const char *ckpt_path, char *path_out,
                                     size_t path_len, CheckpointInfo *info, char *err, size_t errlen) {
    char path[2 * CFG_STR + 64];
    if (checkpoint_resolve(ckpt_path, c->ckpt_dir, path, sizeof path, err, errlen)) return -1;
    if (path_out) snprintf(path_out, path_len, "%s", path);
    ParamStore *ps = m->params(m->self);
    int cap = params_count(ps);
    Tensor **trainable = dod_calloc(sizeof(Tensor *) * (size_t)(cap ? cap : 1), "trainable list");
    int n = params_trainable(ps, trainable, cap);
    CheckpointInfo ci;
    int rc = checkpoint_load(path, trainable, n, NULL, &ci, err, errlen);
    free(trainable);
    if (rc) return -1;
    if (strcmp(ci.model_kind, m->kind) || ci.stage != c->stage) {
        snprintf(err, errlen, "%s: checkpoint of a %s stage-%d model, the configuration%s%s describes a %s stage-%lld "
                 "model", path, ci.model_kind, ci.stage, c->source_file[0] ? " " : "", c->source_file, m->kind, c->stage);
        checkpoint_info_free(&ci);
        return -1;
    }
    if (info) *info = ci;
    else checkpoint_info_free(&ci);
    return 0;
}
