// The model's configuration keys (see layers/config_model.h).
#include "layers/config_model.h"

#include <string.h>

#define OFF(f) offsetof(ModelOptions, f)
// The enum keys are stored as the index of their value among the choices (config_schema.h).
_Static_assert(sizeof(ModelKind) == sizeof(int) && sizeof(ModelFrozenDtype) == sizeof(int) &&
                   sizeof(Device) == sizeof(int) && sizeof(ModelPrecision) == sizeof(int) &&
                   sizeof(ModelActivations) == sizeof(int) && sizeof(ModelExtractor) == sizeof(int),
               "enum keys are stored as int");
_Static_assert(DEV_CPU == 0 && DEV_CUDA == 1, "[model] device choices are cpu|cuda");

static const CfgField FIELDS[] = {
    {"model", "kind", CFG_ENUM, "dod", 0, 0, "toy|dod", OFF(kind), false,
     "model to train: `dod` (SD 2.1-base + DOD modules) or `toy` (a 3-layer conv net, for tests)", NULL},
    {"model", "base", CFG_STRING, "", 0, 0, NULL, OFF(base), false,
     "diffusers SD 2.1-base directory (unet/, vae/, scheduler/); required for kind = dod", NULL},
    {"model", "prompt_embedding", CFG_STRING, "", 0, 0, NULL, OFF(prompt_embedding), false,
     "safetensors file with a fixed [77, D] prompt embedding (`dod-encode-prompt`); wins over `prompt` when given",
     NULL},
    {"model", "prompt", CFG_STRING, "", 0, 0, NULL, OFF(prompt), false,
     "text prompt (UTF-8; no double quotes inside), encoded at start-up with `base`'s tokenizer/ and text_encoder/ "
     "and cached as RUN_DIR/" MODEL_PROMPT_CACHE "; empty: the empty prompt's embedding (docs/model-loading.md)", NULL},
    {"model", "negative_prompt", CFG_STRING, "", 0, 0, NULL, OFF(negative_prompt), false,
     "negative prompt, encoded beside `prompt` (kept for the regulariser; nothing trains on it yet)", NULL},
    {"model", "frozen_dtype", CFG_ENUM, "bf16", 0, 0, "f32|bf16", OFF(frozen_dtype), false,
     "storage of frozen weights (compute is f32)", NULL},
    {"model", "toy_width", CFG_INT, "8", 1, 256, NULL, OFF(toy_width), false, "toy model: hidden channels", NULL},
    {"model", "device", CFG_ENUM, "cpu", 0, 0, "cpu|cuda", OFF(device), true,
     "where the model, the batches and AdamW live: `cpu`, or `cuda` (GPU 0, with several processes the local "
     "rank's; needs a CUDA build and a usable GPU); checkpoints resume on either device (docs/training.md)", NULL},
    {"model", "precision", CFG_ENUM, "f32", 0, 0, "f32|mixed", OFF(precision), true,
     "CUDA compute precision: `f32` (TF32 off, the parity mode) or `mixed` (frozen bf16 linear weights read as "
     "bf16 by cuBLAS with the activations rounded to bf16 around those products, TF32 for convolutions and f32 "
     "products; master weights, norms, softmax and losses stay f32); `mixed` needs device = cuda", NULL},
    {"model", "activations", CFG_ENUM, "auto", 0, 0, "auto|f32|bf16", OFF(activations), true,
     "storage of activations, any device: `bf16` halves the memory the forward keeps for backward (products and "
     "what follows them stored in bf16, computed in f32; losses, softmax, norm statistics and gradients stay f32); "
     "`auto`: bf16 when precision = mixed, else f32", NULL},
    {"lora", "rank", CFG_INT, "8", 1, 1024, NULL, OFF(lora_rank), false, "LoRA rank r", NULL},
    {"lora", "alpha", CFG_FLOAT, "8", 1e-6, 1e6, NULL, OFF(lora_alpha), false,
     "LoRA alpha; the adapter scale is alpha / r (PEFT's default alpha is 8)", NULL},
    {"modulation", "extractor", CFG_ENUM, "cnn", 0, 0, "cnn|vae", OFF(extractor), false,
     "degradation feature extractor F(y)", NULL},
    {"stage", "stage", CFG_INT, "1", 1, 2, NULL, OFF(stage), false,
     "1: LoRA + conv_in + modulation; 2: detail module only, stage 1 frozen", NULL},
    {"stage", "init_from", CFG_STRING, "", 0, 0, NULL, OFF(init_from), false,
     "stage 2: a stage-1 run dir (its latest checkpoint) or checkpoint file", NULL},
    {"checkpoint", "dir", CFG_STRING, "checkpoints", 0, 0, NULL, OFF(ckpt_dir), false,
     "checkpoint folder, relative to the run dir unless absolute", NULL},
};
static const char *const SECTIONS[] = {"model", "lora", "modulation", "stage", "checkpoint"};
static const CfgSchema SCHEMA = {FIELDS, (int)(sizeof FIELDS / sizeof FIELDS[0]), SECTIONS,
                                 (int)(sizeof SECTIONS / sizeof SECTIONS[0]), 4};

const CfgSchema *model_config_schema(void) { return &SCHEMA; }

void model_config_defaults(ModelOptions *o, CfgSource *src) {
    memset(o, 0, sizeof *o);
    cfg_defaults(&SCHEMA, o, src);
}

int model_config_load(ModelOptions *o, CfgSource *src, const char *path, char *err, size_t errlen) {
    return cfg_load_file(&SCHEMA, o, src, path, err, errlen);
}

int model_config_set(ModelOptions *o, CfgSource *src, const char *assignment, char *err, size_t errlen) {
    return cfg_set(&SCHEMA, o, src, assignment, err, errlen);
}

int model_config_check(const ModelOptions *o, const CfgSource *src, char *err, size_t errlen) {
    int bad = 0;
    if (o->kind == MODEL_DOD && !o->base[0])
        cfg_complain(src, "model", "base", "required for kind = dod (a diffusers SD 2.1-base directory)", err, errlen), bad++;
    if (o->stage == 2 && !o->init_from[0])
        cfg_complain(src, "stage", "init_from", "required for stage 2 (a stage-1 run dir or checkpoint)", err, errlen), bad++;
    if (o->stage == 1 && o->init_from[0])
        cfg_complain(src, "stage", "init_from", "only stage 2 starts from a checkpoint; leave it empty for stage 1", err,
                     errlen), bad++;
    if (o->precision == MODEL_PRECISION_MIXED && o->device != DEV_CUDA)
        cfg_complain(src, "model", "precision", "mixed precision is a CUDA mode: set [model] device = cuda", err, errlen),
            bad++;
    return bad;
}
