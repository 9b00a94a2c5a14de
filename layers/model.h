// The restoration model interface: one vtable for every model (the DOD model, the toy model the
// tests train), so training (train/), evaluation and validation (eval/) and the tools work the same
// whatever the model.
//
// A model owns a ParamStore of every tensor it needs (frozen and trainable, dotted names); the
// trainable ones are those with requires_grad (params_trainable). Checkpoints hold exactly those, by
// name, so their names must be stable across runs. forward() maps a degraded batch in [-1, 1] to a
// restored batch of the same shape (no clamp; callers clamp for metrics and images).
//
// Devices: a model is created (and initialised) on the CPU, then moved whole to o->device. Its
// forward takes lq on m->device and returns the output there (the training loop moves batches;
// model_host_io gives a view that takes and returns host tensors, for code that reads outputs on
// the host such as validation and evaluation).
//
// Options come from the [model], [lora], [modulation] and [stage] sections of a configuration
// (layers/config_model.h reads them); the enums below are what those keys parse to.
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "autograd/params.h"
#include "autograd/tensor.h"
#include "layers/config_schema.h"

typedef struct Model {
    void *self;
    const char *kind;   // the kind's name, as checkpoints record it: "toy", "dod"
    Device device;      // where every tensor of params() lives, and forward's input and output
    // Every tensor of the model (frozen + trainable). Stage-2 initialisation loads a stage-1
    // checkpoint into it by name.
    ParamStore *(*params)(void *self);
    // lq [N, 3, H, W] in [-1, 1] -> restored [N, 3, H, W]. training: sample whatever the model samples
    // during training (e.g. the VAE posterior) from noise_seed, so a step is a pure function of its
    // inputs, parameters and seed; !training: deterministic evaluation (seed unused).
    // Records the tape when grad mode is on.
    Tensor *(*forward)(void *self, Tensor *lq, uint64_t noise_seed, bool training);
    void (*destroy)(void *self);
} Model;

// The values of the enum keys, in the order of their choices (layers/config_model.c).
typedef enum { MODEL_TOY = 0, MODEL_DOD = 1 } ModelKind;                              // [model] kind
typedef enum { MODEL_FROZEN_F32 = 0, MODEL_FROZEN_BF16 = 1 } ModelFrozenDtype;        // [model] frozen_dtype
typedef enum { MODEL_PRECISION_F32 = 0, MODEL_PRECISION_MIXED = 1 } ModelPrecision;   // [model] precision
typedef enum { MODEL_ACTIVATIONS_AUTO = 0, MODEL_ACTIVATIONS_F32 = 1, MODEL_ACTIVATIONS_BF16 = 2 } ModelActivations;
typedef enum { MODEL_EXTRACTOR_CNN = 0, MODEL_EXTRACTOR_VAE = 1, MODEL_EXTRACTOR_ADM = 2 } ModelExtractor;   // [modulation] extractor
typedef enum { MODEL_INIT_PUBLIC = 0, MODEL_INIT_OURS = 1 } ModelInit;                 // [model] init
typedef enum { MODEL_EVAL_LATENT_MEAN = 0, MODEL_EVAL_LATENT_SAMPLE = 1 } ModelEvalLatent;   // [eval] latent

// What builds a model. The configuration keys each field comes from are named; a zeroed struct with
// kind, stage and the kind's own fields set is a valid toy or DOD model description.
typedef struct {
    // [model]
    ModelKind kind;
    char base[CFG_STR];               // dod: diffusers SD 2.1-base directory
    char prompt_embedding[CFG_STR];   // dod: prompt embedding safetensors; wins over prompt when given
    char prompt[CFG_STR];             // dod: text prompt, encoded with base's tokenizer/ and text_encoder/
    char negative_prompt[CFG_STR];    // dod: negative prompt (for the regulariser), encoded likewise
    ModelFrozenDtype frozen_dtype;    // storage of frozen weights
    long long toy_width;              // toy: hidden channels
    Device device;                    // DEV_CPU (the zero value) or DEV_CUDA: where the model is moved
    ModelPrecision precision;         // CUDA compute mode (set process-wide by model_create)
    ModelActivations activations;     // activation storage (ag_set_activation_dtype, process-wide)
    ModelInit init;                   // dod: init of the modulation MLPs and RRDB convs (public code's or ours)
    // [lora]
    long long lora_rank;
    double lora_alpha;
    // [modulation]
    ModelExtractor extractor;
    char adm_weights[CFG_STR];        // extractor adm: guided-diffusion's 256x256_diffusion_uncond.pt
    long long adm_head_channels;      // its num_head_channels (64)
    long long adm_norm_groups;        // its GroupNorm groups (32)
    // [stage]
    long long stage;                  // 1 or 2: which tensors are trainable
    char init_from[CFG_STR];          // stage 2: the stage-1 run dir or checkpoint file (model_load)
    // [eval]
    ModelEvalLatent eval_latent;      // dod: the latent of evaluation (validation, dod-eval): mean or a sample
    long long eval_seed;              // the sample's noise seed
    // [checkpoint] dir: the checkpoint folder of a run dir, relative to it unless absolute; resolves a
    // run dir given as init_from or as a checkpoint to evaluate (layers/model_weights.h).
    char ckpt_dir[CFG_STR];
    // [train] seed and recompute: keys of the training schema (train/config.c), 0 / false elsewhere.
    long long seed;                   // parameter initialisation
    bool recompute;                   // activation recomputation
    // Not a key: the cache file of the encoded prompts (layers/sd_prompt.h; "" = none). dod-train sets
    // RUN_DIR/MODEL_PROMPT_CACHE, dod-eval run the evaluated run dir's.
    char prompt_cache[CFG_STR + 32];
    // Not a key: where [modulation] adm_weights was set ("FILE:LINE", cfg_where; "" = unknown), named
    // when the file is missing. Set by the tools that read a configuration before model_create.
    char adm_weights_origin[CFG_ORIGIN_LEN];
} ModelOptions;

// The prompt cache's file name in a run dir.
#define MODEL_PROMPT_CACHE "prompt_embeds.safetensors"

// Builds the model o describes (=), on o->device, with freshly initialised trainable tensors (the
// stage-1 tensors of a stage-2 model too: model_load in layers/model_weights.h loads them). Sets the
// process-wide CUDA precision and activation dtype. NULL with a message naming the option / file at
// fault.
Model *model_create(const ModelOptions *o, char *err, size_t errlen);
// Destroys m (NULL is fine).
void model_free(Model *m);
// A view of m (=, by value, borrowing m) whose forward takes a host lq and returns a host output:
// on the CPU it is m itself; on CUDA it copies lq to the device, runs m, copies the output back
// (arena tensors, rewound by ag_step_reset; no gradient flows through the copies). Its device is
// DEV_CPU (its I/O); its params() are still m's, on m's device. Destroying it frees nothing.
Model model_host_io(Model *m);

// "toy", "dod": the kind's name (as configurations and checkpoints write it).
const char *model_kind_name(ModelKind kind);
// The activation storage dtype o asks for: bf16 for activations = bf16, or = auto under mixed precision.
DType model_activation_dtype(const ModelOptions *o);

// The kinds (model_create dispatches on o->kind): layers/model_toy.c, layers/model_dod.c.
Model *model_toy_create(const ModelOptions *o, char *err, size_t errlen);
Model *model_dod_create(const ModelOptions *o, char *err, size_t errlen);
// The Model of a DOD model built elsewhere (e.g. from an adapter file, layers/adapter.h), on the device
// it is on; the Model owns it (model_free destroys it). struct DodModel is layers/dod_model.h's.
struct DodModel;
Model *model_dod_wrap(struct DodModel *dm);
